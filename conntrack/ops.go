package conntrack

import "time"

// protoTCP is TCP's IP protocol number: only TCP connections have a
// state machine.
const protoTCP = 6

// Lookup finds the connection whose Orig or Reply tuple equals *tp,
// advances its state with the packet (tcpFlags is the TCP header's flags
// byte; ignored for other protocols), refreshes its expiry, copies it
// into *c and reports the packet's direction.
//
// A SYN without ACK from the client that meets an entry in TIME_WAIT or
// CLOSE removes the entry and reports not found, so that the caller
// schedules the new connection afresh (IPVS's conn_reuse_mode). Expired
// entries are removed when met and never returned.
func (t *Table) Lookup(tp *Tuple, tcpFlags uint8, c *Conn) (Dir, bool) {
	return t.lookup(tp, tcpFlags, c, false)
}

// Peek is Lookup without the packet: it finds a live connection and copies
// it out, changing neither its state nor its expiry. For ICMP errors,
// which are about a connection but not part of it.
func (t *Table) Peek(tp *Tuple, c *Conn) (Dir, bool) {
	return t.lookup(tp, 0, c, true)
}

func (t *Table) lookup(tp *Tuple, tcpFlags uint8, c *Conn, peek bool) (Dir, bool) {
	now := t.tick()
	// Assume the packet comes from the client.
	h1 := t.hashEnd(tp.Proto, &tp.Src, tp.SrcPort)
	s := t.shardOf(h1)
	s.mu.Lock()
	if len(s.index) != 0 {
		if p, i, ok := s.find(t.hashFull(h1, &tp.Dst, tp.DstPort, Orig), Orig, tp); ok {
			found := t.hit(s, i, Orig, p, tcpFlags, now, c, peek)
			s.mu.Unlock()
			return Orig, found
		}
	}
	s.mu.Unlock()
	// Otherwise it may be a NAT reply, addressed to the client.
	h1 = t.hashEnd(tp.Proto, &tp.Dst, tp.DstPort)
	s = t.shardOf(h1)
	s.mu.Lock()
	if len(s.index) != 0 {
		if p, i, ok := s.find(t.hashFull(h1, &tp.Src, tp.SrcPort, Reply), Reply, tp); ok {
			found := t.hit(s, i, Reply, p, tcpFlags, now, c, peek)
			s.mu.Unlock()
			return Reply, found
		}
	}
	s.mu.Unlock()
	return Orig, false
}

// hit applies a packet to entry i, found at index slot pos in direction d.
// Called with s locked.
func (t *Table) hit(s *shard, i uint32, d Dir, pos int, flags uint8, now uint32, c *Conn, peek bool) bool {
	e := s.ent(i)
	if !alive(e.expires, now) {
		t.dropAt(s, i, d, pos)
		s.st.expired++
		return false
	}
	if peek {
		e.copyTo(c)
		return true
	}
	if e.proto == protoTCP {
		if d == Orig && flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN &&
			(e.state == StateTimeWait || e.state == StateClose) {
			t.dropAt(s, i, d, pos)
			s.st.reused++
			return false
		}
		m := e.mode()
		if d == Reply {
			m = modeOut
		}
		if ns := next(e.state, flags, m); ns != e.state {
			t.moveState(e, ns)
		}
	}
	if e.link != 0 && e.flags&fAssured == 0 &&
		(e.state == StateEstablished || e.proto != protoTCP && d == Reply) {
		e.flags |= fAssured
		t.tmplAssure(e.link)
	}
	e.expires = now + t.timeout(e.state)
	e.copyTo(c)
	// The sync master counts the client's packets, as IPVS counts those
	// its input hook handles.
	if pol := t.syncPol.Load(); pol != 0 && d == Orig {
		t.syncMark(e, pol, c)
	}
	return true
}

// timeout is how long an entry in state st lives from now. Under pressure
// (the table over three quarters full) a half-open connection gets
// halfOpenUnderPressure at most, as IPVS's secure_tcp shortens SYN_RECV:
// forged SYNs then hold the table for seconds, not a minute, and the
// servers' retransmitted SYN-ACKs do not stretch them.
func (t *Table) timeout(st State) uint32 {
	d := t.timeouts.Load()[st]
	if st.halfOpen() && d > t.halfOpenShort && t.UnderPressure() {
		return t.halfOpenShort
	}
	return d
}

