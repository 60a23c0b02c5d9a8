// Command compare runs the side-by-side benchmark of issue 4 (as root):
// the same workloads through plain kernel routing, nftables DNAT, HAProxy
// and UVS NAT with each packet I/O backend, on one namespace topology in
// one run. It writes a markdown table and a PNG chart to bench/results/.
//
//	go run ./bench/cmd/compare [-duration 5s] [-repeat 3] [-paths a,b] [-workloads a,b] [-out DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"uvs/bench/harness"
	"uvs/bench/report"
)

func main() { os.Exit(run()) }

func run() int {
	var names []string
	for _, p := range harness.Paths {
		names = append(names, p.Name)
	}
	var wnames, defaults []string
	for _, w := range harness.Workloads {
		wnames = append(wnames, w.Name)
	}
	for _, w := range harness.DefaultWorkloads() {
		defaults = append(defaults, w.Name)
	}
	duration := flag.Duration("duration", 4*time.Second, "length of each run (whole seconds)")
	repeat := flag.Int("repeat", 3, "runs of each workload through each path")
	paths := flag.String("paths", strings.Join(names, ","), "paths to measure, in order")
	workloads := flag.String("workloads", strings.Join(defaults, ","), "workloads to run, in order (also: flood, a SYN flood of -flood-duration per path, left out of the default set for its length)")
	out := flag.String("out", "", "results directory (default: bench/results of the repository)")
	udpFlows := flag.Int("udp-flows", 8, "UDP workload: client sockets (flows)")
	udpSize := flag.Int("udp-size", 64, "UDP workload: payload bytes")
	udpCount := flag.Int64("udp-count", 20_000_000, "UDP workload: datagrams at most per run")
	floodRate := flag.Float64("flood-rate", harness.DefaultFloodRate, "flood workload: SYN/s (0: unpaced)")
	floodDuration := flag.Duration("flood-duration", harness.DefaultFloodDuration, "flood workload: length of the flood (1s to 60s)")
	noInstall := flag.Bool("no-install", false, "fail instead of installing missing peers with apt-get")
	cleanup := flag.Bool("cleanup", false, "remove namespaces a killed run left behind (uvsbench-*) and exit")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	if code, done := harness.Begin("compare", prefix, *cleanup, log); done {
		return code
	}
	opts := harness.Options{Duration: *duration, Repeat: *repeat, UDPFlows: *udpFlows, UDPSize: *udpSize, UDPCount: *udpCount,
		FloodRate: *floodRate, FloodDuration: *floodDuration, Log: log}
	for _, n := range split(*paths) {
		p, ok := harness.PathByName(n)
		if !ok {
			log.Error("unknown path", "name", n, "known", strings.Join(names, ","))
			return 2
		}
		opts.Paths = append(opts.Paths, p)
	}
	for _, n := range split(*workloads) {
		w, ok := harness.WorkloadByName(n)
		if !ok {
			log.Error("unknown workload", "name", n, "known", strings.Join(wnames, ","))
			return 2
		}
		opts.Workloads = append(opts.Workloads, w)
	}
	if *floodRate < 0 || *floodDuration < time.Second || *floodDuration > time.Minute {
		log.Error("need -flood-rate >= 0 and -flood-duration from 1s to 1m")
		return 2
	}
	if *duration < time.Second || *repeat < 1 || len(opts.Paths) == 0 || len(opts.Workloads) == 0 {
		log.Error("need -duration >= 1s, -repeat >= 1, a path and a workload")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := harness.Prepare(ctx, *noInstall, log)
	if err != nil {
		log.Error("prepare", "err", err)
		return 1
	}
	if *out == "" {
		*out = filepath.Join(root, "bench", "results")
	}
	tmp, err := os.MkdirTemp("", "uvsbench-bin-")
	if err != nil {
		log.Error("temp dir", "err", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	log.Info("building the director")
	if opts.Director, err = harness.BuildDirector(ctx, root, tmp); err != nil {
		log.Error("build", "err", err)
		return 1
	}

	start := time.Now()
	t, err := harness.Build(ctx, prefix, log)
	if err != nil {
		log.Error("topology", "err", err)
		return 1
	}
	defer func() {
		if err := t.Close(); err != nil {
			log.Warn("teardown", "err", err)
		}
	}()
	opts.Progress = func(s harness.Sample) {
		switch {
		case s.Skipped != "":
		case s.Err != "":
			log.Warn("sample", "repeat", s.Repeat+1, "path", s.Path, "workload", s.Workload, "err", firstLine(s.Err))
		default:
			log.Info("sample", "repeat", s.Repeat+1, "path", s.Path, "workload", s.Workload, "value", fmt.Sprintf("%.4g", s.Value), "cpu", s.CPU)
		}
	}
	samples, err := harness.Run(ctx, t, opts)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			log.Warn("interrupted: writing no results")
			return 130
		}
		log.Error("run", "err", err)
		return 1
	}
	rep := report.Report{
		Machine:   report.DetectMachine(),
		Date:      start,
		Command:   strings.TrimSpace("go run ./bench/cmd/compare " + strings.Join(os.Args[1:], " ")),
		Settings:  settings(opts, *duration, *repeat, *udpFlows, *udpSize, *udpCount, time.Since(start)),
		Paths:     opts.Paths,
		Workloads: opts.Workloads,
		Samples:   samples,
	}
	md, png, err := report.Write(*out, &rep)
	if err != nil {
		log.Error("write results", "err", err)
		return 1
	}
	fmt.Printf("results: %s\nchart:   %s\n\n", md, png)
	if err := rep.Markdown(os.Stdout); err != nil {
		return 1
	}
	return 0
}

// settings is the report's line of settings.
func settings(o harness.Options, duration time.Duration, repeat, flows, size int, count int64, total time.Duration) string {
	s := fmt.Sprintf("%v per run, %d repeat(s), wrk -t2 -c32, UDP %d flows × %d-byte payloads (at most %d datagrams per run)", duration, repeat, flows, size, count)
	for _, w := range o.Workloads {
		if w.Flood {
			c := harness.FloodConfig(&o)
			rate := "unpaced"
			if c.Rate > 0 {
				rate = fmt.Sprintf("%.0f SYN/s", c.Rate)
			}
			s += fmt.Sprintf(", SYN flood %s for %v (at most %d SYNs)", rate, c.Duration, c.Count)
		}
	}
	return s + fmt.Sprintf("; total time %v", total.Round(time.Second))
}

// prefix names the command's namespaces; tests use others.
const prefix = "uvsbench"

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
