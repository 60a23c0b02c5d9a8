package realserver

import (
	"net/netip"
	"testing"

	"uvs/forward/tun"
)

// fixtures: one inner UDP packet to the VIP in each tunnel.
func decapFixtures(t testing.TB) map[string][]byte {
	inner := []byte{
		0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 0, 100,
		0x13, 0x88, 0, 7, 0, 9, 0, 0, 'x',
	}
	out := map[string][]byte{}
	for name, tn := range map[string]*tun.Tunnel{
		"ipip": {Type: tun.IPIP, Src: dirV4, Dst: rsV4},
		"gre":  {Type: tun.GRE, Src: dirV4, Dst: rsV4, Csum: tun.WithCsum},
		"gue":  {Type: tun.GUE, Src: dirV4, Dst: rsV4, Port: guePort},
	} {
		buf := make([]byte, tun.MaxOverhead+len(inner))
		copy(buf[tun.MaxOverhead:], inner)
		start, ok := tn.Encap(buf, tun.MaxOverhead, len(inner))
		if !ok {
			t.Fatalf("encap %s", name)
		}
		out[name] = buf[start:]
	}
	return out
}

func TestFilterDecap(t *testing.T) {
	f := newFilter([]netip.Addr{vipV4}, []netip.Addr{dirV4}, guePort)
	types := map[string]tun.Type{"ipip": tun.IPIP, "gre": tun.GRE, "gue": tun.GUE}
	for name, pkt := range decapFixtures(t) {
		k, p := kindRaw4, pkt
		if name == "gue" {
			k, p = kindUDP, pkt[28:] // what the UDP socket delivers
		}
		inner, n, typ, why := f.decap(k, 0, p, dirV4)
		if why != accepted || n != 29 || typ != types[name] {
			t.Errorf("%s: decap = %d, %d, %v, %v", name, inner, n, typ, why)
		}
		if _, _, _, why := f.decap(k, 0, p, netip.MustParseAddr("198.18.2.3")); why != dropSource {
			t.Errorf("%s from another source: %v, want dropSource", name, reasonNames[why])
		}
		g := newFilter([]netip.Addr{vipV6}, nil, guePort)
		if _, _, _, why := g.decap(k, 0, p, dirV4); why != dropNotVIP {
			t.Errorf("%s to no VIP: %v, want dropNotVIP", name, reasonNames[why])
		}
		if _, _, _, why := f.decap(k, 0, p[:len(p)-1], dirV4); why != dropMalformed {
			t.Errorf("%s cut short: %v, want malformed", name, reasonNames[why])
		}
		allocs := testing.AllocsPerRun(100, func() { f.decap(k, 0, p, dirV4) })
		if allocs != 0 {
			t.Errorf("%s: %v allocations per packet", name, allocs)
		}
	}
}

// FuzzFilterDecap: decap never panics, and what it accepts lies within the
// datagram and is addressed to the VIP.
func FuzzFilterDecap(f *testing.F) {
	for _, pkt := range decapFixtures(f) {
		f.Add(uint8(kindRaw4), uint8(0), pkt)
	}
	f.Add(uint8(kindRaw6), uint8(protoGRE), []byte{0, 0, 0x08, 0})
	f.Fuzz(func(t *testing.T, kind, proto uint8, pkt []byte) {
		flt := newFilter([]netip.Addr{vipV4, vipV6}, nil, guePort)
		inner, n, _, why := flt.decap(sockKind(kind%3), proto, pkt, dirV4)
		if why != accepted {
			return
		}
		if inner < 0 || n <= 0 || inner+n > len(pkt) || !flt.isVIP(pkt[inner:inner+n]) {
			t.Fatalf("accepted inner [%d:+%d] of %d bytes", inner, n, len(pkt))
		}
	})
}
