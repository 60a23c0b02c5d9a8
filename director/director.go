// Package director is the load balancer itself: it owns the rule table,
// publishes it to the packet workers as an immutable snapshot, sets the
// host up so that the kernel hands the balanced traffic over and keeps out
// of it, and runs the pipeline.
//
// A packet goes one way through it (see pipeline.go):
//
//	device read (link) -> parse (packet) -> ARP/NDP for virtual addresses
//	-> connection lookup (conntrack), or service lookup, schedule (scheduler)
//	and insert -> rewrite (forward/nat) -> device write (link)
package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"uvs/conntrack"
	"uvs/link"
	"uvs/packet"
	"uvs/rate"
	"uvs/scheduler"
	"uvs/service"
)

// IO backends.
const (
	IOAFPacket = "afpacket"
	IOTUN      = "tun"
)

// Config configures a Director. The zero value serves every interface of
// the namespace over AF_PACKET.
type Config struct {
	IO         string   // IOAFPacket (default) or IOTUN
	Interfaces []string // interfaces to serve; nil = every non-loopback Ethernet interface that is up
	Workers    int      // packet workers; 0 = one per core (with AFPacketPerPort, the poller or the ring: readers per interface, 0 = the cores spread over the interfaces)
	Capacity   int      // connection table limit; 0 = 1<<20
	Logger     *slog.Logger
	// StateDir keeps what a director killed outright could not undo, for
	// the next start to undo: with TUN, the VIP addresses it added. ""
	// keeps nothing.
	StateDir string

	// AFPacketRing reads AF_PACKET frames through a TPACKET_V3 ring
	// instead of recvmmsg (link.AFPacketConfig.RXRing). Experimental.
	AFPacketRing bool
	// AFPacketPoller waits for AF_PACKET frames in the Go runtime's poller
	// instead of the default, a blocking recvmmsg on a locked thread
	// (link.AFPacketConfig.Blocking). The ring always uses the poller.
	AFPacketPoller bool
	// AFPacketSpin retries an empty AF_PACKET socket this long before
	// waiting (link.AFPacketConfig.SpinFor). Experimental.
	AFPacketSpin time.Duration
	// AFPacketPerPort gives each port its own workers, one per queue, as
	// before affine workers became the default: with them, each of one
	// worker per core reads one queue of every port (link.Multi), and
	// fanout programs send both directions of a connection to the same
	// worker (steer.go). The poller and the ring always work per port.
	AFPacketPerPort bool
	// AFPacketNoSYNQueues turns off the affine workers' SYN queues: by
	// default each port has two queues per worker, and the fanout programs
	// send TCP packets with SYN set to the second, which the worker reads
	// at a lower priority (steer.go, link.NewMultiPrio), so that a SYN
	// flood does not crowd out established connections' packets.
	AFPacketNoSYNQueues bool

	// SloppyTCP is IPVS's sloppy_tcp: a TCP packet other than a SYN (or a
	// RST) that belongs to no connection is scheduled like a SYN instead
	// of dropped, so that a director that takes over a flow mid-way (ECMP
	// moved it, or the director restarted) sends it on; with sh or mh,
	// to the server it had.
	SloppyTCP bool
	// ExpireNodestConn is IPVS's expire_nodest_conn: the first client
	// packet of a connection whose real server was deleted removes its
	// entry (and is dropped, as in IPVS), so that the next one, a
	// retransmission, is scheduled afresh (with SloppyTCP, mid-flow too),
	// instead of every packet being dropped until the entry times out.
	ExpireNodestConn bool
}

