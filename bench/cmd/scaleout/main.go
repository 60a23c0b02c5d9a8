// Command scaleout measures UVS scaled out behind an ECMP router (issue
// 15): bulk TCP throughput through 1, 2 and 3 directors, as ratios to one
// director, and how fast the router drops a director's path when the
// director is killed, stopped, or cut off, and takes it back.
//
// It builds the scale-out topology (lab.BuildECMP, namespaces
// uvsscale-RANDOM-*): a client behind a router running BIRD 2 with ECMP
// (an L4 multipath hash), three directors peering with it over BGP, each
// running the director built from the working tree with --sloppy-tcp,
// --workers 1 and the same rules, and one DR real server running iperf3.
// For each count of directors, in interleaved rounds, it runs exactly that
// many (the others stopped, their paths gone from the router's kernel
// route), and measures iperf3 -P STREAMS from the client to the VIP (the
// client's data crosses the directors; the server's ACKs go straight
// back), the share of the bytes each director forwarded, the directors'
// CPU and the machine's. Then it times failovers, polling BIRD (birdc)
// and the router's kernel route every few milliseconds.
//
//	go run ./bench/cmd/scaleout                 # as root, about 2 minutes (3 with -repeat 5)
//	go run ./bench/cmd/scaleout -cleanup        # remove a killed run's namespaces
//
// It needs iperf3 and BIRD 2 (Debian: apt-get install iperf3 bird2) and
// writes bench/results/scaleout-YYYYMMDD-HHMMSS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"uvs/bench/harness"
	"uvs/bench/parse"
	"uvs/bench/report"
	"uvs/lab"
)

const (
	prefix    = "uvsscale"
	iperfPort = "5201"
	drain     = 2 * time.Second
)

func main() { os.Exit(run()) }

type config struct {
	duration        time.Duration
	repeat, streams int
	failovers       int
	hold            bool
	director, out   string
	cmdline         string
}

