package director

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"uvs/conntrack"
	"uvs/forward/nat"
	"uvs/link"
	"uvs/packet"
	"uvs/reasm"
	"uvs/scheduler"
	"uvs/service"
)

// The pipeline, in the order a packet meets it:
//
//  1. worker.run: a batch of frames is read from one queue of one port.
//  2. worker.frame: the virtio-net header (if any) and the frame are
//     parsed; malformed frames are counted by reason and dropped.
//  3. ARP and NDP for a virtual address are answered; answers from next
//     hops are learned (neigh.go).
//  4. worker.ip: the connection is looked up by its tuple in either
//     direction; a first packet for a virtual service is scheduled and
//     inserted; ICMP errors are matched through the packet they quote.
//  5. The NAT rewrite (forward/nat) and, on Ethernet ports, the new
//     link-layer header for the next hop.
//  6. worker.flush: every port's pending frames are written in one batch.

const (
	headroom = 64 // room to prepend an outer header in place (tunnels)
	maxFrame = 65535 + 14
	bufSize  = headroom + link.VnetHdrLen + maxFrame
	scratchN = 8 // generated replies (ARP, ICMP) per batch
)

// port is one device the director serves.
type port struct {
	dev    link.Device   // the first queue, for Info
	queues []link.Device // one reader per worker
	// wmu serialises writes per queue: a device takes one Write at a
	// time, and workers of every port write to every port.
	wmu   []sync.Mutex
	index int // interface index
	name  string
	mac   [6]byte
	ether bool
	vnet  bool
	pos   int // position in Director.ports
	// mtu is the interface's MTU, followed by the link watcher: what a
	// packet (or each segment of a GSO packet) sent here may carry.
	mtu atomic.Int32
}

// worker reads one queue of one port, or with affine workers one queue of
// every port, and handles what it reads.
type worker struct {
	d  *Director
	id int
	in *port
	q  link.Device
	// multi, when set, reads one queue of every port (affine workers);
	// ins[i] is the port of its queue i, and in follows each batch.
	multi *link.Multi
	ins   []*port
	bufs  [][]byte
	lens  []int
	pend  [][][]byte // per port: frames to write, sliced from bufs or scratch
	scr   [][]byte
	nscr  int

	// IPv6 fragments, reassembled here (the kernel does IPv4's): the
	// table, made at the first fragment, and buffers for the datagrams a
	// batch completes. fragMax is the longest fragment of the datagram
	// being handled, 0 when it came whole.
	reasm   *reasm.Table
	rbufs   [][]byte
	nrbuf   int
	fragMax int

	// The worker's share of the ICMP errors the director may send (see
	// icmpAllowed): a token bucket, started at the first error.
	icmpEvery int64 // ns per token; 0: the whole rate (one worker)
	icmpBurst int
	icmp      bucket
	icmpPeers [icmpPeerSlots]icmpPeer

	p    packet.Parsed
	tp   conntrack.Tuple
	c    conntrack.Conn
	flow scheduler.Flow
	vh   link.VnetHdr
	tk   conntrack.TemplateKey
	tmpl conntrack.TemplateRef // the template pick used, if any
}

func (d *Director) startWorkers() error {
	if d.affine() {
		return d.startAffineWorkers()
	}
	var ws []*worker
	for _, pt := range d.ports {
		for _, q := range pt.queues {
			w := &worker{d: d, id: len(ws), in: pt, q: q}
			w.alloc(q.BatchSize())
			ws = append(ws, w)
		}
	}
	d.launch(ws)
	return nil
}

// launch starts the workers, each with its share of the ICMP error rate.
func (d *Director) launch(ws []*worker) {
	for _, w := range ws {
		w.setICMPShare(len(ws))
		d.wg.Add(1)
		go w.run()
	}
}

