// Command overload measures small-UDP packets delivered against packets
// offered through UVS NAT (--io afpacket), from well below to far above
// what the director can forward, to tell a director that collapses under
// overload (receive livelock: delivered falls as offered rises) from a
// sender that takes the CPU the director needs (issue 13).
//
// It builds the bench topology (bench/harness, namespaces uvsovl-RANDOM-*),
// runs the director with --metrics, and for each setup and each offered
// rate floods VIP:9000 from the client with bench/udpflood, in a child
// process of its own (this binary with -send-child, in the client
// namespace), so that the sender can be pinned apart from the director and
// from the sinks (which run in this process, in the real servers'
// namespaces). Setups:
//
//	shared     nothing pinned: sender, director and sinks share both cores
//	pinned     the sender on -sender-cpu, the director's threads on -director-cpu
//	pinned-w1  pinned, and the director run with --workers 1
//
// The sinks stay where -sink-cpu puts them (-1: unpinned). Every trial is
// bounded by -duration and by a datagram count.
//
//	go run ./bench/cmd/overload                       # as root, about 3 minutes
//	go run ./bench/cmd/overload -cleanup              # remove a killed run's namespaces
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"uvs/bench/harness"
	"uvs/bench/parse"
	"uvs/bench/report"
	"uvs/bench/udpflood"
	"uvs/lab"
	"uvs/testbed"
)

const prefix = "uvsovl"

var (
	metricsAddr = net.JoinHostPort(lab.DirOuterIP, "9100")
	pprofAddr   = net.JoinHostPort(lab.DirOuterIP, "6060")
)

func main() { os.Exit(run()) }

type config struct {
	rates                  []float64 // 0: unpaced
	setups                 []string
	duration               time.Duration
	repeat, flows, size    int
	senderCPU, directorCPU int
	sinkCPU                int
	director               string
	profile                string // directory for director CPU profiles of unpaced trials
}

func run() int {
	if len(os.Args) > 1 && os.Args[1] == "-send-child" {
		return sendChild(os.Args[2:])
	}
	var c config
	rates := flag.String("rates", "50000,100000,150000,200000,300000,0", "offered rates, datagrams/s (0: unpaced)")
	setups := flag.String("setups", "shared,pinned,pinned-w1", "setups to run: shared, pinned, pinned-w1")
	flag.DurationVar(&c.duration, "duration", 3*time.Second, "length of each trial (at most 30s)")
	flag.IntVar(&c.repeat, "repeat", 2, "rounds over every setup and rate; the table gives the median")
	flag.IntVar(&c.flows, "flows", 8, "client sockets")
	flag.IntVar(&c.size, "size", 64, "payload bytes")
	flag.IntVar(&c.senderCPU, "sender-cpu", 0, "pinned setups: the sender's CPU")
	flag.IntVar(&c.directorCPU, "director-cpu", 1, "pinned setups: the director's CPU")
	flag.IntVar(&c.sinkCPU, "sink-cpu", -1, "the sinks' (this process's) CPU, -1 unpinned")
	flag.StringVar(&c.director, "director", "", "director binary (default: built from the working tree)")
	flag.StringVar(&c.profile, "profile", "", "save a CPU profile of the director during each unpaced trial of the first round in this directory")
	out := flag.String("out", "bench/results", "results directory")
	cleanup := flag.Bool("cleanup", false, "remove namespaces a killed run left behind ("+prefix+"-*) and exit")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if code, done := harness.Begin("overload", prefix, *cleanup, log); done {
		return code
	}
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r < 0 || r > 5e6 {
			log.Error("-rates", "value", f)
			return 2
		}
		c.rates = append(c.rates, r)
	}
	for _, s := range strings.Split(*setups, ",") {
		if !slices.Contains([]string{"shared", "pinned", "pinned-w1"}, s) {
			log.Error("-setups", "value", s)
			return 2
		}
		c.setups = append(c.setups, s)
	}
	if c.duration <= 0 || c.duration > 30*time.Second || c.repeat < 1 || c.repeat > 10 || c.flows < 1 || c.flows > 64 {
		log.Error("flags out of range")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "uvsovl-bin-")
	if err != nil {
		log.Error("temp dir", "err", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if c.director == "" {
		root, err := harness.RepoRoot()
		if err == nil {
			c.director, err = harness.BuildDirector(ctx, root, tmp)
		}
		if err != nil {
			log.Error("build", "err", err)
			return 1
		}
	}
	if c.sinkCPU >= 0 {
		if err := pin(os.Getpid(), c.sinkCPU); err != nil {
			log.Error("pin sinks", "err", err)
			return 1
		}
	}
	t, err := harness.Build(ctx, prefix, log)
	if err != nil {
		log.Error("topology", "err", err)
		return 1
	}
	defer t.Close()
	start := time.Now()
	var trials []trial
	for r := range c.repeat {
		for _, s := range c.setups {
			ts, err := runSetup(ctx, &c, t, s, r, log)
			trials = append(trials, ts...)
			if err != nil {
				log.Error("setup", "setup", s, "err", err)
				return 1
			}
		}
	}
	var b strings.Builder
	writeReport(&b, &c, trials, start)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Error("out", "err", err)
		return 1
	}
	file := filepath.Join(*out, "overload-"+start.Format("20060102-150405")+".md")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		log.Error("write", "err", err)
		return 1
	}
	fmt.Printf("results: %s\n\n%s", file, b.String())
	return 0
}

