package scheduler

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"uvs/service"
)

// lblc and lblcr remember, per destination address, the server(s) it was
// sent to. The tables are fixed-size and preallocated (CacheSize entries
// in buckets of cacheWays), so Schedule allocates nothing; each bucket has
// its own small lock, which the control plane never takes. An entry idle
// for 24 hours is gone (the kernel's full sweep runs every 30 minutes; here
// the check is exact, at lookup). When a bucket is full the entry idle the
// longest makes room: the kernel instead lets its table grow past 16384
// entries and then trims entries idle for 6 minutes.
const (
	defaultCacheSize = 16384
	cacheWays        = 8
	cacheExpiry      = 24 * time.Hour // also lblcr's set-shrinking interval
	setCap           = 8              // lblcr servers remembered per address
)

type slot[V any] struct {
	addr netip.Addr
	used int64 // unix nanoseconds of the last lookup; 0 = free
	v    V
}

type cacheBucket[V any] struct {
	mu    sync.Mutex
	slots [cacheWays]slot[V]
}

type cache[V any] struct {
	buckets []cacheBucket[V]
	mask    uint32
}

func newCache[V any](size int) *cache[V] {
	n := 1
	for n*cacheWays < size {
		n <<= 1
	}
	return &cache[V]{buckets: make([]cacheBucket[V], n), mask: uint32(n - 1)}
}

func (c *cache[V]) bucket(a netip.Addr) *cacheBucket[V] {
	x := fold(a)
	if a.Is6() {
		b := a.As16()
		x ^= uint32(b[15])<<8 | uint32(b[3])
	}
	return &c.buckets[(x*goldenRatio^x>>16)&c.mask]
}

// find returns the live entry for a, or nil. The bucket is locked.
func (b *cacheBucket[V]) find(a netip.Addr, now int64) *slot[V] {
	for i := range b.slots {
		s := &b.slots[i]
		if s.used != 0 && s.addr == a {
			if now-s.used > int64(cacheExpiry) {
				s.used = 0
				return nil
			}
			return s
		}
	}
	return nil
}

// claim returns a fresh entry for a: a free or expired one, else the one
// idle the longest. The bucket is locked.
func (b *cacheBucket[V]) claim(a netip.Addr, now int64) *slot[V] {
	victim := &b.slots[0]
	for i := range b.slots {
		s := &b.slots[i]
		if s.used == 0 || now-s.used > int64(cacheExpiry) {
			victim = s
			break
		}
		if s.used < victim.used {
			victim = s
		}
	}
	var zero V
	victim.addr, victim.used, victim.v = a, now, zero
	return victim
}

// listState is a snapshot of the servers with the way back from a live
// state to its current Dest.
type listState struct {
	dests []*service.Dest
	by    map[*service.DestState]*service.Dest
}

func newListState(dests []*service.Dest) *listState {
	l := &listState{dests: cloneDests(dests), by: make(map[*service.DestState]*service.Dest, len(dests))}
	for _, d := range l.dests {
		l.by[d.DestState] = d
	}
	return l
}

// lblcOverloaded is lblc's own overload rule: more active connections
// than its weight while some server is below half of its weight.
func lblcOverloaded(d *service.Dest, dests []*service.Dest) bool {
	if d.ActiveConns() <= d.Weight {
		return false
	}
	for _, o := range dests {
		if int64(o.ActiveConns())*2 < int64(o.Weight) {
			return true
		}
	}
	return false
}

// nowNano reads the clock; time.Time.UnixNano is never 0 in practice, and
// 0 marks a free slot, so it is nudged.
func nowNano(now func() time.Time) int64 {
	n := now().UnixNano()
	if n == 0 {
		n = 1
	}
	return n
}

// lblc: keep the cached server unless it is unavailable or overloaded by
// lblc's rule; otherwise pick by wlc and cache that.
type lblc struct {
	cur   atomic.Pointer[listState]
	cache *cache[*service.DestState]
	now   func() time.Time
}

func newLBLC(now func() time.Time, size int) *lblc {
	s := &lblc{cache: newCache[*service.DestState](size), now: now}
	s.cur.Store(newListState(nil))
	return s
}

func (s *lblc) Update(dests []*service.Dest) { s.cur.Store(newListState(dests)) }