// startAffineWorkers starts one worker per queue index, each reading that
// queue of every port (link.Multi); the fanout programs (steer.go) send
// both directions of a connection to the same queue index.
func (d *Director) startAffineWorkers() error {
	nq := len(d.ports[0].queues)
	ws := make([]*worker, 0, nq)
	for k := 0; k < nq; k++ {
		w := &worker{d: d, id: k, in: d.ports[0]}
		var qs []*link.AFPacket
		for _, pt := range d.ports {
			if len(pt.queues) != nq {
				return fmt.Errorf("affine workers: port %s has %d queues, port %s %d", pt.name, len(pt.queues), d.ports[0].name, nq)
			}
			q, ok := pt.queues[k].(*link.AFPacket)
			if !ok {
				return fmt.Errorf("affine workers: port %s queue %d is not AF_PACKET", pt.name, k)
			}
			qs = append(qs, q)
			w.ins = append(w.ins, pt)
		}
		m, err := link.NewMulti(qs)
		if err != nil {
			return err
		}
		w.multi = m
		w.alloc(qs[0].BatchSize())
		ws = append(ws, w)
	}
	d.launch(ws)
	return nil
}

// alloc makes the worker's buffers for batches of n frames.
func (w *worker) alloc(n int) {
	w.bufs = make([][]byte, n)
	for i := range w.bufs {
		w.bufs[i] = make([]byte, bufSize)
	}
	w.lens = make([]int, n)
	w.pend = make([][][]byte, len(w.d.ports))
	for i := range w.pend {
		w.pend[i] = make([][]byte, 0, n+scratchN)
	}
	w.scr = make([][]byte, scratchN)
	for i := range w.scr {
		w.scr[i] = make([]byte, headroom+link.VnetHdrLen+2048)
	}
}

func (w *worker) run() {
	defer w.d.wg.Done()
	defer func() {
		// A bug here must not leave the host diverting traffic to a dead
		// process: undo the host changes, then crash as before.
		if r := recover(); r != nil {
			w.d.log.Error("worker panic; restoring the host and exiting", "port", w.in.name, "panic", r)
			w.d.host.close()
			panic(r)
		}
	}()
	for {
		var n int
		var err error
		if w.multi != nil {
			var from int
			n, from, err = w.multi.Read(w.bufs, w.lens, headroom)
			w.in = w.ins[from]
		} else {
			n, err = w.q.Read(w.bufs, w.lens, headroom)
		}
		if err != nil {
			select {
			case <-w.d.stop:
			default:
				w.d.log.Error("read failed; worker stops", "port", w.in.name, "err", err)
			}
			return
		}
		w.d.clock.Tick()
		s := w.d.snap.Load()
		w.nscr, w.nrbuf = 0, 0
		for i := 0; i < n; i++ {
			w.frame(s, w.bufs[i][:headroom+w.lens[i]])
		}
		w.flush()
	}
}

// flush writes every port's pending frames.
func (w *worker) flush() {
	for i, fr := range w.pend {
		if len(fr) == 0 {
			continue
		}
		pt := w.d.ports[i]
		if err := pt.write(w.id, fr); err != nil {
			w.d.log.Debug("write", "port", pt.name, "err", err)
		}
		clear(fr)
		w.pend[i] = fr[:0]
	}
}

// write sends frames on the queue writer picks (workers spread over the
// queues by their id), holding that queue's write lock.
func (pt *port) write(writer int, frames [][]byte) error {
	if len(pt.queues) == 0 {
		_, err := pt.dev.Write(frames, headroom)
		return err
	}
	i := writer % len(pt.queues)
	pt.wmu[i].Lock()
	_, err := pt.queues[i].Write(frames, headroom)
	pt.wmu[i].Unlock()
	return err
}

// send queues buf (headroom included) for pt.
func (w *worker) send(pt *port, buf []byte) {
	w.pend[pt.pos] = append(w.pend[pt.pos], buf)
}

// scratch returns a buffer for a generated reply, or nil when the batch
// has used them all (the reply is then skipped; it is best effort).
func (w *worker) scratch() []byte {
	if w.nscr == len(w.scr) {
		return nil
	}
	b := w.scr[w.nscr]
	w.nscr++
	return b
}

