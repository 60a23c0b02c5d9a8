package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"uvs/service"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// rules builds a table: each entry is a service key and its servers'
// weights.
type svc struct {
	key     service.Key
	weights []int32
}

func table(t *testing.T, svcs ...svc) *service.Config {
	t.Helper()
	c := service.NewConfig()
	for _, s := range svcs {
		if err := c.AddService(&service.Service{Key: s.key, Scheduler: "sh"}); err != nil {
			t.Fatal(err)
		}
		for i, w := range s.weights {
			rs := netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i)})
			if s.key.Is6() {
				rs = netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, 0, 0, 1, 15: byte(10 + i)})
			}
			if err := c.AddDest(s.key, &service.Dest{Addr: rs, Port: s.key.Port, Fwd: service.FwdRoute, Weight: w}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

func tcp(a string, port uint16) service.Key {
	return service.Key{Proto: service.TCP, Addr: addr(a), Port: port}
}

func TestVIPs(t *testing.T) {
	c := table(t,
		svc{tcp("198.18.2.1", 80), []int32{0, 1}}, // one usable server
		svc{tcp("198.18.2.1", 443), []int32{0}},   // same VIP, none usable: still announced
		svc{tcp("198.18.2.2", 80), []int32{0, 0}}, // none usable
		svc{tcp("198.18.2.3", 80), nil},           // no server
		svc{tcp("2001:2::100", 80), []int32{3}},   // IPv6: /128
		svc{service.Key{Proto: service.UDP, Addr: addr("198.18.2.4"), Port: 53}, []int32{1}},
		svc{service.Key{FWMark: 7}, []int32{1}}, // named by MarkVIPs
		svc{service.Key{FWMark: 8}, []int32{0}}, // named, no usable server
		svc{service.Key{FWMark: 9}, []int32{1}}, // not named: nothing
	)
	marks := map[uint32][]netip.Addr{
		7: {addr("198.18.2.7"), addr("198.18.2.1")},
		8: {addr("198.18.2.8")},
	}
	var got []string
	for _, p := range VIPs(c, marks) {
		got = append(got, p.String())
	}
	want := []string{"198.18.2.1/32", "198.18.2.4/32", "198.18.2.7/32", "2001:2::100/128"}
	if !slices.Equal(got, want) {
		t.Errorf("VIPs = %v, want %v", got, want)
	}
	if got := VIPs(nil, nil); len(got) != 0 {
		t.Errorf("VIPs(nil) = %v", got)
	}
}

func TestParsePeers(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "198.18.1.1", want: "198.18.1.1"},
		{in: "198.18.1.1:65000,198.18.1.2", want: "198.18.1.1:65000 198.18.1.2"},
		{in: "2001:2::1", want: "2001:2::1"},
		{in: "[2001:2::1]:4200000000", want: "[2001:2::1]:4200000000"},
		{in: "198.18.1.1, 2001:2::1", want: "198.18.1.1 2001:2::1"},
		{in: "", err: "empty peer"},
		{in: "198.18.1.1,", err: "empty peer"},
		{in: "198.18.1.1:0", err: "AS number"},
		{in: "198.18.1.1:4294967296", err: "AS number"},
		{in: "198.18.1.1:x", err: "AS number"},
		{in: "router:65000", err: "want ADDR"},
		{in: "[198.18.1.1]:65000", err: "not an IPv6 address"},
		{in: "0.0.0.0", err: "not a unicast"},
		{in: "198.18.1.1,198.18.1.1:65001", err: "given twice"},
		{in: "fe80::1%eth0", err: "zone"},
	} {
		ps, err := ParsePeers(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePeers(%q) = %v, %v; want an error with %q", tc.in, ps, err, tc.err)
			}
			continue
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("ParsePeers(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseMarkVIPs(t *testing.T) {
	m, err := ParseMarkVIPs("20=198.18.0.100,20=2001:2::100,0x15=198.18.0.101")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || len(m[20]) != 2 || m[20][1] != addr("2001:2::100") || m[21][0] != addr("198.18.0.101") {
		t.Errorf("ParseMarkVIPs = %v", m)
	}
	for _, bad := range []string{"", "20", "0=198.18.0.1", "x=198.18.0.1", "20=host", "20=0.0.0.0", "4294967296=198.18.0.1"} {
		if _, err := ParseMarkVIPs(bad); err == nil {
			t.Errorf("ParseMarkVIPs(%q) accepted", bad)
		}
	}
}