// trial is one flood at one offered rate.
type trial struct {
	setup      string
	round      int
	rate       float64 // asked; 0 unpaced
	sent, got  int64
	elapsed    time.Duration
	queueFull  float64 // the director's socket_queue_full drops
	sinkDrops  int64   // the real servers' UDP RcvbufErrors
	dirCPU     time.Duration
	senderCPU  time.Duration
	sinkCPU    time.Duration // this process: the sinks (and the orchestration, little)
	otherDrops map[string]float64
	linkDrops  int64 // rx_dropped of the director's eth0, tx_dropped of the client's eth0, softnet backlog drops
}

func (tr trial) offered() float64   { return float64(tr.sent) / tr.elapsed.Seconds() }
func (tr trial) delivered() float64 { return float64(tr.got) / tr.elapsed.Seconds() }

func runSetup(ctx context.Context, c *config, t *harness.Topo, setup string, round int, log *slog.Logger) ([]trial, error) {
	dir, err := os.MkdirTemp(t.Dir(), "director-")
	if err != nil {
		return nil, err
	}
	args := []string{"--io", "afpacket", "--log-level", "warn", "--metrics", metricsAddr, "--pprof", pprofAddr}
	if setup == "pinned-w1" {
		args = append(args, "--workers", "1")
	}
	d, err := lab.StartDirector(t.Net.Director, c.director, dir, args...)
	if err != nil {
		return nil, err
	}
	defer d.Stop()
	vip := net.JoinHostPort(harness.VIP, strconv.Itoa(harness.UDPPort))
	rules := [][]string{{"-A", "-u", vip, "-s", "rr"}}
	for _, rip := range harness.RealServers() {
		rules = append(rules, []string{"-a", "-u", vip, "-r", net.JoinHostPort(rip, strconv.Itoa(harness.UDPPort)), "-m"})
	}
	for _, r := range rules {
		if so, se, code, err := d.Ipvsadm(r...); err != nil || code != 0 {
			return nil, fmt.Errorf("ipvsadm %v: %d %v %s%s", r, code, err, so, se)
		}
	}
	// The director inherits this process's affinity (-sink-cpu): shared
	// gives it every CPU back.
	dcpu := c.directorCPU
	if setup == "shared" {
		dcpu = -1
	}
	if err := pin(d.Pid(), dcpu); err != nil {
		return nil, err
	}
	hc := t.Net.Director.HTTPClient()
	hc.Timeout = 40 * time.Second
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var out []trial
	for _, rate := range c.rates {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		// Warm the table (a first datagram per flow creates the entries).
		if _, err := send(ctx, t, self, c, setup, 1000, 200*time.Millisecond, 1000); err != nil {
			return out, err
		}
		time.Sleep(300 * time.Millisecond)
		tr := trial{setup: setup, round: round, rate: rate}
		got0, sink0, link0 := sinks(t), sinkDrops(t), linkDrops(t)
		drops0, err := drops(hc)
		if err != nil {
			return out, err
		}
		cpu0, err := cpuOf(d.Pid())
		if err != nil {
			return out, err
		}
		self0, err := cpuOf(os.Getpid())
		if err != nil {
			return out, err
		}
		var prof chan []byte
		if rate == 0 && round == 0 && c.profile != "" {
			prof = make(chan []byte, 1)
			go func() {
				secs := max(1, int(c.duration/time.Second)-1)
				resp, err := hc.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs))
				if err != nil {
					prof <- nil
					return
				}
				defer resp.Body.Close()
				var b []byte
				buf := make([]byte, 64<<10)
				for {
					n, err := resp.Body.Read(buf)
					b = append(b, buf[:n]...)
					if err != nil {
						break
					}
				}
				prof <- b
			}()
		}
		count := int64(20_000_000)
		if rate > 0 {
			count = int64(rate*c.duration.Seconds()) + 1
		}
		res, err := send(ctx, t, self, c, setup, rate, c.duration, count)
		if err != nil {
			return out, err
		}
		last := sinks(t)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			n := sinks(t)
			if n == last {
				break
			}
			last = n
		}
		cpu1, err := cpuOf(d.Pid())
		if err != nil {
			return out, err
		}
		self1, err := cpuOf(os.Getpid())
		if err != nil {
			return out, err
		}
		tr.sinkCPU = self1 - self0
		drops1, err := drops(hc)
		if err != nil {
			return out, err
		}
		tr.sent, tr.elapsed, tr.senderCPU = res.Sent, time.Duration(res.ElapsedNs), time.Duration(res.CPUNs)
		tr.got = last - got0
		tr.sinkDrops = sinkDrops(t) - sink0
		tr.linkDrops = linkDrops(t) - link0
		tr.dirCPU = cpu1 - cpu0
		tr.otherDrops = map[string]float64{}
		for k, v := range drops1 {
			if dv := v - drops0[k]; dv > 0 {
				if k == "socket_queue_full" {
					tr.queueFull = dv
				} else {
					tr.otherDrops[k] = dv
				}
			}
		}
		if prof != nil {
			if b := <-prof; len(b) > 0 {
				p := filepath.Join(c.profile, fmt.Sprintf("overload-%s-unpaced.pprof", setup))
				if err := os.WriteFile(p, b, 0o644); err != nil {
					log.Warn("profile", "err", err)
				}
			}
		}
		log.Info("trial", "round", round+1, "setup", setup, "rate", rate, "offered", int(tr.offered()), "delivered", int(tr.delivered()),
			"queue_full", tr.queueFull, "sink_drops", tr.sinkDrops, "link_drops", tr.linkDrops, "director_cpu", tr.dirCPU.Seconds()/tr.elapsed.Seconds(), "sender_cpu", tr.senderCPU.Seconds()/tr.elapsed.Seconds(), "sink_cpu", tr.sinkCPU.Seconds()/tr.elapsed.Seconds())
		out = append(out, tr)
	}
	return out, nil
}

