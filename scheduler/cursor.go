package scheduler

import "sync/atomic"

// The rr and wrr position lives in one atomic word per snapshot of the
// server list, so that Schedule never waits: a pick is a compare-and-swap
// of the word. Update publishes a new snapshot whose word starts
// "uninitialised" and points back at the previous snapshot; whoever first
// needs it (Update itself, or a racing Schedule) seals the old word, so
// late picks on the old snapshot fail their swap and retry on the new one,
// and carries the position over with the snapshot's carry function. Every
// helper computes the same value, so whichever swap wins is right.
const (
	wordUninit = uint64(1) << 63 // not yet carried over from prev
	wordSealed = uint64(1) << 62 // superseded by a newer snapshot
	wordValue  = wordSealed - 1
)

// position is the scheduling position of one snapshot.
type position struct {
	word  atomic.Uint64
	prev  atomic.Pointer[position]
	carry func(old uint64) uint64 // maps prev's value into this snapshot
}

// follow makes p take over from prev: called before p is published.
func (p *position) follow(prev *position, carry func(uint64) uint64) {
	p.carry = carry
	p.word.Store(wordUninit)
	p.prev.Store(prev)
}

// load returns p's word, carrying the position over first if needed. The
// result may have wordSealed set: p is no longer current.
func (p *position) load() uint64 {
	for {
		w := p.word.Load()
		if w&wordUninit == 0 {
			return w
		}
		prev := p.prev.Load()
		if prev == nil {
			continue // another helper has just finished
		}
		old := prev.seal()
		if p.word.CompareAndSwap(w, p.carry(old)&wordValue) {
			p.prev.Store(nil) // let the old snapshot go
		}
	}
}

// seal stops further picks on p and returns its last value.
func (p *position) seal() uint64 {
	for {
		w := p.load()
		if w&wordSealed != 0 {
			return w & wordValue
		}
		if p.word.CompareAndSwap(w, w|wordSealed) {
			return w
		}
	}
}
