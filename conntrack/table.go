package conntrack

import "sync"

// entry is one connection. 88 bytes, no pointers.
type entry struct {
	client, vaddr, daddr Addr
	cport, vport, dport  uint16
	proto, fwd           uint8
	state                State
	flags                uint8
	mac                  [6]byte
	// pkts counts the client's packets for the sync master (sync.go),
	// modulo the sync period; syncState is the state it last sent.
	pkts      uint8
	syncState State
	ifindex   int32
	svc, dest uint32
	expires   uint32 // tick
	link      uint32 // template reference; next free entry + 1 when free
}

const (
	fUsed  = 1 << iota
	fReply // indexed by its Reply tuple too (NAT)
	fInOnly
	fAssured // its template was told the connection got established or answered
	fLearned // learned from a sync master (Learn)
)

func (e *entry) matchOrig(tp *Tuple) bool {
	return e.cport == tp.SrcPort && e.vport == tp.DstPort && e.proto == tp.Proto &&
		e.client == tp.Src && e.vaddr == tp.Dst
}

func (e *entry) matchReply(tp *Tuple) bool {
	return e.dport == tp.SrcPort && e.cport == tp.DstPort && e.proto == tp.Proto &&
		e.daddr == tp.Src && e.client == tp.Dst
}

func (e *entry) mode() mode {
	if e.flags&fInOnly != 0 {
		return modeInOnly
	}
	return modeIn
}

// copyTo fills in c's connection fields. Field by field: a composite
// literal is built on the stack and copied whole, which cost the data path
// 8 % of a packet.
func (e *entry) copyTo(c *Conn) {
	c.Proto, c.Client, c.CPort, c.VAddr, c.VPort = e.proto, e.client, e.cport, e.vaddr, e.vport
	c.DAddr, c.DPort, c.Svc, c.Dest, c.Fwd = e.daddr, e.dport, e.svc, e.dest, e.fwd
	c.InputOnly, c.State, c.PeerMAC, c.PeerIf = e.flags&fInOnly != 0, e.state, e.mac, e.ifindex
	c.Tmpl, c.Template, c.FWMark, c.Sync, c.Learned = 0, false, 0, false, e.flags&fLearned != 0
}

// Entries live in chunks so that a shard grows without copying its slab
// and without reserving twice what it holds.
const (
	chunkShift = 8
	chunkSize  = 1 << chunkShift
	chunkMask  = chunkSize - 1
)

type chunk [chunkSize]entry

// An index slot is 64 bits. The high half is the low 32 bits of the
// slot's hash: its home position, so that growing the index and shifting
// slots back on removal never read an entry (rehashing entries cost a
// removal more than the insert), and, with the 8-bit tag from the top of
// the hash below it, a 40-bit check that rejects mismatches without
// touching the entry. Then the direction, and the entry number plus one
// (0 is an empty slot).
const (
	slotIdxBits = 23
	slotIdxMask = 1<<slotIdxBits - 1
	slotDirBit  = 1 << slotIdxBits
	maxEntries  = slotIdxMask - 1 // per shard
)

func slotKey(h uint64, d Dir) uint64 {
	return uint64(uint32(h))<<32 | h>>56<<24 | uint64(d)<<slotIdxBits
}

// slotHome is the probe start of slot v in an index of mask+1 slots.
func slotHome(v uint64, mask int) int { return int(v>>32) & mask }

type shardStats struct {
	inserted, removed, expired, reused, full, evicted, learned uint64
}

type shard struct {
	mu     sync.Mutex
	index  []uint64 // linear probing, power-of-two length, at most 3/4 full
	used   int      // occupied slots
	chunks []*chunk
	nent   uint32 // entries ever allocated: the slab's high-water mark
	live   int    // entries in use
	free   uint32 // first free entry + 1
	sweep  uint32 // where Sweep goes on in this shard
	st     shardStats
	_      [64]byte // keep neighbouring shards' locks off this cache line
}

func (s *shard) ent(i uint32) *entry { return &s.chunks[i>>chunkShift][i&chunkMask] }

func (s *shard) alloc() (uint32, bool) {
	if s.free != 0 {
		i := s.free - 1
		s.free = s.ent(i).link
		s.live++
		return i, true
	}
	if s.nent >= maxEntries {
		return 0, false
	}
	if s.nent&chunkMask == 0 && int(s.nent>>chunkShift) == len(s.chunks) {
		s.chunks = append(s.chunks, new(chunk))
	}
	i := s.nent
	s.nent++
	s.live++
	return i, true
}

func (s *shard) release(i uint32) {
	e := s.ent(i)
	*e = entry{link: s.free}
	s.free = i + 1
	s.live--
}

