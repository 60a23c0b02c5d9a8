package director

import (
	"uvs/conntrack"
	"uvs/link"
	"uvs/packet"
)

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
