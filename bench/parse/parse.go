// Package parse reads what the benchmark's tools print: iperf3's JSON
// report, wrk's text report (with --latency), and /proc/PID/stat. Each
// parser refuses a report that does not carry the figure the benchmark
// needs rather than returning zeros that would look like a measurement.
package parse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Iperf3 is the part of an iperf3 -J report the benchmark uses.
type Iperf3 struct {
	Streams       int     // data connections
	Seconds       float64 // length of the measured interval (receiver side)
	BytesSent     int64
	BytesReceived int64
	BitsPerSecond float64 // what the receiver got, bits per second
	Retransmits   int64   // sender's TCP retransmissions (Linux only)
}

// iperf3JSON mirrors the fields read from the report.
type iperf3JSON struct {
	Start struct {
		Connected []json.RawMessage `json:"connected"`
	} `json:"start"`
	End struct {
		SumSent *struct {
			Bytes         int64   `json:"bytes"`
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   int64   `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived *struct {
			Bytes         int64   `json:"bytes"`
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIperf3 reads an iperf3 -J report of a TCP test run from the client.
func ParseIperf3(data []byte) (Iperf3, error) {
	var j iperf3JSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Iperf3{}, fmt.Errorf("iperf3 report: %w", err)
	}
	if j.Error != "" {
		return Iperf3{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	s, r := j.End.SumSent, j.End.SumReceived
	if s == nil || r == nil {
		return Iperf3{}, errors.New("iperf3 report: no end.sum_sent / end.sum_received (not a finished TCP test?)")
	}
	for _, f := range []float64{s.Seconds, s.BitsPerSecond, r.Seconds, r.BitsPerSecond} {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return Iperf3{}, fmt.Errorf("iperf3 report: bad figure %v", f)
		}
	}
	if s.Bytes < 0 || r.Bytes < 0 || s.Retransmits < 0 {
		return Iperf3{}, errors.New("iperf3 report: negative count")
	}
	if r.Seconds == 0 {
		return Iperf3{}, errors.New("iperf3 report: the receiver measured for zero seconds")
	}
	return Iperf3{
		Streams:       len(j.Start.Connected),
		Seconds:       r.Seconds,
		BytesSent:     s.Bytes,
		BytesReceived: r.Bytes,
		BitsPerSecond: r.BitsPerSecond,
		Retransmits:   s.Retransmits,
	}, nil
}

// Wrk is the part of a wrk report the benchmark uses.
type Wrk struct {
	Requests       int64         // completed requests ("N requests in ...")
	Duration       time.Duration // the run's length as wrk measured it
	RequestsPerSec float64
	LatencyAvg     time.Duration
	// Percentiles from --latency's distribution, keyed by percent (50, 75,
	// 90, 99); empty without --latency.
	Percentiles map[int]time.Duration
	Non2xx3xx   int64 // responses with another status
	// Socket errors wrk counted; all zero when it printed no such line.
	ConnectErrors, ReadErrors, WriteErrors, Timeouts int64
}

// Errors is every failed request or socket operation wrk reported
// (saturating at the largest int64 rather than wrapping).
func (w Wrk) Errors() int64 {
	var sum int64
	for _, n := range []int64{w.Non2xx3xx, w.ConnectErrors, w.ReadErrors, w.WriteErrors, w.Timeouts} {
		if sum > math.MaxInt64-n {
			return math.MaxInt64
		}
		sum += n
	}
	return sum
}

// ParseWrk reads wrk's text report (wrk 4.x, with or without --latency).
func ParseWrk(out []byte) (Wrk, error) {
	w := Wrk{Percentiles: map[int]time.Duration{}}
	var haveRate, haveCount bool
	inDist := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			p, err := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
			if err != nil || p <= 0 || p > 100 {
				return Wrk{}, fmt.Errorf("wrk: bad percentile line %q", line)
			}
			d, err := wrkDuration(f[1])
			if err != nil {
				return Wrk{}, fmt.Errorf("wrk: percentile line %q: %w", line, err)
			}
			w.Percentiles[p] = d
			continue
		}
		inDist = false
		switch {
		case f[0] == "Latency" && len(f) >= 2:
			d, err := wrkDuration(f[1])
			if err != nil {
				return Wrk{}, fmt.Errorf("wrk: latency line %q: %w", line, err)
			}
			w.LatencyAvg = d
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil || n < 0 {
				return Wrk{}, fmt.Errorf("wrk: request count in %q", line)
			}
			d, err := wrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return Wrk{}, fmt.Errorf("wrk: duration in %q: %w", line, err)
			}
			w.Requests, w.Duration, haveCount = n, d, true
		case f[0] == "Requests/sec:" && len(f) == 2:
			r, err := strconv.ParseFloat(f[1], 64)
			if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
				return Wrk{}, fmt.Errorf("wrk: rate in %q", line)
			}
			w.RequestsPerSec, haveRate = r, true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil || n < 0 {
				return Wrk{}, fmt.Errorf("wrk: count in %q", line)
			}
			w.Non2xx3xx = n
		case strings.HasPrefix(line, "Socket errors:"):
			if err := w.socketErrors(strings.TrimPrefix(line, "Socket errors:")); err != nil {
				return Wrk{}, fmt.Errorf("wrk: %q: %w", line, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Wrk{}, fmt.Errorf("wrk report: %w", err)
	}
	if !haveRate || !haveCount {
		return Wrk{}, errors.New("wrk report: no \"N requests in\" or \"Requests/sec:\" line (did wrk finish?)")
	}
	return w, nil
}

// socketErrors reads " connect 0, read 24321, write 0, timeout 0".
func (w *Wrk) socketErrors(s string) error {
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return fmt.Errorf("bad item %q", part)
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bad count %q", part)
		}
		switch f[0] {
		case "connect":
			w.ConnectErrors = n
		case "read":
			w.ReadErrors = n
		case "write":
			w.WriteErrors = n
		case "timeout":
			w.Timeouts = n
		default:
			return fmt.Errorf("unknown kind %q", f[0])
		}
	}
	return nil
}

// wrkDuration reads wrk's times: a number with the unit us, ms, s, m or h
// (wrk scales its output to the largest unit that keeps the value >= 1).
func wrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		d      time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return 0, fmt.Errorf("bad time %q", s)
		}
		d := v * float64(u.d)
		if d > float64(math.MaxInt64) {
			return 0, fmt.Errorf("time %q out of range", s)
		}
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("time %q has no unit", s)
}

// ProcStat is the part of /proc/PID/stat the benchmark uses.
type ProcStat struct {
	PID   int
	Comm  string // the command name, as the kernel keeps it (up to 15 bytes)
	State byte
	UTime uint64 // user time, clock ticks, all threads
	STime uint64 // system time, clock ticks, all threads
}

// ClockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which the kernel exports as 100 on every architecture Go runs Linux on.
const ClockTicks = 100

// CPU is the process's user plus system time.
func (p ProcStat) CPU() time.Duration {
	return time.Duration(p.UTime+p.STime) * (time.Second / ClockTicks)
}

// ParseProcStat reads one /proc/PID/stat line. The command name is
// between the first "(" and the last ")", since it may hold both.
func ParseProcStat(data []byte) (ProcStat, error) {
	s := string(bytes.TrimSpace(data))
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 1 || closing < open {
		return ProcStat{}, errors.New("proc stat: no (comm)")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil || pid <= 0 {
		return ProcStat{}, fmt.Errorf("proc stat: bad pid %q", s[:open])
	}
	// After the comm: state(3) ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime(14) stime(15) ...
	rest := strings.Fields(s[closing+1:])
	if len(rest) < 13 || len(rest[0]) != 1 {
		return ProcStat{}, fmt.Errorf("proc stat of %d: %d fields after comm, want at least 13", pid, len(rest))
	}
	ut, err1 := strconv.ParseUint(rest[11], 10, 64)
	st, err2 := strconv.ParseUint(rest[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return ProcStat{}, fmt.Errorf("proc stat of %d: utime/stime: %w", pid, err)
	}
	return ProcStat{PID: pid, Comm: s[open+1 : closing], State: rest[0][0], UTime: ut, STime: st}, nil
}