// frame handles one frame; buf is headroom + [vnet header] + packet.
func (w *worker) frame(s *snapshot, buf []byte) {
	d := w.d
	pkt := buf[headroom:]
	partial := false
	if w.in.vnet {
		if len(pkt) < link.VnetHdrLen {
			d.drops[packet.TooShort].Add(1)
			return
		}
		w.vh.Decode(pkt)
		partial = w.vh.Flags&link.VnetHdrFNeedsCsum != 0
		pkt = pkt[link.VnetHdrLen:]
	}
	p := &w.p
	if r := p.Decode(pkt, w.in.ether); r != 0 {
		d.drops[r].Add(1)
		return
	}
	switch {
	case p.EtherType == packet.EtherTypeARP:
		w.arp(s)
		return
	case p.IPVersion == 0:
		return
	case p.Proto == packet.ProtoICMPv6 && (p.ICMPType == packet.ICMPv6NeighborSolicit || p.ICMPType == packet.ICMPv6NeighborAdvert):
		w.ndp(s)
		return
	}
	if p.Inner.L3 >= 0 {
		w.icmpError(s, buf, partial)
		return
	}
	if p.Fragment {
		// Datagrams are balanced whole, as IPVS reassembles them. With
		// AF_PACKET, IPv4 fragments come reassembled (link's Defrag);
		// IPv6 ones are reassembled here. With TUN, both are reassembled
		// here: only fragments to a VIP or from a NAT real server are
		// diverted (host_tun.go), and the kernel, when its own
		// reassembly (conntrack's) ran first, cuts the datagram again on
		// its way into the TUN.
		// Only TCP and UDP: a real server's ICMP errors and echoes are
		// diverted into the TUN too (by protocol, which fragments
		// show), and the kernel forwards no whole IPv6 packet larger
		// than the way out; handed back as they came, they go on.
		l4 := p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP
		if !w.in.ether && l4 && (p.IPVersion == 4 || p.FragHdr >= 0) ||
			p.IPVersion == 6 && w.in.ether && p.FragHdr >= 0 && w.balanced6(s) {
			w.fragment(s)
			return
		}
		w.passThrough(buf)
		return
	}
	w.ip(s, buf, partial)
}

// balanced6 reports whether the current IPv6 fragment may be part of a
// balanced datagram: to a VIP, or from a NAT real server. The rest is the
// host's, and the kernel has its copy.
func (w *worker) balanced6(s *snapshot) bool {
	var a conntrack.Addr
	copy(a[:], w.p.Dst())
	if s.vips[a] {
		return true
	}
	copy(a[:], w.p.Src())
	return s.natRS[a]
}

// rbufsPerBatch bounds the datagrams one batch of frames completes.
const rbufsPerBatch = 4

// fragment adds the current packet, a fragment, to the worker's
// reassembly; the datagram it completes goes on as one packet.
func (w *worker) fragment(s *snapshot) {
	p := &w.p
	if w.reasm == nil {
		w.reasm = reasm.NewTable(reasm.Config{})
		w.rbufs = make([][]byte, rbufsPerBatch)
		for i := range w.rbufs {
			w.rbufs[i] = make([]byte, bufSize)
		}
	}
	if w.nrbuf == len(w.rbufs) {
		// The batch has used every buffer for datagrams waiting to be
		// sent: send what is pending now, which frees them all.
		w.flush()
		w.nrbuf = 0
	}
	b := w.rbufs[w.nrbuf] // where a completed datagram goes
	off := w.frameOff()
	l2 := 0 // the link-layer header, none on TUN
	if p.L2 >= 0 {
		l2 = p.L3 - p.L2
	}
	var n, maxFrag int
	var err error
	if p.IPVersion == 4 {
		n, maxFrag, err = w.reasm.Add4(p.Buf[p.L3:p.End()], w.d.clock.Now(), b[off+l2:])
	} else {
		n, maxFrag, err = w.reasm.Add(p.Buf[p.L3:p.End()], p.FragHdr-p.L3, p.FragNH-p.L3, w.d.clock.Now(), b[off+l2:])
	}
	if err != nil {
		w.d.badFrag.Add(1)
		return
	}
	if n == 0 {
		return
	}
	w.nrbuf++
	copy(b[off:], p.Buf[p.L3-l2:p.L3])
	clear(b[headroom:off])
	w.vh = link.VnetHdr{}
	frame := b[:off+l2+n]
	if r := p.Decode(frame[off:], w.in.ether); r != packet.OK || p.Fragment {
		w.d.badFrag.Add(1)
		return
	}
	w.fragMax = maxFrag
	if p.Proto != service.TCP && p.Proto != service.UDP {
		// Nothing of ours: on AF_PACKET the kernel has the fragments;
		// the TUN hands the datagram back.
		w.passThrough(frame)
	} else {
		w.ip(s, frame, false)
	}
	w.fragMax = 0
}

