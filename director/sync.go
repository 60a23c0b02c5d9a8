package director

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"uvs/conntrack"
	"uvs/service"
)

// Connection sync: the director's side of IPVS's sync daemon (package
// syncd owns the daemon, its sockets and the wire format).
//
// As master, the packet path must not wait for the daemon: when the
// connection table says a client packet should send its connection
// (conntrack.SyncPolicy, IPVS's defaults), the worker copies it into a
// bounded single-producer ring of its own, dropping and counting when the
// ring is full; the daemon's goroutine drains every ring (SyncDrain) and
// reads the connection's template then.
//
// As backup, the daemon hands each connection it receives to SyncLearn,
// which finds the service and real server in the current rules (by the
// firewall mark first, then by address, as IPVS does) and puts the
// connection in the table with the forwarding method of this director's
// server; its packets are forwarded from then on like those of any
// connection. The client's link-layer address, which a connection learns
// from its first packet, comes with the first client packet of a learned
// one (conntrack.SetPeer); a real server's reply that comes first has the
// director route to the client (peerResolver) and is dropped meanwhile
// (its sender retransmits).

// SyncConn is a connection, or a persistence template, as the sync daemon
// sends and receives it.
type SyncConn struct {
	Proto    uint8 // service.TCP or service.UDP; 0 for a firewall-mark template
	Template bool
	Client   netip.Addr // a template's is masked with the service's netmask
	CPort    uint16     // 0 for a template
	Virtual  netip.Addr // a firewall-mark template's is its mark, as IPVS keeps it (0.0.0.20)
	VPort    uint16
	Dest     netip.Addr
	DPort    uint16
	FWMark   uint32 // the connection's firewall mark, 0 for address services
	Fwd      service.Fwd
	State    conntrack.State // StateUDP for UDP; a template's StateNone or StateAssured
	// Timeout is how long the receiver keeps the entry: the state's
	// timeout (or the persistence timeout of a template) when the master
	// sends a change, the time left in a full table dump.
	Timeout time.Duration
	// Resync: from (or for) a full table dump: a receiver creates the
	// entry if it lacks it and leaves its own alone otherwise.
	Resync bool
}

// syncRecord is what a worker queues: a copy of the connection, no
// pointers.
type syncRecord struct {
	client, vaddr, daddr conntrack.Addr
	cport, vport, dport  uint16
	proto                uint8
	state                conntrack.State
	fwd                  uint8
	mark                 uint32
	tmpl                 conntrack.TemplateRef
}

// syncRingSize is each worker's ring: at 40 connections a message, 200
// messages' worth, which the daemon drains every 20 ms.
const syncRingSize = 8192

// syncRing is a bounded single-producer (the worker), single-consumer
// (the daemon) queue.
type syncRing struct {
	head    atomic.Uint64 // next to read (consumer)
	_       [56]byte
	tail    atomic.Uint64 // next to write (producer)
	_       [56]byte
	dropped atomic.Uint64
	buf     [syncRingSize]syncRecord
}

func (r *syncRing) push(rec *syncRecord) {
	t := r.tail.Load()
	if t-r.head.Load() >= syncRingSize {
		r.dropped.Add(1)
		return
	}
	r.buf[t%syncRingSize] = *rec
	r.tail.Store(t + 1)
}

// ErrSyncMaster: the director was asked twice to be a sync master.
var ErrSyncMaster = errors.New("sync master already started")

// StartSyncMaster makes the workers queue the connections a sync master
// sends (policy nil: IPVS's defaults), for SyncDrain.
func (d *Director) StartSyncMaster(policy *conntrack.SyncPolicy) error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if d.syncRings.Load() != nil {
		return ErrSyncMaster
	}
	if policy == nil {
		policy = &conntrack.DefaultSyncPolicy
	}
	rings := make([]*syncRing, d.nworkers)
	for i := range rings {
		rings[i] = new(syncRing)
	}
	d.syncRings.Store(&rings)
	return d.ct.SetSync(policy)
}