func run() int {
	var c config
	flag.DurationVar(&c.duration, "duration", 8*time.Second, "length of each iperf3 run (1s to 60s)")
	flag.IntVar(&c.repeat, "repeat", 3, "rounds over 1, 2 and 3 directors; the table gives the median")
	flag.IntVar(&c.streams, "streams", 16, "iperf3 streams (-P): ECMP spreads flows, not packets")
	flag.IntVar(&c.failovers, "failovers", 3, "times each failover is measured")
	flag.BoolVar(&c.hold, "hold", true, "also time the hold timer: a director cut off without closing its sessions (about 10 s)")
	flag.StringVar(&c.director, "director", "", "director binary (default: built from the working tree)")
	flag.StringVar(&c.out, "out", "bench/results", "results directory")
	cleanup := flag.Bool("cleanup", false, "remove namespaces a killed run left behind ("+prefix+"-*) and exit")
	flag.Parse()
	c.cmdline = "go run ./bench/cmd/scaleout " + strings.Join(os.Args[1:], " ")
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if code, done := harness.Begin("scaleout", prefix, *cleanup, log); done {
		return code
	}
	switch {
	case c.duration < time.Second || c.duration > time.Minute:
		log.Error("-duration: want 1s to 60s", "value", c.duration)
		return 2
	case c.repeat < 1 || c.repeat > 20 || c.failovers < 0 || c.failovers > 20:
		log.Error("-repeat: want 1 to 20; -failovers: 0 to 20")
		return 2
	case c.streams < 1 || c.streams > 128:
		log.Error("-streams: want 1 to 128")
		return 2
	}
	for _, bin := range []string{"iperf3", "bird", "birdc"} {
		if _, err := harness.LookPath(bin); err != nil {
			log.Error("missing a peer (Debian: apt-get install -y iperf3 bird2)", "err", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, c, log); err != nil {
		log.Error("scaleout", "err", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, c config, log *slog.Logger) error {
	began := time.Now()
	load0 := loadavg()
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "uvsscale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := c.director
	if bin == "" {
		log.Info("building the director")
		if bin, err = harness.BuildDirector(ctx, root, tmp); err != nil {
			return err
		}
	}
	log.Info("building the topology")
	n, err := lab.BuildECMP(prefix, 3, 1)
	if err != nil {
		return err
	}
	defer n.Bed.Close()
	iperf, err := harness.LookPath("iperf3")
	if err != nil {
		return err
	}
	srv := n.RS[0].Command(iperf, "-s", "-p", iperfPort)
	if err := srv.Start(); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	bird, err := lab.StartBIRD(n.Router, tmp, n.BIRDConfig(filepath.Join(tmp, "bird.log")))
	if err != nil {
		return err
	}
	defer bird.Stop()
	b := &scale{ctx: ctx, c: c, log: log, n: n, bin: bin, bird: bird, tmp: tmp, d: make([]*lab.Director, 3)}
	rules := filepath.Join(tmp, "rules")
	vip := net.JoinHostPort(lab.ECMPVIP, iperfPort)
	// sh on the source address alone: every stream of the client goes to
	// the one real server, whichever director carries it.
	if err := os.WriteFile(rules, []byte(fmt.Sprintf("-A -t %s -s sh\n-a -t %s -r %s:%s -g -w 1\n",
		vip, vip, lab.ECMPRSIP(0), iperfPort)), 0o600); err != nil {
		return err
	}
	b.rules = rules
	defer b.stopAll()

	var rounds []round
	for r := range c.repeat {
		for k := 1; k <= 3; k++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := b.only(k); err != nil {
				return err
			}
			rd, err := b.measure(k)
			if err != nil {
				return fmt.Errorf("round %d, %d directors: %w", r+1, k, err)
			}
			log.Info("throughput", "directors", k, "gbit_s", fmt.Sprintf("%.2f", rd.gbps), "shares", rd.shares, "busy", fmt.Sprintf("%.0f%%", rd.busy*100))
			rounds = append(rounds, rd)
		}
	}
	fo, err := b.failovers()
	if err != nil {
		return err
	}
	return write(c, rounds, fo, load0, began, log)
}

// scale runs the directors of the topology.
type scale struct {
	ctx   context.Context
	c     config
	log   *slog.Logger
	n     *lab.ECMPNet
	bin   string
	bird  *lab.BIRD
	tmp   string
	rules string
	d     []*lab.Director // running ones; nil when stopped
}

func (b *scale) start(i int) error {
	dir := filepath.Join(b.tmp, fmt.Sprintf("d%d", i+1))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	args := append([]string{"--rules", b.rules, "--sloppy-tcp", "--workers", "1"}, b.n.DirectorBGPArgs(drain)...)
	d, err := lab.StartDirector(b.n.Directors[i], b.bin, dir, args...)
	if err != nil {
		return fmt.Errorf("d%d: %w", i+1, err)
	}
	b.d[i] = d
	return nil
}

func (b *scale) stopDirector(i int) error {
	d := b.d[i]
	b.d[i] = nil
	if d == nil || d.Exited() {
		return nil
	}
	if err := d.Stop(); err != nil {
		return fmt.Errorf("d%d: stop: %w\n%s", i+1, err, d.Log())
	}
	return nil
}

func (b *scale) stopAll() {
	for i := range b.d {
		if err := b.stopDirector(i); err != nil {
			b.log.Warn("stop", "err", err)
		}
	}
}

// running lists the running directors' LAN addresses.
func (b *scale) running() []string {
	var out []string
	for i, d := range b.d {
		if d != nil {
			out = append(out, lab.ECMPDirIP(i))
		}
	}
	return out
}

// only runs exactly the first k directors and waits until BIRD and the
// router's kernel route say so.
func (b *scale) only(k int) error {
	for i := range b.d {
		var err error
		switch {
		case i < k && b.d[i] == nil:
			err = b.start(i)
		case i >= k && b.d[i] != nil:
			err = b.stopDirector(i)
		}
		if err != nil {
			return err
		}
	}
	want := b.running()
	if _, err := b.bird.WaitPaths(lab.ECMPVIP+"/32", want, 30*time.Second); err != nil {
		return err
	}
	_, err := b.waitKernel(len(want), 10*time.Second)
	return err
}

// kernelHops is the number of next hops of the router's kernel route to
// the VIP (0: none).
func (b *scale) kernelHops() (int, error) {
	hops := 0
	err := b.n.Router.Do(func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: net.ParseIP(lab.ECMPVIP).To4(), Mask: net.CIDRMask(32, 32)}}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		for _, r := range rs {
			hops += max(1, len(r.MultiPath))
		}
		return nil
	})
	return hops, err
}

