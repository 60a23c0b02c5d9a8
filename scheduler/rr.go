package scheduler

import (
	"sync"
	"sync/atomic"

	"uvs/service"
)

// rr: the next available server after the last one picked, in list order.
// The position is the last pick (its index+1; 0 is the list head, where a
// fresh service starts, so the newest server goes first). When the last
// pick is deleted, the position moves to the server before it, so the one
// after it comes next; adding servers (at the head) does not move it.
type rr struct {
	mu  sync.Mutex // serialises Update; never taken by Schedule
	cur atomic.Pointer[rrList]
}

type rrList struct {
	dests []*service.Dest
	vals  []service.Dest // settings as installed
	pos   position
}

func newRR() *rr {
	s := new(rr)
	s.cur.Store(new(rrList))
	return s
}

func (s *rr) Update(dests []*service.Dest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	if destsEqual(old.vals, dests) {
		return
	}
	nl := &rrList{dests: cloneDests(dests), vals: destValues(dests)}
	idx := indexByState(nl.dests)
	oldDests := old.dests
	nl.pos.follow(&old.pos, func(w uint64) uint64 {
		for i := int(w) - 1; i >= 0; i-- {
			if j, ok := idx[oldDests[i].DestState]; ok {
				return uint64(j + 1)
			}
		}
		return 0
	})
	s.cur.Store(nl)
	nl.pos.load()
}

func (s *rr) Schedule(*Flow) *service.Dest {
	for {
		l := s.cur.Load()
		w := l.pos.load()
		if w&wordSealed != 0 {
			continue // a newer list is already published
		}
		n := len(l.dests)
		start := int(w) // index after the last pick
		for k := range n {
			i := (start + k) % n
			if d := l.dests[i]; available(d) {
				if l.pos.word.CompareAndSwap(w, uint64(i+1)) {
					return d
				}
				break // raced with another pick or an Update: retry
			}
			if k == n-1 {
				return nil
			}
		}
		if n == 0 {
			return nil
		}
	}
}

// indexByState maps each server's live state to its place in dests: the
// identity of a real server across snapshots.
func indexByState(dests []*service.Dest) map[*service.DestState]int {
	m := make(map[*service.DestState]int, len(dests))
	for i, d := range dests {
		m[d.DestState] = i
	}
	return m
}