// tuple fills w.tp from the packet's own addresses and ports.
func (w *worker) tuple() {
	p := &w.p
	w.tp = conntrack.Tuple{SrcPort: p.SrcPort, DstPort: p.DstPort, Proto: p.Proto}
	setAddr(&w.tp.Src, p.Src())
	setAddr(&w.tp.Dst, p.Dst())
}

// setAddr stores a 4- or 16-byte address in the table's form.
func setAddr(a *conntrack.Addr, b []byte) {
	if len(b) == 4 {
		*a = conntrack.Addr{10: 0xff, 11: 0xff}
		copy(a[12:], b)
		return
	}
	copy(a[:], b)
}

// addrBytes returns a's bytes in the family of the packet being rewritten.
func addrBytes(a *conntrack.Addr, v4 bool) []byte {
	if v4 {
		return a[12:16]
	}
	return a[:]
}

func (w *worker) ip(s *snapshot, buf []byte, partial bool) {
	d := w.d
	p := &w.p
	if p.Proto != service.TCP && p.Proto != service.UDP {
		w.passThrough(buf)
		return
	}
	w.tuple()
	dir, ok := d.ct.Lookup(&w.tp, p.TCPFlags, &w.c)
	if !ok {
		w.newConn(s, buf, partial)
		return
	}
	c := &w.c
	st := d.reg.Get(c.Dest)
	v := s.svc(c.Svc)
	if st == nil || st.Gone() || v == nil {
		// The real server or its service was deleted: its connections
		// stop, as in IPVS.
		d.ct.Remove(&w.tp)
		return
	}
	v4 := p.IPVersion == 4
	size := uint64(len(p.Buf) - p.L3)
	if dir == conntrack.Orig {
		if !w.ttlOK() {
			return
		}
		st.Stats.AddIn(w.id, 1, size)
		v.svc.Stats.AddIn(w.id, 1, size)
		pt, mac, ok := w.serverHop(s, c.Dest)
		if !ok || pt.ether && !w.fits(pt, buf) {
			return
		}
		nat.DNAT(p, addrBytes(&c.DAddr, v4), c.DPort, partial)
		w.forward(pt, mac, buf)
		return
	}
	if !w.ttlOK() {
		return
	}
	st.Stats.AddOut(w.id, 1, size)
	v.svc.Stats.AddOut(w.id, 1, size)
	pt, mac, ok := w.clientHop(c)
	if !ok || pt.ether && !w.fits(pt, buf) {
		return
	}
	nat.SNAT(p, addrBytes(&c.VAddr, v4), c.VPort, partial)
	w.forward(pt, mac, buf)
}

// ttlOK drops a packet whose TTL or hop limit would run out here.
func (w *worker) ttlOK() bool {
	if w.p.TTL() <= 1 {
		w.d.ttl.Add(1)
		return false
	}
	return true
}

