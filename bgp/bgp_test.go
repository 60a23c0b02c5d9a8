package bgp

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"uvs/service"
)

// fakeSource is a rule table that the test replaces.
type fakeSource struct {
	mu      sync.Mutex
	c       *service.Config
	changed chan struct{}
}

func newFakeSource(c *service.Config) *fakeSource {
	return &fakeSource{c: c, changed: make(chan struct{})}
}

func (f *fakeSource) Watch() (*service.Config, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c, f.changed
}

func (f *fakeSource) set(c *service.Config) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c = c
	close(f.changed)
	f.changed = make(chan struct{})
}

// router is a gobgp server standing for the router: it listens on a free
// port of 127.0.0.1 and takes the speaker's session, passively.
type router struct {
	t   *testing.T
	srv *server.BgpServer
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func startRouter(t *testing.T, port uint16, peerASN uint32) *router {
	t.Helper()
	srv := server.NewBgpServer(server.LoggerOption(gobgpLogger{slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}))
	go srv.Serve()
	t.Cleanup(srv.Stop)
	ctx := context.Background()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "198.18.0.254", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: peerASN},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	return &router{t: t, srv: srv}
}

// routes lists the router's IPv4 routes as "PREFIX via NEXTHOP".
func (r *router) routes() []string {
	var out []string
	err := r.srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: familyV4},
		func(d *api.Destination) {
			for _, p := range d.Paths {
				nh := ""
				for _, a := range p.Pattrs {
					var n api.NextHopAttribute
					if a.UnmarshalTo(&n) == nil {
						nh = n.NextHop
					}
				}
				out = append(out, d.Prefix+" via "+nh)
			}
		})
	if err != nil {
		r.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// established reports whether the router's session is up.
func (r *router) established() bool {
	up := false
	err := r.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		up = up || p.State.GetSessionState() == api.PeerState_ESTABLISHED
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return up
}

// waitRoutes waits (up to 20 s) until the router holds exactly want.
func (r *router) waitRoutes(want ...string) {
	r.t.Helper()
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = r.routes(); slices.Equal(got, want) {
			return
		}
	}
	r.t.Fatalf("router routes %q, want %q", got, want)
}

// TestSpeaker runs the speaker against a gobgp router on the loopback:
// it announces the VIPs with usable servers, follows weight changes,
// and at Close withdraws before the session closes.
func TestSpeaker(t *testing.T) {
	port := freePort(t)
	r := startRouter(t, port, 65001)
	src := newFakeSource(table(t,
		svc{tcp("198.18.2.100", 80), []int32{1}},
		svc{tcp("198.18.2.101", 80), []int32{0}},
		svc{service.Key{FWMark: 7}, []int32{1, 1}},
	))
	s, err := Start(Config{
		ASN:      65001,
		Peers:    []Peer{{Addr: addr("127.0.0.1"), ASN: 65000, Port: port}},
		RouterID: addr("198.18.0.1"),
		HoldTime: 3 * time.Second,
		Drain:    time.Second,
		MarkVIPs: map[uint32][]netip.Addr{7: {addr("198.18.2.107")}},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, src)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	r.waitRoutes("198.18.2.100/32 via 127.0.0.1", "198.18.2.107/32 via 127.0.0.1")
	// A route from the router is not kept.
	path, err := pathFor(netip.MustParsePrefix("198.18.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		t.Fatal(err)
	}
	r.waitRoutes("198.18.2.100/32 via 127.0.0.1", "198.18.2.107/32 via 127.0.0.1", "198.18.3.0/24 via 0.0.0.0")
	time.Sleep(200 * time.Millisecond)
	if got := (&router{t: t, srv: s.srv}).routes(); !slices.Equal(got, []string{"198.18.2.100/32 via 0.0.0.0", "198.18.2.107/32 via 0.0.0.0"}) {
		t.Errorf("the speaker's RIB: %q, want its own two routes only", got)
	}
	if got := s.PeersUp(); !slices.Equal(got, []netip.Addr{addr("127.0.0.1")}) {
		t.Errorf("PeersUp = %v", got)
	}
	metrics := `
# HELP uvs_bgp_announced_vips Virtual addresses (/32 or /128) announced over BGP now.
# TYPE uvs_bgp_announced_vips gauge
uvs_bgp_announced_vips 2
# HELP uvs_bgp_peer_up 1 while the BGP session with the peer is established, else 0.
# TYPE uvs_bgp_peer_up gauge
uvs_bgp_peer_up{peer="127.0.0.1"} 1
`
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(metrics)); err != nil {
		t.Error(err)
	}

	// .100's server goes to weight 0, .101's comes up.
	src.set(table(t,
		svc{tcp("198.18.2.100", 80), []int32{0}},
		svc{tcp("198.18.2.101", 80), []int32{2}},
		svc{service.Key{FWMark: 7}, []int32{1, 1}},
	))
	r.waitRoutes("198.18.2.101/32 via 127.0.0.1", "198.18.2.107/32 via 127.0.0.1", "198.18.3.0/24 via 0.0.0.0")
	if got := s.Announced(); len(got) != 2 || got[0].String() != "198.18.2.101/32" {
		t.Errorf("Announced = %v", got)
	}

	// Close: the routes go while the session is still up (the drain),
	// then the session closes.
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	closed = true
	r.waitRoutes("198.18.3.0/24 via 0.0.0.0")
	if !r.established() {
		t.Error("the session closed before the routes were withdrawn")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	for deadline := time.Now().Add(10 * time.Second); r.established(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the router's session is still up after Close")
		}
	}
	if err := testutil.CollectAndCompare(NewCollector(s), strings.NewReader(strings.NewReplacer("vips 2", "vips 0", "} 1", "} 0").Replace(metrics))); err != nil {
		t.Error(err)
	}
}

func TestStartChecks(t *testing.T) {
	src := newFakeSource(service.NewConfig())
	peers := []Peer{{Addr: addr("198.18.1.1")}}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Peers: peers}, "AS number"},
		{Config{ASN: 1}, "no peer"},
		{Config{ASN: 1, Peers: peers, HoldTime: 2 * time.Second}, "hold time"},
		{Config{ASN: 1, Peers: peers, HoldTime: 3500 * time.Millisecond}, "hold time"},
		{Config{ASN: 1, Peers: peers, Drain: -time.Second}, "drain"},
		{Config{ASN: 1, Peers: peers, RouterID: addr("2001:2::1")}, "router ID"},
	} {
		if s, err := Start(tc.cfg, src); err == nil || !strings.Contains(err.Error(), tc.want) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Start(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}