// evictHalfOpen drops the first half-open TCP entry among the next scan
// entries of the sweep's walk through shard s, and reports whether it
// found one. Called with s locked.
func (t *Table) evictHalfOpen(s *shard, scan int) bool {
	for range min(scan, int(s.nent)) {
		if s.sweep >= s.nent {
			s.sweep = 0
		}
		i := s.sweep
		s.sweep++
		if e := s.ent(i); e.flags&fUsed != 0 && e.proto == protoTCP && e.state.halfOpen() {
			t.drop(s, i)
			return true
		}
	}
	return false
}

// Insert adds a connection for its first packet, seen in the Orig
// direction; tcpFlags gives a TCP connection its first state. It sets
// c.Sync (Conn). The entry is
// indexed by its Orig tuple (Client:CPort -> VAddr:VPort) and, when
// the connection is not c.InputOnly (NAT), also by its Reply tuple
// (DAddr:DPort -> Client:CPort); input-only ones are tracked from the
// client's packets alone. c.State is ignored. If c.Tmpl refers to a
// template that still exists, the connection holds it alive.
//
// Insert returns ErrFull when the table holds Capacity connections (and
// counts the drop), and ErrExists when either tuple is already tracked by
// a live entry. At capacity it first reaps a few expired entries of the
// shard the connection would go to; the rest is Sweep's job.
//
// A dead connection does not hold its tuples against a new one: one whose
// real server is gone (Config.Gone) never does, and a TCP SYN whose Reply
// tuple is held by a connection in TIME_WAIT or CLOSE replaces it, as
// Lookup's reuse does for the Orig tuple. The client picks its ports per
// destination, so it may reuse a port towards another virtual service
// while its connection from that port to the first one, to the same real
// server, is closing or was cut by a deletion: the two share the real
// server's four-tuple, and the new one must win (IPVS finds the newest
// connection for replies).
func (t *Table) Insert(c *Conn, tcpFlags uint8) error {
	orig := c.Orig()
	h1 := t.hashEnd(orig.Proto, &orig.Src, orig.SrcPort)
	s := t.shardOf(h1)
	nat := !c.InputOnly

	if t.count.Add(1) > t.capacity {
		// Full: reap what has expired nearby, then shed a half-open
		// entry (IPVS's drop_entry), before refusing. An established
		// connection is never evicted for a new one.
		s.mu.Lock()
		now := t.tick()
		t.sweepShard(s, now, 4, 64)
		if t.count.Load() > t.capacity && t.evictHalfOpen(s, 256) {
			s.st.evicted++
		}
		full := t.count.Load() > t.capacity
		if full {
			s.st.full++
		}
		s.mu.Unlock()
		if full {
			t.count.Add(-1)
			return ErrFull
		}
	}

	now := t.tick()
	ho := t.hashFull(h1, &orig.Dst, orig.DstPort, Orig)
	s.mu.Lock()
	defer s.mu.Unlock()
	reuse := c.Proto == protoTCP && tcpFlags&(FlagSYN|FlagACK|FlagRST) == FlagSYN
	e, err := t.place(s, c, h1, ho, now, reuse)
	if err != nil {
		t.count.Add(-1)
		return err
	}
	m := modeIn
	if !nat {
		m = modeInOnly
	}
	if c.Proto == protoTCP {
		e.state = next(StateNone, tcpFlags, m)
	} else {
		e.state = StateUDP
	}
	e.expires = now + t.timeout(e.state)
	if c.Tmpl != 0 {
		e.link = t.tmplAcquire(c.Tmpl)
	}
	t.account(e.dest, e.state, 1)
	s.st.inserted++
	c.Sync = false
	if pol := t.syncPol.Load(); pol != 0 {
		t.syncMark(e, pol, c)
	}
	return nil
}

