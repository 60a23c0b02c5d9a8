package director

import (
	"errors"
	"uvs/conntrack"
	"uvs/packet"
	"uvs/scheduler"
	"uvs/service"
)

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
	if dir == conntrack.Orig && w.in.ether && !w.in.markIn && s.marks[b2i(p.IPVersion == 6)] && w.kernelCopies(s, v) {
		return
	}
	if st == nil || st.Gone() || v == nil {
		// The real server or its service was deleted: its connections
		// stop, as in IPVS (expire_nodest_conn=0): their packets are
		// dropped while the entries last, and the entries keep the
		// server's replies diverted from the kernel (drain.go), which
		// would forward them untranslated. A new connection may take
		// their tuples.
		d.serverGone.Add(1)
		if d.cfg.ExpireNodestConn && dir == conntrack.Orig {
			d.ct.Remove(&w.tp)
		}
		return
	}
	if !w.ttlOK() {
		return
	}
	size := uint64(len(p.Buf) - p.L3)
	if dir == conntrack.Orig {
		st.Stats.AddIn(w.id, 1, size)
		v.svc.Stats.AddIn(w.id, 1, size)
		if c.Sync {
			w.syncPush(c, v)
		}
		if c.PeerIf == 0 {
			// Learned from a sync master: its first packet here says
			// where its client is.
			w.setPeer(c)
		}
	} else {
		st.Stats.AddOut(w.id, 1, size)
		v.svc.Stats.AddOut(w.id, 1, size)
	}
	w.xmit(s, c, dir, buf, partial, false)
}

// setPeer records where the client of connection c is: the source of the
// current packet, which came from it.
func (w *worker) setPeer(c *conntrack.Conn) {
	p := &w.p
	if w.in.ether && p.L2 >= 0 {
		copy(c.PeerMAC[:], p.Buf[p.L2+6:p.L2+12])
	}
	c.PeerIf = int32(w.in.index)
	w.d.ct.SetPeer(&w.tp, c.PeerMAC, c.PeerIf)
}

// opens reports whether the current packet is one that may open a
// connection: a TCP SYN or any UDP datagram. With firewall-mark services
// of its family, such a packet to an address service passes the AF_PACKET
// ingress drop, and the kernel hands it over through the mark port
// (marks.go).
func (w *worker) opens() bool {
	p := &w.p
	return p.Proto == service.UDP || p.TCPFlags&(packet.TCPSyn|packet.TCPAck|packet.TCPRst) == packet.TCPSyn
}

// kernelCopies reports whether the kernel hands the director its own copy
// of the current packet, a client's packet of connection service v read
// before netfilter, through the mark port (marks.go): so this copy is not
// the one to forward. It does for a packet that may open a connection, to
// an address service; for any packet of a firewall-mark connection whose
// address and port no address service covers (the host's rule marks it,
// or, once the rule is gone, the learned-destination rule sends it on
// unmarked). The rest the ingress drop keeps from the kernel.
func (w *worker) kernelCopies(s *snapshot, v *vsvc) bool {
	p := &w.p
	covered := s.service(p.Proto, w.tp.Dst, p.DstPort) != nil
	if covered {
		return w.opens()
	}
	return v != nil && v.mark
}

// kernelHop is 1 when the kernel forwarded the current packet on its way
// to the director, decrementing its TTL: into the TUN device, or as a
// marked packet's copy (nft dup). The director gives that hop back (xmit),
// so that, as in IPVS, the packet loses one hop across the director in
// all. One the kernel will take on the way out is given back too
// (outHop).
func (w *worker) kernelHop() int {
	if !w.in.ether || w.in.markIn {
		return 1
	}
	return 0
}

// outHop reports whether the kernel forwards what the director sends
// through pt, decrementing its TTL: the TUN device, or a marked
// connection's reply sent to the mark's macvlan.
func outHop(pt *port) bool { return !pt.ether || pt.markIn }

// ttlOK drops a packet whose TTL or hop limit would run out here: every
// forwarding method decrements it, as IPVS does for a packet it sends on
// to another host (DR and TUN included; for TUN, the inner packet's).
func (w *worker) ttlOK() bool {
	if int(w.p.TTL())+w.kernelHop() <= 1 {
		w.d.ttl.Add(1)
		return false
	}
	return true
}

// newConn handles a packet that belongs to no connection.
func (w *worker) newConn(s *snapshot, buf []byte, partial bool) {
	d := w.d
	p := &w.p
	if w.in.ether && !w.in.markIn && s.marks[b2i(p.IPVersion == 6)] && w.opens() {
		// May be marked: the kernel's copy, after the host's mark rules,
		// comes through the mark port, with its mark or with none
		// (marks.go). This one, from before netfilter, cannot tell.
		return
	}
	// The mark first, as IPVS looks up a firewall-mark service before an
	// address one.
	var v *vsvc
	if w.mark != 0 {
		v = s.byMark[markKey{w.mark, p.IPVersion == 6}]
	}
	if v == nil {
		v = s.service(p.Proto, w.tp.Dst, p.DstPort)
	}
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
	if p.Proto == service.TCP && p.TCPFlags&(packet.TCPSyn|packet.TCPAck|packet.TCPRst) != packet.TCPSyn &&
		(!d.cfg.SloppyTCP || p.TCPFlags&packet.TCPRst != 0) {
		// Only a SYN opens a TCP connection (with sloppy_tcp, anything
		// but a RST); anything else for a connection we do not know is
		// dropped (IPVS leaves it to the local stack, which would answer
		// with a reset).
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
		// DR and TUN replies go from the real server to the client
		// directly: the director tracks the client's packets alone.
		InputOnly: dest.Fwd != service.FwdMasq,
		Tmpl:      w.tmpl,
	}
	if c.DPort == 0 {
		c.DPort = p.DstPort // port-zero service: the packet's own port
	}
	c.DAddr = conntrack.AddrFrom(dest.Addr)
	if w.in.ether {
		copy(c.PeerMAC[:], p.Buf[p.L2+6:p.L2+12])
	}
	c.PeerIf = int32(w.in.index)
	// One-packet scheduling (-o, UDP): each datagram is scheduled on its
	// own and leaves no entry, as in IPVS. Only where no reply comes
	// back through the director (DR, TUN): a NAT server's reply needs the
	// entry to be translated, so NAT keeps it.
	if !v.svc.OnePacket || p.Proto != service.UDP || !c.InputOnly {
		if err := d.ct.Insert(c, p.TCPFlags); err != nil {
			if errors.Is(err, conntrack.ErrFull) {
				d.full.Add(1)
			} else {
				// A live connection holds the tuple: through NAT, another
				// virtual service's connection from the same client port
				// to the same real server, which the server could not
				// tell from this one.
				d.taken.Add(1)
			}
			return
		}
	}
	dest.Stats.AddConn(w.id)
	v.svc.Stats.AddConn(w.id)
	if c.Sync {
		w.syncPush(c, v)
	}
	if v.mark {
		d.learned(p.Proto, w.tp.Dst, p.DstPort)
	}
	if !w.ttlOK() {
		return
	}
	size := uint64(len(p.Buf) - p.L3)
	dest.Stats.AddIn(w.id, 1, size)
	v.svc.Stats.AddIn(w.id, 1, size)
	w.xmit(s, c, conntrack.Orig, buf, partial, false)
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
