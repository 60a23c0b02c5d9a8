// Command flood measures what a balancing path still serves under a SYN
// flood from forged sources (issue 13), as root: it builds the LVS-NAT lab
// topology with nginx on both real servers (bench/harness), sets up one
// path at a time in the director namespace (UVS NAT with either packet
// I/O backend, or nftables DNAT), and while legitimate clients use the
// service — established keep-alive connections and a steady stream of new
// connections — floods the VIP with SYNs from forged sources
// (bench/synflood) for a bounded time. It reports the legitimate clients'
// success, the balancer's table and drop counters and its memory, and how
// long after the flood new connections succeed again, in
// bench/results/flood-YYYYMMDD-HHMMSS.md.
//
//	go run ./bench/cmd/flood [-paths uvs-afpacket,nftables] [-rate 30000] [-duration 30s] [-capacity 10000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"uvs/bench/floodmeasure"
	"uvs/bench/harness"
	"uvs/bench/report"
)

// prefix names the command's namespaces.
const prefix = "uvsflood"

// Paths the command knows, in the order of its tables.
var paths = []struct{ name, label string }{
	{"uvs-afpacket", "UVS NAT, --io afpacket"},
	{"uvs-tun", "UVS NAT, --io tun"},
	{"nftables", "nftables DNAT (numgen inc)"},
}

func main() { os.Exit(run()) }

