package conntrack

import (
	"fmt"
	"time"
)

// Connection sync (IPVS's sync daemon, package syncd): on a master the
// table says which packets should send their connection to the backups
// (SetSync, Conn.Sync); on a backup it takes the connections a master
// sent (Learn, LearnTemplate).

// SyncPolicy is when a sync master sends a connection, as IPVS's
// net.ipv4.vs.sync_threshold decides it (sync_refresh_period 0, its
// default): a TCP connection is sent when it enters FIN_WAIT, CLOSE,
// CLOSE_WAIT or TIME_WAIT, and, in those states and ESTABLISHED, at its
// Threshold-th client packet and every Period packets after; a UDP one at
// those packets alone. A connection's persistence template goes with it.
// Half-open connections are never sent.
type SyncPolicy struct {
	Threshold int // 0-254
	Period    int // 1-255 (0: only the Threshold-th packet)
}

// DefaultSyncPolicy is IPVS's default: sync_threshold "3 50".
var DefaultSyncPolicy = SyncPolicy{Threshold: 3, Period: 50}

// SetSync starts (p not nil) or stops marking connections for a sync
// master.
func (t *Table) SetSync(p *SyncPolicy) error {
	if p == nil {
		t.syncPol.Store(0)
		return nil
	}
	if p.Threshold < 0 || p.Threshold > 254 || p.Period < 0 || p.Period > 255 ||
		p.Period > 0 && p.Threshold >= p.Period {
		return fmt.Errorf("sync policy: threshold %d, period %d: want 0 ≤ threshold < period ≤ 255", p.Threshold, p.Period)
	}
	t.syncPol.Store(1<<16 | uint32(p.Threshold)<<8 | uint32(p.Period))
	return nil
}

// Timeout is how long an entry in state st lives from its last packet
// (the --set values for ESTABLISHED, FIN_WAIT and UDP): what a sync master
// sends as the connection's timeout.
func (t *Table) Timeout(st State) time.Duration {
	if st >= numStates {
		return 0
	}
	// Timeouts are whole seconds (ipvsadm --set); ticks round them up.
	return ticksDur(t.timeouts.Load()[st]).Round(time.Second)
}

// syncable reports the TCP states in which IPVS sends a connection.
func (s State) syncable() bool {
	switch s {
	case StateEstablished, StateFinWait, StateClose, StateCloseWait, StateTimeWait:
		return true
	}
	return false
}

// syncMark counts a client packet of e and sets c.Sync (and c.Tmpl) when
// the master should send e now, following IPVS's ip_vs_sync_conn_needed.
// Called with e's shard locked.
func (t *Table) syncMark(e *entry, pol uint32, c *Conn) {
	thr, per := uint8(pol>>8), uint8(pol)
	if per > 0 {
		e.pkts++
		if e.pkts >= per {
			e.pkts = 0
		}
	} else if e.pkts < 255 {
		e.pkts++
	}
	send := false
	if e.proto == protoTCP {
		if !e.state.syncable() {
			return
		}
		// A change of state is sent at once, unless it is to
		// ESTABLISHED, which waits for the threshold packet.
		send = e.state != e.syncState && e.state != StateEstablished
	}
	if !send && e.pkts != thr {
		return
	}
	e.syncState = e.state
	c.Sync = true
	if e.link != 0 {
		c.Tmpl = t.tmplRef(e.link)
	}
}

// tmplRef is the full reference of the template a connection links to.
func (t *Table) tmplRef(link uint32) TemplateRef {
	s := &t.tshards[link>>tmplSlotBits]
	slot := link&(1<<tmplSlotBits-1) - 1
	s.mu.Lock()
	gen := s.ents[slot].gen
	s.mu.Unlock()
	return TemplateRef(uint64(gen)<<32 | uint64(link))
}

// TemplateConn fills c with the template ref names, as Walk shows
// templates, and returns its persistence timeout; false if it is gone.
func (t *Table) TemplateConn(ref TemplateRef, c *Conn) (time.Duration, bool) {
	r := uint32(ref)
	si := int(r >> tmplSlotBits)
	if si >= len(t.tshards) || r&(1<<tmplSlotBits-1) == 0 {
		return 0, false
	}
	slot := r&(1<<tmplSlotBits-1) - 1
	s := &t.tshards[si]
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(slot) >= len(s.ents) {
		return 0, false
	}
	e := &s.ents[slot]
	if !e.used || e.dead || e.gen != uint32(ref>>32) {
		return 0, false
	}
	e.conn(c)
	return e.timeoutDur(), true
}

// conn fills c with the template as Walk lists it.
func (e *tmplEntry) conn(c *Conn) {
	*c = Conn{
		Proto: e.key.proto, Client: e.key.client, VAddr: e.key.vaddr, VPort: e.key.vport,
		DAddr: e.daddr, DPort: e.dport, Svc: e.svc, Dest: e.dest,
		State: StateNone, Template: true, Learned: e.learned,
	}
	if e.assured {
		c.State = StateAssured
	}
	if e.key.proto == 0 {
		c.FWMark = uint32(e.key.vaddr[12])<<24 | uint32(e.key.vaddr[13])<<16 | uint32(e.key.vaddr[14])<<8 | uint32(e.key.vaddr[15])
		c.VAddr = Addr{}
	}
}

