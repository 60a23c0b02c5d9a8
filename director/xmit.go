package director

import (
	"uvs/conntrack"
	"uvs/forward/dr"
	"uvs/forward/nat"
	"uvs/forward/tun"
	"uvs/gso"
	"uvs/link"
	"uvs/packet"
	"uvs/service"
)

// xmit sends the current packet of connection c, seen in direction dir,
// on its way: the one transmit step, dispatching on the connection's
// forwarding method. icmp says the packet is an ICMP error about c (its
// quoted packet is rewritten too, for NAT). buf is the packet's buffer,
// headroom first; partial says its L4 checksum is partial (virtio-net
// NEEDS_CSUM).
func (w *worker) xmit(s *snapshot, c *conntrack.Conn, dir conntrack.Dir, buf []byte, partial, icmp bool) {
	if w.kernelHop() != 0 {
		w.p.IncTTL()
	}
	switch service.Fwd(c.Fwd) {
	case service.FwdRoute:
		w.xmitDR(s, c, buf)
	case service.FwdTunnel:
		w.xmitTunnel(s, c, buf, partial)
	default:
		w.xmitNAT(s, c, dir, buf, partial, icmp)
	}
}

// xmitNAT rewrites addresses and ports (forward/nat): towards the real
// server for the client's packets, back to the virtual service for the
// server's replies.
func (w *worker) xmitNAT(s *snapshot, c *conntrack.Conn, dir conntrack.Dir, buf []byte, partial, icmp bool) {
	p := &w.p
	v4 := p.IPVersion == 4
	var (
		pt  *port
		mac [6]byte
		ok  bool
	)
	if dir == conntrack.Orig {
		pt, mac, ok = w.serverHop(s, c.Dest)
	} else {
		pt, mac, ok = w.clientHop(c)
	}
	// ICMP errors are not checked against the MTU: they are short (at
	// most 576 bytes for IPv4, 1280 for IPv6, as the minimum MTUs).
	if !ok || !icmp && !w.fits(pt, buf) {
		return
	}
	switch {
	case dir == conntrack.Orig && icmp:
		nat.ICMPToServer(p, addrBytes(&c.DAddr, v4), c.DPort)
	case dir == conntrack.Orig:
		nat.DNAT(p, addrBytes(&c.DAddr, v4), c.DPort, partial)
	case icmp:
		nat.ICMPToClient(p, addrBytes(&c.VAddr, v4), c.VPort)
	default:
		nat.SNAT(p, addrBytes(&c.VAddr, v4), c.VPort, partial)
	}
	if outHop(pt) {
		p.IncTTL()
	}
	w.forward(pt, mac, buf)
}

// xmitDR sends the packet, unchanged at the IP layer but for its TTL, to
// the real server's own link-layer address (forward/dr). A packet read from
// the TUN device has no Ethernet header: it gets one in the headroom and
// leaves through the egress port's packet socket, its virtio-net header
// moved along (offsets grow by the Ethernet header).
func (w *worker) xmitDR(s *snapshot, c *conntrack.Conn, buf []byte) {
	pt, mac, ok := w.nextHop(s, c.Dest)
	if !ok || !w.fits(pt, buf) {
		return
	}
	p := &w.p
	p.DecTTL()
	if w.in.ether {
		dr.SetMACs(p.Buf[p.L2:], pt.mac, mac)
		w.send(pt, buf[headroom:])
		return
	}
	base := len(buf) - len(p.Buf)
	l3, end := base+p.L3, base+p.End()
	start, ok := dr.PrependEther(buf, l3, pt.mac, mac)
	if !ok {
		return
	}
	if pt.vnet {
		h := link.VnetHdr{}
		if w.in.vnet {
			h = w.vh
			if h.Flags&link.VnetHdrFNeedsCsum != 0 {
				h.CsumStart += dr.EtherLen
			}
			if h.GSOType != link.GSONone {
				h.HdrLen += dr.EtherLen
			}
		}
		start -= link.VnetHdrLen
		h.Encode(buf[start:])
	}
	w.send(pt, buf[start:end])
}

// xmitTunnel wraps the packet in an outer IP header to the real server
// (forward/tun), in the buffer's headroom. A GSO packet is cut into
// segments first (gso): the virtio-net header has no GSO type for IPIP,
// GRE or GUE. The inner packet leaves with complete checksums and no
// offload asked of the kernel.
func (w *worker) xmitTunnel(s *snapshot, c *conntrack.Conn, buf []byte, partial bool) {
	td := s.tunnel(c.Dest)
	if td == nil {
		w.d.noRoute.Add(1) // no route to the server yet (snapshot.go)
		return
	}
	pt, mac, ok := w.serverHop(s, c.Dest)
	if !ok {
		return
	}
	p := &w.p
	mtu := td.mtu
	if pt.ether {
		mtu = int(pt.mtu.Load())
	}
	room := mtu - td.t.Overhead() // what the inner packet may carry
	if partial && td.t.Type == tun.GUE && td.t.Csum == tun.RemCsum {
		room -= tun.RemCsumOptionLen // the option that hands the checksum on
	}
	gsoType := uint8(link.GSONone)
	if w.in.vnet {
		gsoType = w.vh.GSOType &^ link.GSOECN
	}
	base := len(buf) - len(p.Buf) // where the frame starts in buf
	l3, n := base+p.L3, p.End()-p.L3
	gso := gsoType != link.GSONone
	if gso && (p.Payload < 0 || p.Payload-p.L3+int(w.vh.GSOSize) > room) || !gso && n > room {
		w.tunnelTooBig(room) // quoting the packet as it came, as a router does
		return
	}
	// The outer header copies the inner TTL, decremented as IPVS does.
	p.DecTTL()
	if gso {
		w.tunnelSegments(td, pt, mac, buf[l3:l3+n])
		return
	}
	csumStart := -1
	if partial && p.L4 >= 0 {
		csumStart = p.L4 - p.L3
	}
	w.sendTunnelled(td, pt, mac, buf, l3, n, csumStart)
}