// StopSyncMaster stops queueing; what is queued is dropped.
func (d *Director) StopSyncMaster() {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	d.ct.SetSync(nil)
	if r := d.syncRings.Swap(nil); r != nil {
		for _, q := range *r {
			d.syncLost.Add(q.dropped.Load())
		}
	}
}

// SyncDropped counts the connections the workers could not queue for the
// sync master: their rings were full.
func (d *Director) SyncDropped() uint64 {
	n := d.syncLost.Load()
	if r := d.syncRings.Load(); r != nil {
		for _, q := range *r {
			n += q.dropped.Load()
		}
	}
	return n
}

// syncPush queues connection c of service v for the sync master (the
// packet path; allocates nothing).
func (w *worker) syncPush(c *conntrack.Conn, v *vsvc) {
	rp := w.d.syncRings.Load()
	if rp == nil || w.id >= len(*rp) {
		return
	}
	if v.svc.OnePacket && c.Proto == service.UDP {
		return // IPVS sends no one-packet connection
	}
	rec := &w.syncRec
	*rec = syncRecord{
		client: c.Client, vaddr: c.VAddr, daddr: c.DAddr,
		cport: c.CPort, vport: c.VPort, dport: c.DPort,
		proto: c.Proto, state: c.State, fwd: c.Fwd, tmpl: c.Tmpl,
	}
	if v.mark {
		rec.mark = v.svc.FWMark
	}
	(*rp)[w.id].push(rec)
}

// SyncDrain hands every queued connection, followed by its template when
// it has one, to fn, and returns how many connections it took. One
// goroutine at a time (the daemon's).
func (d *Director) SyncDrain(fn func(c *SyncConn)) int {
	rp := d.syncRings.Load()
	if rp == nil {
		return 0
	}
	n := 0
	var sc SyncConn
	var tc conntrack.Conn
	for _, q := range *rp {
		h, t := q.head.Load(), q.tail.Load()
		for ; h != t; h++ {
			r := &q.buf[h%syncRingSize]
			sc = SyncConn{
				Proto: r.proto, Client: r.client.Netip(), CPort: r.cport,
				Virtual: r.vaddr.Netip(), VPort: r.vport, Dest: r.daddr.Netip(), DPort: r.dport,
				FWMark: r.mark, Fwd: service.Fwd(r.fwd), State: r.state, Timeout: d.ct.Timeout(r.state),
			}
			tmpl := r.tmpl
			q.head.Store(h + 1)
			n++
			fn(&sc)
			if tmpl == 0 {
				continue
			}
			if to, ok := d.ct.TemplateConn(tmpl, &tc); ok {
				d.templateSync(&tc, to, r.fwd, &sc)
				fn(&sc)
			}
		}
	}
	return n
}

// templateSync fills sc with template tc, which expires to from now (or
// is kept that long), for a connection of forwarding method fwd.
func (d *Director) templateSync(tc *conntrack.Conn, to time.Duration, fwd uint8, sc *SyncConn) {
	*sc = SyncConn{
		Proto: tc.Proto, Template: true, Client: tc.Client.Netip(),
		Virtual: tc.VAddr.Netip(), VPort: tc.VPort, Dest: tc.DAddr.Netip(), DPort: tc.DPort,
		FWMark: tc.FWMark, Fwd: service.Fwd(fwd), State: tc.State, Timeout: to,
	}
	if tc.FWMark != 0 {
		sc.Proto, sc.Virtual = 0, markAddr(tc.FWMark, sc.Client.Is6())
	}
}

// markAddr is a firewall mark as IPVS keeps it in a template's virtual
// address: in the first 32 bits.
func markAddr(mark uint32, v6 bool) netip.Addr {
	m := [4]byte{byte(mark >> 24), byte(mark >> 16), byte(mark >> 8), byte(mark)}
	if !v6 {
		return netip.AddrFrom4(m)
	}
	var a [16]byte
	copy(a[:], m[:])
	return netip.AddrFrom16(a)
}