// waitKernel waits until the kernel route has want next hops.
func (b *scale) waitKernel(want int, timeout time.Duration) (time.Time, error) {
	got := -1
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		h, err := b.kernelHops()
		if err != nil {
			return time.Time{}, fmt.Errorf("router's route: %w", err)
		}
		if got = h; got == want {
			return time.Now(), nil
		}
	}
	return time.Time{}, fmt.Errorf("the router's route to the VIP has %d next hops after %v, want %d", got, timeout, want)
}

// round is one iperf3 run through k directors.
type round struct {
	k      int
	gbps   float64
	shares []float64 // of the bytes in, by director
	cpu    []float64 // CPU seconds by director during the run
	busy   float64   // the machine's busy fraction during the run
}

func (b *scale) measure(k int) (round, error) {
	rd := round{k: k}
	before, cpu0, err := b.counters(k)
	if err != nil {
		return rd, err
	}
	stat0 := machineCPU()
	bin, err := harness.LookPath("iperf3")
	if err != nil {
		return rd, err
	}
	secs := strconv.Itoa(int(b.c.duration / time.Second))
	cmd := b.n.Client.Command(bin, "-c", lab.ECMPVIP, "-p", iperfPort, "-t", secs, "-P", strconv.Itoa(b.c.streams), "-J", "--connect-timeout", "3000")
	out, err := runLimited(b.ctx, cmd, b.c.duration+15*time.Second)
	if err != nil {
		return rd, err
	}
	stat1 := machineCPU()
	r, err := parse.ParseIperf3(out)
	if err != nil {
		return rd, err
	}
	rd.gbps = r.BitsPerSecond / 1e9
	after, cpu1, err := b.counters(k)
	if err != nil {
		return rd, err
	}
	var total float64
	for i := range k {
		total += float64(after[i] - before[i])
	}
	for i := range k {
		rd.shares = append(rd.shares, float64(after[i]-before[i])/max(total, 1))
		rd.cpu = append(rd.cpu, (cpu1[i] - cpu0[i]).Seconds())
	}
	rd.busy = stat1.busySince(stat0)
	return rd, nil
}

var statsLine = regexp.MustCompile(`(?m)^TCP +\S+ +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$`)

// counters returns the bytes in of the first k directors' service and
// their CPU time.
func (b *scale) counters(k int) ([]uint64, []time.Duration, error) {
	var in []uint64
	var cpu []time.Duration
	for i := range k {
		out, errs, code, err := b.d[i].Ipvsadm("-L", "-n", "--stats", "--exact")
		if err != nil || code != 0 {
			return nil, nil, fmt.Errorf("d%d: ipvsadm --stats: %d %v %s", i+1, code, err, errs)
		}
		m := statsLine.FindStringSubmatch(out)
		if m == nil {
			return nil, nil, fmt.Errorf("d%d: no service in:\n%s", i+1, out)
		}
		v, _ := strconv.ParseUint(m[4], 10, 64)
		in = append(in, v)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.d[i].Pid()))
		if err != nil {
			return nil, nil, err
		}
		ps, err := parse.ParseProcStat(st)
		if err != nil {
			return nil, nil, err
		}
		cpu = append(cpu, ps.CPU())
	}
	return in, cpu, nil
}

// A failover figure: how long from the event to what was awaited.
type figure struct {
	event, what string
	ds          []time.Duration
}