// place makes the entry for c (h1 its client endpoint's hash, ho its Orig
// slot's) and indexes it by its Orig tuple and, unless c.InputOnly, its
// Reply tuple: ErrExists when a live entry holds either (an expired one, one
// of a deleted server, and with reuse a TCP one in TIME_WAIT or CLOSE give
// way), ErrFull when the shard has no room. The caller has counted it in
// t.count and sets its state, expiry and template link, then accounts it.
// Called with s locked.
func (t *Table) place(s *shard, c *Conn, h1, ho uint64, now uint32, reuse bool) (*entry, error) {
	orig := c.Orig()
	nat := !c.InputOnly
	var reply Tuple
	var hr uint64
	if nat {
		reply = c.Reply()
		hr = t.hashFull(h1, &reply.Src, reply.SrcPort, Reply)
	}
	t.reserve(s, 2)
	po, taken, _ := t.vacancy(s, ho, Orig, &orig, now, false)
	var pr int
	if nat && !taken {
		var moved bool
		pr, taken, moved = t.vacancy(s, hr, Reply, &reply, now, reuse)
		if moved {
			// Reaping shifted slots: the Orig slot found may be stale.
			po, _, _ = s.find(ho, Orig, &orig)
		}
	}
	if taken {
		return nil, ErrExists
	}
	i, ok := s.alloc()
	if !ok {
		s.st.full++
		return nil, ErrFull
	}
	e := s.ent(i)
	*e = entry{
		client: c.Client, vaddr: c.VAddr, daddr: c.DAddr,
		cport: c.CPort, vport: c.VPort, dport: c.DPort,
		proto: c.Proto, fwd: c.Fwd, flags: fUsed,
		mac: c.PeerMAC, ifindex: c.PeerIf, svc: c.Svc, dest: c.Dest,
	}
	s.index[po] = slotKey(ho, Orig) | uint64(i+1)
	s.used++
	if nat {
		e.flags |= fReply
		if pr == po {
			// Both probes ended at the same empty slot, now Orig's.
			pr, _, _ = s.find(hr, Reply, &reply)
		}
		s.index[pr] = slotKey(hr, Reply) | uint64(i+1)
		s.used++
	} else {
		e.flags |= fInOnly
	}
	return e, nil
}

// vacancy finds the empty slot where tuple tp (hash h, direction d) goes,
// reaping an entry that holds the tuple if it has expired or its real
// server is gone, and with reuse a TCP one in TIME_WAIT or CLOSE. taken reports a
// live entry holding it (pos is then its slot); moved, that reaping
// shifted slots, so positions found before are stale. Called with s
// locked.
func (t *Table) vacancy(s *shard, h uint64, d Dir, tp *Tuple, now uint32, reuse bool) (pos int, taken, moved bool) {
	for {
		p, i, ok := s.find(h, d, tp)
		if !ok {
			return p, false, moved
		}
		switch e := s.ent(i); {
		case !alive(e.expires, now):
			s.st.expired++
		case t.gone != nil && t.gone(e.dest):
			// Its real server was deleted: it is dead, whatever comes.
			s.st.reused++
		case reuse && e.proto == protoTCP && (e.state == StateTimeWait || e.state == StateClose):
			s.st.reused++
		default:
			return p, true, moved
		}
		t.dropAt(s, i, d, p)
		moved = true
	}
}

// Remove takes out the connection with either tuple tp, as when its real
// server is deleted. It reports whether there was one.
func (t *Table) Remove(tp *Tuple) bool {
	for _, d := range [2]Dir{Orig, Reply} {
		client, other, cport, oport := &tp.Src, &tp.Dst, tp.SrcPort, tp.DstPort
		if d == Reply {
			client, other, cport, oport = &tp.Dst, &tp.Src, tp.DstPort, tp.SrcPort
		}
		h1 := t.hashEnd(tp.Proto, client, cport)
		s := t.shardOf(h1)
		s.mu.Lock()
		if len(s.index) != 0 {
			if p, i, ok := s.find(t.hashFull(h1, other, oport, d), d, tp); ok {
				t.dropAt(s, i, d, p)
				s.st.removed++
				s.mu.Unlock()
				return true
			}
		}
		s.mu.Unlock()
	}
	return false
}

// RemoveDest removes every connection and persistence template of real
// server dest, as when the server is deleted: its connections stop, and
// its counts return to zero before its ID may be handed out again. It
// reports how many connections it removed. It visits the whole table, a
// shard at a time: not for the packet path.
func (t *Table) RemoveDest(dest uint32) int {
	n := 0
	for si := range t.shards {
		s := &t.shards[si]
		s.mu.Lock()
		for i := uint32(0); i < s.nent; i++ {
			if e := s.ent(i); e.flags&fUsed != 0 && e.dest == dest {
				t.drop(s, i)
				s.st.removed++
				n++
			}
		}
		s.mu.Unlock()
	}
	for si := range t.tshards {
		s := &t.tshards[si]
		s.mu.Lock()
		for _, i := range s.m {
			if s.ents[i].dest == dest {
				t.tmplDelete(s, i)
			}
		}
		s.mu.Unlock()
	}
	return n
}