func (s *lblc) Schedule(f *Flow) *service.Dest {
	l := s.cur.Load()
	now := nowNano(s.now)
	b := s.cache.bucket(f.Dst)
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.find(f.Dst, now)
	if e != nil {
		e.used = now
		if d := l.by[e.v]; d != nil && available(d) && !lblcOverloaded(d, l.dests) {
			return d
		}
	}
	d := pickWLC(l.dests)
	if d == nil {
		return nil
	}
	if e == nil {
		e = b.claim(f.Dst, now)
	}
	e.v = d.DestState
	return d
}

// destSet is an lblcr entry: servers newest first, and when the set last
// changed.
type destSet struct {
	m       [setCap]*service.DestState
	n       int
	lastmod int64
}

func (st *destSet) insert(d *service.DestState, now int64) {
	for _, m := range st.m[:st.n] {
		if m == d {
			return
		}
	}
	if st.n < setCap {
		st.n++
	}
	copy(st.m[1:st.n], st.m[:st.n-1]) // the oldest falls off a full set
	st.m[0] = d
	st.lastmod = now
}

func (st *destSet) erase(d *service.DestState, now int64) {
	for i, m := range st.m[:st.n] {
		if m == d {
			copy(st.m[i:], st.m[i+1:st.n])
			st.n--
			st.m[st.n] = nil
			st.lastmod = now
			return
		}
	}
}

// prune drops members that are no longer servers of the service.
func (st *destSet) prune(l *listState) {
	j := 0
	for _, m := range st.m[:st.n] {
		if l.by[m] != nil {
			st.m[j] = m
			j++
		}
	}
	clear(st.m[j:st.n])
	st.n = j
}

// least is the member with the least overhead/weight, skipping overloaded
// ones and, for the first, weight 0.
func (st *destSet) least(l *listState) *service.Dest {
	var least *service.Dest
	var loh int64
	for _, m := range st.m[:st.n] {
		d := l.by[m]
		if d.Overloaded() {
			continue
		}
		if least == nil {
			if d.Weight > 0 {
				least, loh = d, d.Overhead()
			}
			continue
		}
		if doh := d.Overhead(); loh*int64(d.Weight) > doh*int64(least.Weight) {
			least, loh = d, doh
		}
	}
	return least
}

// most is the member with the most overhead/weight among those of
// positive weight.
func (st *destSet) most(l *listState) *service.Dest {
	var most *service.Dest
	var moh int64
	for _, m := range st.m[:st.n] {
		d := l.by[m]
		if d.Weight <= 0 {
			continue
		}
		doh := d.Overhead()
		if most == nil || moh*int64(d.Weight) < doh*int64(most.Weight) {
			most, moh = d, doh
		}
	}
	return most
}

// lblcr: per destination address a set of servers; use its least loaded
// member, add a wlc pick when that one is overloaded, and drop the most
// loaded member when the set has not changed for 24 hours.
type lblcr struct {
	cur   atomic.Pointer[listState]
	cache *cache[destSet]
	now   func() time.Time
}

func newLBLCR(now func() time.Time, size int) *lblcr {
	s := &lblcr{cache: newCache[destSet](size), now: now}
	s.cur.Store(newListState(nil))
	return s
}

func (s *lblcr) Update(dests []*service.Dest) { s.cur.Store(newListState(dests)) }

func (s *lblcr) Schedule(f *Flow) *service.Dest {
	l := s.cur.Load()
	now := nowNano(s.now)
	b := s.cache.bucket(f.Dst)
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.find(f.Dst, now)
	if e != nil {
		e.used = now
		st := &e.v
		st.prune(l)
		d := st.least(l)
		if st.n > 1 && now > st.lastmod+int64(cacheExpiry) {
			if m := st.most(l); m != nil {
				st.erase(m.DestState, now)
			}
		}
		if d != nil && !lblcOverloaded(d, l.dests) {
			return d
		}
		if d = pickWLC(l.dests); d != nil {
			st.insert(d.DestState, now)
		}
		return d
	}
	d := pickWLC(l.dests)
	if d == nil {
		return nil
	}
	e = b.claim(f.Dst, now)
	e.v.insert(d.DestState, now)
	return d
}
