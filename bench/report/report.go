// Package report turns the benchmark's samples into what a reader sees: a
// markdown file of tables (medians with the spread over the repeats, the
// ratios the targets are stated in, the balancer's CPU cost) and a
// PNG chart, both headed by the machine and the date.
package report

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"uvs/bench/floodmeasure"
	"uvs/bench/harness"
)

// Machine is where the benchmark ran.
type Machine struct {
	Cores  int
	CPU    string // model name from /proc/cpuinfo
	Kernel string // uname release
}

// DetectMachine describes this machine.
func DetectMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), CPU: "unknown CPU", Kernel: "unknown kernel"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(b)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = "Linux " + unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// cpuModel is the first "model name" of a /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func (m Machine) String() string {
	return fmt.Sprintf("%d cores, %s, %s", m.Cores, m.CPU, m.Kernel)
}

// Report is one benchmark run.
type Report struct {
	Machine   Machine
	Date      time.Time
	Command   string // how it was run
	Settings  string // duration, repeats, UDP sizes
	Paths     []harness.Path
	Workloads []harness.Workload
	Samples   []harness.Sample
}

// Spread is the minimum, median and maximum of a figure over the repeats.
type Spread struct {
	Min, Median, Max float64
	N                int // repeats that produced the figure
}

// spreadOf summarises xs (NaNs left out).
func spreadOf(xs []float64) Spread {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{}
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Spread{Min: v[0], Median: med, Max: v[len(v)-1], N: len(v)}
}

// cell is the samples of one path and workload.
type cell struct {
	ok            []harness.Sample
	errs, skipped []string
}

func (r *Report) cell(path, workload string) cell {
	var c cell
	for _, s := range r.Samples {
		if s.Path != path || s.Workload != workload {
			continue
		}
		switch {
		case s.Skipped != "":
			c.skipped = append(c.skipped, s.Skipped)
		case s.Err != "":
			c.errs = append(c.errs, s.Err)
		default:
			c.ok = append(c.ok, s)
		}
	}
	return c
}

func (c cell) spread(f func(harness.Sample) float64) Spread {
	xs := make([]float64, len(c.ok))
	for i, s := range c.ok {
		xs[i] = f(s)
	}
	return spreadOf(xs)
}

func value(s harness.Sample) float64 { return s.Value }

// cost is the balancer's CPU seconds per unit of work, NaN when unknown.
func cost(s harness.Sample) float64 {
	if !s.CPUKnown || s.Work <= 0 {
		return math.NaN()
	}
	return s.CPU.Seconds() / s.Work
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// num formats a figure with a precision fitting its size.
func num(x float64) string {
	switch a := math.Abs(x); {
	case a >= 1000:
		return fmt.Sprintf("%.0f", x)
	case a >= 100:
		return fmt.Sprintf("%.1f", x)
	case a >= 10:
		return fmt.Sprintf("%.2f", x)
	default:
		return fmt.Sprintf("%.3f", x)
	}
}

// span is "median (min–max)", or just the median for one repeat.
func span(s Spread) string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 {
		return num(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.Median), num(s.Min), num(s.Max))
}

