package conntrack

import (
	"encoding/binary"
	"sync"
	"time"
)

// TemplateKey identifies a persistence template (IPVS.md "Persistence").
type TemplateKey struct {
	Proto  uint8  // the service's protocol; ignored for fwmark services
	Client Addr   // client address, already masked with the service's netmask (-M)
	VAddr  Addr   // virtual address; ignored for fwmark services
	VPort  uint16 // virtual port, 0 for port-zero services; ignored for fwmark services
	FWMark uint32 // the service's firewall mark, 0 for address services
}

// Template is what a persistence template remembers.
type Template struct {
	Svc, Dest uint32 // service and real-server IDs
	DAddr     Addr   // the real server, for listings
	DPort     uint16
	Timeout   time.Duration // the service's persistence timeout (-p)
}

// TemplateRef names a template from LookupTemplate or InsertTemplate. Put
// it in Conn.Tmpl before Insert so that the connection keeps the template
// alive. A ref whose template has gone since is ignored.
type TemplateRef uint64

// rearm is how long a template whose timeout has passed lives on while
// connections made through it are still alive (IPVS.md "Persistence").
const rearm = 60 * time.Second

// tmplKey is the stored form: fwmark templates have protocol 0 and the
// mark in the address, as IPVS keeps them.
type tmplKey struct {
	client, vaddr Addr
	vport         uint16
	proto         uint8
}

func makeTmplKey(k *TemplateKey) tmplKey {
	if k.FWMark != 0 {
		var v Addr
		binary.BigEndian.PutUint32(v[12:], k.FWMark)
		return tmplKey{client: k.Client, vaddr: v}
	}
	return tmplKey{client: k.Client, vaddr: k.VAddr, vport: k.VPort, proto: k.Proto}
}

type tmplEntry struct {
	key      tmplKey
	daddr    Addr
	dport    uint16
	used     bool
	learned  bool   // learned from a sync master (LearnTemplate)
	assured  bool   // a connection made through it got established (TCP) or answered
	dead     bool   // out of the map, kept while connections refer to it
	svc      uint32 // svc, dest as in Template
	dest     uint32
	expires  uint32 // tick
	timeout  uint32 // milliseconds
	refs     uint32 // connections holding it
	gen      uint32 // bumped when the slot is reused, to invalidate old refs
	nextFree uint32
}

func (e *tmplEntry) timeoutDur() time.Duration { return time.Duration(e.timeout) * time.Millisecond }

type tmplShard struct {
	mu      sync.Mutex
	m       map[tmplKey]uint32 // live templates -> slot
	ents    []tmplEntry
	free    uint32 // first free slot + 1
	sweep   uint32
	created uint64
	_       [64]byte
}

// A template reference inside a connection entry: shard and slot + 1.
const tmplSlotBits = 24

func (t *Table) tshardOf(k *tmplKey) (int, *tmplShard) {
	h := t.hashEnd(k.proto, &k.client, k.vport)
	h = t.hashFull(h, &k.vaddr, 0, Orig)
	i := int(h & t.tshardMsk)
	return i, &t.tshards[i]
}

func ref32(shard int, slot uint32) uint32 { return uint32(shard)<<tmplSlotBits | (slot + 1) }

// LookupTemplate finds the template for k, fills *tp and returns a
// reference for Conn.Tmpl. Finding a template counts as using it: its
// expiry is pushed out to its full timeout again. A template whose
// timeout passed is found only while connections made through it live.
// Whether its real server may still be used is the caller's decision
// (IPVS.md: a template whose server is gone is not used; RemoveTemplate
// or InsertTemplate over it).
func (t *Table) LookupTemplate(k *TemplateKey, tp *Template) (TemplateRef, bool) {
	key := makeTmplKey(k)
	si, s := t.tshardOf(&key)
	now := t.tick()
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.m[key]
	if !ok {
		return 0, false
	}
	e := &s.ents[i]
	if !alive(e.expires, now) && e.refs == 0 {
		t.tmplDelete(s, i)
		return 0, false
	}
	e.expires = now + durTicks(e.timeoutDur())
	*tp = Template{Svc: e.svc, Dest: e.dest, DAddr: e.daddr, DPort: e.dport, Timeout: e.timeoutDur()}
	return TemplateRef(uint64(e.gen)<<32 | uint64(ref32(si, i))), true
}