// pin sets the affinity of every thread of pid to cpu, or to every CPU
// when cpu is negative (threads made later inherit it from their creator).
func pin(pid, cpu int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	var set unix.CPUSet
	if cpu >= 0 {
		set.Set(cpu)
	} else {
		for i := range runtime.NumCPU() {
			set.Set(i)
		}
	}
	for _, e := range tasks {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin %d/%d to %d: %w", pid, tid, cpu, err)
		}
	}
	return nil
}

func sinks(t *harness.Topo) int64 {
	var n int64
	for _, s := range t.Sinks {
		n += s.Received()
	}
	return n
}

// sinkDrops adds the real servers' UDP RcvbufErrors.
func sinkDrops(t *harness.Topo) int64 {
	var n int64
	for _, rs := range t.Net.RS {
		out, err := rs.Exec("cat", "/proc/net/snmp")
		if err != nil {
			continue
		}
		var head []string
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if head == nil {
				head = f
				continue
			}
			for i, k := range head {
				if k == "RcvbufErrors" && i < len(f) {
					v, _ := strconv.ParseInt(f[i], 10, 64)
					n += v
				}
			}
		}
	}
	return n
}

// linkDrops adds the director's eth0 rx_dropped, the client's eth0
// tx_dropped (veth drops when the peer's queue is full) and the drops of
// every CPU's input backlog (/proc/net/softnet_stat, second column).
func linkDrops(t *harness.Topo) int64 {
	var n int64
	read := func(h *testbed.Host, file string) {
		out, err := h.Exec("cat", file)
		if err != nil {
			return
		}
		v, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		n += v
	}
	read(t.Net.Director, "/sys/class/net/eth0/statistics/rx_dropped")
	read(t.Net.Client, "/sys/class/net/eth0/statistics/tx_dropped")
	if b, err := os.ReadFile("/proc/net/softnet_stat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 {
				v, _ := strconv.ParseInt(f[1], 16, 64)
				n += v
			}
		}
	}
	return n
}