func run() int {
	var names []string
	for _, p := range paths {
		names = append(names, p.name)
	}
	c := config{Config: floodmeasure.Config{Wait10: true}}
	pathList := flag.String("paths", "uvs-afpacket,nftables", "paths to measure, in order: "+strings.Join(names, ","))
	flag.Float64Var(&c.Rate, "rate", 30000, "flood rate, SYN/s (0: unpaced, as fast as the machine sends)")
	flag.DurationVar(&c.Duration, "duration", 30*time.Second, "flood length (at most 60s)")
	flag.Int64Var(&c.Count, "count", 0, "SYNs at most (0: rate × duration, or 100 000 000 unpaced)")
	flag.IntVar(&c.capacity, "capacity", 0, "UVS: `director run --capacity N` (0: the director's default)")
	flag.IntVar(&c.Senders, "senders", 1, "flood sockets, each sending from its own goroutine")
	sources := flag.String("sources", "198.19.0.0/16", "forged source prefix (inside 198.18.0.0/15, apart from the lab's subnets)")
	flag.IntVar(&c.Keepalive, "keepalive", 20, "established keep-alive connections, each a request every -ka-interval")
	flag.DurationVar(&c.KAInterval, "ka-interval", 100*time.Millisecond, "keep-alive: time between one connection's requests")
	flag.DurationVar(&c.KATimeout, "ka-timeout", 5*time.Second, "keep-alive: a request not answered in this time kills the connection")
	flag.Float64Var(&c.NewRate, "new-rate", 20, "legitimate new connections per second (one request each)")
	flag.DurationVar(&c.NewTimeout, "new-timeout", 2*time.Second, "a new connection's request not answered in this time failed")
	flag.DurationVar(&c.Pre, "pre", 5*time.Second, "legitimate traffic before the flood")
	flag.DurationVar(&c.After, "after", 90*time.Second, "at most this long after the flood, waiting for new connections to succeed again (at least 10s: RSS is read 10 s after)")
	rev := flag.String("rev", "", "build the director from this git `REVISION` (git archive) instead of the working tree, e.g. to measure the code before a change")
	out := flag.String("out", "", "results directory (default: bench/results of the repository)")
	noInstall := flag.Bool("no-install", false, "fail instead of installing missing peers with apt-get")
	cleanup := flag.Bool("cleanup", false, "remove namespaces a killed run left behind ("+prefix+"-*) and exit")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	if code, done := harness.Begin("flood", prefix, *cleanup, log); done {
		return code
	}
	var err error
	if c.Sources, err = netip.ParsePrefix(*sources); err != nil {
		log.Error("-sources", "err", err)
		return 2
	}
	c.Sources = c.Sources.Masked()
	for _, n := range strings.Split(*pathList, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		found := false
		for _, p := range paths {
			if p.name == n {
				c.paths = append(c.paths, p)
				found = true
			}
		}
		if !found {
			log.Error("unknown path", "name", n, "known", strings.Join(names, ","))
			return 2
		}
	}
	if c.Count == 0 {
		c.Count = 100_000_000
		if c.Rate > 0 {
			c.Count = int64(c.Rate * c.Duration.Seconds())
		}
	}
	if err := c.check(); err != nil {
		log.Error("flags", "err", err)
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
	tmp, err := os.MkdirTemp("", "uvsflood-bin-")
	if err != nil {
		log.Error("temp dir", "err", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	src, built, err := source(ctx, root, tmp, *rev)
	if err != nil {
		log.Error("director source", "err", err)
		return 1
	}
	c.built = built
	log.Info("building the director", "from", built)
	if c.director, err = harness.BuildDirector(ctx, src, tmp); err != nil {
		log.Error("build", "err", err)
		return 1
	}

	start := time.Now()
	var results []*result
	for _, p := range c.paths {
		log.Info("path", "path", p.name)
		r := runPath(ctx, &c, p.name, p.label, log)
		if ctx.Err() != nil {
			log.Warn("interrupted: writing no results")
			return 130
		}
		if r.Err != "" {
			log.Error("path failed", "path", p.name, "err", r.Err)
		} else {
			log.Info("path done", "path", p.name, "new-conn during flood", floodmeasure.Pct(r.During), "keep-alive survived", fmt.Sprintf("%d/%d", r.KASurvived, c.Keepalive), "recovery", r.RecoveryText())
		}
		results = append(results, r)
	}
	rep := &floodReport{
		machine: report.DetectMachine(),
		date:    start,
		command: strings.TrimSpace("go run ./bench/cmd/flood " + strings.Join(os.Args[1:], " ")),
		cfg:     &c,
		results: results,
		total:   time.Since(start).Round(time.Second),
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Error("results directory", "err", err)
		return 1
	}
	file := filepath.Join(*out, "flood-"+start.Format("20060102-150405")+".md")
	var b strings.Builder
	rep.markdown(&b)
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		log.Error("write results", "err", err)
		return 1
	}
	fmt.Printf("results: %s\n\n%s", file, b.String())
	for _, r := range results {
		if r.Err != "" {
			return 1
		}
	}
	return 0
}

// config is one invocation's settings.
type config struct {
	floodmeasure.Config
	paths    []struct{ name, label string }
	capacity int
	director string
	built    string // what the director was built from
}

// source is the directory to build the director in: the repository's
// working tree, or (rev set) revision rev extracted with git archive
// into tmp. built says which, for the report.
func source(ctx context.Context, root, tmp, rev string) (dir, built string, err error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
		b, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if rev == "" {
		head, err := git("log", "-1", "--format=%h %s")
		if err != nil {
			return root, "the working tree", nil
		}
		built = "the working tree at " + head
		if st, err := git("status", "--porcelain", "--untracked-files=no", "--", "cmd", "director", "conntrack", "link", "packet", "service", "scheduler", "control"); err == nil && st != "" {
			var files []string
			for _, l := range strings.Split(st, "\n") {
				if len(l) > 3 {
					files = append(files, l[3:])
				}
			}
			built += ", with uncommitted changes to " + strings.Join(files, ", ")
		}
		return root, built, nil
	}
	desc, err := git("log", "-1", "--format=%h %s", rev)
	if err != nil {
		return "", "", err
	}
	tar := filepath.Join(tmp, "src.tar")
	if _, err := git("archive", "-o", tar, rev); err != nil {
		return "", "", err
	}
	dir = filepath.Join(tmp, "src")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", "", err
	}
	if b, err := exec.CommandContext(ctx, "tar", "-xf", tar, "-C", dir).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("tar: %w: %s", err, b)
	}
	return dir, "revision " + desc + " (git archive)", nil
}

func (c *config) check() error {
	switch {
	case len(c.paths) == 0:
		return errors.New("no path")
	case c.capacity < 0:
		return fmt.Errorf("-capacity %d: want 0 (default) or more", c.capacity)
	}
	return c.Config.Check()
}