// sendTunnelled encapsulates the inner packet buf[l3:l3+n] and queues it
// for pt, with an Ethernet header to mac on Ethernet ports and a blank
// virtio-net header on ports that take one. csumStart >= 0 is where the
// inner packet's partial L4 checksum starts: it is completed here, or
// left to the real server with GUE's remote checksum offload.
func (w *worker) sendTunnelled(td *tunnelDest, pt *port, mac [6]byte, buf []byte, l3, n, csumStart int) {
	var start int
	var ok bool
	if csumStart >= 0 {
		start, ok = td.t.EncapPartial(buf, l3, n, csumStart, int(w.vh.CsumOffset))
	} else {
		start, ok = td.t.Encap(buf, l3, n)
	}
	if !ok {
		w.d.tooBig.Add(1)
		return
	}
	if pt.ether {
		if start, ok = dr.PrependEther(buf, start, pt.mac, mac); !ok {
			w.d.tooBig.Add(1)
			return
		}
	}
	if pt.vnet {
		start -= link.VnetHdrLen
		clear(buf[start : start+link.VnetHdrLen])
	}
	w.send(pt, buf[start:l3+n])
}

// tunnelSegments cuts the GSO packet inner into segments, each tunnelled
// on its own, and sends them at once: the segment buffers are the
// worker's, reused by the next GSO packet.
func (w *worker) tunnelSegments(td *tunnelDest, pt *port, mac [6]byte, inner []byte) {
	if w.segBuf == nil {
		w.segBuf = make([]byte, segBufSize)
		w.segs = make([][]byte, maxSegments)
		w.segLens = make([]int, maxSegments)
	}
	cnt, err := gso.Count(inner, w.vh)
	if err != nil || cnt > maxSegments {
		w.d.drops[packet.BadL4].Add(1)
		return
	}
	// Each segment gets a buffer with the headroom a read frame has, so
	// that its outer headers are written in front of it in place.
	off := headroom + link.VnetHdrLen + dr.EtherLen
	hdr := w.p.Payload - w.p.L3
	each := off + hdr + int(w.vh.GSOSize)
	if cnt*each > len(w.segBuf) {
		w.d.drops[packet.BadL4].Add(1)
		return
	}
	for i := range cnt {
		w.segs[i] = w.segBuf[i*each : (i+1)*each]
	}
	n, err := gso.Segment(inner, w.vh, w.segs[:cnt], off, w.segLens[:cnt])
	if err != nil {
		w.d.drops[packet.BadL4].Add(1)
		return
	}
	for i := range n {
		w.sendTunnelled(td, pt, mac, w.segs[i], off, w.segLens[i], -1)
	}
	w.flush()
}

// tunnelTooBig answers a packet that would not fit the way to the real
// server once encapsulated: "fragmentation needed" (ICMPv6 "packet too
// big") carrying the MTU less the tunnel's overhead, as IPVS sends. IPv4
// without DF is dropped and counted: the director does not fragment it.
func (w *worker) tunnelTooBig(room int) {
	w.d.tooBig.Add(1)
	p := &w.p
	if p.IPVersion == 4 && !packet.IPv4(p.Buf[p.L3:]).DontFragment() {
		return
	}
	w.answer(func(dst []byte) int { return packet.BuildFragNeeded(dst, p, room) })
}

// serverHop finds where a packet for real server dest goes: the port and
// the next hop's MAC. With TUN the kernel routes it, back out of the port
// it came in by. ok is false, and the drop counted, when the next hop is
// not resolved (yet).
func (w *worker) serverHop(s *snapshot, dest uint32) (pt *port, mac [6]byte, ok bool) {
	if !w.in.ether {
		return w.in, mac, true
	}
	return w.nextHop(s, dest)
}

// nextHop is real server dest's next hop on an Ethernet port, resolved
// by the director (neigh.go): ok is false, and the drop counted, while it
// is not known.
func (w *worker) nextHop(s *snapshot, dest uint32) (pt *port, mac [6]byte, ok bool) {
	var nh *nexthop
	if int(dest) < len(s.nh) {
		nh = s.nh[dest]
	}
	if nh == nil {
		// No route to the server (yet): resolveAll left it out, and the
		// route watcher publishes the table again when routes change.
		w.d.noRoute.Add(1)
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
	if c.PeerIf == 0 {
		// Learned from a sync master and not heard from its client yet.
		w.peerRequest(c)
		return nil, mac, false
	}
	pt = w.d.portByIndex(int(c.PeerIf))
	return pt, c.PeerMAC, pt != nil
}

// forward sends the rewritten packet in buf out of pt, to mac on Ethernet.
func (w *worker) forward(pt *port, mac [6]byte, buf []byte) {
	if pt.ether {
		w.setEther(pt, mac)
	} else if w.fragMax > 0 {
		w.tundevFrag(buf)
	}
	w.send(pt, buf[headroom:])
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

// tundevFrag marks a UDP datagram reassembled here, larger than the
// fragments it came in, to leave the TUN as fragments of that size again
// (UFO), for IPv6 only: the kernel does not fragment a forwarded IPv6
// packet, and it cuts an IPv4 one (without DF, as a reassembled datagram
// is) to the outgoing link's MTU itself.
func (w *worker) tundevFrag(buf []byte) {
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
