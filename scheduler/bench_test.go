package scheduler

import (
	"fmt"
	"net/netip"
	"testing"

	"uvs/service"
)

// BenchmarkSchedule measures one pick per scheduler and list size; the
// servers carry mixed weights and loads.
func BenchmarkSchedule(b *testing.B) {
	for _, name := range Names() {
		for _, n := range []int{2, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				s, err := New(name, service.SchedSHFallback|service.SchedMHFallback, nil)
				if err != nil {
					b.Fatal(err)
				}
				cfg := service.NewConfig()
				if err := cfg.AddService(&service.Service{Key: testKey, Scheduler: name}); err != nil {
					b.Fatal(err)
				}
				for i := range n {
					d := &service.Dest{Addr: netip.AddrFrom4([4]byte{198, 18, byte(1 + i/250), byte(1 + i%250)}), Port: 80, Weight: int32(1 + i%5)}
					if err := cfg.AddDest(testKey, d); err != nil {
						b.Fatal(err)
					}
				}
				dests := cfg.Service(testKey).Dests
				for i, d := range dests {
					d.AddConns(int32(i%7), int32(i%13))
				}
				s.Update(dests)
				f := &Flow{Proto: service.TCP, Dst: testKey.Addr, DstPort: 80}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i++
					f.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
					f.SrcPort = uint16(i)
					if s.Schedule(f) == nil {
						b.Fatal("no server")
					}
				}
			})
		}
	}
}

func BenchmarkMaglevBuild(b *testing.B) {
	for _, size := range []int{4093, 65521} {
		for _, n := range []int{100, 1000} {
			b.Run(fmt.Sprintf("size%d/servers%d", size, n), func(b *testing.B) {
				servers := maglevServers(n, 1)
				for i := range servers {
					servers[i].Weight = int32(1 + i%5)
				}
				b.ReportAllocs()
				for b.Loop() {
					BuildMaglev(servers, size)
				}
			})
		}
	}
}
