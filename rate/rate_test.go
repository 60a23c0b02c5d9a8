package rate

import (
	"testing"
	"time"

	"uvs/service"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// traffic adds conns, packets and bytes to s as one worker would.
func traffic(s *service.Stats, conns, inPkts, outPkts, inBytes, outBytes uint64) {
	for range conns {
		s.AddConn(0)
	}
	s.AddIn(1, inPkts, inBytes)
	s.AddOut(2, outPkts, outBytes)
}

// The first --rate listing of ipvs-golden/nat_dr_tun.out was taken just
// after one estimator period that saw all of the traffic. Its figures follow
// from the counters that --stats printed.
func TestOnePeriodMatchesKernel(t *testing.T) {
	cases := []struct {
		name                                     string
		conns, inPkts, outPkts, inBytes, outByte uint64
		want                                     Rates
	}{
		{"service", 4, 24, 16, 1584, 1260, Rates{0, 3, 2, 198, 157}},
		{"rs2", 1, 6, 4, 396, 315, Rates{0, 1, 0, 49, 39}},
		{"rs4", 2, 12, 8, 792, 630, Rates{0, 1, 1, 99, 79}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := New()
			s := new(service.Stats)
			e.Track(s)
			e.Tick(t0)
			traffic(s, c.conns, c.inPkts, c.outPkts, c.inBytes, c.outByte)
			e.Tick(t0.Add(Period))
			if got := e.Get(s); got != c.want {
				t.Errorf("rates = %+v, want %+v", got, c.want)
			}
		})
	}
}

// With no further traffic the average decays by a quarter each period
// and reaches zero; with steady traffic it converges to the true rate.
func TestDecayAndConvergence(t *testing.T) {
	e := New()
	s := new(service.Stats)
	e.Track(s)
	now := t0
	e.Tick(now)
	for range 40 {
		traffic(s, 20, 200, 100, 200000, 100000) // 10 conn/s, 100 pps, 100 kB/s
		now = now.Add(Period)
		e.Tick(now)
	}
	// The integer average settles within one unit below the true rate,
	// as the kernel's does.
	want := Rates{CPS: 10, InPPS: 100, OutPPS: 50, InBPS: 100000, OutBPS: 50000}
	got := e.Get(s)
	near := func(g, w uint64) bool { return g <= w && g+1 >= w }
	if !near(got.CPS, want.CPS) || !near(got.InPPS, want.InPPS) || !near(got.OutPPS, want.OutPPS) ||
		!near(got.InBPS, want.InBPS) || !near(got.OutBPS, want.OutBPS) {
		t.Fatalf("steady rates = %+v, want about %+v", got, want)
	}
	prev := e.Get(s).InBPS
	for range 60 {
		now = now.Add(Period)
		e.Tick(now)
		cur := e.Get(s).InBPS
		if cur > prev {
			t.Fatalf("idle rate rose from %d to %d", prev, cur)
		}
		prev = cur
	}
	if got := e.Get(s); got != (Rates{}) {
		t.Fatalf("idle rates = %+v, want zero", got)
	}
}

// A late tick (4 s instead of 2) measures per second all the same.
func TestLateTickNormalised(t *testing.T) {
	e := New()
	s := new(service.Stats)
	e.Track(s)
	e.Tick(t0)
	traffic(s, 0, 0, 0, 3200, 0) // 800 B/s over 4 s
	e.Tick(t0.Add(2 * Period))
	if got := e.Get(s).InBPS; got != 200 { // a quarter of 800 after one step
		t.Fatalf("InBPS = %d, want 200", got)
	}
	e.Tick(t0.Add(2 * Period)) // duplicate tick: no interval, no change
	if got := e.Get(s).InBPS; got != 200 {
		t.Fatalf("after duplicate tick InBPS = %d, want 200", got)
	}
}

func TestZeroAndReset(t *testing.T) {
	e := New()
	s := new(service.Stats)
	e.Track(s)
	e.Tick(t0)
	traffic(s, 8, 80, 80, 8000, 8000)
	e.Tick(t0.Add(Period))
	if e.Get(s) == (Rates{}) {
		t.Fatal("no rate after traffic")
	}
	e.Reset(s)
	if got := e.Get(s); got != (Rates{}) {
		t.Fatalf("after Reset rates = %+v", got)
	}
	// Counters zeroed without Reset: the estimator notices and restarts
	// instead of reading a huge negative delta.
	traffic(s, 8, 80, 80, 8000, 8000)
	e.Tick(t0.Add(2 * Period))
	s.Zero()
	e.Tick(t0.Add(3 * Period))
	if got := e.Get(s); got != (Rates{}) {
		t.Fatalf("after Zero rates = %+v, want zero", got)
	}
}

func TestUntrackedIsZero(t *testing.T) {
	e := New()
	s := new(service.Stats)
	traffic(s, 1, 1, 1, 1, 1)
	e.Tick(t0)
	e.Tick(t0.Add(Period))
	if got := e.Get(s); got != (Rates{}) {
		t.Fatalf("untracked rates = %+v", got)
	}
	e.Track(s)
	e.Untrack(s)
	if got := e.Get(s); got != (Rates{}) {
		t.Fatalf("untracked rates = %+v", got)
	}
}

func TestTickAllocatesNothing(t *testing.T) {
	e := New()
	for range 100 {
		e.Track(new(service.Stats))
	}
	now := t0
	allocs := testing.AllocsPerRun(100, func() {
		now = now.Add(Period)
		e.Tick(now)
	})
	if allocs != 0 {
		t.Fatalf("Tick allocates %v times", allocs)
	}
}

func BenchmarkTick1000(b *testing.B) {
	e := New()
	for range 1000 {
		e.Track(new(service.Stats))
	}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(Period)
		e.Tick(now)
	}
}