// SyncWalk calls fn with every connection a master sends (established or
// closing TCP, UDP) and every template, each with the time it has left as
// its Timeout and Resync set: a full table dump for a backup that joins.
// Not for the packet path.
func (d *Director) SyncWalk(fn func(c *SyncConn) bool) {
	s := d.snap.Load()
	var sc SyncConn
	d.ct.Walk(func(c *conntrack.Conn, left time.Duration) bool {
		if left <= 0 {
			return true
		}
		if c.Template {
			d.templateSync(c, left, uint8(destFwd(s, c.Svc, c.Dest)), &sc)
		} else {
			if c.Proto == service.TCP && !syncableState(c.State) {
				return true
			}
			sc = SyncConn{
				Proto: c.Proto, Client: c.Client.Netip(), CPort: c.CPort,
				Virtual: c.VAddr.Netip(), VPort: c.VPort, Dest: c.DAddr.Netip(), DPort: c.DPort,
				Fwd: service.Fwd(c.Fwd), State: c.State, Timeout: left,
			}
			if v := s.svc(c.Svc); v != nil && v.mark {
				sc.FWMark = v.svc.FWMark
			}
		}
		sc.Resync = true
		return fn(&sc)
	})
}

// syncableState: the TCP states IPVS sends.
func syncableState(st conntrack.State) bool {
	switch st {
	case conntrack.StateEstablished, conntrack.StateFinWait, conntrack.StateClose,
		conntrack.StateCloseWait, conntrack.StateTimeWait:
		return true
	}
	return false
}

// destFwd is the forwarding method of real server dest of service svc.
func destFwd(s *snapshot, svc, dest uint32) service.Fwd {
	if v := s.svc(svc); v != nil {
		for _, ds := range v.svc.Dests {
			if ds.ID() == dest {
				return ds.Fwd
			}
		}
	}
	return service.FwdMasq
}

// Why SyncLearn refuses a connection.
var (
	ErrSyncNoService = errors.New("no such virtual service here")
	ErrSyncNoDest    = errors.New("no such real server in the service here")
)

// SyncLearn puts a connection or template a sync master sent into the
// table (see the top of this file): IPVS's backup, except that a
// connection whose service or real server this director lacks is refused
// (ErrSyncNoService, ErrSyncNoDest), where IPVS keeps it unbound.
func (d *Director) SyncLearn(c *SyncConn) (conntrack.LearnResult, error) {
	s := d.snap.Load()
	v6 := c.Client.Is6()
	var v *vsvc
	if c.FWMark != 0 {
		v = s.byMark[markKey{c.FWMark, v6}]
	}
	if v == nil && !(c.Template && c.Proto == 0) {
		v = s.service(c.Proto, conntrack.AddrFrom(c.Virtual), c.VPort)
	}
	if v == nil {
		return 0, fmt.Errorf("%w: %s", ErrSyncNoService, syncSvcName(c))
	}
	var ds *service.Dest
	for _, port := range [2]uint16{c.DPort, 0} {
		for _, x := range v.svc.Dests {
			if x.Addr == c.Dest && x.Port == port && !x.Gone() {
				ds = x
				break
			}
		}
		if ds != nil {
			break
		}
	}
	if ds == nil {
		return 0, fmt.Errorf("%w: %s in %s", ErrSyncNoDest, netip.AddrPortFrom(c.Dest, c.DPort), syncSvcName(c))
	}
	timeout := c.Timeout
	if timeout <= 0 {
		// A version 0 message carries none: the state's own, as IPVS
		// takes (3 minutes for a template).
		timeout = d.ct.Timeout(c.State)
		if c.Template {
			timeout = 3 * time.Minute
		}
	}
	if c.Template {
		k := conntrack.TemplateKey{Proto: v.svc.Proto, Client: conntrack.AddrFrom(c.Client),
			VAddr: conntrack.AddrFrom(c.Virtual), VPort: v.svc.Port}
		if v.mark {
			k = conntrack.TemplateKey{FWMark: v.svc.FWMark, Client: conntrack.AddrFrom(c.Client)}
		}
		tp := conntrack.Template{Svc: v.id, Dest: ds.ID(), DAddr: conntrack.AddrFrom(ds.Addr), DPort: c.DPort, Timeout: v.svc.Timeout}
		made, err := d.ct.LearnTemplate(&k, &tp, timeout, c.State == conntrack.StateAssured, c.Resync)
		if made {
			return conntrack.LearnCreated, err
		}
		return conntrack.LearnUpdated, err
	}
	cn := conntrack.Conn{
		Proto: c.Proto, Client: conntrack.AddrFrom(c.Client), CPort: c.CPort,
		VAddr: conntrack.AddrFrom(c.Virtual), VPort: c.VPort,
		DAddr: conntrack.AddrFrom(c.Dest), DPort: c.DPort,
		Svc: v.id, Dest: ds.ID(), Fwd: uint8(ds.Fwd), InputOnly: ds.Fwd != service.FwdMasq,
		State: c.State,
	}
	res, err := d.ct.Learn(&cn, timeout, c.Resync)
	if err == nil && v.mark && res == conntrack.LearnCreated {
		d.learned(c.Proto, cn.VAddr, c.VPort)
	}
	return res, err
}