// failovers times, with the three directors up: SIGKILL of one (to its
// path gone from BIRD and from the kernel route), its start (to its path
// back), SIGTERM (to the withdrawal in BIRD and to the exit), and, with
// -hold, a director cut off (its link down) to the hold timer's expiry.
func (b *scale) failovers() ([]*figure, error) {
	if err := b.only(3); err != nil {
		return nil, err
	}
	const v = 2 // the director that goes
	others := []string{lab.ECMPDirIP(0), lab.ECMPDirIP(1)}
	all := append(slices.Clone(others), lab.ECMPDirIP(v))
	killBIRD := &figure{event: "SIGKILL", what: "BIRD drops its path"}
	killKernel := &figure{event: "SIGKILL", what: "the router's kernel route drops it"}
	back := &figure{event: "start", what: "BIRD has its path again (from the process start)"}
	termBIRD := &figure{event: "SIGTERM", what: "BIRD drops its path (the withdrawal)"}
	termExit := &figure{event: "SIGTERM", what: fmt.Sprintf("the director has exited (--bgp-drain %v)", drain)}
	figs := []*figure{killBIRD, killKernel, back, termBIRD, termExit}
	restart := func() error {
		t0 := time.Now()
		if err := b.start(v); err != nil {
			return err
		}
		t, err := b.bird.WaitPaths(lab.ECMPVIP+"/32", all, 30*time.Second)
		if err != nil {
			return err
		}
		back.ds = append(back.ds, t.Sub(t0))
		_, err = b.waitKernel(3, 10*time.Second)
		return err
	}
	for range b.c.failovers {
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		d := b.d[v]
		t0 := time.Now()
		if err := d.Signal(syscall.SIGKILL); err != nil {
			return nil, err
		}
		// BIRD and the kernel, timed side by side.
		kernel := make(chan error, 1)
		go func() {
			t, err := b.waitKernel(2, 20*time.Second)
			killKernel.ds = append(killKernel.ds, t.Sub(t0))
			kernel <- err
		}()
		t, err := b.bird.WaitPaths(lab.ECMPVIP+"/32", others, 20*time.Second)
		if kerr := <-kernel; err == nil {
			err = kerr
		}
		if err != nil {
			return nil, err
		}
		killBIRD.ds = append(killBIRD.ds, t.Sub(t0))
		for deadline := time.Now().Add(20 * time.Second); !d.Exited(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				return nil, errors.New("the director still runs 20 s after SIGKILL")
			}
		}
		b.d[v] = nil
		if err := restart(); err != nil {
			return nil, err
		}

		d = b.d[v]
		t0 = time.Now()
		if err := d.Signal(syscall.SIGTERM); err != nil {
			return nil, err
		}
		if t, err = b.bird.WaitPaths(lab.ECMPVIP+"/32", others, 20*time.Second); err != nil {
			return nil, err
		}
		termBIRD.ds = append(termBIRD.ds, t.Sub(t0))
		for deadline := time.Now().Add(20 * time.Second); !d.Exited(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				return nil, errors.New("the director did not exit after SIGTERM")
			}
		}
		termExit.ds = append(termExit.ds, time.Since(t0))
		b.d[v] = nil
		if err := restart(); err != nil {
			return nil, err
		}
	}
	if b.c.hold {
		cut := &figure{event: "link cut", what: "BIRD drops its path (hold time 9 s, counted from the last keepalive, sent every 3 s)"}
		figs = append(figs, cut)
		b.log.Info("timing the hold timer: a director's link down")
		t0 := time.Now()
		if _, err := b.n.Directors[v].Exec("ip", "link", "set", "eth0", "down"); err != nil {
			return nil, err
		}
		t, err := b.bird.WaitPaths(lab.ECMPVIP+"/32", others, 30*time.Second)
		if err != nil {
			return nil, err
		}
		cut.ds = append(cut.ds, t.Sub(t0))
		if err := b.d[v].Signal(syscall.SIGKILL); err != nil {
			return nil, err
		}
		for !b.d[v].Exited() {
			time.Sleep(5 * time.Millisecond)
		}
		b.d[v] = nil
		if _, err := b.n.Directors[v].Exec("ip", "link", "set", "eth0", "up"); err != nil {
			return nil, err
		}
	}
	return figs, nil
}

// runLimited runs cmd, killed after limit, and returns its stdout.
func runLimited(ctx context.Context, cmd *exec.Cmd, limit time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return []byte(out.String()), fmt.Errorf("%s: %w: %s", cmd.Args, err, errb.String())
		}
		return []byte(out.String()), nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("%s: stopped after %v: %w", cmd.Args, limit, ctx.Err())
	}
}

// cpuStat is the machine's CPU time from /proc/stat, in ticks.
type cpuStat struct{ total, idle uint64 }

