package parse

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The files in testdata were recorded from iperf3 3.12 and wrk 4.1.0 run
// between two namespaces on this project's machine, and from
// /proc/PID/stat of live processes.

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIperf3(t *testing.T) {
	for _, c := range []struct {
		file           string
		streams        int
		sent, received int64
		bps, secs      float64
		retransmits    int64
	}{
		{"iperf3-1.json", 1, 3864002560, 3864002560, 15452224445.010971, 2.00049, 15984},
		{"iperf3-4.json", 4, 6893207552, 6893207552, 27558169261.95264, 2.001064, 27086},
		// With -O 1 the first second is left out, so the two sides differ.
		{"iperf3-omit.json", 1, 5364776960, 5365832304, 21463178973.74718, 2.000014, 20577},
	} {
		t.Run(c.file, func(t *testing.T) {
			r, err := ParseIperf3(read(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			if r.Streams != c.streams || r.BytesSent != c.sent || r.BytesReceived != c.received ||
				r.BitsPerSecond != c.bps || r.Seconds != c.secs || r.Retransmits != c.retransmits {
				t.Errorf("got %+v, want %+v", r, c)
			}
		})
	}
}

func TestIperf3Errors(t *testing.T) {
	_, err := ParseIperf3(read(t, "iperf3-err.json"))
	if err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("iperf3-err.json: err = %v, want iperf3's own message", err)
	}
	for _, bad := range []string{
		"",
		"not json",
		`{"end":{}}`,
		`{"end":{"sum_sent":{"bytes":1,"seconds":1,"bits_per_second":8}}}`,
		`{"end":{"sum_sent":{"bytes":1,"seconds":1,"bits_per_second":8},"sum_received":{"bytes":1,"seconds":0,"bits_per_second":8}}}`,
		`{"end":{"sum_sent":{"bytes":-1,"seconds":1,"bits_per_second":8},"sum_received":{"bytes":1,"seconds":1,"bits_per_second":8}}}`,
	} {
		if r, err := ParseIperf3([]byte(bad)); err == nil {
			t.Errorf("ParseIperf3(%q) = %+v, want an error", bad, r)
		}
	}
}

func TestWrk(t *testing.T) {
	us, ms := time.Microsecond, time.Millisecond
	for _, c := range []struct {
		file     string
		requests int64
		dur      time.Duration
		rate     float64
		avg      time.Duration
		pct      map[int]time.Duration
		non2xx   int64
		read     int64
	}{
		{"wrk-ka.txt", 107867, 2100 * ms, 51326.03, 794340 * time.Nanosecond,
			map[int]time.Duration{50: 480 * us, 75: 758 * us, 90: 1050 * us, 99: 4480 * us}, 0, 0},
		{"wrk-close.txt", 27478, 2040 * ms, 13454.74, 5480 * us,
			map[int]time.Duration{50: 1320 * us, 75: 2750 * us, 90: 11070 * us, 99: 73110 * us}, 0, 0},
		{"wrk-404.txt", 94646, 1100 * ms, 86079.30, 57430 * time.Nanosecond,
			map[int]time.Duration{50: 45 * us, 75: 47 * us, 90: 55 * us, 99: 333 * us}, 94646, 0},
		{"wrk-sockerr.txt", 0, 1100 * ms, 0, 0,
			map[int]time.Duration{50: 0, 75: 0, 90: 0, 99: 0}, 0, 24321},
	} {
		t.Run(c.file, func(t *testing.T) {
			w, err := ParseWrk(read(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			near := func(a, b time.Duration) bool { return a-b < time.Nanosecond && b-a < time.Nanosecond }
			if w.Requests != c.requests || !near(w.Duration, c.dur) || w.RequestsPerSec != c.rate || !near(w.LatencyAvg, c.avg) {
				t.Errorf("got requests %d in %v, %v/s, avg %v; want %d in %v, %v/s, avg %v",
					w.Requests, w.Duration, w.RequestsPerSec, w.LatencyAvg, c.requests, c.dur, c.rate, c.avg)
			}
			if len(w.Percentiles) != len(c.pct) {
				t.Errorf("percentiles %v, want %v", w.Percentiles, c.pct)
			}
			for p, d := range c.pct {
				if got, ok := w.Percentiles[p]; !ok || !near(got, d) {
					t.Errorf("p%d = %v, want %v", p, got, d)
				}
			}
			if w.Non2xx3xx != c.non2xx || w.ReadErrors != c.read || w.Errors() != c.non2xx+c.read {
				t.Errorf("errors: non-2xx %d read %d total %d; want %d, %d", w.Non2xx3xx, w.ReadErrors, w.Errors(), c.non2xx, c.read)
			}
		})
	}
}

func TestWrkRejects(t *testing.T) {
	ka := string(read(t, "wrk-ka.txt"))
	for name, bad := range map[string]string{
		"empty":            "",
		"usage":            "Usage: wrk <options> <url>\n",
		"no rate":          strings.Replace(ka, "Requests/sec:", "Requests/min:", 1),
		"no count":         strings.Replace(ka, "requests in", "things in", 1),
		"unitless time":    strings.Replace(ka, "480.00us", "480.00", 1),
		"bad percentile":   strings.Replace(ka, "50%", "500%", 1),
		"bad socket error": ka + "  Socket errors: connect x, read 1, write 0, timeout 0\n",
		"negative rate":    strings.Replace(ka, "51326.03", "-1", 1),
	} {
		if w, err := ParseWrk([]byte(bad)); err == nil {
			t.Errorf("%s: ParseWrk = %+v, want an error", name, w)
		}
	}
}

func TestWrkUnits(t *testing.T) {
	for s, want := range map[string]time.Duration{
		"0.00us": 0, "1.50ms": 1500 * time.Microsecond, "2.00s": 2 * time.Second,
		"1.00m": time.Minute, "1.00h": time.Hour, "12.5us": 12500 * time.Nanosecond,
	} {
		got, err := wrkDuration(s)
		if err != nil || got != want {
			t.Errorf("wrkDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "us", "1.0", "1x", "-1s", "NaNs", "1e300h"} {
		if d, err := wrkDuration(s); err == nil {
			t.Errorf("wrkDuration(%q) = %v, want an error", s, d)
		}
	}
}

func TestProcStat(t *testing.T) {
	p, err := ParseProcStat(read(t, "proc-stat-paren.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != 25447 || p.Comm != "uvsbench-s) (x" || p.State != 'S' || p.UTime != 0 || p.STime != 0 {
		t.Errorf("got %+v", p)
	}
	// A line shaped like a busy process: utime 1234, stime 56 ticks.
	line := "77 (director) R 1 77 77 0 -1 4194560 9 0 0 0 1234 56 0 0 20 0 5 0 100 1000 10"
	p, err = ParseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if p.UTime != 1234 || p.STime != 56 || p.CPU() != 12900*time.Millisecond {
		t.Errorf("got %+v, CPU %v; want 1234+56 ticks = 12.9s", p, p.CPU())
	}
	for _, bad := range []string{"", "12 director R", "x (a) R 1 2 3 4 5 6 7 8 9 10 11 12", "(a) R 1",
		"5 (a) R 1 2 3 4 5 6 7 8 9 10 x 12", "5 (a) R 1 2 3"} {
		if p, err := ParseProcStat([]byte(bad)); err == nil {
			t.Errorf("ParseProcStat(%q) = %+v, want an error", bad, p)
		}
	}
}

// TestProcStatSelf reads this test's own stat and checks it against the
// process's own accounting: the CPU time must not go backwards and must
// grow while the test spins.
func TestProcStatSelf(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	before, err := ParseProcStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if before.PID != os.Getpid() {
		t.Errorf("pid %d, want %d", before.PID, os.Getpid())
	}
	// Spin until the process has used 100 ms more CPU by getrusage, which
	// on a busy machine takes longer than 100 ms of wall time (bounded).
	x := 1.0
	start := rusageCPU(t)
	for deadline := time.Now().Add(10 * time.Second); rusageCPU(t) < start+100*time.Millisecond && time.Now().Before(deadline); {
		for i := 0; i < 1000; i++ {
			x = math.Sqrt(x + float64(i))
		}
	}
	b, _ = os.ReadFile("/proc/self/stat")
	ru := rusageCPU(t)
	after, err := ParseProcStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU() < before.CPU()+50*time.Millisecond {
		t.Errorf("CPU %v then %v after spinning 100ms of CPU (x=%v)", before.CPU(), after.CPU(), x)
	}
	// The same clock as getrusage, to within a few ticks.
	if d := ru - after.CPU(); d < -30*time.Millisecond || d > 30*time.Millisecond {
		t.Errorf("CPU %v from /proc/self/stat, %v from getrusage", after.CPU(), ru)
	}
}

// rusageCPU is the process's user and system CPU time by getrusage.
func rusageCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