// sweepShard reaps up to budget expired entries of s, looking at no more
// than scan entries, going on from where the last sweep of s stopped. end
// reports that it reached the end of the slab (and starts over next
// time). Called with s locked.
func (t *Table) sweepShard(s *shard, now uint32, budget, scan int) (reaped, scanned int, end bool) {
	for reaped < budget && scanned < scan {
		if s.sweep >= s.nent {
			s.sweep = 0
			return reaped, scanned, true
		}
		i := s.sweep
		s.sweep++
		scanned++
		e := s.ent(i)
		if e.flags&fUsed == 0 {
			continue
		}
		if !alive(e.expires, now) {
			t.drop(s, i)
			s.st.expired++
			reaped++
			continue
		}
		// Under pressure, half-open entries made before it (with the
		// full SYN_RECV timeout) are cut short too as the sweep passes.
		if e.proto == protoTCP && e.state.halfOpen() && t.UnderPressure() &&
			alive(e.expires, now+t.halfOpenShort+1) {
			e.expires = now + t.halfOpenShort
		}
	}
	return reaped, scanned, false
}

// Sweep reaps up to budget expired entries (connections and templates)
// and reports how many it reaped. It looks at no more than 16×budget
// entries, going on from where the previous Sweep stopped, so calling it
// periodically visits the whole table. A shard lock is held for at most
// 512 entries.
func (t *Table) Sweep(budget int) int {
	if budget <= 0 {
		return 0
	}
	t.sweepMu.Lock()
	defer t.sweepMu.Unlock()
	now := t.tick()
	scanLeft := 16 * budget
	reaped := 0
	nsh := len(t.shards) + len(t.tshards)
	for visits := 0; visits <= nsh && reaped < budget && scanLeft > 0; visits++ {
		pos := t.sweepPos
		var r, n int
		var end bool
		if pos < len(t.shards) {
			s := &t.shards[pos]
			s.mu.Lock()
			r, n, end = t.sweepShard(s, now, budget-reaped, min(scanLeft, 512))
			// A walk through the shard ended: if a flood left its slab
			// mostly empty, give the memory back.
			if end && len(s.chunks) > 4 && s.live*4 < int(s.nent) {
				s.compact()
				t.compactions.Add(1)
			}
			s.mu.Unlock()
		} else {
			r, n, end = t.sweepTmplShard(&t.tshards[pos-len(t.shards)], now, budget-reaped, min(scanLeft, 512))
		}
		reaped += r
		scanLeft -= n
		if end {
			t.sweepPos = (pos + 1) % nsh
		}
	}
	return reaped
}

// Walk calls fn with a copy of every live connection and then every
// persistence template, with the time left before each expires, until fn
// returns false. It is for listings (ipvsadm -L -c), not the packet path:
// fn runs without any lock held, on a snapshot taken a few entries at a
// time, so it may call the table. Expired entries met on the way are
// reaped.
func (t *Table) Walk(fn func(c *Conn, expires time.Duration) bool) {
	const batch = 64
	var buf [batch]Conn
	var exp [batch]time.Duration
	for si := range t.shards {
		s := &t.shards[si]
		for pos := uint32(0); ; {
			n := 0
			s.mu.Lock()
			now := t.tick()
			for ; pos < s.nent && n < batch; pos++ {
				e := s.ent(pos)
				if e.flags&fUsed == 0 {
					continue
				}
				if !alive(e.expires, now) {
					t.drop(s, pos)
					s.st.expired++
					continue
				}
				e.copyTo(&buf[n])
				exp[n] = ticksDur(e.expires - now)
				n++
			}
			more := pos < s.nent
			s.mu.Unlock()
			for k := range n {
				if !fn(&buf[k], exp[k]) {
					return
				}
			}
			if !more {
				break
			}
		}
	}
	t.walkTemplates(fn)
}