func machineCPU() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var s cpuStat
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		s.total += n
		if i == 3 || i == 4 { // idle, iowait
			s.idle += n
		}
	}
	return s
}

func (s cpuStat) busySince(o cpuStat) float64 {
	if s.total <= o.total {
		return 0
	}
	return 1 - float64(s.idle-o.idle)/float64(s.total-o.total)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func write(c config, rounds []round, figs []*figure, load0 string, began time.Time, log *slog.Logger) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# UVS scaled out: 1, 2 and 3 directors behind an ECMP router")
	p("")
	p("%s, %s, `%s`; load average at the start %s, at the end %s (the machine is shared). Total time %v.",
		report.DetectMachine(), began.Format("2006-01-02 15:04"), strings.TrimSpace(c.cmdline), load0, loadavg(), time.Since(began).Round(time.Second))
	p("")
	p("Topology (`lab.BuildECMP`): client — router (BIRD 2, `merge paths on`, `fib_multipath_hash_policy=1`) — LAN with the directors (each `director run --sloppy-tcp --workers 1 --bgp-asn 65001 --bgp-peer …`, the same rules: `-s sh`, one DR real server) and the real server (iperf3 -s). The client's data crosses the router and one director; the server's ACKs go from the real server through the router, not the directors.")
	p("")
	p("## Bulk TCP, client to server, iperf3 -P %d, %v a run, %d rounds interleaved", c.streams, c.duration, c.repeat)
	p("")
	p("| directors | Gbit/s, median | runs | ratio to 1 director | share of the bytes by director (median run) | CPU s of each director (median run) | directors' CPU s per GB (median run) | machine busy (median run) |")
	p("|---:|---:|---|---:|---|---|---:|---:|")
	var one float64
	for k := 1; k <= 3; k++ {
		var g []float64
		var rs []round
		for _, r := range rounds {
			if r.k == k {
				g = append(g, r.gbps)
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		med := median(g)
		if k == 1 {
			one = med
		}
		// The run nearest the median, for the per-director figures.
		slices.SortFunc(rs, func(a, b round) int { return cmpAbs(a.gbps-med, b.gbps-med) })
		m := rs[0]
		var runs, shares, cpu []string
		for _, x := range g {
			runs = append(runs, fmt.Sprintf("%.2f", x))
		}
		var cpuSum float64
		for i := range m.shares {
			shares = append(shares, fmt.Sprintf("%.0f %%", m.shares[i]*100))
			cpu = append(cpu, fmt.Sprintf("%.2f", m.cpu[i]))
			cpuSum += m.cpu[i]
		}
		gb := m.gbps * c.duration.Seconds() / 8
		ratio := "1.00"
		if k > 1 && one > 0 {
			ratio = fmt.Sprintf("%.2f", med/one)
		}
		p("| %d | %.2f | %s | %s | %s | %s | %.2f | %.0f %% |", k, med, strings.Join(runs, ", "), ratio, strings.Join(shares, " / "), strings.Join(cpu, " / "), cpuSum/max(gb, 1e-9), m.busy*100)
	}
	p("")
	p("## Failover, 3 directors, one goes and comes back")
	p("")
	p("Polled every few milliseconds: BIRD with `birdc show route`, the router's kernel route over netlink.")
	p("")
	p("| event | until | median | min – max | n |")
	p("|---|---|---:|---|---:|")
	for _, f := range figs {
		if len(f.ds) == 0 {
			continue
		}
		var ms []float64
		for _, d := range f.ds {
			ms = append(ms, float64(d)/float64(time.Millisecond))
		}
		p("| %s | %s | %s | %s – %s | %d |", f.event, f.what, msStr(median(ms)), msStr(slices.Min(ms)), msStr(slices.Max(ms)), len(ms))
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(c.out, "scaleout-"+began.Format("20060102-150405")+".md")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	log.Info("written", "file", path)
	return nil
}

func cmpAbs(a, b float64) int {
	if a < 0 {
		a = -a
	}
	if b < 0 {
		b = -b
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func msStr(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.2f s", ms/1000)
	}
	return fmt.Sprintf("%.0f ms", ms)
}
