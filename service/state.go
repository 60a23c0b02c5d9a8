package service

import (
	"sync"
	"sync/atomic"
)

// DestState is the live state of one real server: what the data path
// changes. It outlives rule edits of its Dest and is referred to from the
// connection table by its ID, so the table holds no pointers.
type DestState struct {
	id uint32 // index in the Registry, 0 = not registered

	active   atomic.Int32 // connections in an active state (TCP ESTABLISHED, SYN_*)
	inactive atomic.Int32 // every other connection, UDP always
	persist  atomic.Int32 // persistence templates pointing here

	uthresh, lthresh atomic.Uint32
	overload         atomic.Bool
	gone             atomic.Bool // deleted: its connections stop

	Stats Stats
}

func newDestState() *DestState { return new(DestState) }

// ID is the registry index of the state; 0 until registered.
func (s *DestState) ID() uint32 { return s.id }

// ActiveConns is the number of active connections (ipvsadm's ActiveConn).
func (s *DestState) ActiveConns() int32 { return s.active.Load() }

// InactConns is the number of inactive connections (ipvsadm's InActConn).
func (s *DestState) InactConns() int32 { return s.inactive.Load() }

// PersistConns is the number of persistence templates for this server.
func (s *DestState) PersistConns() int32 { return s.persist.Load() }

// Overhead is IPVS's load figure: active<<8 + inactive.
func (s *DestState) Overhead() int64 {
	return int64(s.active.Load())<<8 + int64(s.inactive.Load())
}

// Overloaded reports the threshold overload flag.
func (s *DestState) Overloaded() bool { return s.overload.Load() }

// Gone reports whether the real server was deleted.
func (s *DestState) Gone() bool { return s.gone.Load() }

// MarkGone records that the real server was deleted from its service.
func (s *DestState) MarkGone() { s.gone.Store(true) }

// SetThresholds installs the -x/-y thresholds and re-evaluates the
// overload flag.
func (s *DestState) SetThresholds(upper, lower uint32) {
	s.uthresh.Store(upper)
	s.lthresh.Store(lower)
	s.checkOverload()
}

// AddConns changes the connection counts by the given deltas and updates
// the overload flag.
func (s *DestState) AddConns(dActive, dInactive int32) {
	if dActive != 0 {
		s.active.Add(dActive)
	}
	if dInactive != 0 {
		s.inactive.Add(dInactive)
	}
	s.checkOverload()
}

// AddPersist changes the template count.
func (s *DestState) AddPersist(d int32) { s.persist.Add(d) }

// checkOverload applies IPVS's rule: overloaded at active+inactive >= upper;
// cleared below lower, or below 3/4 of upper when lower is 0.
func (s *DestState) checkOverload() {
	upper := s.uthresh.Load()
	if upper == 0 {
		if s.overload.Load() {
			s.overload.Store(false)
		}
		return
	}
	n := uint32(max(0, s.active.Load()+s.inactive.Load()))
	lower := s.lthresh.Load()
	if lower == 0 {
		lower = upper * 3 / 4
	}
	switch {
	case n >= upper:
		s.overload.Store(true)
	case n < lower:
		s.overload.Store(false)
	}
}

// Registry hands out the IDs by which the connection table refers to real
// servers, and maps them back. Lookups take no lock. An ID is reused only
// after Release, which the director calls once nothing can refer to the
// server any more (no connection or template, and a grace period for the
// workers' copies): a connection of a deleted server can then never reach
// another server through its ID. The table grows in chunks, so a Register
// copies no more than the list of chunks.
type Registry struct {
	mu     sync.Mutex
	chunks atomic.Pointer[[]*regChunk]
	free   []uint32 // released IDs, for reuse
	next   uint32   // the next ID never issued; 0 means 1 (ID 0 is none)
}

const regChunkSize = 1024

type regChunk [regChunkSize]atomic.Pointer[DestState]

