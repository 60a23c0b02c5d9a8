package scheduler

import (
	"sync/atomic"

	"uvs/service"
)

// The load-based schedulers keep no position: each pick reads the live
// connection counts of the current list.
type load struct {
	cur  atomic.Pointer[[]*service.Dest]
	pick func([]*service.Dest) *service.Dest
}

func newLoad(pick func([]*service.Dest) *service.Dest) *load {
	s := &load{pick: pick}
	s.cur.Store(new([]*service.Dest))
	return s
}

func (s *load) Update(dests []*service.Dest) {
	l := cloneDests(dests)
	s.cur.Store(&l)
}

func (s *load) Schedule(*Flow) *service.Dest { return s.pick(*s.cur.Load()) }

// pickLC: least overhead; ties to the first.
func pickLC(dests []*service.Dest) *service.Dest {
	var least *service.Dest
	var loh int64
	for _, d := range dests {
		if !available(d) {
			continue
		}
		if doh := d.Overhead(); least == nil || doh < loh {
			least, loh = d, doh
		}
	}
	return least
}

// pickWLC: least overhead/weight, by cross-multiplication. After the
// first available server, only the overload flag is tested: a weight-0
// server can never win the comparison.
func pickWLC(dests []*service.Dest) *service.Dest {
	return leastWeighted(dests, (*service.Dest).Overhead)
}

// pickSED: least (active+1)/weight.
func pickSED(dests []*service.Dest) *service.Dest {
	return leastWeighted(dests, sedOverhead)
}

func sedOverhead(d *service.Dest) int64 { return int64(d.ActiveConns()) + 1 }

func leastWeighted(dests []*service.Dest, overhead func(*service.Dest) int64) *service.Dest {
	i := 0
	for i < len(dests) && !available(dests[i]) {
		i++
	}
	if i == len(dests) {
		return nil
	}
	least := dests[i]
	loh := overhead(least)
	for _, d := range dests[i+1:] {
		if d.Overloaded() {
			continue
		}
		doh := overhead(d)
		if loh*int64(d.Weight) > doh*int64(least.Weight) {
			least, loh = d, doh
		}
	}
	return least
}

// pickNQ: the first available server with no active connection; otherwise
// as sed.
func pickNQ(dests []*service.Dest) *service.Dest {
	var least *service.Dest
	var loh int64
	for _, d := range dests {
		if !available(d) {
			continue
		}
		doh := sedOverhead(d)
		if doh == 1 {
			return d
		}
		if least == nil || loh*int64(d.Weight) > doh*int64(least.Weight) {
			least, loh = d, doh
		}
	}
	return least
}

// pickFO: the available server with the highest weight; ties to the first.
func pickFO(dests []*service.Dest) *service.Dest {
	var best *service.Dest
	for _, d := range dests {
		if available(d) && (best == nil || d.Weight > best.Weight) {
			best = d
		}
	}
	return best
}

// pickOVF: the highest-weight available server whose active count does
// not exceed its weight; ties to the first.
func pickOVF(dests []*service.Dest) *service.Dest {
	var best *service.Dest
	for _, d := range dests {
		if !available(d) || d.ActiveConns() > d.Weight {
			continue
		}
		if best == nil || d.Weight > best.Weight {
			best = d
		}
	}
	return best
}

// twos: the power of two choices. Two servers are drawn with probability
// by weight (r in [0, total], so the first server's range is one wider, as
// in the kernel), and the one with the lower overhead/weight wins; ties go
// to the first draw.
type twos struct {
	cur  atomic.Pointer[[]*service.Dest]
	rand func(uint64) uint64
}

func newTwos(rand func(uint64) uint64) *twos {
	s := &twos{rand: rand}
	s.cur.Store(new([]*service.Dest))
	return s
}

func (s *twos) Update(dests []*service.Dest) {
	l := cloneDests(dests)
	s.cur.Store(&l)
}

func (s *twos) Schedule(*Flow) *service.Dest {
	dests := *s.cur.Load()
	var total int64
	var last *service.Dest
	for _, d := range dests {
		if available(d) {
			total += int64(d.Weight)
			last = d
		}
	}
	if last == nil {
		return nil
	}
	r1 := int64(s.rand(uint64(total) + 1))
	r2 := int64(s.rand(uint64(total) + 1))
	c1, c2 := last, (*service.Dest)(nil)
	found1 := false
	for _, d := range dests {
		if !available(d) {
			continue
		}
		w := int64(d.Weight)
		r1 -= w
		r2 -= w
		if r1 <= 0 && !found1 {
			c1, found1 = d, true
		}
		if r2 <= 0 && c2 == nil {
			c2 = d
		}
		if found1 && c2 != nil {
			break
		}
	}
	if c2 != nil && int64(c2.Weight)*c1.Overhead() > int64(c1.Weight)*c2.Overhead() {
		return c2
	}
	return c1
}