// LearnResult is what Learn did.
type LearnResult uint8

const (
	LearnCreated  LearnResult = iota // a new entry
	LearnUpdated                     // the entry's state and expiry were set
	LearnReplaced                    // the entry had another real server: replaced
	LearnIgnored                     // the entry has another real server and the message is not established: left alone (IPVS)
	LearnKept                        // onlyNew, and the entry exists: left alone
)

// Learn makes the table hold the connection a sync master sent, as an IPVS
// backup does: c (its Orig tuple, real server, Svc, Dest, Fwd, InputOnly,
// PeerMAC and PeerIf) in state c.State (StateUDP for UDP), expiring timeout
// from now. An entry the table has for c's tuple is updated (state and
// expiry) if it has the same real server; with another one, it is replaced
// when c is an established TCP connection and left alone otherwise (an
// older message about a connection that was replaced). With onlyNew an
// existing entry is left as it is (a full table dump, which may be older
// than what the table knows). A learned entry starts its sync count at the
// threshold, as IPVS's does, so that a backup that is also a master sends
// it again only after Period packets or a change of state.
func (t *Table) Learn(c *Conn, timeout time.Duration, onlyNew bool) (LearnResult, error) {
	if c.Proto == protoTCP && c.State >= numTCPStates || c.Proto != protoTCP && c.State != StateUDP {
		return 0, fmt.Errorf("learn: state %s for protocol %d", c.State, c.Proto)
	}
	orig := c.Orig()
	h1 := t.hashEnd(orig.Proto, &orig.Src, orig.SrcPort)
	s := t.shardOf(h1)
	ho := t.hashFull(h1, &orig.Dst, orig.DstPort, Orig)
	exp := durTicks(timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := t.tick()
	t.reserve(s, 2)
	res := LearnCreated
	if p, i, ok := s.find(ho, Orig, &orig); ok {
		e := s.ent(i)
		switch {
		case !alive(e.expires, now):
			t.dropAt(s, i, Orig, p)
			s.st.expired++
		case onlyNew:
			return LearnKept, nil
		case e.daddr == c.DAddr && e.dport == c.DPort:
			t.moveState(e, c.State)
			e.expires = now + exp
			e.syncState = c.State
			e.pkts = t.syncThreshold()
			return LearnUpdated, nil
		case c.Proto != protoTCP || c.State != StateEstablished:
			return LearnIgnored, nil
		default:
			t.dropAt(s, i, Orig, p)
			s.st.reused++
			res = LearnReplaced
		}
	}
	if t.count.Add(1) > t.capacity {
		t.sweepShard(s, now, 4, 64)
		if t.count.Load() > t.capacity && !t.evictHalfOpen(s, 256) {
			t.count.Add(-1)
			s.st.full++
			return 0, ErrFull
		}
	}
	e, err := t.place(s, c, h1, ho, now, c.Proto == protoTCP)
	if err != nil {
		t.count.Add(-1)
		return 0, err
	}
	e.flags |= fLearned
	e.state, e.syncState, e.pkts, e.expires = c.State, c.State, t.syncThreshold(), now+exp
	t.account(e.dest, e.state, 1)
	s.st.learned++
	return res, nil
}

// syncThreshold is the policy's threshold, the count a learned entry
// starts at.
func (t *Table) syncThreshold() uint8 { return uint8(t.syncPol.Load() >> 8) }

// LearnTemplate makes the table hold the persistence template a sync
// master sent, expiring timeout from now: an existing one is refreshed
// (its real server stays, as in IPVS) unless onlyNew, a new one made with
// tp (tp.Timeout is the persistence timeout it is re-armed with when used).
// It reports whether it made one.
func (t *Table) LearnTemplate(k *TemplateKey, tp *Template, timeout time.Duration, assured, onlyNew bool) (bool, error) {
	key := makeTmplKey(k)
	_, s := t.tshardOf(&key)
	now := t.tick()
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.m[key]; ok {
		e := &s.ents[i]
		if alive(e.expires, now) || e.refs > 0 {
			if !onlyNew {
				e.expires = now + durTicks(timeout)
				e.assured = e.assured || assured
			}
			return false, nil
		}
		t.tmplDelete(s, i)
	}
	i, err := t.tmplNew(s, &key, tp)
	if err != nil {
		return false, err
	}
	e := &s.ents[i]
	e.expires = now + durTicks(timeout)
	e.assured, e.learned = assured, true
	return true, nil
}

// SetPeer records where the client of a learned connection is (its
// first packet's source MAC address and interface), if its entry does not
// know yet: a backup learns connections without seeing their packets.
func (t *Table) SetPeer(orig *Tuple, mac [6]byte, ifindex int32) {
	h1 := t.hashEnd(orig.Proto, &orig.Src, orig.SrcPort)
	s := t.shardOf(h1)
	s.mu.Lock()
	if len(s.index) != 0 {
		if _, i, ok := s.find(t.hashFull(h1, &orig.Dst, orig.DstPort, Orig), Orig, orig); ok {
			if e := s.ent(i); e.ifindex == 0 {
				e.mac, e.ifindex = mac, ifindex
			}
		}
	}
	s.mu.Unlock()
}
