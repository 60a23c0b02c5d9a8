package scheduler

import (
	"sync"
	"sync/atomic"

	"uvs/service"
)

// wrr is IPVS's interleaved weighted round robin. State: the last pick cl
// and the current weight cw; per list: di, the gcd of the positive
// weights, and mw = max weight - (di - 1). A pick walks on from cl to the
// next server whose weight is at least cw; each time the walk passes the
// end of the list cw drops by di, and at zero or below it starts again at
// mw. Every change of the server list moves cl back to the head and keeps
// cw unless it is zero or above the new mw (then cw = mw), or rounds it to
// the new di. So adding servers one by one to a fresh service leaves
// cw = 1, and the first pass takes every server in list order — the
// kernel's measured C B A A B A C B A for weights A=4, B=3, C=2.
type wrr struct {
	mu  sync.Mutex // serialises Update; never taken by Schedule
	cur atomic.Pointer[wrrList]
}

type wrrList struct {
	dests  []*service.Dest
	vals   []service.Dest // settings as installed
	di, mw int64
	pos    position
}

// The word holds cl+1 (0 = head) in the low bits and cw above them.
const (
	wrrIdxBits = 24
	wrrIdxMask = 1<<wrrIdxBits - 1
)

func wrrWord(cl int, cw int64) uint64 { return uint64(cl+1) | uint64(cw)<<wrrIdxBits }

func wrrUnword(w uint64) (cl int, cw int64) {
	return int(w&wrrIdxMask) - 1, int64((w & wordValue) >> wrrIdxBits)
}

func newWRR() *wrr {
	s := new(wrr)
	s.cur.Store(&wrrList{di: 1})
	return s
}

// wrrShape returns di and mw for a set of weights.
func wrrShape(weights []int32) (di, mw int64) {
	var g, hi int64
	for _, w := range weights {
		w := int64(w)
		if w > 0 {
			if g == 0 {
				g = w
			} else {
				g = gcd(g, w)
			}
		}
		hi = max(hi, w)
	}
	if g == 0 {
		g = 1
	}
	return g, hi - (g - 1)
}

// wrrAdjust is what one change of the list does to cw.
func wrrAdjust(cw, di, mw int64) int64 {
	switch {
	case cw > mw || cw == 0:
		return mw
	case di > 1:
		return cw/di*di + 1
	}
	return cw
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (s *wrr) Update(dests []*service.Dest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	if destsEqual(old.vals, dests) {
		return
	}
	nl := &wrrList{dests: cloneDests(dests), vals: destValues(dests)}
	nl.di, nl.mw = wrrShape(weightsOf(nl.dests))
	// The kernel adjusts cw once per added, edited or deleted server. One
	// Update may carry several such changes (a batch); replay them as the
	// kernel would have seen them: deletions, edits, then additions from
	// the oldest to the newest.
	steps := wrrSteps(old.vals, nl.dests)
	nl.pos.follow(&old.pos, func(w uint64) uint64 {
		_, cw := wrrUnword(w)
		for _, st := range steps {
			cw = wrrAdjust(cw, st[0], st[1])
		}
		return wrrWord(-1, cw)
	})
	s.cur.Store(nl)
	nl.pos.load()
}

// wrrSteps lists (di, mw) after each single change from old to cur.
func wrrSteps(old []service.Dest, cur []*service.Dest) [][2]int64 {
	inCur := indexByState(cur)
	inOld := make(map[*service.DestState]int, len(old))
	for i := range old {
		inOld[old[i].DestState] = i
	}
	type member struct {
		st *service.DestState
		w  int32
	}
	var set []member
	for _, d := range old {
		set = append(set, member{d.DestState, d.Weight})
	}
	var steps [][2]int64
	step := func() {
		ws := make([]int32, len(set))
		for i, m := range set {
			ws[i] = m.w
		}
		di, mw := wrrShape(ws)
		steps = append(steps, [2]int64{di, mw})
	}
	for _, d := range old {
		if _, ok := inCur[d.DestState]; !ok {
			for i, m := range set {
				if m.st == d.DestState {
					set = append(set[:i], set[i+1:]...)
					break
				}
			}
			step()
		}
	}
	for _, d := range cur {
		if j, ok := inOld[d.DestState]; ok && old[j] != *d {
			for i := range set {
				if set[i].st == d.DestState {
					set[i].w = d.Weight
				}
			}
			step()
		}
	}
	for i := len(cur) - 1; i >= 0; i-- {
		if _, ok := inOld[cur[i].DestState]; !ok {
			set = append(set, member{cur[i].DestState, cur[i].Weight})
			step()
		}
	}
	return steps
}

func weightsOf(dests []*service.Dest) []int32 {
	ws := make([]int32, len(dests))
	for i, d := range dests {
		ws[i] = d.Weight
	}
	return ws
}

func (s *wrr) Schedule(*Flow) *service.Dest {
	for {
		l := s.cur.Load()
		w := l.pos.load()
		if w&wordSealed != 0 {
			continue
		}
		cl, cw := wrrUnword(w)
		d, ncl, ncw := l.next(cl, cw)
		nw := wrrWord(ncl, ncw)
		if nw == w || l.pos.word.CompareAndSwap(w, nw) {
			return d
		}
	}
}

// next walks from cl for a server of weight >= cw, returning it (or nil)
// and the new position. When every server is overloaded it gives up after
// one pass at the lowest cw over all of them, leaving cw where the walk
// ended, as the kernel does.
func (l *wrrList) next(cl int, cw int64) (*service.Dest, int, int64) {
	if l.mw <= 0 {
		return nil, cl, cw
	}
	last, stop := cl, -2
	lastPass, restarted := false, false
	i := cl
	for {
		for i++; i < len(l.dests); i++ {
			d := l.dests[i]
			if !d.Overloaded() && int64(d.Weight) >= cw {
				return d, i, cw
			}
			if i == stop {
				return nil, i, cw
			}
		}
		i = -1 // back at the head
		cw -= l.di
		if cw <= 0 {
			cw = l.mw
			if lastPass || last == -1 {
				return nil, -1, cw
			}
			restarted = true
		}
		lastPass = cw <= l.di
		if lastPass && restarted && last != -1 {
			stop = last
		}
	}
}