// Markdown writes the report.
func (r *Report) Markdown(w io.Writer) error {
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# UVS side-by-side benchmark, %s", r.Date.UTC().Format("2006-01-02 15:04 UTC"))
	p("")
	p("- machine: %s", r.Machine)
	p("- date: %s", r.Date.UTC().Format(time.RFC3339))
	p("- command: `%s`", r.Command)
	p("- settings: %s", r.Settings)
	p("- every figure below comes from this one run; \"median (min–max)\" is over the repeats.")
	p("")
	p("## Summary (medians)")
	p("")
	head := "| path |"
	rule := "|---|"
	for _, wl := range r.Workloads {
		head += fmt.Sprintf(" %s, %s |", wl.Label, wl.Unit)
		rule += "---:|"
	}
	p("%s", head)
	p("%s", rule)
	for _, path := range r.Paths {
		row := "| " + path.Label + " |"
		for _, wl := range r.Workloads {
			row += " " + r.short(path, wl) + " |"
		}
		p("%s", row)
	}
	for _, wl := range r.Workloads {
		r.workloadTable(p, wl)
	}
	p("")
	p("## Notes")
	p("")
	for _, path := range r.Paths {
		if path.Note != "" {
			p("- **%s**: %s.", path.Label, path.Note)
		}
	}
	p("- Balancer CPU is the user+system time of the balancer's own processes (HAProxy, the UVS director) during the run, from /proc/PID/stat, divided by the work done (GB received, million requests, million datagrams delivered). Kernel paths forward in softirq context, charged to whichever process happens to be running: not attributable, so n/a.")
	p("- Bulk TCP and download go to rs1 only on every path: iperf3's control and data connections must reach the same server. Download is iperf3 -R: rs1 sends, the client receives.")
	p("- HTTP 1 MiB responses: wrk -t2 -c32 on keep-alive connections fetching a 1 MiB file that nginx sends with sendfile; the figure is response bodies in Gbit/s, the CPU cost per GB of bodies.")
	if r.hasDSR() {
		p("- Topology: every path shares one set of namespaces. The client's eth0 goes to the director (eth0, %s and the DR/TUN VIP %s), whose eth1 is on the real servers' segment; a return router joins that segment to the client's eth1. Replies from %s (DR and TUN) go through the return router; every other reply comes from the real servers' own addresses through the director, as before. The return router forwards in the kernel, one hop as the director does on the kernel path.", harness.VIP, harness.DSRVIP, harness.DSRVIP)
	}
	p("- Small UDP packets: delivered = datagrams counted by the sinks on the real servers; lost = sent − delivered. The sender does not pace itself, and runs on the same cores: through a path that forwards in the sender's own system calls (the kernel paths) it is slowed to what the path takes, while a userspace balancer competes with it for the CPU and loses what it has no time to read.")
	p("- Small UDP, highest rate with at most %g %% lost: RFC 2544's throughput, with that much loss allowed instead of none: one unpaced trial, then, if it lost too much, %d paced trials bisecting below what it offered; the figure is the delivered rate of the best passing trial. CPU per M pkt counts every trial.", harness.MaxLoss*100, harness.RateSteps)
	for _, wl := range r.Workloads {
		if wl.Flood {
			p("- SYN flood: TCP SYNs to the path's VIP, port %d, from sources forged at random in %s (bench/synflood, one AF_PACKET socket on the client, straight to the director's MAC); the director routes the real servers' SYN-ACKs to them back to the client, which drops them. For the whole measurement (%v before the flood, the flood, and until recovery, at most %v after it) %d established keep-alive connections each send a request every 100 ms (one that errs, is reset or waits 5 s for an answer is dead) and %d new connections per second each fetch one small file (2 s timeout). The figure is the share of new connections started during the flood that were served; recovery is the time from the flood's end to the first of %d new connections in a row that all succeed (bench/floodmeasure, as bench/cmd/flood). All paths share one topology: the real servers' half-open connections from one path's flood may still be there for the next.",
				harness.HTTPPort, harness.FloodSources, harness.FloodPre, harness.FloodAfter, harness.FloodKeepalive, harness.FloodNewRate, floodmeasure.RecoveryRun)
		}
	}
	p("- ×kernel, ×nftables and ×HAProxy are median ÷ median (for latency, lower is better; the ratios are of throughput).")
	_, err := w.Write(b.Bytes())
	return err
}

// hasDSR tells whether a direct-return path (DR, TUN) is in the report.
func (r *Report) hasDSR() bool {
	for _, p := range r.Paths {
		if p.Name == "uvs-dr" || p.Name == "uvs-ipip" {
			return true
		}
	}
	return false
}

// short is a summary cell: the median, or why there is none.
func (r *Report) short(path harness.Path, wl harness.Workload) string {
	c := r.cell(path.Name, wl.Name)
	switch {
	case len(c.ok) > 0:
		return num(c.spread(value).Median)
	case len(c.skipped) > 0:
		return "n/a"
	case len(c.errs) > 0:
		return "failed"
	}
	return "—"
}