// newConn handles a packet that belongs to no connection.
func (w *worker) newConn(s *snapshot, buf []byte, partial bool) {
	d := w.d
	p := &w.p
	v := s.service(p.Proto, w.tp.Dst, p.DstPort)
	if v == nil {
		if !w.in.ether && w.fragMax > 0 && !s.natReply(p.Proto, w.tp.Src, p.SrcPort) {
			// Diverted as fragments to a VIP or from a NAT real server,
			// yet to no service's port and no reply: the host's own.
			w.passThrough(buf)
			return
		}
		if !w.in.ether {
			// Diverted into the TUN yet neither a connection's nor a
			// service's: a real server's packet for a connection we no
			// longer know. Handing it back would let the kernel forward
			// it un-NATed.
			d.noConn.Add(1)
		}
		return
	}
	if p.Proto == service.TCP && p.TCPFlags&(packet.TCPSyn|packet.TCPAck|packet.TCPRst) != packet.TCPSyn {
		// Only a SYN opens a TCP connection; anything else for a
		// connection we do not know is dropped (IPVS leaves it to the
		// local stack, which would answer with a reset).
		d.noConn.Add(1)
		return
	}
	dest := w.pick(v)
	if dest == nil {
		d.noDest.Add(1)
		w.unreachable()
		return
	}
	c := &w.c
	*c = conntrack.Conn{
		Proto:  p.Proto,
		Client: w.tp.Src, CPort: p.SrcPort,
		VAddr: w.tp.Dst, VPort: p.DstPort,
		DPort: dest.Port,
		Svc:   v.id,
		Dest:  dest.ID(),
		Fwd:   uint8(dest.Fwd),
		Tmpl:  w.tmpl,
	}
	if c.DPort == 0 {
		c.DPort = p.DstPort // port-zero service: the packet's own port
	}
	c.DAddr = conntrack.AddrFrom(dest.Addr)
	if w.in.ether {
		copy(c.PeerMAC[:], p.Buf[p.L2+6:p.L2+12])
	}
	c.PeerIf = int32(w.in.index)
	if err := d.ct.Insert(c, p.TCPFlags); err != nil {
		if errors.Is(err, conntrack.ErrFull) {
			d.full.Add(1)
		} else {
			// A live connection holds the tuple: through NAT, another
			// virtual service's connection from the same client port to
			// the same real server, which the server could not tell
			// from this one.
			d.taken.Add(1)
		}
		return
	}
	dest.Stats.AddConn(w.id)
	v.svc.Stats.AddConn(w.id)
	if !w.ttlOK() {
		return
	}
	size := uint64(len(p.Buf) - p.L3)
	dest.Stats.AddIn(w.id, 1, size)
	v.svc.Stats.AddIn(w.id, 1, size)
	pt, mac, ok := w.serverHop(s, c.Dest)
	if !ok || pt.ether && !w.fits(pt, buf) {
		return
	}
	nat.DNAT(p, addrBytes(&c.DAddr, p.IPVersion == 4), c.DPort, partial)
	w.forward(pt, mac, buf)
}

// pick schedules a new connection, through the persistence template when
// the service is persistent.
func (w *worker) pick(v *vsvc) *service.Dest {
	p := &w.p
	w.flow = scheduler.Flow{Proto: p.Proto, SrcPort: p.SrcPort, DstPort: p.DstPort,
		Src: w.tp.Src.Netip(), Dst: w.tp.Dst.Netip()}
	w.tmpl = 0
	if v.svc.Persistent {
		return w.persistent(v)
	}
	return v.sched.Schedule(&w.flow)
}

