// Package bgp announces the director's virtual addresses to routers over
// BGP, so that several directors behind a router share the traffic by
// ECMP and a director that cannot serve an address stops receiving it.
//
// A Speaker embeds gobgp's BGP server (github.com/osrg/gobgp/v3). It
// follows the director's rule table (Source) and announces each virtual
// address as a /32 or /128 while some service on it has a real server of
// weight above zero (VIPs), withdrawing it when none has; the next hop is
// the director's own address on the peering session. At Close it
// withdraws everything first, waits (Config.Drain) so that the routers
// move the flows to the other directors while this one still forwards
// them, and only then closes the sessions.
//
// Sessions: every peer is dialled from here; the speaker does not listen
// on port 179 (nothing needs to connect to a director, and a listener
// would need the port to be free). eBGP or iBGP follows the peer's AS
// number; eBGP peers must be on a directly connected network (TTL 1, no
// multihop). IPv4 virtual addresses go to IPv4 peers and IPv6 ones to
// IPv6 peers. Hold time 9 s and keepalives every third of it by default,
// short enough for the router to drop a director that died without
// closing its sessions (a host gone, a cable cut) within seconds; a
// killed director process is noticed at once, its kernel closes the
// connections. BFD is not implemented. Routes the peers send are not
// kept (the import policy rejects them all). No graceful restart: a
// router keeps no stale route of a director that went away.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"uvs/service"
)

// Defaults.
const (
	// DefaultHoldTime is the hold time offered to peers (the session uses
	// the smaller of both sides' offers); keepalives go every third of it.
	DefaultHoldTime = 9 * time.Second
	// DefaultDrain is how long Close waits between withdrawing the
	// addresses and closing the sessions.
	DefaultDrain = 2 * time.Second
	// connectRetry is the time between connection attempts to a peer that
	// does not answer (gobgp waits between once and twice this).
	connectRetry = 2 * time.Second
)

// Config configures a Speaker.
type Config struct {
	ASN   uint32 // the local AS number
	Peers []Peer
	// RouterID is the BGP identifier; unset, it is the IPv4 address this
	// host uses towards the first IPv4 peer, or else its first IPv4
	// address (RouterID).
	RouterID netip.Addr
	// HoldTime is offered to the peers, whole seconds, at least 3; 0 is
	// DefaultHoldTime.
	HoldTime time.Duration
	// Drain is how long Close waits after withdrawing (0: not at all).
	Drain time.Duration
	// MarkVIPs are the addresses of firewall-mark services (VIPs).
	MarkVIPs map[uint32][]netip.Addr
	Logger   *slog.Logger
}

// ValidHoldTime reports whether d may be offered as a hold time: whole
// seconds, from 3 (BGP's least, 0 aside: no keepalives, which the speaker
// does not offer) to 65535.
func ValidHoldTime(d time.Duration) bool {
	return d >= 3*time.Second && d <= 65535*time.Second && d%time.Second == 0
}

// Source is the rule table the speaker follows (director.Director).
type Source interface {
	// Watch returns the current rule table and a channel closed when
	// another one is published.
	Watch() (*service.Config, <-chan struct{})
}

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg  Config
	log  *slog.Logger
	srv  *server.BgpServer
	src  Source
	stop chan struct{} // closed by Close: stop following the rules
	done chan struct{} // closed when follow has returned
	// unwatch ends gobgp's peer event watch.
	unwatch   context.CancelFunc
	closeOnce sync.Once

	mu        sync.Mutex
	announced map[netip.Prefix][]byte // prefix -> gobgp's path UUID

	peerMu sync.Mutex
	up     map[netip.Addr]bool // established sessions
}

