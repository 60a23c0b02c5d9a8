package director

import (
	"time"
	"uvs/conntrack"
	"uvs/forward/dr"
	"uvs/link"
	"uvs/packet"
	"uvs/service"
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
	switch in.Proto {
	case packet.ProtoIPIP, packet.ProtoIPv6, packet.ProtoGRE:
		w.tunnelError(s)
		return
	}
	dir, ok := d.ct.Peek(&w.tp, &w.c)
	if !ok {
		if in.Proto == packet.ProtoUDP && w.tunnelError(s) {
			return // about a GUE packet
		}
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

// tunnelError handles an ICMP error that a router on the way to a
// tunnelling real server sent about a packet the director wrapped (IPIP,
// GRE, or GUE in UDP), and reports whether it was one. "Fragmentation
// needed" and "packet too big" are relayed to the client about its own
// packet, with the MTU less the tunnel's overhead, as IPVS does; other
// errors about wrapped packets are dropped.
func (w *worker) tunnelError(s *snapshot) bool {
	p := &w.p
	in := &p.Inner
	if in.L4 < 0 {
		return false
	}
	outer := p.Buf[in.L3:in.L4] // the wrapped packet's outer header, as quoted
	pl := p.Buf[in.L4:p.End()]  // and what it carried
	off := 0
	switch in.Proto {
	case packet.ProtoGRE:
		if len(pl) < 4 {
			return true
		}
		off = 4
		for _, bit := range []byte{0x80, 0x20, 0x10} { // checksum, key, sequence
			if pl[0]&bit != 0 {
				off += 4
			}
		}
	case packet.ProtoUDP:
		if len(pl) < 12 {
			return false
		}
		switch pl[8] >> 6 {
		case 0:
			off = 8 + 4 + 4*int(pl[8]&0x1f)
		case 1: // GUE version 1: the IP packet right after UDP
			off = 8
		default:
			return false
		}
	}
	if len(pl) < off+1 {
		return in.Proto != packet.ProtoUDP
	}
	inner := pl[off:]
	// The client's packet, as far as the quote goes: its tuple.
	var tp conntrack.Tuple
	var l4 int
	switch inner[0] >> 4 {
	case 4:
		l4 = int(inner[0]&0xf) * 4
		if l4 < 20 || len(inner) < l4+4 {
			return in.Proto != packet.ProtoUDP
		}
		tp.Proto = inner[9]
		setAddr(&tp.Src, inner[12:16])
		setAddr(&tp.Dst, inner[16:20])
	case 6:
		l4 = 40
		if len(inner) < l4+4 {
			return in.Proto != packet.ProtoUDP
		}
		tp.Proto = inner[6]
		setAddr(&tp.Src, inner[8:24])
		setAddr(&tp.Dst, inner[24:40])
	default:
		return in.Proto != packet.ProtoUDP
	}
	tp.SrcPort = uint16(inner[l4])<<8 | uint16(inner[l4+1])
	tp.DstPort = uint16(inner[l4+2])<<8 | uint16(inner[l4+3])
	c := &w.c
	if dir, ok := w.d.ct.Peek(&tp, c); !ok || dir != conntrack.Orig || service.Fwd(c.Fwd) != service.FwdTunnel {
		return in.Proto != packet.ProtoUDP
	}
	td := s.tunnel(c.Dest)
	var dst conntrack.Addr
	if len(outer) >= 20 && outer[0]>>4 == 4 {
		setAddr(&dst, outer[16:20])
	} else if len(outer) >= 40 {
		setAddr(&dst, outer[24:40])
	}
	if td == nil || dst != conntrack.AddrFrom(td.t.Dst) {
		return true
	}
	// The MTU the router reported, and what is left of it inside.
	var mtu int
	switch {
	case p.IPVersion == 4 && p.ICMPType == packet.ICMPUnreachable && p.ICMPCode == packet.ICMPCodeFragNeeded:
		mtu = int(p.Buf[p.L4+6])<<8 | int(p.Buf[p.L4+7])
	case p.IPVersion == 6 && p.ICMPType == packet.ICMPv6PacketTooBig:
		mtu = int(p.Buf[p.L4+4])<<24 | int(p.Buf[p.L4+5])<<16 | int(p.Buf[p.L4+6])<<8 | int(p.Buf[p.L4+7])
	default:
		return true
	}
	mtu -= td.t.Overhead()
	v6 := inner[0]>>4 == 6
	if mtu < 68 || v6 && mtu < 1280 {
		return true
	}
	w.relayTooBig(c, v6, inner, mtu)
	return true
}

// relayTooBig sends the client of connection c "fragmentation needed"
// ("packet too big" for IPv6) about its packet inner (a quote of it),
// from the virtual address, the way the connection's packets came in.
func (w *worker) relayTooBig(c *conntrack.Conn, v6 bool, inner []byte, mtu int) {
	var from, to []byte
	typ, code := uint8(packet.ICMPUnreachable), uint8(packet.ICMPCodeFragNeeded)
	if v6 {
		from, to = inner[24:40], inner[8:24]
		typ, code = packet.ICMPv6PacketTooBig, 0
	} else {
		from, to = inner[16:20], inner[12:16]
	}
	pt, mac, ok := w.clientHop(c)
	if !ok {
		return
	}
	b := w.scratch()
	if b == nil {
		return
	}
	off := headroom
	if pt.vnet {
		clear(b[off : off+link.VnetHdrLen])
		off += link.VnetHdrLen
	}
	ip := off
	if pt.ether {
		ip += dr.EtherLen
	}
	n := packet.BuildQuoteError(b[ip:], v6, from, to, typ, code, uint32(mtu), inner)
	if n == 0 {
		return
	}
	if pt.ether {
		if _, ok := dr.PrependEther(b, ip, pt.mac, mac); !ok {
			return
		}
	}
	w.d.pmtuRelayed.Add(1)
	w.send(pt, b[headroom:ip+n])
}