// icmpError forwards an ICMP error about a tracked connection, rewritten.
func (w *worker) icmpError(s *snapshot, buf []byte, partial bool) {
	d := w.d
	p := &w.p
	in := &p.Inner
	// The quoted packet went the other way: swap it to get the tuple of
	// the direction this error travels.
	w.tp = conntrack.Tuple{SrcPort: in.DstPort, DstPort: in.SrcPort, Proto: in.Proto}
	setAddr(&w.tp.Src, p.InnerDst())
	setAddr(&w.tp.Dst, p.InnerSrc())
	dir, ok := d.ct.Peek(&w.tp, &w.c)
	if !ok {
		w.passThrough(buf)
		return
	}
	c := &w.c
	v4 := p.IPVersion == 4
	if !w.ttlOK() {
		return
	}
	// ICMP errors are not checked against the MTU: they are short (at
	// most 576 bytes for IPv4, 1280 for IPv6, as the minimum MTUs).
	if dir == conntrack.Orig {
		if pt, mac, ok := w.serverHop(s, c.Dest); ok {
			nat.ICMPToServer(p, addrBytes(&c.DAddr, v4), c.DPort)
			w.forward(pt, mac, buf)
		}
		return
	}
	if pt, mac, ok := w.clientHop(c); ok {
		nat.ICMPToClient(p, addrBytes(&c.VAddr, v4), c.VPort)
		w.forward(pt, mac, buf)
	}
}

// Limits on the ICMP errors the director generates, as Linux's defaults
// (net.ipv4.icmp_msgs_per_sec, icmp_msgs_burst), shared by the workers:
// "port unreachable" answers a SYN whose source anyone can forge, so
// unlimited it would reflect a flood at a victim. "Fragmentation needed"
// and "packet too big" are not limited, as in Linux: path MTU discovery
// depends on them.
const (
	icmpPerSecond = 1000
	icmpBurstMax  = 50
)

// Per destination, as Linux's per-peer limit (net.ipv4.icmp_ratelimit,
// 1 s, with a burst of 6): one victim of forged SYNs gets about one error
// a second, not the director's whole rate. Each worker keeps its peers in
// a small table indexed by address; a peer that takes another's slot
// starts with a full burst (the global limit still holds).
const (
	icmpPeerSlots = 256
	icmpPeerEvery = int64(time.Second)
	icmpPeerBurst = 6
)

type icmpPeer struct {
	addr conntrack.Addr
	bucket
}

// bucket is a token bucket, full when first used.
type bucket struct {
	tok  int
	last int64 // ns; 0 before the first use
}

// refill adds one token per every ns since the last, up to burst.
func (b *bucket) refill(now, every int64, burst int) {
	switch {
	case b.last == 0:
		b.tok, b.last = burst, max(now, 1)
	case now-b.last >= every:
		add := (now - b.last) / every
		b.tok = int(min(int64(b.tok)+add, int64(burst)))
		b.last += add * every
	}
}

// take refills b, then takes a token if there is one.
func (b *bucket) take(now, every int64, burst int) bool {
	b.refill(now, every, burst)
	if b.tok == 0 {
		return false
	}
	b.tok--
	return true
}

// peerAllowed takes a token from the bucket of the error's destination
// (the current packet's source).
func (w *worker) peerAllowed(now int64) bool {
	var a conntrack.Addr
	copy(a[:], w.p.Src())
	h := uint64(14695981039346656037)
	for _, b := range a {
		h = (h ^ uint64(b)) * 1099511628211
	}
	pe := &w.icmpPeers[h%icmpPeerSlots]
	if pe.addr != a {
		*pe = icmpPeer{addr: a}
	}
	return pe.take(now, icmpPeerEvery, icmpPeerBurst)
}

// setICMPShare gives the worker its share of the ICMP error rate when
// there are n workers.
func (w *worker) setICMPShare(n int) {
	n = max(n, 1)
	w.icmpEvery = int64(time.Second) * int64(n) / icmpPerSecond
	w.icmpBurst = max(icmpBurstMax/n, 1)
}

// icmpAllowed takes a token for one ICMP error, or counts it suppressed.
func (w *worker) icmpAllowed() bool {
	every, burst := w.icmpEvery, w.icmpBurst
	if every == 0 {
		every, burst = int64(time.Second)/icmpPerSecond, icmpBurstMax
	}
	// A token of the shared limit is only spent when the destination's
	// own limit lets the answer go: one flooded victim cannot use it up.
	now := w.d.clock.Now()
	w.icmp.refill(now, every, burst)
	if w.icmp.tok == 0 || !w.peerAllowed(now) {
		w.d.icmpLimited.Add(1)
		return false
	}
	w.icmp.tok--
	return true
}