// Director is a running load balancer.
type Director struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex // serialises control-plane changes
	conf *service.Config
	// learn takes the destinations of new firewall-mark connections
	// (marks.go); set before the workers start.
	learn chan<- svcKey
	snap  atomic.Pointer[snapshot]
	svcID map[*service.Stats]uint32 // stable service IDs across snapshots
	nextS uint32
	// svcFree are service IDs of deleted services, for reuse (a deleted
	// service's connections are dropped whatever their ID finds: their
	// real server is gone).
	svcFree []uint32
	// gone are deleted real servers whose IDs the registry still holds:
	// released once nothing refers to them (releaseGone).
	gone []goneServer
	// releaseAfter is how long a deleted server with no connection keeps
	// its ID: longer than a worker holds a copy of an entry.
	releaseAfter time.Duration
	scheds       map[*service.Stats]schedEntry

	reg   service.Registry
	ct    *conntrack.Table
	clock *conntrack.Clock // coarse time for the table, ticked once per batch
	// nhByIP finds the next hops an ARP/NDP answer teaches (AF_PACKET).
	nhByIP atomic.Pointer[map[conntrack.Addr][]*nexthop]
	est    *rate.Estimator
	host   hostBackend
	ports  []*port

	drops       [256]atomic.Uint64 // by packet.DropReason
	noConn      atomic.Uint64      // non-SYN TCP for a service with no connection
	noDest      atomic.Uint64      // no available real server
	full        atomic.Uint64      // connection table full
	taken       atomic.Uint64      // a live connection holds the new one's tuple
	tooBig      atomic.Uint64      // larger than the outgoing interface's MTU
	badFrag     atomic.Uint64      // an IPv6 fragment reassembly refused
	icmpLimited atomic.Uint64      // ICMP errors not sent: over the rate
	noNeigh     atomic.Uint64      // next hop not resolved yet
	noRoute     atomic.Uint64      // no route to the real server (yet)
	serverGone  atomic.Uint64      // a packet of a deleted server's connection
	ttl         atomic.Uint64      // TTL exceeded
	pmtuRelayed atomic.Uint64      // a router's "too big" about a tunnelled packet, relayed to its client
	noPeer      atomic.Uint64      // a reply of a learned connection before its client's first packet (sync.go)

	// Connection sync (sync.go): the workers' rings while a sync master
	// runs, what stopped ones lost, and the clients of learned
	// connections to route to.
	nworkers  int
	syncMu    sync.Mutex
	syncRings atomic.Pointer[[]*syncRing]
	syncLost  atomic.Uint64
	peerQ     chan conntrack.Tuple

	// draining are the deleted NAT servers whose connections remain
	// (drain.go); guarded by mu.
	draining []drainingServer

	// tunnelFor builds a tunnelling server's encapsulation (tunnelFor in
	// tunnels.go; tests replace it, having no route).
	tunnelFor func(ds *service.Dest, vips map[conntrack.Addr]bool) (*tunnelDest, error)

	// debug says the logger takes debug records (checked once, at start).
	debug bool

	restoreOnce sync.Once
	restoreErr  error

	// changed is closed, and replaced, each time a new rule table is
	// published (Watch); guarded by changedMu, not mu, so that a watcher
	// never waits for a change being applied to the host.
	changedMu sync.Mutex
	changed   chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

type schedEntry struct {
	name  string
	flags service.SchedFlags
	s     scheduler.Scheduler
}

// hostBackend is the I/O backend plus the host changes it needs: devices to
// read and write, and the kernel state (routes, rules, filters) that makes
// the kernel hand over balanced traffic and keep out of it.
type hostBackend interface {
	ports() []*port
	// apply makes the host match the snapshot; it is called before the
	// snapshot is published and must leave the previous state on error.
	apply(s *snapshot) error
	close() error
}

