package healthcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"uvs/service"
)

// BenchmarkMonitorTCP1000 measures what health checking costs the director:
// 1000 TCP_CHECK targets, delay_loop 1 s, against 1000 listeners in the
// server namespace. The monitor runs in a process of its own (this test
// binary again, started in the director namespace), so that getrusage sees
// the monitor and nothing else: not the listeners, not the test. It reports
// CPU seconds per check and per second of wall time. It runs once, for
// HC_BENCH_SECONDS (10 by default) after a settling second; with
// HC_BENCH_CPUPROFILE=FILE the monitor process writes a CPU profile of
// those seconds. The figures are in doc.go.
//
//	go test -run '^$' -bench MonitorTCP1000 -benchtime 1x ./healthcheck/
func BenchmarkMonitorTCP1000(b *testing.B) {
	l := lab(b)
	const targets, firstPort = 1000, 20000
	var wg sync.WaitGroup
	for i := range targets {
		ln, err := l.srv.Listen("tcp", net.JoinHostPort(srvIP, strconv.Itoa(firstPort+i)))
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		defer ln.Close()
	}
	secs := os.Getenv("HC_BENCH_SECONDS")
	if secs == "" {
		secs = "10"
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var r benchResult
	for b.Loop() {
		cmd := l.dir.Command(exe)
		cmd.Env = append(os.Environ(), benchChildEnv+"="+fmt.Sprintf("%s %d %d %s", srvIP, firstPort, targets, secs))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("monitor process: %v: %s", err, stderr.Bytes())
		}
		if err := json.Unmarshal(out, &r); err != nil {
			b.Fatalf("monitor process said %q: %v", out, err)
		}
	}
	if r.Down > 0 {
		b.Errorf("%d of %d targets down at the end", r.Down, targets)
	}
	cpu := r.User + r.Sys
	b.ReportMetric(cpu/float64(r.Checks)*1e6, "cpu-us/check")
	b.ReportMetric(cpu/r.Seconds, "cpu-s/s")
	b.ReportMetric(float64(r.Checks)/r.Seconds, "checks/s")
	b.ReportMetric(float64(r.Goroutines), "goroutines")
	b.ReportMetric(float64(r.MaxRSSKiB), "maxrss-KiB")
	b.Logf("%d targets, %d checks in %.1fs: user %.3fs sys %.3fs, %.1f µs CPU per check, %.4f CPU s per s",
		targets, r.Checks, r.Seconds, r.User, r.Sys, cpu/float64(r.Checks)*1e6, cpu/r.Seconds)
}

// benchChildEnv, in the environment of the test binary, makes it the
// monitor process of BenchmarkMonitorTCP1000: "ADDR FIRSTPORT N SECONDS".
const benchChildEnv = "UVS_HEALTHCHECK_BENCH_CHILD"

type benchResult struct {
	Checks, Down int
	Seconds      float64
	User, Sys    float64 // CPU seconds
	Goroutines   int     // while running, sampled at the end
	MaxRSSKiB    int64
}

// benchChild runs the monitor of the benchmark and prints a benchResult.
func benchChild() int {
	var addr string
	var first, n int
	var secs float64
	if _, err := fmt.Sscan(os.Getenv(benchChildEnv), &addr, &first, &n, &secs); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		return 2
	}
	m := NewMonitor(nil, nil)
	defer m.Close()
	for i := range n {
		port := uint16(first + i)
		s := Defaults(TCPCheck, time.Second)
		s.Addr = ap(addr, port)
		s.ConnectTimeout = time.Second
		m.Set(Target{Service: service.Key{Proto: service.TCP, Addr: vip, Port: port}, Addr: s.Addr.Addr(), Port: port}, []Spec{s}, true)
	}
	time.Sleep(time.Second + 500*time.Millisecond) // the warmups are over
	if p := os.Getenv("HC_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	c0, _ := m.counts()
	u0, s0 := rusage()
	start := time.Now()
	time.Sleep(time.Duration(secs * float64(time.Second)))
	u1, s1 := rusage()
	took := time.Since(start)
	c1, down := m.counts()
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	r := benchResult{
		Checks: c1 - c0, Down: down, Seconds: took.Seconds(),
		User: u1 - u0, Sys: s1 - s0, Goroutines: runtime.NumGoroutine(), MaxRSSKiB: ru.Maxrss,
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return 1
	}
	return 0
}

func rusage() (user, sys float64) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	tv := func(t unix.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime), tv(ru.Stime)
}

// counts returns the attempts made so far and how many of the targets are
// down, from the duration histograms.
func (m *Monitor) counts() (attempts, down int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, tg := range m.targets {
		for _, h := range tg.durations {
			attempts += int(h.n)
		}
		if !tg.up {
			down++
		}
	}
	return attempts, down
}