// unreachable answers the current packet with ICMP port unreachable from
// the virtual address, as IPVS does when a service has no server.
func (w *worker) unreachable() {
	if !w.icmpAllowed() {
		return
	}
	w.answer(func(dst []byte) int { return packet.BuildUnreachable(dst, &w.p) })
}

// answer sends back out of the port the current packet came in by a
// packet build writes (from the frame on; 0 for none), in a scratch
// buffer after a blank virtio-net header.
func (w *worker) answer(build func(dst []byte) int) {
	b := w.scratch()
	if b == nil {
		return
	}
	off := w.frameOff()
	clear(b[headroom:off])
	if n := build(b[off:]); n > 0 {
		w.send(w.in, b[:off+n])
	}
}

// frameOff is where the frame starts in a buffer of the current port:
// after the headroom and, if the port has one, the virtio-net header.
func (w *worker) frameOff() int {
	if w.in.vnet {
		return headroom + link.VnetHdrLen
	}
	return headroom
}

// serverHop finds where a packet for real server dest goes: the port and
// the next hop's MAC. With TUN the kernel routes it, back out of the port
// it came in by. ok is false, and the drop counted, when the next hop is
// not resolved (yet).
func (w *worker) serverHop(s *snapshot, dest uint32) (pt *port, mac [6]byte, ok bool) {
	if !w.in.ether {
		return w.in, mac, true
	}
	var nh *nexthop
	if int(dest) < len(s.nh) {
		nh = s.nh[dest]
	}
	if nh == nil {
		w.d.noNeigh.Add(1)
		return nil, mac, false
	}
	mac, ok = nh.get()
	if !ok {
		w.d.noNeigh.Add(1)
		nh.kick()
		return nil, mac, false
	}
	return nh.port, mac, true
}

// clientHop finds where a packet for connection c's client goes: back the
// way the connection came.
func (w *worker) clientHop(c *conntrack.Conn) (pt *port, mac [6]byte, ok bool) {
	if !w.in.ether {
		return w.in, mac, true
	}
	pt = w.d.portByIndex(int(c.PeerIf))
	return pt, c.PeerMAC, pt != nil
}

// forward sends the rewritten packet in buf out of pt, to mac on Ethernet.
func (w *worker) forward(pt *port, mac [6]byte, buf []byte) {
	if pt.ether {
		w.setEther(pt, mac)
	} else if w.fragMax > 0 {
		w.tunFrag(buf)
	}
	w.send(pt, buf)
}