// New sets the host up and starts the workers with an empty rule table.
// It first removes what a director killed outright left on the host (an
// nftables table, policy rules), so the caller must make sure no other
// director runs in the network namespace (control.Acquire) before.
func New(cfg Config) (*Director, error) {
	if cfg.IO == "" {
		cfg.IO = IOAFPacket
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := newDirector(cfg)
	var (
		h   hostBackend
		err error
	)
	switch cfg.IO {
	case IOAFPacket:
		h, err = openAFPacketHost(d)
	case IOTUN:
		h, err = openTundevHost(d)
	default:
		err = fmt.Errorf("unknown --io %q: want %s or %s", cfg.IO, IOAFPacket, IOTUN)
	}
	if err != nil {
		return nil, err
	}
	if err := d.start(h); err != nil {
		return nil, err
	}
	return d, nil
}

// queuesPerPort is how many workers read each of n ports: as asked, or
// one per core spread over the ports. More readers than cores only adds
// context switches (measured on 2 cores: 2 ports x 1 queue beat 2 x 2 by
// 10-30 % on HTTP requests/s, with less CPU).
func (d *Director) queuesPerPort(n int) int {
	if d.cfg.Workers > 0 {
		return d.cfg.Workers
	}
	if d.affine() {
		// Each worker reads one queue of every port.
		return max(1, runtime.GOMAXPROCS(0))
	}
	return max(1, runtime.GOMAXPROCS(0)/max(1, n))
}

// affine reports whether the workers are affine (Config.AFPacketPerPort).
func (d *Director) affine() bool {
	c := &d.cfg
	return c.IO == IOAFPacket && !c.AFPacketPerPort && !c.AFPacketPoller && !c.AFPacketRing
}

// newDirector makes a Director with an empty table and no host yet.
func newDirector(cfg Config) *Director {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Director{
		cfg:          cfg,
		log:          cfg.Logger,
		conf:         service.NewConfig(),
		svcID:        make(map[*service.Stats]uint32),
		scheds:       make(map[*service.Stats]schedEntry),
		est:          rate.New(),
		clock:        conntrack.NewClock(),
		stop:         make(chan struct{}),
		debug:        cfg.Logger.Enabled(context.Background(), slog.LevelDebug),
		tunnelFor:    tunnelFor,
		releaseAfter: 5 * time.Second,
		changed:      make(chan struct{}),
		peerQ:        make(chan conntrack.Tuple, 256),
	}
	d.ct = conntrack.New(&conntrack.Config{
		Capacity: cfg.Capacity,
		Timeouts: conntrack.Timeouts(d.conf.Timeouts),
		Now:      d.clock.Now,
		Counts: func(dest uint32, dA, dI int32) {
			if st := d.reg.Get(dest); st != nil {
				st.AddConns(dA, dI)
			}
		},
		Persist: func(dest uint32, delta int32) {
			if st := d.reg.Get(dest); st != nil {
				st.AddPersist(delta)
			}
		},
		Gone: func(dest uint32) bool {
			st := d.reg.Get(dest)
			return st == nil || st.Gone()
		},
	})
	return d
}

// start publishes the empty table through host h and starts the workers.
func (d *Director) start(h hostBackend) error {
	d.host = h
	d.ports = h.ports()
	s, err := d.compile(d.conf, nil)
	if err == nil {
		err = h.apply(s)
	}
	if err != nil {
		h.close()
		return err
	}
	d.adopt(s)
	d.snap.Store(s)
	if err := d.startWorkers(); err != nil {
		h.close()
		return err
	}
	d.wg.Add(3)
	go d.housekeeping()
	go d.watchRoutes()
	go d.peerResolver()
	return nil
}

// Close stops the workers and restores the host.
func (d *Director) Close() error {
	select {
	case <-d.stop:
		return nil
	default:
	}
	close(d.stop)
	err := d.restoreHost() // closing the devices unblocks the workers
	d.wg.Wait()
	return err
}

// restoreHost undoes the host changes and closes the devices, once,
// whoever asks first: Close, or a worker that panicked (two may). It holds
// the rule lock, so that no rule change is applying to the host meanwhile.
func (d *Director) restoreHost() error {
	d.restoreOnce.Do(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.restoreErr = d.host.close()
	})
	return d.restoreErr
}

// housekeeping reaps expired connections in bounded steps and feeds the
// rate estimator.
func (d *Director) housekeeping() {
	defer d.wg.Done()
	sweep := time.NewTicker(100 * time.Millisecond)
	defer sweep.Stop()
	est := time.NewTicker(2 * time.Second)
	defer est.Stop()
	var compacted uint64
	for {
		select {
		case <-d.stop:
			return
		case <-sweep.C:
			d.clock.Tick()
			budget := 4096
			if d.ct.UnderPressure() {
				// A flood: reap and cut half-open entries short across
				// the whole table within seconds (about 650 000
				// entries looked at a second), not minutes.
				budget = 65536
			}
			d.ct.Sweep(budget)
		case now := <-est.C:
			d.est.Tick(now)
			d.pruneDrained()
			d.releaseGone()
			// After a flood of connections is gone the table gives its
			// slabs back (conntrack compacts them); hand the memory to
			// the system now rather than when the runtime's scavenger
			// gets to it, so that the director's size returns.
			if c := d.ct.Compactions(); c != compacted {
				compacted = c
				debug.FreeOSMemory()
			}
		}
	}
}