// compact moves the shard's entries to the front of a new slab and
// rebuilds the index for them, so that the memory a flood of connections
// took comes back once they are gone. Entry numbers change: nothing
// outside the shard holds them (callers get copies). Called with s locked.
func (s *shard) compact() {
	renum := make([]uint32, s.nent) // old entry -> new + 1
	var chunks []*chunk
	n := uint32(0)
	for i := uint32(0); i < s.nent; i++ {
		e := s.ent(i)
		if e.flags&fUsed == 0 {
			continue
		}
		if n&chunkMask == 0 {
			chunks = append(chunks, new(chunk))
		}
		chunks[n>>chunkShift][n&chunkMask] = *e
		n++
		renum[i] = n
	}
	size := 16
	for s.used*4 > size*3 {
		size *= 2
	}
	index := make([]uint64, size)
	mask := size - 1
	for _, v := range s.index {
		if v == 0 {
			continue
		}
		nv := v&^slotIdxMask | uint64(renum[uint32(v&slotIdxMask)-1])
		p := slotHome(v, mask)
		for index[p] != 0 {
			p = (p + 1) & mask
		}
		index[p] = nv
	}
	s.chunks, s.index, s.nent, s.free, s.sweep = chunks, index, n, 0, 0
}

// find probes for the entry whose dir tuple is tp. On a miss it returns
// the empty slot where the probe ended, which is where tp would go.
func (s *shard) find(h uint64, d Dir, tp *Tuple) (pos int, idx uint32, ok bool) {
	mask := len(s.index) - 1
	want := slotKey(h, d)
	for p := int(h) & mask; ; p = (p + 1) & mask {
		v := s.index[p]
		if v == 0 {
			return p, 0, false
		}
		if v&^slotIdxMask != want {
			continue
		}
		i := uint32(v&slotIdxMask) - 1
		e := s.ent(i)
		if d == Orig && e.matchOrig(tp) || d == Reply && e.matchReply(tp) {
			return p, i, true
		}
	}
}

// entHash is the hash entry e is indexed with in direction d.
func (t *Table) entHash(e *entry, d Dir) uint64 {
	h := t.hashEnd(e.proto, &e.client, e.cport)
	if d == Reply {
		return t.hashFull(h, &e.daddr, e.dport, Reply)
	}
	return t.hashFull(h, &e.vaddr, e.vport, Orig)
}

// reserve makes room for n more slots, growing the index when it would
// pass 3/4 full.
func (t *Table) reserve(s *shard, n int) {
	if len(s.index) != 0 && (s.used+n)*4 <= len(s.index)*3 {
		return
	}
	size := max(16, len(s.index))
	for (s.used+n)*4 > size*3 {
		size *= 2
	}
	old := s.index
	s.index = make([]uint64, size)
	mask := size - 1
	for _, v := range old {
		if v == 0 {
			continue
		}
		p := slotHome(v, mask)
		for s.index[p] != 0 {
			p = (p + 1) & mask
		}
		s.index[p] = v
	}
}

// unindex empties slot p and shifts later members of its probe run back,
// so that no tombstones are needed.
func (t *Table) unindex(s *shard, p int) {
	mask := len(s.index) - 1
	s.used--
	for {
		s.index[p] = 0
		q := p
		for {
			q = (q + 1) & mask
			v := s.index[q]
			if v == 0 {
				return
			}
			home := slotHome(v, mask)
			// v may move to p unless its home lies cyclically in (p, q].
			if p <= q && (home <= p || home > q) || p > q && home <= p && home > q {
				s.index[p] = v
				p = q
				break
			}
		}
	}
}

// unindexEntry removes entry i's slot for direction d.
func (t *Table) unindexEntry(s *shard, i uint32, d Dir) {
	h := t.entHash(s.ent(i), d)
	v := slotKey(h, d) | uint64(i+1)
	mask := len(s.index) - 1
	p := int(h) & mask
	for s.index[p] != v {
		p = (p + 1) & mask
	}
	t.unindex(s, p)
}

// drop takes entry i out of shard s: its index slots, its real server's
// count and its template reference. Called with s locked.
func (t *Table) drop(s *shard, i uint32) { t.dropAt(s, i, Orig, -1) }

// dropAt is drop for an entry its caller found at index slot pos of
// direction d, which need not be searched for again; pos -1 if unknown.
func (t *Table) dropAt(s *shard, i uint32, d Dir, pos int) {
	e := s.ent(i)
	if pos >= 0 {
		t.unindex(s, pos)
	} else {
		t.unindexEntry(s, i, d)
	}
	// Every entry has an Orig slot, NAT ones a Reply slot too.
	if d == Reply {
		t.unindexEntry(s, i, Orig)
	} else if e.flags&fReply != 0 {
		t.unindexEntry(s, i, Reply)
	}
	t.account(e.dest, e.state, -1)
	if e.link != 0 {
		t.tmplRelease(e.link)
	}
	s.release(i)
	t.count.Add(-1)
}

// account reports an entry entering (+1) or leaving (-1) state st to the
// Counts hook.
func (t *Table) account(dest uint32, st State, delta int32) {
	if t.counts == nil {
		return
	}
	if st.Active() {
		t.counts(dest, delta, 0)
	} else {
		t.counts(dest, 0, delta)
	}
}

// moveState changes e's state, telling the Counts hook when the entry
// crosses between active and inactive.
func (t *Table) moveState(e *entry, ns State) {
	if a, b := e.state.Active(), ns.Active(); a != b && t.counts != nil {
		if b {
			t.counts(e.dest, 1, -1)
		} else {
			t.counts(e.dest, -1, 1)
		}
	}
	e.state = ns
}
