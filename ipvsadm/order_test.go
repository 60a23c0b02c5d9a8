package ipvsadm

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"uvs/scheduler"
	"uvs/service"
)

// TestHashTablesFollowTheFile is what lets several directors make the
// same choice (the scale-out README): sh and mh build their tables from
// the server list, which IPVS keeps newest first, so the order of the
// -a lines matters; a table saved with -S lists the servers sorted, so
// every director that loads the same file, or restores what another
// saved, builds the same table, whatever order its servers were first
// added in.
func TestHashTablesFollowTheFile(t *testing.T) {
	const vip = "198.18.0.100:80"
	servers := []string{"198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.5", "198.18.1.6"}
	for _, sched := range []string{"sh", "mh"} {
		t.Run(sched, func(t *testing.T) {
			build := func(order []int) *Table {
				st := NewTable()
				run(t, st, "-A", "-t", vip, "-s", sched)
				for _, i := range order {
					run(t, st, "-a", "-t", vip, "-r", servers[i], "-g", "-w", fmt.Sprint(1+i%3))
				}
				return st
			}
			picks := func(st *Table) []string {
				sv := st.Conf.Service(service.Key{Proto: service.TCP, Addr: netip.MustParseAddrPort(vip).Addr(), Port: 80})
				s, err := scheduler.New(sched, 0, nil)
				if err != nil {
					t.Fatal(err)
				}
				s.Update(sv.Dests)
				var out []string
				for i := range 2000 {
					src := netip.AddrFrom4([4]byte{198, 18, byte(100 + i/250), byte(i % 250)})
					d := s.Schedule(&scheduler.Flow{Proto: service.TCP, Src: src, Dst: sv.Addr, SrcPort: uint16(1024 + i), DstPort: 80})
					out = append(out, d.Addr.String())
				}
				return out
			}
			differ := func(a, b []string) int {
				n := 0
				for i := range a {
					if a[i] != b[i] {
						n++
					}
				}
				return n
			}
			a, b := build([]int{0, 1, 2, 3, 4}), build([]int{4, 2, 0, 3, 1})
			if n := differ(picks(a), picks(b)); n == 0 {
				t.Fatal("the order of -a made no difference: the kernel's tables depend on it")
			}
			saveA, saveB := run(t, a, "-S", "-n"), run(t, b, "-S", "-n")
			if saveA != saveB {
				t.Fatalf("-S differs with the order of -a:\n%s\n%s", saveA, saveB)
			}
			ra, err := LoadRules(strings.NewReader(saveA))
			if err != nil {
				t.Fatal(err)
			}
			rb, err := LoadRules(strings.NewReader(saveB))
			if err != nil {
				t.Fatal(err)
			}
			pa, pb := picks(&Table{Conf: ra}), picks(&Table{Conf: rb})
			if n := differ(pa, pb); n != 0 {
				t.Fatalf("two directors loading the same saved rules disagree on %d of %d clients", n, len(pa))
			}
			// A restart loads the file again: the same table once more.
			rc, err := LoadRules(strings.NewReader(saveA))
			if err != nil {
				t.Fatal(err)
			}
			if n := differ(pa, picks(&Table{Conf: rc})); n != 0 {
				t.Fatalf("loading the file again changed %d choices", n)
			}
		})
	}
}
