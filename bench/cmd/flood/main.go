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

	"uvs/bench/harness"
	"uvs/bench/report"
	"uvs/lab"
	"uvs/testbed"
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
	var c config
	pathList := flag.String("paths", "uvs-afpacket,nftables", "paths to measure, in order: "+strings.Join(names, ","))
	flag.Float64Var(&c.rate, "rate", 30000, "flood rate, SYN/s (0: unpaced, as fast as the machine sends)")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "flood length (at most 60s)")
	flag.Int64Var(&c.count, "count", 0, "SYNs at most (0: rate × duration, or 100 000 000 unpaced)")
	flag.IntVar(&c.capacity, "capacity", 0, "UVS: `director run --capacity N` (0: the director's default)")
	flag.IntVar(&c.senders, "senders", 1, "flood sockets, each sending from its own goroutine")
	sources := flag.String("sources", "198.19.0.0/16", "forged source prefix (inside 198.18.0.0/15, apart from the lab's subnets)")
	flag.IntVar(&c.keepalive, "keepalive", 20, "established keep-alive connections, each a request every -ka-interval")
	flag.DurationVar(&c.kaInterval, "ka-interval", 100*time.Millisecond, "keep-alive: time between one connection's requests")
	flag.DurationVar(&c.kaTimeout, "ka-timeout", 5*time.Second, "keep-alive: a request not answered in this time kills the connection")
	flag.Float64Var(&c.newRate, "new-rate", 20, "legitimate new connections per second (one request each)")
	flag.DurationVar(&c.newTimeout, "new-timeout", 2*time.Second, "a new connection's request not answered in this time failed")
	flag.DurationVar(&c.pre, "pre", 5*time.Second, "legitimate traffic before the flood")
	flag.DurationVar(&c.after, "after", 90*time.Second, "at most this long after the flood, waiting for new connections to succeed again (at least 10s: RSS is read 10 s after)")
	rev := flag.String("rev", "", "build the director from this git `REVISION` (git archive) instead of the working tree, e.g. to measure the code before a change")
	out := flag.String("out", "", "results directory (default: bench/results of the repository)")
	noInstall := flag.Bool("no-install", false, "fail instead of installing missing peers with apt-get")
	cleanup := flag.Bool("cleanup", false, "remove namespaces a killed run left behind ("+prefix+"-*) and exit")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	if err := testbed.Available(); err != nil {
		log.Error("flood needs root", "err", err)
		return 1
	}
	if *cleanup {
		if err := testbed.Cleanup(prefix); err != nil {
			log.Error("cleanup", "err", err)
			return 1
		}
		return 0
	}
	var err error
	if c.sources, err = netip.ParsePrefix(*sources); err != nil {
		log.Error("-sources", "err", err)
		return 2
	}
	c.sources = c.sources.Masked()
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
	if c.count == 0 {
		c.count = 100_000_000
		if c.rate > 0 {
			c.count = int64(c.rate * c.duration.Seconds())
		}
	}
	if err := c.check(); err != nil {
		log.Error("flags", "err", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if missing := harness.MissingPeers(); len(missing) > 0 {
		if *noInstall {
			log.Error("missing peers", "peers", fmt.Sprint(missing))
			return 1
		}
		if err := harness.InstallPeers(ctx, missing, log); err != nil {
			log.Error("install peers", "err", err)
			return 1
		}
	}
	root, err := repoRoot()
	if err != nil {
		log.Error("find the repository", "err", err)
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
	c.director = filepath.Join(tmp, "director")
	src, built, err := source(ctx, root, tmp, *rev)
	if err != nil {
		log.Error("director source", "err", err)
		return 1
	}
	c.built = built
	log.Info("building the director", "from", built)
	build := exec.CommandContext(ctx, "go", "build", "-o", c.director, "./cmd/director")
	build.Dir = src
	if b, err := build.CombinedOutput(); err != nil {
		log.Error("build director", "err", err, "output", string(b))
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
		if r.err != "" {
			log.Error("path failed", "path", p.name, "err", r.err)
		} else {
			log.Info("path done", "path", p.name, "new-conn during flood", pct(r.during), "keep-alive survived", fmt.Sprintf("%d/%d", r.kaSurvived, c.keepalive), "recovery", r.recoveryText())
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
		if r.err != "" {
			return 1
		}
	}
	return 0
}

// config is one invocation's settings.
type config struct {
	paths                             []struct{ name, label string }
	rate                              float64
	duration, pre, after              time.Duration
	count                             int64
	capacity, senders, keepalive      int
	kaInterval, kaTimeout, newTimeout time.Duration
	newRate                           float64
	sources                           netip.Prefix
	director                          string
	built                             string // what the director was built from
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

// The lab's own subnets: the forged sources must stay clear of them.
var labNets = []netip.Prefix{
	netip.MustParsePrefix("198.18.0.0/24"), // client — director
	netip.MustParsePrefix("198.18.1.0/24"), // director — real servers
	netip.MustParsePrefix("198.18.2.0/24"), // client — return router
}

func (c *config) check() error {
	switch {
	case len(c.paths) == 0:
		return errors.New("no path")
	case c.duration < time.Second || c.duration > 60*time.Second:
		return fmt.Errorf("-duration %v: want 1s to 60s", c.duration)
	case c.rate < 0:
		return fmt.Errorf("-rate %v: want 0 (unpaced) or more", c.rate)
	case c.count <= 0:
		return fmt.Errorf("-count %d: want 1 or more", c.count)
	case c.capacity < 0:
		return fmt.Errorf("-capacity %d: want 0 (default) or more", c.capacity)
	case c.senders < 1 || c.senders > 16:
		return fmt.Errorf("-senders %d: want 1 to 16", c.senders)
	case c.keepalive < 0 || c.keepalive > 1000:
		return fmt.Errorf("-keepalive %d: want 0 to 1000", c.keepalive)
	case c.kaInterval < 10*time.Millisecond || c.kaTimeout < 100*time.Millisecond:
		return errors.New("-ka-interval at least 10ms, -ka-timeout at least 100ms")
	case c.newRate <= 0 || c.newRate > 1000:
		return fmt.Errorf("-new-rate %v: want more than 0, at most 1000", c.newRate)
	case c.newTimeout < 100*time.Millisecond:
		return errors.New("-new-timeout at least 100ms")
	case c.pre < time.Second || c.pre > time.Minute:
		return fmt.Errorf("-pre %v: want 1s to 1m", c.pre)
	case c.after < 10*time.Second || c.after > 3*time.Minute:
		return fmt.Errorf("-after %v: want 10s to 3m", c.after)
	case !c.sources.IsValid() || !c.sources.Addr().Is4():
		return errors.New("-sources: want an IPv4 prefix")
	}
	for _, n := range labNets {
		if c.sources.Overlaps(n) {
			return fmt.Errorf("-sources %v overlaps the lab's subnet %v", c.sources, n)
		}
	}
	if c.sources.Contains(netip.MustParseAddr(lab.ClientIP)) {
		return fmt.Errorf("-sources %v holds the client's address", c.sources)
	}
	return nil
}

// repoRoot is the directory holding the uvs module's go.mod, found from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module uvs\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("not inside the uvs module (no go.mod saying \"module uvs\" above the working directory)")
}
