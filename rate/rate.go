// Package rate estimates connection, packet and byte rates of IPVS
// statistics the way IPVS does, so that ipvsadm --rate reads the same
// figures a kernel director would show.
//
// IPVS samples every counter every 2 seconds and keeps an exponentially
// weighted moving average, avg = avg*(1-W) + rate*W with W = 2^-2, so the
// figure covers roughly the last 8 seconds. Averages are kept in fixed
// point: connections and packets per second scaled by 2^10, bytes per
// second by 2^5, and rounded when read.
package rate

import (
	"math/bits"
	"sync"
	"time"

	"uvs/service"
)

// Period is how often the director calls Tick: IPVS's estimator period.
const Period = 2 * time.Second

// Rates are the per-second estimates of one stats object, as ipvsadm
// --rate prints them.
type Rates struct {
	CPS, InPPS, OutPPS, InBPS, OutBPS uint64
}

// Fixed-point scales: pps and cps keep 10 fractional bits, bps keeps 5.
const (
	pktShift  = 10
	byteShift = 5
	// weightShift is log2(1/W).
	weightShift = 2
)

// est is the estimator state of one stats object.
type est struct {
	last    service.Counters
	started bool
	// Averages in fixed point, signed so the decay step can subtract.
	cps, inpps, outpps, inbps, outbps int64
}

// Estimator keeps the rate estimates of the stats objects it was told
// about. Tick, Track, Untrack, Get and Reset may be called from different
// goroutines.
type Estimator struct {
	mu   sync.Mutex
	m    map[*service.Stats]*est
	last time.Time
}

// New returns an estimator tracking nothing.
func New() *Estimator {
	return &Estimator{m: make(map[*service.Stats]*est)}
}

// Track starts estimating s. Its first sample is taken at the next Tick,
// so a new service shows zero rates until traffic is seen after that.
func (e *Estimator) Track(s *service.Stats) {
	if s == nil {
		return
	}
	e.mu.Lock()
	if _, ok := e.m[s]; !ok {
		e.m[s] = &est{}
	}
	e.mu.Unlock()
}

// Untrack stops estimating s and forgets its state.
func (e *Estimator) Untrack(s *service.Stats) {
	e.mu.Lock()
	delete(e.m, s)
	e.mu.Unlock()
}

// Reset zeroes s's rates and restarts its sampling from the current
// counters, as ipvsadm -Z does to the kernel's estimator.
func (e *Estimator) Reset(s *service.Stats) {
	e.mu.Lock()
	if x, ok := e.m[s]; ok {
		*x = est{last: s.Sum(), started: true}
	}
	e.mu.Unlock()
}

// Get returns the current estimates of s; zero for an untracked s.
func (e *Estimator) Get(s *service.Stats) Rates {
	e.mu.Lock()
	x, ok := e.m[s]
	var r Rates
	if ok {
		r = Rates{
			CPS:    read(x.cps, pktShift),
			InPPS:  read(x.inpps, pktShift),
			OutPPS: read(x.outpps, pktShift),
			InBPS:  read(x.inbps, byteShift),
			OutBPS: read(x.outbps, byteShift),
		}
	}
	e.mu.Unlock()
	return r
}

// read rounds a fixed-point average to a whole rate: IPVS adds just under
// one half before shifting.
func read(avg int64, shift uint) uint64 {
	if avg <= 0 {
		return 0
	}
	return uint64(avg+(1<<(shift-1))-1) >> shift
}

// Tick samples every tracked object. now is the sampling time; the
// director calls Tick every Period. A tick whose interval differs from
// Period (a late timer) is normalised to per-second rates all the same.
func (e *Estimator) Tick(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	elapsed := Period
	if !e.last.IsZero() {
		elapsed = now.Sub(e.last)
	}
	if elapsed <= 0 {
		return // clock went backwards or a duplicate tick: no interval to measure
	}
	e.last = now
	for s, x := range e.m {
		c := s.Sum()
		if !x.started {
			x.last, x.started = c, true
			continue
		}
		if c.Conns < x.last.Conns || c.InPkts < x.last.InPkts || c.OutPkts < x.last.OutPkts ||
			c.InBytes < x.last.InBytes || c.OutBytes < x.last.OutBytes {
			// The counters were zeroed behind our back: start over.
			*x = est{last: c, started: true}
			continue
		}
		x.cps = step(x.cps, c.Conns-x.last.Conns, pktShift, elapsed)
		x.inpps = step(x.inpps, c.InPkts-x.last.InPkts, pktShift, elapsed)
		x.outpps = step(x.outpps, c.OutPkts-x.last.OutPkts, pktShift, elapsed)
		x.inbps = step(x.inbps, c.InBytes-x.last.InBytes, byteShift, elapsed)
		x.outbps = step(x.outbps, c.OutBytes-x.last.OutBytes, byteShift, elapsed)
		x.last = c
	}
}

// step folds one interval's delta into a fixed-point average:
// avg += (rate - avg) * W.
func step(avg int64, delta uint64, shift uint, elapsed time.Duration) int64 {
	// rate = delta / seconds, in fixed point: delta << shift * 1e9 / ns.
	hi, lo := bits.Mul64(delta, uint64(time.Second)<<shift)
	var r uint64
	if hi >= uint64(elapsed) {
		r = 1<<63 - 1 // absurd rate; saturate rather than overflow
	} else {
		r, _ = bits.Div64(hi, lo, uint64(elapsed))
	}
	rate := int64(min(r, 1<<62))
	return avg + (rate-avg)>>weightShift
}