func drops(hc *http.Client) (map[string]float64, error) {
	resp, err := hc.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		r, ok := strings.CutPrefix(line, `uvs_dropped_packets_total{reason="`)
		if !ok {
			continue
		}
		i := strings.LastIndexByte(r, ' ')
		v, err := strconv.ParseFloat(r[i+1:], 64)
		if err != nil {
			continue
		}
		m[strings.TrimSuffix(r[:i], `"}`)] = v
	}
	return m, sc.Err()
}

func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	ps, err := parse.ParseProcStat(b)
	if err != nil {
		return 0, err
	}
	return ps.CPU(), nil
}

// childResult is what -send-child prints.
type childResult struct {
	Sent      int64
	ElapsedNs int64
	CPUNs     int64
}

// send runs the sender in the client namespace, pinned to c.senderCPU
// unless setup is shared.
func send(ctx context.Context, t *harness.Topo, self string, c *config, setup string, rate float64, d time.Duration, count int64) (childResult, error) {
	args := []string{"-send-child", harness.VIP, strconv.Itoa(c.flows), strconv.Itoa(c.size),
		strconv.FormatFloat(rate, 'f', -1, 64), d.String(), strconv.FormatInt(count, 10)}
	// The sender is started through taskset either way: it would otherwise
	// inherit this process's affinity (-sink-cpu).
	cpus := fmt.Sprintf("0-%d", runtime.NumCPU()-1)
	if setup != "shared" {
		cpus = strconv.Itoa(c.senderCPU)
	}
	name := "taskset"
	args = append([]string{"-c", cpus, self}, args...)
	cctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", append([]string{"netns", "exec", t.Net.Client.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	o, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if ok := asExit(err, &ee); ok {
			return childResult{}, fmt.Errorf("sender: %w: %s", err, ee.Stderr)
		}
		return childResult{}, fmt.Errorf("sender: %w", err)
	}
	var r childResult
	if err := json.Unmarshal(o, &r); err != nil {
		return childResult{}, fmt.Errorf("sender output %q: %w", o, err)
	}
	return r, nil
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*ee = e
	}
	return ok
}