// fits reports whether the current packet in buf, or each segment of it
// when it is a GSO packet, fits pt's MTU. A packet that does not is
// dropped and counted, and its sender told (ICMP "fragmentation needed",
// ICMPv6 "packet too big", as a router and IPVS do), unless it is IPv4
// without DF: a router fragments that, and so does the director for UDP
// (a datagram the kernel reassembled for it, or one too large for the
// way out), by sending it as a UFO packet that the kernel cuts into
// fragments; other such packets are dropped and counted. With TUN the
// kernel forwards the packet and checks it; its ICMP error quotes the
// packet as rewritten, which the sender cannot match (not handled).
func (w *worker) fits(pt *port, buf []byte) bool {
	if !pt.ether {
		return true
	}
	p := &w.p
	mtu := int(pt.mtu.Load())
	n := p.End() - p.L3
	gso := w.in.vnet && w.vh.GSOType&^link.GSOECN != link.GSONone
	if gso && p.Payload >= 0 {
		n = p.Payload - p.L3 + int(w.vh.GSOSize)
	}
	limit := mtu
	if w.fragMax > 0 {
		// Reassembled here: it leaves in fragments no larger than it
		// came in (the sender's path MTU), as the kernel's reassembly
		// for netfilter does.
		limit = min(mtu, w.fragMax)
	}
	if n <= limit {
		return true
	}
	// A GSO packet is not one datagram (UDP GSO segments are the
	// sender's datagrams): cutting it as one would glue them together.
	ufo := p.Proto == packet.ProtoUDP && p.L4 >= 0 && !p.Fragment && !gso && w.in.vnet && pt.vnet &&
		limit-(p.L4-p.L3)-8 >= 8 // room for data in each fragment
	if w.fragMax > 0 {
		if ufo {
			w.ufo(buf, limit)
			return true
		}
		if n <= mtu {
			return true // larger than its fragments, but the way out takes it whole
		}
		if w.fragMax <= mtu {
			// Its fragments would fit: "packet too big" would tell the
			// sender nothing (RFC 8201). The kernel would cut it again;
			// only UDP is cut here.
			w.d.tooBig.Add(1)
			return false
		}
	}
	if p.IPVersion == 4 && !packet.IPv4(p.Buf[p.L3:]).DontFragment() {
		if ufo {
			w.ufo(buf, mtu)
			return true
		}
		w.d.tooBig.Add(1)
		return false
	}
	w.d.tooBig.Add(1)
	w.answer(func(dst []byte) int { return packet.BuildFragNeeded(dst, p, mtu) })
	return false
}

// ufo marks the UDP datagram in buf (vnet header first) for the kernel to
// send as fragments of at most mtu bytes: UDP fragmentation offload, which
// the kernel does in software for packet sockets, inserting the fragment
// header for IPv6. It computes the UDP checksum over the whole datagram
// as it does so.
func (w *worker) ufo(buf []byte, mtu int) {
	p := &w.p
	hl := p.L4 - p.L3
	if p.IPVersion == 6 {
		hl += 8 // the fragment header
	}
	h := link.VnetHdr{GSOType: link.GSOUDP, HdrLen: uint16(p.L4 + packet.UDPLen),
		GSOSize: uint16((mtu - hl) &^ 7)} // fragment payloads are multiples of 8
	h.Encode(buf[headroom:])
}

// tunFrag marks a UDP datagram reassembled here, larger than the
// fragments it came in, to leave the TUN as fragments of that size again
// (UFO), for IPv6 only: the kernel does not fragment a forwarded IPv6
// packet, and it cuts an IPv4 one (without DF, as a reassembled datagram
// is) to the outgoing link's MTU itself.
func (w *worker) tunFrag(buf []byte) {
	p := &w.p
	if w.fragMax == 0 || p.IPVersion != 6 || p.Proto != packet.ProtoUDP || p.L4 < 0 || !w.in.vnet ||
		p.End()-p.L3 <= w.fragMax || w.fragMax-(p.L4-p.L3)-8-8 < 8 {
		return
	}
	w.ufo(buf, w.fragMax)
}

// setEther rewrites the Ethernet addresses for the next hop.
func (w *worker) setEther(pt *port, dst [6]byte) {
	e := w.p.Buf[w.p.L2:]
	copy(e[0:6], dst[:])
	copy(e[6:12], pt.mac[:])
}

// passThrough is for packets that are not ours. On AF_PACKET the kernel
// has its own copy and acts on it; on TUN only diverted traffic arrives,
// and what is not ours goes back to the kernel unchanged.
func (w *worker) passThrough(buf []byte) {
	if !w.in.ether {
		if w.fragMax > 0 && !w.vipDst(w.d.snap.Load()) {
			w.tunFrag(buf) // a reassembled datagram the kernel forwards
		}
		w.send(w.in, buf)
	}
}

// vipDst reports whether the current packet is for a VIP of s (a host
// address with TUN).
func (w *worker) vipDst(s *snapshot) bool {
	var a conntrack.Addr
	setAddr(&a, w.p.Dst())
	return s.vips[a]
}

func (d *Director) portByIndex(idx int) *port {
	for _, pt := range d.ports {
		if pt.index == idx {
			return pt
		}
	}
	return nil
}
