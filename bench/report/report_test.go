package report

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"uvs/bench/harness"
)

func TestSpread(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{nan}, Spread{}},
		{[]float64{5}, Spread{5, 5, 5, 1}},
		{[]float64{3, 1, 2}, Spread{1, 2, 3, 3}},
		{[]float64{4, 1, nan, 2, 3}, Spread{1, 2.5, 4, 4}},
	} {
		if got := spreadOf(c.in); got != c.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if got := cpuModel([]byte(info)); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel([]byte("processor: 0\n")); got != "unknown CPU" {
		t.Errorf("cpuModel without a model = %q", got)
	}
	m := DetectMachine()
	if m.Cores < 1 || !strings.HasPrefix(m.Kernel, "Linux ") {
		t.Errorf("DetectMachine = %+v", m)
	}
}

// sample report: two repeats of bulk1 and udp over three paths, with a
// failed run and a path that cannot do UDP.
func sampleReport() *Report {
	paths := []harness.Path{mustPath("kernel"), mustPath("nftables"), mustPath("haproxy"), mustPath("uvs-afpacket")}
	wls := []harness.Workload{mustWorkload("bulk1"), mustWorkload("http-ka"), mustWorkload("udp")}
	s := func(p, w string, r int, v float64, cpu time.Duration, work float64) harness.Sample {
		return harness.Sample{Path: p, Workload: w, Repeat: r, Value: v, CPU: cpu, CPUKnown: cpu > 0, Work: work,
			P50: 400 * time.Microsecond, P99: 2 * time.Millisecond}
	}
	return &Report{
		Machine: Machine{Cores: 2, CPU: "Test CPU", Kernel: "Linux 6.1"},
		Date:    time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC),
		Command: "go run ./bench/cmd/compare -repeat 2", Settings: "test",
		Paths: paths, Workloads: wls,
		Samples: []harness.Sample{
			s("kernel", "bulk1", 0, 20, 0, 5), s("kernel", "bulk1", 1, 18, 0, 4.5),
			s("nftables", "bulk1", 0, 10, 0, 2.5), s("nftables", "bulk1", 1, 12, 0, 3),
			s("haproxy", "bulk1", 0, 5, time.Second, 1.25), s("haproxy", "bulk1", 1, 7, time.Second, 2),
			s("uvs-afpacket", "bulk1", 0, 16, 2*time.Second, 4), {Path: "uvs-afpacket", Workload: "bulk1", Repeat: 1, Err: "iperf3: connection reset\nmore"},
			s("kernel", "http-ka", 0, 50000, 0, 0.1), s("nftables", "http-ka", 0, 40000, 0, 0.1),
			s("haproxy", "http-ka", 0, 30000, time.Second, 0.06), s("uvs-afpacket", "http-ka", 0, 45000, time.Second, 0.09),
			{Path: "haproxy", Workload: "udp", Skipped: "n/a"},
			{Path: "uvs-afpacket", Workload: "udp", Value: 1e5, Sent: 400000, Lost: 100000, Work: 0.3, CPU: time.Second, CPUKnown: true},
		},
	}
}

func mustPath(n string) harness.Path {
	p, ok := harness.PathByName(n)
	if !ok {
		panic(n)
	}
	return p
}

func mustWorkload(n string) harness.Workload {
	w, ok := harness.WorkloadByName(n)
	if !ok {
		panic(n)
	}
	return w
}

func TestMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().Markdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"2 cores, Test CPU, Linux 6.1", // machine
		"2026-11-28T10:00:00Z",         // date
		"| kernel routing (no balancing) | 19.00 (18.00–20.00) | 1.00 | 1.73 | 3.17 | n/a (softirq) |", // spread, ratios 19/19, 19/11, 19/6
		// HAProxy CPU s/GB: 1/2 = 0.5 and 1/1.25 = 0.8, median 0.65.
		"| HAProxy mode tcp | 6.000 (5.000–7.000) | 0.32 | 0.55 | 1.00 | 0.650 (0.500–0.800) |",
		"| UVS NAT, --io afpacket | 16.00 | 0.84 | 1.45 | 2.67 | 0.500 |", // one good run of two
		"1 of 2 runs failed: iperf3: connection reset",
		"| HAProxy mode tcp | n/a |",                                      // no UDP
		"| UVS NAT, --io afpacket | 100000 | — | — | — | 25.00 | 3.333 |", // lost 25 %, 1 s / 0.3 M pkt
		"| 0.400 | 2.000 | 0 |",                                           // latency columns in ms, errors
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	if strings.Contains(md, "more") {
		t.Error("an error's second line leaked into the table")
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	md, pngPath, err := Write(dir, sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(md) != "bench-20261128-100000.md" || filepath.Base(pngPath) != "bench-20261128-100000.png" {
		t.Errorf("names %s, %s", md, pngPath)
	}
	b, err := os.ReadFile(md)
	if err != nil || !bytes.Contains(b, []byte("![chart](bench-20261128-100000.png)")) {
		t.Errorf("markdown does not link the chart: %v", err)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 800 || r.Dy() < 300 {
		t.Errorf("chart is %v", r)
	}
}

// TestFloodTable: the flood workload's row has its own columns, and the
// kernel path is n/a.
func TestFloodTable(t *testing.T) {
	r := sampleReport()
	r.Workloads = []harness.Workload{mustWorkload("flood")}
	r.Samples = []harness.Sample{
		{Path: "kernel", Workload: "flood", Skipped: "n/a: no VIP"},
		{Path: "uvs-afpacket", Workload: "flood", Value: 95, Sent: 300000, Work: 0.3, CPU: 3 * time.Second, CPUKnown: true,
			KASurvived: 19, KATotal: 20, Recovery: 1500 * time.Millisecond, Recovered: true},
		{Path: "nftables", Workload: "flood", Value: 100, Sent: 299000, Work: 0.299, KASurvived: 20, KATotal: 20},
	}
	var b bytes.Buffer
	if err := r.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| kernel routing (no balancing) | n/a |",
		"| UVS NAT, --io afpacket | 95.00 | — | 0.95 | — | 300000 | 19/20 | 1.5 | 10.00 |",
		"| nftables DNAT (numgen inc) | 100.0 | — | 1.00 | — | 299000 | 20/20 | > 30 | n/a (softirq) |",
		"SYN flood: TCP SYNs",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
}