// Config returns the current rule table (ipvsadm.State).
func (d *Director) Config() *service.Config {
	return d.snap.Load().conf
}

// Watch returns the current rule table and a channel that is closed when
// another one is published (a rule change, a reload). Watchers (the BGP
// speaker) call it again after each close; a change may wake them with
// the table they have already seen, never leave them unwoken.
func (d *Director) Watch() (*service.Config, <-chan struct{}) {
	d.changedMu.Lock()
	defer d.changedMu.Unlock()
	return d.Config(), d.changed
}

// notifyChanged wakes the watchers of the rule table (Watch).
func (d *Director) notifyChanged() {
	d.changedMu.Lock()
	defer d.changedMu.Unlock()
	close(d.changed)
	d.changed = make(chan struct{})
}

// ErrUnsupported wraps changes this director refuses.
var ErrUnsupported = errors.New("not supported")

// Update applies fn to a copy of the rule table and publishes it if it and
// the host changes it needs succeed (ipvsadm.State). Nothing changes on
// error.
func (d *Director) Update(fn func(c *service.Config) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.conf.Clone()
	if err := fn(next); err != nil {
		return err
	}
	return d.publishLocked(next)
}

// Replace makes the rule table equal to want, keeping the live state of
// every service and real server that stays (a rules-file reload).
func (d *Director) Replace(want *service.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.publishLocked(service.Carry(d.conf, want))
}

func (d *Director) publishLocked(next *service.Config) error {
	drain := d.drainList(next)
	s, err := d.compile(next, drain)
	if err != nil {
		return err
	}
	if err := d.host.apply(s); err != nil {
		// The client hears of it, but the log must too: the host may be
		// in trouble (a table removed under the director's feet). apply
		// leaves the host as it was, so the previous rules go on.
		err = fmt.Errorf("set up host for new rules: %w", err)
		d.log.Error("rule change failed on the host; the previous rules stay in force, and the host as they need it",
			"err", err, "services", len(next.Services))
		return err
	}
	old := d.conf
	d.conf = next
	d.draining = drain
	d.adopt(s)
	d.reportRoutes(d.snap.Load(), s)
	d.snap.Store(s)
	if next != old {
		d.notifyChanged()
	}
	d.ct.SetTimeouts(conntrack.Timeouts(next.Timeouts))
	now := time.Now()
	for _, st := range next.Removed(old) {
		st.MarkGone()
		d.est.Untrack(&st.Stats)
		d.gone = append(d.gone, goneServer{st, now})
	}
	d.forgetServices(next)
	return nil
}

// forgetServices drops the IDs and schedulers of services that are gone.
func (d *Director) forgetServices(c *service.Config) {
	live := make(map[*service.Stats]bool, len(c.Services))
	for _, s := range c.Services {
		live[s.Stats] = true
	}
	for st, id := range d.svcID {
		if !live[st] {
			d.svcFree = append(d.svcFree, id)
			delete(d.svcID, st)
			delete(d.scheds, st)
			d.est.Untrack(st)
		}
	}
}