// Start starts the speaker: it peers with cfg.Peers and announces what
// src's rule table says, following its changes, until Close.
func Start(cfg Config, src Source) (*Speaker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HoldTime == 0 {
		cfg.HoldTime = DefaultHoldTime
	}
	switch {
	case cfg.ASN == 0:
		return nil, errors.New("bgp: no local AS number")
	case len(cfg.Peers) == 0:
		return nil, errors.New("bgp: no peer")
	case !ValidHoldTime(cfg.HoldTime):
		return nil, fmt.Errorf("bgp: hold time %v: want whole seconds from 3s to 65535s", cfg.HoldTime)
	case cfg.Drain < 0:
		return nil, fmt.Errorf("bgp: drain %v: want 0 or more", cfg.Drain)
	}
	if !cfg.RouterID.IsValid() {
		id, err := RouterID(cfg.Peers)
		if err != nil {
			return nil, err
		}
		cfg.RouterID = id
	}
	if !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("bgp: router ID %s: want an IPv4 address", cfg.RouterID)
	}
	s := &Speaker{
		cfg:       cfg,
		log:       cfg.Logger,
		src:       src,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		announced: map[netip.Prefix][]byte{},
		up:        map[netip.Addr]bool{},
	}
	s.srv = server.NewBgpServer(server.LoggerOption(gobgpLogger{cfg.Logger}))
	go s.srv.Serve()
	if err := s.setUp(); err != nil {
		s.srv.Stop()
		return nil, err
	}
	s.log.Info("BGP speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID,
		"peers", len(cfg.Peers), "hold_time", cfg.HoldTime, "drain", cfg.Drain)
	go s.follow()
	return s, nil
}

// setUp configures the gobgp server: global settings, the import policy,
// the peer watch and the peers.
func (s *Speaker) setUp() error {
	ctx := context.Background()
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: -1, // sessions are dialled from here only
	}})
	if err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}
	if err := s.rejectPeerRoutes(ctx); err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	s.unwatch = cancel
	if err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.peerEvent); err != nil {
		cancel()
		return fmt.Errorf("bgp: watch peers: %w", err)
	}
	hold := uint64(s.cfg.HoldTime / time.Second)
	for _, p := range s.cfg.Peers {
		asn := p.ASN
		if asn == 0 {
			asn = s.cfg.ASN
		}
		fam := familyV4
		if p.Addr.Is6() {
			fam = familyV6
		}
		err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: asn},
			Timers: &api.Timers{Config: &api.TimersConfig{
				ConnectRetry:      uint64(connectRetry / time.Second),
				HoldTime:          hold,
				KeepaliveInterval: max(1, hold/3),
			}},
			Transport: &api.Transport{RemotePort: uint32(p.Port)},
			AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
		}})
		if err != nil {
			cancel()
			return fmt.Errorf("bgp: peer %s: %w", p, err)
		}
	}
	return nil
}

// rejectPeerRoutes keeps the routes peers send out of the RIB: the
// director needs none. The global import policy sees the speaker's own
// routes too, so it rejects by source: any neighbour.
func (s *Speaker) rejectPeerRoutes(ctx context.Context) error {
	const set, policy = "any-neighbour", "reject-peer-routes"
	err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: set, List: []string{"0.0.0.0/0", "::/0"},
	}})
	if err != nil {
		return err
	}
	p := &api.Policy{Name: policy, Statements: []*api.Statement{{
		Name:       policy,
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
	}}}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: p}); err != nil {
		return err
	}
	return s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT,
		Policies: []*api.Policy{{Name: policy}}, DefaultAction: api.RouteAction_ACCEPT,
	}})
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// peerEvent records and logs a peer's session going up or down.
func (s *Speaker) peerEvent(r *api.WatchEventResponse) {
	ev := r.GetPeer()
	if ev == nil || ev.Type != api.WatchEventResponse_PeerEvent_STATE || ev.Peer.GetState() == nil {
		return
	}
	st := ev.Peer.State
	a, err := netip.ParseAddr(st.NeighborAddress)
	if err != nil {
		return
	}
	a = a.Unmap()
	up := st.SessionState == api.PeerState_ESTABLISHED
	s.peerMu.Lock()
	was := s.up[a]
	s.up[a] = up
	s.peerMu.Unlock()
	switch {
	case up && !was:
		s.log.Info("BGP session up", "peer", a, "peer_asn", st.PeerAsn, "peer_router_id", st.RouterId)
	case !up && was:
		s.log.Warn("BGP session down", "peer", a, "state", st.SessionState.String())
	}
}

// follow keeps the announcements in step with the rule table until stop.
func (s *Speaker) follow() {
	defer close(s.done)
	for {
		c, changed := s.src.Watch()
		var retry <-chan time.Time
		if err := s.sync(VIPs(c, s.cfg.MarkVIPs)); err != nil {
			s.log.Error("BGP announcements not in step with the rules; retrying in 1s", "err", err)
			retry = time.After(time.Second)
		}
		select {
		case <-changed:
		case <-retry:
		case <-s.stop:
			return
		}
	}
}