// sendChild is the sender process: -send-child TARGET FLOWS SIZE RATE DURATION COUNT.
func sendChild(args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "send-child:", err)
		return 1
	}
	if len(args) != 6 {
		return fail(fmt.Errorf("want 6 arguments, got %d", len(args)))
	}
	ip := net.ParseIP(args[0])
	if ip == nil || !(&net.IPNet{IP: net.IPv4(198, 18, 0, 0), Mask: net.CIDRMask(15, 32)}).Contains(ip) {
		return fail(fmt.Errorf("target %q outside 198.18.0.0/15", args[0]))
	}
	flows, err1 := strconv.Atoi(args[1])
	size, err2 := strconv.Atoi(args[2])
	rate, err3 := strconv.ParseFloat(args[3], 64)
	d, err4 := time.ParseDuration(args[4])
	count, err5 := strconv.ParseInt(args[5], 10, 64)
	for _, err := range []error{err1, err2, err3, err4, err5} {
		if err != nil {
			return fail(err)
		}
	}
	if d > time.Minute || flows < 1 || flows > 64 {
		return fail(fmt.Errorf("duration %v or flows %d out of range", d, flows))
	}
	to := &net.UDPAddr{IP: ip, Port: harness.UDPPort}
	var conns []*net.UDPConn
	for range flows {
		c, err := net.DialUDP("udp", nil, to)
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	r, err := udpflood.Send(context.Background(), conns, udpflood.Config{Size: size, Count: count, Duration: d, Rate: rate})
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	if err != nil {
		return fail(err)
	}
	cpu := func(ru unix.Rusage) int64 { return ru.Utime.Nano() + ru.Stime.Nano() }
	b, _ := json.Marshal(childResult{Sent: r.Sent, ElapsedNs: int64(r.Elapsed), CPUNs: cpu(ru1) - cpu(ru0)})
	fmt.Println(string(b))
	return 0
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func writeReport(w *strings.Builder, c *config, trials []trial, start time.Time) {
	m := report.DetectMachine()
	fmt.Fprintf(w, "# Overload: small UDP delivered against offered, UVS NAT --io afpacket\n\n")
	fmt.Fprintf(w, "%d cores, %s, %s, %s, `go run ./bench/cmd/overload %s`, %s in all; load average at the end: %s.\n\n",
		m.Cores, m.CPU, m.Kernel, start.Format("2006-01-02 15:04"), strings.Join(os.Args[1:], " "),
		time.Since(start).Round(time.Second), loadavg())
	fmt.Fprintf(w, "%d flows of %d-byte datagrams (bench/udpflood in a process of its own in the client namespace), %v per trial, %d round(s); "+
		"medians over the rounds, (min–max) of delivered. Setups: **shared** nothing pinned; **pinned** the sender on CPU %d, every director thread on CPU %d; "+
		"**pinned-w1** pinned and `--workers 1`. The sinks (this process, in the real servers' namespaces) %s.\n\n",
		c.flows, c.size, c.duration, c.repeat, c.senderCPU, c.directorCPU, sinkWhere(c))
	fmt.Fprintln(w, "| setup | asked, pkt/s | offered, pkt/s | delivered, pkt/s (min–max) | lost % | director socket_queue_full, % of sent | sink drops | link drops | director CPU, cores | sender CPU, cores | sinks' CPU, cores | director µs per delivered |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range c.setups {
		for _, r := range c.rates {
			var off, del, lost, qf, sd, ld, dc, sc, kc, us []float64
			for _, tr := range trials {
				if tr.setup != s || tr.rate != r {
					continue
				}
				off = append(off, tr.offered())
				del = append(del, tr.delivered())
				lost = append(lost, 100*float64(max(0, tr.sent-tr.got))/float64(max(1, tr.sent)))
				qf = append(qf, 100*tr.queueFull/float64(max(1, tr.sent)))
				sd = append(sd, float64(tr.sinkDrops))
				ld = append(ld, float64(tr.linkDrops))
				dc = append(dc, tr.dirCPU.Seconds()/tr.elapsed.Seconds())
				sc = append(sc, tr.senderCPU.Seconds()/tr.elapsed.Seconds())
				kc = append(kc, tr.sinkCPU.Seconds()/tr.elapsed.Seconds())
				us = append(us, 1e6*tr.dirCPU.Seconds()/float64(max(1, tr.got)))
			}
			if len(del) == 0 {
				continue
			}
			asked := "unpaced"
			if r > 0 {
				asked = fmt.Sprintf("%.0f", r)
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f (%.0f–%.0f) | %.1f | %.1f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |\n",
				s, asked, median(off), median(del), slices.Min(del), slices.Max(del), median(lost), median(qf), median(sd), median(ld), median(dc), median(sc), median(kc), median(us))
		}
	}
	fmt.Fprintln(w, "\nEvery trial:")
	fmt.Fprintln(w, "\n| round | setup | asked | sent | delivered | offered, pkt/s | delivered, pkt/s | socket_queue_full | other drops | sink drops | link drops | director CPU s | sender CPU s | sinks' CPU s |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
	for _, tr := range trials {
		var od []string
		for k, v := range tr.otherDrops {
			od = append(od, fmt.Sprintf("%s %.0f", k, v))
		}
		slices.Sort(od)
		fmt.Fprintf(w, "| %d | %s | %.0f | %d | %d | %.0f | %.0f | %.0f | %s | %d | %d | %.2f | %.2f | %.2f |\n", tr.round+1, tr.setup, tr.rate, tr.sent, tr.got,
			tr.offered(), tr.delivered(), tr.queueFull, strings.Join(od, ", "), tr.sinkDrops, tr.linkDrops, tr.dirCPU.Seconds(), tr.senderCPU.Seconds(), tr.sinkCPU.Seconds())
	}
}

func sinkWhere(c *config) string {
	if c.sinkCPU < 0 {
		return "were not pinned"
	}
	return fmt.Sprintf("were pinned to CPU %d", c.sinkCPU)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