// InsertTemplate creates the template for k, replacing any there is, and
// returns its reference. ErrFull when Capacity templates exist.
func (t *Table) InsertTemplate(k *TemplateKey, tp *Template) (TemplateRef, error) {
	key := makeTmplKey(k)
	si, s := t.tshardOf(&key)
	now := t.tick()
	timeout := tp.Timeout
	if timeout <= 0 {
		timeout = 360 * time.Second
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.m[key]; ok {
		t.tmplDelete(s, i)
	}
	i, err := t.tmplNew(s, &key, &Template{Svc: tp.Svc, Dest: tp.Dest, DAddr: tp.DAddr, DPort: tp.DPort, Timeout: timeout})
	if err != nil {
		return 0, err
	}
	e := &s.ents[i]
	e.expires = now + durTicks(e.timeoutDur())
	return TemplateRef(uint64(e.gen)<<32 | uint64(ref32(si, i))), nil
}

// tmplNew makes the template for key from tp in shard s and returns its
// slot; the caller sets its expiry. Called with s locked, key absent.
func (t *Table) tmplNew(s *tmplShard, key *tmplKey, tp *Template) (uint32, error) {
	if t.tcount.Add(1) > t.capacity {
		t.tcount.Add(-1)
		return 0, ErrFull
	}
	var i uint32
	if s.free != 0 {
		i = s.free - 1
		s.free = s.ents[i].nextFree
	} else {
		if len(s.ents) >= 1<<tmplSlotBits-1 {
			t.tcount.Add(-1)
			return 0, ErrFull
		}
		s.ents = append(s.ents, tmplEntry{})
		i = uint32(len(s.ents) - 1)
	}
	e := &s.ents[i]
	*e = tmplEntry{
		key: *key, daddr: tp.DAddr, dport: tp.DPort, used: true,
		svc: tp.Svc, dest: tp.Dest, timeout: uint32(min(tp.Timeout.Milliseconds(), 1<<32-1)), gen: e.gen,
	}
	s.m[*key] = i
	s.created++
	if t.persist != nil {
		t.persist(e.dest, 1)
	}
	return i, nil
}

// RemoveTemplate deletes the template for k; connections made through it
// go on. It reports whether there was one.
func (t *Table) RemoveTemplate(k *TemplateKey) bool {
	key := makeTmplKey(k)
	_, s := t.tshardOf(&key)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.m[key]
	if ok {
		t.tmplDelete(s, i)
	}
	return ok
}

// tmplDelete takes slot i out of the map. The slot itself is freed once no
// connection refers to it. Called with s locked.
func (t *Table) tmplDelete(s *tmplShard, i uint32) {
	e := &s.ents[i]
	delete(s.m, e.key)
	e.dead = true
	t.tcount.Add(-1)
	if t.persist != nil {
		t.persist(e.dest, -1)
	}
	if e.refs == 0 {
		t.tmplFree(s, i)
	}
}

func (t *Table) tmplFree(s *tmplShard, i uint32) {
	e := &s.ents[i]
	*e = tmplEntry{gen: e.gen + 1, nextFree: s.free}
	s.free = i + 1
}

// tmplAcquire takes a reference on the template ref names, if it still
// exists, for a connection entry; it returns the entry's link, 0 if none.
func (t *Table) tmplAcquire(ref TemplateRef) uint32 {
	r := uint32(ref)
	si := int(r >> tmplSlotBits)
	slot := r&(1<<tmplSlotBits-1) - 1
	if si >= len(t.tshards) || r&(1<<tmplSlotBits-1) == 0 {
		return 0
	}
	s := &t.tshards[si]
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(slot) >= len(s.ents) {
		return 0
	}
	e := &s.ents[slot]
	if !e.used || e.dead || e.gen != uint32(ref>>32) {
		return 0
	}
	e.refs++
	return r
}

// tmplAssure marks a connection's template assured, as IPVS lists a
// template once a connection it controls is established or answered.
func (t *Table) tmplAssure(r uint32) {
	s := &t.tshards[r>>tmplSlotBits]
	slot := r&(1<<tmplSlotBits-1) - 1
	s.mu.Lock()
	s.ents[slot].assured = true
	s.mu.Unlock()
}

// tmplRelease drops a connection's reference.
func (t *Table) tmplRelease(r uint32) {
	s := &t.tshards[r>>tmplSlotBits]
	slot := r&(1<<tmplSlotBits-1) - 1
	s.mu.Lock()
	e := &s.ents[slot]
	e.refs--
	if e.refs == 0 && e.dead {
		t.tmplFree(s, slot)
	}
	s.mu.Unlock()
}

// sweepTmplShard is sweepShard for templates: an expired template with
// no connections goes; one with connections is re-armed.
func (t *Table) sweepTmplShard(s *tmplShard, now uint32, budget, scan int) (reaped, scanned int, end bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for reaped < budget && scanned < scan {
		if int(s.sweep) >= len(s.ents) {
			s.sweep = 0
			return reaped, scanned, true
		}
		i := s.sweep
		s.sweep++
		scanned++
		e := &s.ents[i]
		if !e.used || e.dead || alive(e.expires, now) {
			continue
		}
		if e.refs > 0 {
			e.expires = now + durTicks(rearm)
			continue
		}
		t.tmplDelete(s, i)
		reaped++
	}
	return reaped, scanned, false
}

// walkTemplates is Walk's second half.
func (t *Table) walkTemplates(fn func(c *Conn, expires time.Duration) bool) {
	const batch = 64
	var buf [batch]Conn
	var exp [batch]time.Duration
	for si := range t.tshards {
		s := &t.tshards[si]
		for pos := 0; ; {
			n := 0
			s.mu.Lock()
			now := t.tick()
			for ; pos < len(s.ents) && n < batch; pos++ {
				e := &s.ents[pos]
				if !e.used || e.dead {
					continue
				}
				if !alive(e.expires, now) {
					if e.refs == 0 {
						t.tmplDelete(s, uint32(pos))
						continue
					}
					e.expires = now + durTicks(rearm)
				}
				e.conn(&buf[n])
				exp[n] = ticksDur(e.expires - now)
				n++
			}
			more := pos < len(s.ents)
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
}