// sync announces the prefixes of want not announced yet and withdraws
// those announced and no longer wanted.
func (s *Speaker) sync(want []netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for p, id := range s.announced {
		if slices.Contains(want, p) {
			continue
		}
		if err := s.withdraw(p, id); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("VIP withdrawn: no service on it has a real server of weight above 0", "vip", p)
	}
	for _, p := range want {
		if _, ok := s.announced[p]; ok {
			continue
		}
		path, err := pathFor(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := s.srv.AddPath(context.Background(), &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		s.announced[p] = r.Uuid
		if slices.ContainsFunc(s.cfg.Peers, func(pr Peer) bool { return pr.Addr.Is4() == p.Addr().Is4() }) {
			s.log.Info("VIP announced", "vip", p)
		} else {
			s.log.Warn("VIP announced to no peer: none is of its address family", "vip", p)
		}
	}
	return errors.Join(errs...)
}

// withdraw withdraws p, announced as path id; s.mu is held.
func (s *Speaker) withdraw(p netip.Prefix, id []byte) error {
	if err := s.srv.DeletePath(context.Background(), &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: id}); err != nil {
		return fmt.Errorf("withdraw %s: %w", p, err)
	}
	delete(s.announced, p)
	return nil
}

// pathFor is the route for p: origin IGP, the next hop left unspecified
// so that gobgp puts the local address of each session there.
func pathFor(p netip.Prefix) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, fmt.Errorf("route for %s: %w", p, err)
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0})
	if err != nil {
		return nil, fmt.Errorf("route for %s: %w", p, err)
	}
	if p.Addr().Is4() {
		nh, err := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
		if err != nil {
			return nil, fmt.Errorf("route for %s: %w", p, err)
		}
		return &api.Path{Family: familyV4, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
	}
	mp, err := anypb.New(&api.MpReachNLRIAttribute{Family: familyV6, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
	if err != nil {
		return nil, fmt.Errorf("route for %s: %w", p, err)
	}
	return &api.Path{Family: familyV6, Nlri: nlri, Pattrs: []*anypb.Any{origin, mp}}, nil
}

// Close withdraws every announced address, waits Config.Drain if a
// session was up to carry the withdrawals, and closes the sessions (a
// Cease notification to each peer). It returns when the sessions are
// closed; it is safe to call more than once.
func (s *Speaker) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		n := len(s.announced)
		var errs []error
		for p, id := range s.announced {
			if err := s.withdraw(p, id); err != nil {
				errs = append(errs, err)
			}
		}
		s.mu.Unlock()
		if n > 0 && len(s.PeersUp()) > 0 && s.cfg.Drain > 0 {
			s.log.Info("BGP: VIPs withdrawn; draining before closing the sessions", "vips", n, "drain", s.cfg.Drain)
			time.Sleep(s.cfg.Drain)
		}
		if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
			errs = append(errs, fmt.Errorf("stop: %w", err))
		}
		s.unwatch()
		s.peerMu.Lock()
		clear(s.up) // deleted peers send no last event
		s.peerMu.Unlock()
		s.log.Info("BGP speaker stopped")
		if len(errs) > 0 {
			err = fmt.Errorf("bgp: %w", errors.Join(errs...))
		}
	})
	return err
}

// Announced returns the prefixes announced now, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.announced))
	for p := range s.announced {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// PeersUp returns the peers whose session is established.
func (s *Speaker) PeersUp() []netip.Addr {
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	var out []netip.Addr
	for a, up := range s.up {
		if up {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Peers returns the configured peers.
func (s *Speaker) Peers() []Peer { return slices.Clone(s.cfg.Peers) }

// RouterID picks a router ID: the IPv4 address this host uses towards the
// first IPv4 peer, or else the first IPv4 address of an interface that is
// up (loopback excluded).
func RouterID(peers []Peer) (netip.Addr, error) {
	for _, p := range peers {
		if !p.Addr.Is4() {
			continue
		}
		// A UDP "connection" sends nothing; it asks the kernel for the
		// source address of the route to the peer.
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Addr, 179)))
		if err != nil {
			break
		}
		a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		c.Close()
		if a.Is4() && !a.IsUnspecified() {
			return a, nil
		}
		break
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bgp: router ID: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
					return ip.Unmap(), nil
				}
			}
		}
	}
	return netip.Addr{}, errors.New("bgp: no IPv4 address to take the router ID from: give one")
}
