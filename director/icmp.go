package director

import (
	"time"
	"uvs/conntrack"
	"uvs/packet"
)

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
	if !w.ttlOK() {
		return
	}
	w.xmit(s, c, dir, buf, partial, true)
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
		w.send(w.in, b[headroom:off+n])
	}
}