func syncSvcName(c *SyncConn) string {
	if c.FWMark != 0 {
		return fmt.Sprintf("FWM %d", c.FWMark)
	}
	p := "TCP"
	if c.Proto == service.UDP {
		p = "UDP"
	}
	return p + " " + netip.AddrPortFrom(c.Virtual, c.VPort).String()
}

// peerRequest asks the peer resolver where the client of a learned NAT
// connection is: its server answered before the client sent anything
// through this director.
func (w *worker) peerRequest(c *conntrack.Conn) {
	w.d.noPeer.Add(1)
	select {
	case w.d.peerQ <- c.Orig():
	default:
	}
}

// peerResolver routes to the clients peerRequest names and records the
// next hop's link-layer address in their connections, from the kernel's
// neighbour table; one it lacks it has the kernel resolve, for the next
// request (the server retransmits).
func (d *Director) peerResolver() {
	defer d.wg.Done()
	recent := make(map[conntrack.Tuple]time.Time)
	for {
		select {
		case <-d.stop:
			return
		case tp := <-d.peerQ:
			now := time.Now()
			if t, ok := recent[tp]; ok && now.Sub(t) < 200*time.Millisecond {
				continue
			}
			if len(recent) > 4096 {
				clear(recent)
			}
			recent[tp] = now
			if err := d.resolvePeer(&tp); err != nil && d.debug {
				d.log.Debug("client of a learned connection not resolved yet", "client", tp.Src.Netip(), "err", err)
			}
		}
	}
}

func (d *Director) resolvePeer(tp *conntrack.Tuple) error {
	client := tp.Src.Netip()
	routes, err := netlink.RouteGet(net.IP(client.AsSlice()))
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("no route to %s: %v", client, err)
	}
	r := routes[0]
	pt := d.portByIndex(r.LinkIndex)
	if pt == nil || !pt.ether {
		return fmt.Errorf("route to %s leaves by interface %d, not served", client, r.LinkIndex)
	}
	hop := client
	if g, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		hop = g.Unmap()
	}
	if mac, ok := kernelNeighbours(pt.index, hop.Is6())[hop]; ok {
		d.ct.SetPeer(tp, [6]byte(mac), int32(pt.index))
		return nil
	}
	fam := netlink.FAMILY_V4
	if hop.Is6() {
		fam = netlink.FAMILY_V6
	}
	n := &netlink.Neigh{LinkIndex: pt.index, Family: fam, IP: net.IP(hop.AsSlice()), State: netlink.NUD_NONE, Flags: netlink.NTF_USE}
	if err := netlink.NeighSet(n); err != nil {
		return fmt.Errorf("resolve %s on %s: %w", hop, pt.name, err)
	}
	return errors.New("next hop not in the neighbour table yet")
}