// Register gives st an ID if it has none.
func (r *Registry) Register(st *DestState) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.id != 0 {
		return st.id
	}
	var id uint32
	if n := len(r.free); n > 0 {
		id, r.free = r.free[n-1], r.free[:n-1]
	} else {
		if r.next == 0 {
			r.next = 1
		}
		id = r.next
		r.next++
	}
	var cur []*regChunk
	if p := r.chunks.Load(); p != nil {
		cur = *p
	}
	if c := int(id / regChunkSize); c >= len(cur) {
		grown := make([]*regChunk, c+1)
		copy(grown, cur)
		for i := len(cur); i < len(grown); i++ {
			grown[i] = new(regChunk)
		}
		r.chunks.Store(&grown)
		cur = grown
	}
	cur[id/regChunkSize][id%regChunkSize].Store(st)
	st.id = id
	return id
}

// Release frees st's ID for reuse; Get no longer finds st. The caller
// guarantees that nothing refers to the ID any more.
func (r *Registry) Release(st *DestState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := st.id
	if id == 0 {
		return
	}
	if p := r.chunks.Load(); p != nil && int(id/regChunkSize) < len(*p) {
		(*p)[id/regChunkSize][id%regChunkSize].Store(nil)
	}
	r.free = append(r.free, id)
}

// Get returns the state with the given ID, or nil.
func (r *Registry) Get(id uint32) *DestState {
	p := r.chunks.Load()
	if p == nil || int(id/regChunkSize) >= len(*p) {
		return nil
	}
	return (*p)[id/regChunkSize][id%regChunkSize].Load()
}

// Issued is one more than the highest ID ever issued: what tables
// indexed by ID need, at most.
func (r *Registry) Issued() uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.next, 1)
}

// Counters are the IPVS statistics of a service or real server.
type Counters struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
}

// statShards spreads the data path's counter updates over cache lines:
// worker w adds to shard w%statShards.
const statShards = 8

type statShard struct {
	conns, inPkts, outPkts, inBytes, outBytes atomic.Uint64
	_                                         [24]byte // pad to a cache line
}

// Stats are live counters. Workers add to their own shard; readers sum.
// Zero remembers a base rather than racing the writers.
type Stats struct {
	shards [statShards]statShard
	mu     sync.Mutex
	base   Counters
}

// AddConn counts a new connection.
func (s *Stats) AddConn(worker int) { s.shards[worker%statShards].conns.Add(1) }

// AddIn counts packets and bytes from client to server.
func (s *Stats) AddIn(worker int, pkts, bytes uint64) {
	sh := &s.shards[worker%statShards]
	sh.inPkts.Add(pkts)
	sh.inBytes.Add(bytes)
}

// AddOut counts packets and bytes from server to client.
func (s *Stats) AddOut(worker int, pkts, bytes uint64) {
	sh := &s.shards[worker%statShards]
	sh.outPkts.Add(pkts)
	sh.outBytes.Add(bytes)
}

// raw sums the shards without the zero base.
func (s *Stats) raw() Counters {
	var c Counters
	for i := range s.shards {
		sh := &s.shards[i]
		c.Conns += sh.conns.Load()
		c.InPkts += sh.inPkts.Load()
		c.OutPkts += sh.outPkts.Load()
		c.InBytes += sh.inBytes.Load()
		c.OutBytes += sh.outBytes.Load()
	}
	return c
}

// Sum returns the counters since creation or the last Zero.
func (s *Stats) Sum() Counters {
	r := s.raw()
	s.mu.Lock()
	b := s.base
	s.mu.Unlock()
	return Counters{
		Conns: r.Conns - b.Conns, InPkts: r.InPkts - b.InPkts, OutPkts: r.OutPkts - b.OutPkts,
		InBytes: r.InBytes - b.InBytes, OutBytes: r.OutBytes - b.OutBytes,
	}
}

// Zero restarts the counters from zero (ipvsadm -Z).
func (s *Stats) Zero() {
	r := s.raw()
	s.mu.Lock()
	s.base = r
	s.mu.Unlock()
}