// Conns lists the connection table (ipvsadm.State).
func (d *Director) Conns() []service.Conn {
	var out []service.Conn
	d.ct.Walk(func(c *conntrack.Conn, expires time.Duration) bool {
		sc := service.Conn{
			Proto:   c.Proto,
			State:   c.State.String(),
			Expires: expires,
			Client:  netip.AddrPortFrom(c.Client.Netip(), c.CPort),
			Virtual: netip.AddrPortFrom(c.VAddr.Netip(), c.VPort),
			Dest:    netip.AddrPortFrom(c.DAddr.Netip(), c.DPort),
		}
		if c.FWMark != 0 {
			// A firewall-mark template: IPVS keeps it with protocol 0
			// (IP) and the mark in the first word of the virtual address.
			sc.Proto = 0
			m := [4]byte{byte(c.FWMark >> 24), byte(c.FWMark >> 16), byte(c.FWMark >> 8), byte(c.FWMark)}
			if c.Client.Netip().Unmap().Is4() {
				sc.Virtual = netip.AddrPortFrom(netip.AddrFrom4(m), 0)
			} else {
				var a [16]byte
				copy(a[:], m[:])
				sc.Virtual = netip.AddrPortFrom(netip.AddrFrom16(a), 0)
			}
		}
		out = append(out, sc)
		return true
	})
	return out
}

// Rates returns the rate estimates of a service's or real server's
// counters (ipvsadm.State).
func (d *Director) Rates(s *service.Stats) rate.Rates { return d.est.Get(s) }

// Counters are the director's own drop counters, for logs and metrics.
type Counters struct {
	Malformed                                                               map[string]uint64 // by reason
	NoConn, NoDest, Full, Taken, NoNeigh, TTL, TooBig, BadFrag, ICMPLimited uint64
	Conns                                                                   int
}

// Counters returns the drop counters.
func (d *Director) Counters() Counters {
	c := Counters{Malformed: map[string]uint64{}, NoConn: d.noConn.Load(), NoDest: d.noDest.Load(),
		Full: d.full.Load(), Taken: d.taken.Load(), NoNeigh: d.noNeigh.Load(), TTL: d.ttl.Load(), TooBig: d.tooBig.Load(), BadFrag: d.badFrag.Load(), ICMPLimited: d.icmpLimited.Load(), Conns: d.ct.Len()}
	for _, r := range packet.Reasons() {
		if n := d.drops[r].Load(); n > 0 {
			c.Malformed[r.String()] = n
		}
	}
	return c
}

// ZeroRates restarts the rate estimate of zeroed counters (ipvsadm -Z).
func (d *Director) ZeroRates(s *service.Stats) { d.est.Reset(s) }

// Drops returns the packets the director dropped, by reason: the parser's
// reasons for malformed frames, and its own (metrics.Source).
func (d *Director) Drops() map[string]uint64 {
	c := d.Counters()
	m := c.Malformed
	m["no_connection"] = c.NoConn
	m["no_server"] = c.NoDest
	m["table_full"] = c.Full
	m["tuple_in_use"] = c.Taken
	m["no_neighbour"] = c.NoNeigh
	m["no_route"] = d.noRoute.Load()
	m["server_gone"] = d.serverGone.Load()
	m["ttl_exceeded"] = c.TTL
	m["too_big"] = c.TooBig
	m["bad_fragment"] = c.BadFrag
	m["icmp_rate_limited"] = c.ICMPLimited
	// Dropped on the way: a router's "too big" about a tunnelled packet,
	// relayed to its client with the MTU inside the tunnel.
	m["tunnel_too_big"] = d.pmtuRelayed.Load()
	// Replies of connections learned from a sync master that came before
	// their client's first packet: dropped while the client is routed to.
	m["no_client_hop"] = d.noPeer.Load()
	m["socket_queue_full"], m["send_failed"] = d.socketDrops()
	return m
}

// sockStats is a device whose socket counts what it lost (AF_PACKET).
type sockStats interface {
	Stats() (link.Stats, error)
}

// socketDrops sums, over every queue of every port, the frames the kernel
// dropped because a socket's receive queue was full (the workers fell
// behind) and the frames a send was refused.
func (d *Director) socketDrops() (queueFull, sendFailed uint64) {
	for _, pt := range d.ports {
		for _, q := range pt.queues {
			s, ok := q.(sockStats)
			if !ok {
				continue
			}
			// A closed socket's counts are still returned with the error.
			st, _ := s.Stats()
			queueFull += st.KernelDrops
			sendFailed += st.WriteDrops
		}
	}
	return queueFull, sendFailed
}

// ConnCount is the number of entries in the connection table, persistence
// templates included (metrics.Source).
func (d *Director) ConnCount() int { return d.ct.Len() + d.ct.Templates() }
