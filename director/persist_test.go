package director

import (
	"net/netip"
	"testing"
	"time"

	"uvs/conntrack"
	"uvs/packet"
	"uvs/packet/packettest"
	"uvs/service"
)

// netmask0_0_0_24 is how the model holds ipvsadm's "-M 24" for an IPv4
// service: the mask 0.0.0.24 (ipvsadm's netmask4).
const netmask0_0_0_24 = service.RawMask4 | 24

func TestMaskAddr(t *testing.T) {
	cases := []struct {
		a    string
		bits int
		want string
	}{
		{"198.18.0.77", 24, "198.18.0.0"},
		{"198.18.0.77", 32, "198.18.0.77"},
		{"198.18.0.77", 0, "0.0.0.0"},
		{"198.18.0.77", 20, "198.18.0.0"},
		{"198.18.15.77", 20, "198.18.0.0"},
		{"198.18.0.77", netmask0_0_0_24, "0.0.0.8"},
		{"198.18.0.255", service.RawMask4 | 0xff00ff00, "198.0.0.0"},
		{"198.19.7.255", service.RawMask4 | 0xff00ff00, "198.0.7.0"},
		{"2001:2::1:77", 64, "2001:2::"},
		{"2001:2::1:77", 128, "2001:2::1:77"},
	}
	for _, c := range cases {
		a := netip.MustParseAddr(c.a)
		got := netip.AddrFrom16(maskAddr(conntrack.AddrFrom(a), c.bits, a.Is4()))
		if a.Is4() {
			got = got.Unmap()
		}
		if got.String() != c.want {
			t.Errorf("maskAddr(%s, %#x) = %v, want %s", c.a, c.bits, got, c.want)
		}
	}
}

// TestPersistNonPrefixMask is ipvsadm/testdata/netmask.sh's persistence
// part: a persistent rr service with -M 24 (mask 0.0.0.24) and three real
// servers, SYNs from these clients in this order. Real IPVS made four
// templates, 0.0.0.0, 0.0.0.8, 0.0.0.16 and 0.0.0.24 (client & mask, so
// 198.18.0.8, .40, .72, .200 and 198.18.1.8 share one), and sent the
// clients of each template to one server; the servers IPVS chose are the
// ones listed.
func TestPersistNonPrefixMask(t *testing.T) {
	rsA := netip.MustParseAddr("198.18.1.11")
	rsB := netip.MustParseAddr("198.18.1.12")
	rsC := netip.MustParseAddr("198.18.1.13")
	clients := []struct {
		addr string
		tmpl string
		rs   netip.Addr
	}{
		{"198.18.0.2", "0.0.0.0", rsC}, {"198.18.0.3", "0.0.0.0", rsC}, {"198.18.0.7", "0.0.0.0", rsC},
		{"198.18.0.8", "0.0.0.8", rsB}, {"198.18.0.9", "0.0.0.8", rsB}, {"198.18.0.15", "0.0.0.8", rsB},
		{"198.18.0.16", "0.0.0.16", rsA}, {"198.18.0.17", "0.0.0.16", rsA}, {"198.18.0.23", "0.0.0.16", rsA},
		{"198.18.0.24", "0.0.0.24", rsC}, {"198.18.0.25", "0.0.0.24", rsC}, {"198.18.0.31", "0.0.0.24", rsC},
		{"198.18.0.32", "0.0.0.0", rsC}, {"198.18.0.40", "0.0.0.8", rsB}, {"198.18.0.56", "0.0.0.24", rsC},
		{"198.18.0.72", "0.0.0.8", rsB}, {"198.18.0.200", "0.0.0.8", rsB}, {"198.18.0.255", "0.0.0.24", rsC},
		{"198.18.1.8", "0.0.0.8", rsB}, {"198.18.3.24", "0.0.0.24", rsC},
	}

	d, w := testWorker(t, 0)
	key := service.Key{Proto: service.TCP, Addr: vip, Port: 81}
	err := d.Update(func(c *service.Config) error {
		err := c.AddService(&service.Service{Key: key, Scheduler: "rr", Persistent: true,
			Timeout: 300 * time.Second, Netmask: netmask0_0_0_24})
		if err != nil {
			return err
		}
		for _, rs := range []netip.Addr{rsA, rsB, rsC} {
			if err := c.AddDest(key, &service.Dest{Addr: rs, Port: 81, Fwd: service.FwdMasq, Weight: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		f := packettest.Frame{Src: netip.MustParseAddr(c.addr), Dst: vip, TTL: 64, Proto: packettest.TCP,
			SrcPort: uint16(42001 + i), DstPort: 81, TCPFlags: packet.TCPSyn}.Bytes()
		if out := handle(w, frameBuf(f)); len(out) != 1 {
			t.Fatalf("SYN from %s: %d packets out", c.addr, len(out))
		}
	}
	to := map[netip.Addr]netip.Addr{}   // client -> real server
	tmpl := map[netip.Addr]netip.Addr{} // template client -> real server
	d.ct.Walk(func(c *conntrack.Conn, _ time.Duration) bool {
		cl := netip.AddrFrom16(c.Client).Unmap()
		rs := netip.AddrFrom16(c.DAddr).Unmap()
		if c.Template {
			tmpl[cl] = rs
		} else {
			to[cl] = rs
		}
		return true
	})
	if len(tmpl) != 4 {
		t.Errorf("%d templates %v, IPVS made 4", len(tmpl), tmpl)
	}
	for _, c := range clients {
		a, ta := netip.MustParseAddr(c.addr), netip.MustParseAddr(c.tmpl)
		if to[a] != c.rs {
			t.Errorf("%s went to %v, IPVS sent it to %v", c.addr, to[a], c.rs)
		}
		if tmpl[ta] != c.rs {
			t.Errorf("template %s for %s: %v, IPVS: %v", c.tmpl, c.addr, tmpl[ta], c.rs)
		}
	}
}
