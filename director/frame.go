package director

import (
	"uvs/conntrack"
	"uvs/link"
	"uvs/packet"
	"uvs/reasm"
	"uvs/service"
)

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
	w.mark = 0
	if w.in.markIn {
		// A packet the host's rules marked, duplicated to the mark's
		// macvlan (marks.go): the mark is in the destination MAC. What
		// else comes this way (the macvlans' own IPv6 chatter) is not
		// the director's.
		mk, ok := markFromMAC(p.Buf[p.L2:])
		if !ok || p.IPVersion == 0 {
			return
		}
		w.mark = mk
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

// passThrough is for packets that are not ours. On AF_PACKET the kernel
// has its own copy and acts on it; on TUN only diverted traffic arrives,
// and what is not ours goes back to the kernel unchanged.
func (w *worker) passThrough(buf []byte) {
	if !w.in.ether {
		if w.fragMax > 0 && !w.vipDst(w.d.snap.Load()) {
			w.tundevFrag(buf) // a reassembled datagram the kernel forwards
		}
		w.send(w.in, buf[headroom:])
	}
}

// vipDst reports whether the current packet is for a VIP of s (a host
// address with TUN).
func (w *worker) vipDst(s *snapshot) bool {
	var a conntrack.Addr
	setAddr(&a, w.p.Dst())
	return s.vips[a]
}