func (r *Report) workloadTable(p func(string, ...any), wl harness.Workload) {
	p("")
	p("## %s (%s)", wl.Label, wl.Unit)
	p("")
	isHTTP := strings.HasPrefix(wl.Name, "http")
	head := fmt.Sprintf("| path | %s | ×kernel | ×nftables | ×HAProxy |", wl.Unit)
	rule := "|---|---:|---:|---:|---:|"
	if isHTTP {
		head += " p50 ms | p99 ms | errors |"
		rule += "---:|---:|---:|"
	}
	if wl.UDP {
		head += " lost % |"
		rule += "---:|"
	}
	if wl.Flood {
		head += " SYNs sent | keep-alive connections surviving | recovery s |"
		rule += "---:|---:|---:|"
	}
	head += fmt.Sprintf(" balancer CPU s per %s |", wl.CostUnit)
	rule += "---:|"
	p("%s", head)
	p("%s", rule)
	ref := func(name string) float64 {
		c := r.cell(name, wl.Name)
		if len(c.ok) == 0 {
			return math.NaN()
		}
		return c.spread(value).Median
	}
	kern, nft, hap := ref("kernel"), ref("nftables"), ref("haproxy")
	ratio := func(x, base float64) string {
		if math.IsNaN(base) || base == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f", x/base)
	}
	var failures []string
	for _, path := range r.Paths {
		c := r.cell(path.Name, wl.Name)
		if len(c.ok) == 0 {
			why := "—"
			if len(c.skipped) > 0 {
				why = "n/a"
			} else if len(c.errs) > 0 {
				why = "failed"
				failures = append(failures, fmt.Sprintf("%s: %s", path.Label, firstLine(c.errs[0])))
			}
			p("| %s | %s |%s", path.Label, why, strings.Repeat(" |", strings.Count(rule, "|")-3))
			continue
		}
		v := c.spread(value)
		row := fmt.Sprintf("| %s | %s | %s | %s | %s |", path.Label, span(v), ratio(v.Median, kern), ratio(v.Median, nft), ratio(v.Median, hap))
		if isHTTP {
			var errs int64
			for _, s := range c.ok {
				errs += s.Errors
			}
			row += fmt.Sprintf(" %s | %s | %d |",
				span(c.spread(func(s harness.Sample) float64 { return ms(s.P50) })),
				span(c.spread(func(s harness.Sample) float64 { return ms(s.P99) })), errs)
		}
		if wl.UDP {
			row += " " + span(c.spread(func(s harness.Sample) float64 {
				if s.Sent == 0 {
					return math.NaN()
				}
				return 100 * float64(s.Lost) / float64(s.Sent)
			})) + " |"
		}
		if wl.Flood {
			row += " " + span(c.spread(func(s harness.Sample) float64 { return float64(s.Sent) })) + " | " + survivors(c.ok) + " | " + recoveries(c.ok) + " |"
		}
		if !path.Balancer {
			row += " n/a (softirq) |"
		} else {
			row += " " + span(c.spread(cost)) + " |"
		}
		if len(c.errs) > 0 {
			failures = append(failures, fmt.Sprintf("%s: %d of %d runs failed: %s", path.Label, len(c.errs), len(c.errs)+len(c.ok), firstLine(c.errs[0])))
		}
		p("%s", row)
	}
	for _, f := range failures {
		p("")
		p("Failed: %s", f)
	}
}

// survivors is the keep-alive connections that survived the flood,
// "n of m" per repeat.
func survivors(ss []harness.Sample) string {
	var out []string
	for _, s := range ss {
		out = append(out, fmt.Sprintf("%d/%d", s.KASurvived, s.KATotal))
	}
	return strings.Join(out, ", ")
}

// recoveries is the recovery time of each repeat, "> wait" for none.
func recoveries(ss []harness.Sample) string {
	var out []string
	for _, s := range ss {
		if s.Recovered {
			out = append(out, fmt.Sprintf("%.1f", s.Recovery.Seconds()))
		} else {
			out = append(out, fmt.Sprintf("> %.0f", harness.FloodAfter.Seconds()))
		}
	}
	return strings.Join(out, ", ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// Write writes the report's markdown and chart into dir, named after the
// date (bench-YYYYMMDD-HHMMSS.md and .png), and returns their paths.
func Write(dir string, r *Report) (md, png string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	base := filepath.Join(dir, "bench-"+r.Date.UTC().Format("20060102-150405"))
	md, png = base+".md", base+".png"
	var b, c bytes.Buffer
	if err := r.Markdown(&b); err != nil {
		return "", "", err
	}
	fmt.Fprintf(&b, "\n![chart](%s)\n", filepath.Base(png))
	if err := r.Chart(&c); err != nil {
		return "", "", fmt.Errorf("chart: %w", err)
	}
	if err := os.WriteFile(md, b.Bytes(), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(png, c.Bytes(), 0o644); err != nil {
		return "", "", err
	}
	return md, png, nil
}
