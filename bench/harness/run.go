package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"time"

	"uvs/bench/parse"
	"uvs/bench/udpflood"
)

// Workload is one kind of traffic.
type Workload struct {
	Name  string
	Label string
	Unit  string // of Sample.Value
	// CostUnit is what the balancer's CPU time is divided by.
	CostUnit string
	UDP      bool
	// Flood tells whether the workload floods the path's VIP, which a
	// path without one (Path.NoFlood) cannot take.
	Flood bool
	// Optional keeps the workload out of the default set (it is long).
	Optional bool
	run      func(ctx context.Context, t *Topo, o *Options, target string) (Sample, error)
}

// Workloads are all the workloads, in the order of the tables.
var Workloads = []Workload{
	{Name: "bulk1", Label: "bulk TCP, 1 stream", Unit: "Gbit/s", CostUnit: "GB", run: bulk(1, false)},
	{Name: "bulk4", Label: "bulk TCP, 4 streams", Unit: "Gbit/s", CostUnit: "GB", run: bulk(4, false)},
	{Name: "download", Label: "download (server to client), 1 stream", Unit: "Gbit/s", CostUnit: "GB", run: bulk(1, true)},
	{Name: "download4", Label: "download, 4 streams", Unit: "Gbit/s", CostUnit: "GB", run: bulk(4, true)},
	{Name: "http-ka", Label: "HTTP keep-alive", Unit: "req/s", CostUnit: "M req", run: httpLoad(false)},
	{Name: "http-close", Label: "HTTP new connection per request", Unit: "req/s", CostUnit: "M req", run: httpLoad(true)},
	{Name: "http-large", Label: "HTTP 1 MiB responses, keep-alive", Unit: "Gbit/s", CostUnit: "GB", run: httpLarge},
	{Name: "udp", Label: "small UDP packets", Unit: "pkt/s", CostUnit: "M pkt", UDP: true, run: udpLoad},
	{Name: "udp-rate", Label: "small UDP, highest rate with at most 1 % lost", Unit: "pkt/s", CostUnit: "M pkt", UDP: true, run: udpRate},
	{Name: "flood", Label: "legitimate new connections served during a SYN flood", Unit: "% served", CostUnit: "M SYN", Flood: true, Optional: true, run: floodLoad},
}

// DefaultWorkloads are the workloads that are not Optional.
func DefaultWorkloads() []Workload {
	var out []Workload
	for _, w := range Workloads {
		if !w.Optional {
			out = append(out, w)
		}
	}
	return out
}

// WorkloadByName finds a workload.
func WorkloadByName(name string) (Workload, bool) {
	for _, w := range Workloads {
		if w.Name == name {
			return w, true
		}
	}
	return Workload{}, false
}

// Sample is one workload through one path, once.
type Sample struct {
	Path, Workload string
	Repeat         int     // 0-based
	Value          float64 // in the workload's Unit; 0 when Err is set
	P50, P99       time.Duration
	Errors         int64 // failed requests (HTTP)
	Sent, Lost     int64 // datagrams (UDP); SYNs sent (flood)
	// The flood workload: keep-alive connections that served every
	// request (KASurvived of KATotal), and the time from the flood's end
	// until new connections succeed again (Recovered false: not within
	// the wait).
	KASurvived, KATotal int
	Recovery            time.Duration
	Recovered           bool
	Work                float64 // in the workload's CostUnit (GB, M req, M pkt)
	// CPU is what the balancer's processes used during the run; CPUKnown
	// is false when no process does the work (kernel paths) or it could
	// not be read.
	CPU      time.Duration
	CPUKnown bool
	Err      string // why there is no figure
	Skipped  string // why the path does not do this workload
}

// Options are the benchmark's settings.
type Options struct {
	Director  string        // director binary
	Duration  time.Duration // per run
	Repeat    int
	Paths     []Path
	Workloads []Workload
	UDPFlows  int   // sockets (client ports) of the UDP workload
	UDPCount  int64 // datagrams at most per UDP run
	UDPSize   int   // payload bytes
	// FloodRate (SYN/s, 0: unpaced) and FloodDuration are the flood
	// workload's flood; 0 duration: DefaultFloodDuration.
	FloodRate     float64
	FloodDuration time.Duration
	Log           *slog.Logger
	// Progress, if set, is called after each sample.
	Progress func(Sample)
}

// Run measures every workload through every path, Repeat times, over t.
// Repeats go round all paths before starting again, so a slow stretch of
// a shared machine spreads over the paths instead of hitting one. It
// returns what it measured so far when ctx ends.
func Run(ctx context.Context, t *Topo, o Options) ([]Sample, error) {
	if o.Repeat < 1 {
		o.Repeat = 1
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	var out []Sample
	add := func(s Sample) {
		out = append(out, s)
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	for r := range o.Repeat {
		for _, p := range o.Paths {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			o.Log.Info("path", "repeat", r+1, "path", p.Name)
			a, err := p.start(ctx, t, &o)
			for _, w := range o.Workloads {
				s := Sample{Path: p.Name, Workload: w.Name, Repeat: r}
				switch {
				case w.UDP && !p.UDP:
					s.Skipped = "n/a"
				case w.Flood && p.NoFlood != "":
					s.Skipped = "n/a: " + p.NoFlood
				case err != nil:
					s.Err = err.Error()
				case ctx.Err() != nil:
					return out, errors.Join(ctx.Err(), a.stop())
				default:
					s = measure(ctx, t, &o, p, w, a, r)
				}
				add(s)
			}
			if err != nil {
				o.Log.Error("path did not start", "path", p.Name, "err", err)
				continue
			}
			if err := a.stop(); err != nil {
				o.Log.Warn("path stop", "path", p.Name, "err", err)
			}
		}
	}
	return out, ctx.Err()
}

// measure runs w once through the active path a and charges the
// balancer's CPU time to it.
func measure(ctx context.Context, t *Topo, o *Options, p Path, w Workload, a *active, r int) Sample {
	var pids []int
	if p.Balancer && a.pids != nil {
		pids = a.pids()
	}
	before, cerr := cpuOf(pids)
	s, err := w.run(ctx, t, o, a.target)
	after, cerr2 := cpuOf(pids)
	s.Path, s.Workload, s.Repeat = p.Name, w.Name, r
	if err != nil {
		s = Sample{Path: p.Name, Workload: w.Name, Repeat: r, Err: err.Error()}
		o.Log.Warn("run failed", "path", p.Name, "workload", w.Name, "err", err, "balancer log", tail([]byte(a.logs()), 800))
		return s
	}
	if len(pids) > 0 && cerr == nil && cerr2 == nil {
		s.CPU, s.CPUKnown = after-before, true
	}
	return s
}

// runTool runs a client command bounded by limit and returns its stdout.
func runTool(ctx context.Context, cmd *exec.Cmd, limit time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var out, errb logBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return []byte(out.String()), fmt.Errorf("%s: %w: %s", cmd.Args, err, tail([]byte(errb.String()), 500))
		}
		return []byte(out.String()), nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("%s: stopped after %v: %w", cmd.Args, limit, ctx.Err())
	}
}

func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second/2)/time.Second)))
}

// bulk is iperf3 with streams data connections, from the client to the
// server, or (reverse, -R) from the server to the client.
func bulk(streams int, reverse bool) func(context.Context, *Topo, *Options, string) (Sample, error) {
	return func(ctx context.Context, t *Topo, o *Options, target string) (Sample, error) {
		bin, err := LookPath("iperf3")
		if err != nil {
			return Sample{}, err
		}
		args := []string{"-c", target, "-p", strconv.Itoa(BulkPort),
			"-t", seconds(o.Duration), "-P", strconv.Itoa(streams), "-J", "--connect-timeout", "3000"}
		if reverse {
			args = append(args, "-R")
		}
		cmd := t.Net.Client.Command(bin, args...)
		out, err := runTool(ctx, cmd, o.Duration+8*time.Second)
		if err != nil {
			// iperf3 -J reports its own errors in the JSON.
			if _, perr := parse.ParseIperf3(out); perr != nil && len(out) > 0 {
				err = fmt.Errorf("%w (%v)", err, perr)
			}
			return Sample{}, err
		}
		r, err := parse.ParseIperf3(out)
		if err != nil {
			return Sample{}, err
		}
		return Sample{Value: r.BitsPerSecond / 1e9, Work: float64(r.BytesReceived) / 1e9}, nil
	}
}

func httpLoad(closeEach bool) func(context.Context, *Topo, *Options, string) (Sample, error) {
	return func(ctx context.Context, t *Topo, o *Options, target string) (Sample, error) {
		w, err := runWrk(ctx, t, o, target, SmallFile, closeEach)
		if err != nil {
			return Sample{}, err
		}
		return Sample{Value: w.RequestsPerSec, P50: w.Percentiles[50], P99: w.Percentiles[99],
			Errors: w.Errors(), Work: float64(w.Requests) / 1e6}, nil
	}
}

// httpLarge fetches LargeFile over keep-alive connections; the figure is
// the response bodies' bits per second (headers left out).
func httpLarge(ctx context.Context, t *Topo, o *Options, target string) (Sample, error) {
	w, err := runWrk(ctx, t, o, target, LargeFile, false)
	if err != nil {
		return Sample{}, err
	}
	if w.Non2xx3xx > 0 {
		// A missing file would be a fast figure of something else.
		return Sample{}, fmt.Errorf("wrk: %d of %d responses were not 2xx or 3xx", w.Non2xx3xx, w.Requests)
	}
	return Sample{Value: w.RequestsPerSec * LargeFileSize * 8 / 1e9, P50: w.Percentiles[50], P99: w.Percentiles[99],
		Errors: w.Errors(), Work: float64(w.Requests) * LargeFileSize / 1e9}, nil
}

// runWrk runs wrk from the client against file on target, 2 threads and
// 32 connections, each request on a new connection if closeEach.
func runWrk(ctx context.Context, t *Topo, o *Options, target, file string, closeEach bool) (parse.Wrk, error) {
	bin, err := LookPath("wrk")
	if err != nil {
		return parse.Wrk{}, err
	}
	args := []string{"-t", "2", "-c", "32", "-d", seconds(o.Duration) + "s", "--latency", "--timeout", "2s"}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	url := "http://" + net.JoinHostPort(target, strconv.Itoa(HTTPPort)) + file
	out, err := runTool(ctx, t.Net.Client.Command(bin, append(args, url)...), o.Duration+8*time.Second)
	if err != nil {
		return parse.Wrk{}, err
	}
	w, err := parse.ParseWrk(out)
	if err != nil {
		return parse.Wrk{}, err
	}
	if w.Requests == 0 {
		return parse.Wrk{}, fmt.Errorf("wrk completed no request (%d errors)", w.Errors())
	}
	return w, nil
}

func udpLoad(ctx context.Context, t *Topo, o *Options, target string) (Sample, error) {
	conns, err := udpFlows(t, o, target)
	if err != nil {
		return Sample{}, err
	}
	defer closeAll(conns)
	tr, err := udpTrial(ctx, t, conns, udpflood.Config{Size: o.UDPSize, Count: o.UDPCount, Duration: o.Duration})
	if err != nil {
		return Sample{}, err
	}
	return Sample{Value: tr.rate(), Sent: tr.sent, Lost: tr.lost(), Work: float64(tr.got) / 1e6}, nil
}

// MaxLoss is the loss the paced UDP workload accepts at its highest rate.
const MaxLoss = 0.01

// RateSteps is how many paced trials halve the search interval.
const RateSteps = 6

// udpRate finds the highest rate the path delivers with at most MaxLoss
// lost (RFC 2544's throughput, with 1 % for zero): an unpaced trial gives
// the most the sender can offer; if it loses more than that, paced trials
// search below it, each halving the interval. Value is the delivered rate
// of the best passing trial; Work counts every trial's datagrams, since the
// balancer's CPU is measured over the whole search.
func udpRate(ctx context.Context, t *Topo, o *Options, target string) (Sample, error) {
	conns, err := udpFlows(t, o, target)
	if err != nil {
		return Sample{}, err
	}
	defer closeAll(conns)
	dur := max(500*time.Millisecond, o.Duration/4)
	cfg := udpflood.Config{Size: o.UDPSize, Count: o.UDPCount, Duration: dur}
	var total int64
	var best trial
	var offered float64 // what the unpaced trial sent per second
	try := func(rate float64) (bool, error) {
		c := cfg
		c.Rate = rate
		tr, err := udpTrial(ctx, t, conns, c)
		if err != nil {
			return false, err
		}
		total += tr.got
		if rate == 0 {
			offered = float64(tr.sent) / tr.elapsed.Seconds()
		}
		ok := tr.lossFrac() <= MaxLoss
		if ok && tr.rate() > best.rate() {
			best = tr
		}
		return ok, nil
	}
	if _, err := try(0); err != nil {
		return Sample{}, err
	}
	if best.sent == 0 {
		// The unpaced trial lost too much: search between nothing and
		// what the sender offered.
		if _, err := searchRate(offered, RateSteps, try); err != nil {
			return Sample{}, err
		}
	}
	if best.sent == 0 {
		return Sample{}, fmt.Errorf("no rate down to %.0f pkt/s lost less than %.0f %%", offered/(1<<RateSteps), MaxLoss*100)
	}
	return Sample{Value: best.rate(), Sent: best.sent, Lost: best.lost(), Work: float64(total) / 1e6}, nil
}

// searchRate bisects (0, hi] for the highest rate that pass accepts, in
// steps trials, and returns it (0 when none passed).
func searchRate(hi float64, steps int, pass func(rate float64) (bool, error)) (float64, error) {
	lo, best := 0.0, 0.0
	for range steps {
		mid := (lo + hi) / 2
		ok, err := pass(mid)
		if err != nil {
			return best, err
		}
		if ok {
			lo, best = mid, mid
		} else {
			hi = mid
		}
	}
	return best, nil
}

func udpFlows(t *Topo, o *Options, target string) ([]*net.UDPConn, error) {
	to := &net.UDPAddr{IP: net.ParseIP(target), Port: UDPPort}
	var conns []*net.UDPConn
	for range max(1, o.UDPFlows) {
		var c *net.UDPConn
		err := t.Net.Client.Do(func() error {
			var err error
			c, err = net.DialUDP("udp", nil, to)
			return err
		})
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("udp socket: %w", err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*net.UDPConn) {
	for _, c := range conns {
		c.Close()
	}
}

// trial is one flood: sent, and delivered (got) as the sinks counted.
type trial struct {
	sent, got int64
	elapsed   time.Duration
}

func (tr trial) lost() int64 { return max(0, tr.sent-tr.got) }

func (tr trial) lossFrac() float64 {
	if tr.sent == 0 {
		return 1
	}
	return float64(tr.lost()) / float64(tr.sent)
}

// rate is datagrams delivered per second of sending.
func (tr trial) rate() float64 {
	if tr.elapsed <= 0 {
		return 0
	}
	return float64(tr.got) / tr.elapsed.Seconds()
}

// udpTrial floods once and waits for what is in flight to arrive.
func udpTrial(ctx context.Context, t *Topo, conns []*net.UDPConn, c udpflood.Config) (trial, error) {
	recv := func() int64 {
		var n int64
		for _, s := range t.Sinks {
			n += s.Received()
		}
		return n
	}
	before := recv()
	r, err := udpflood.Send(ctx, conns, c)
	if err != nil {
		return trial{}, err
	}
	// Let what is in flight arrive: until the count stops moving, at most 1 s.
	last := recv()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		n := recv()
		if n == last {
			break
		}
		last = n
	}
	if r.Sent == 0 || r.Elapsed <= 0 {
		return trial{}, errors.New("udp flood sent nothing")
	}
	return trial{sent: r.Sent, got: last - before, elapsed: r.Elapsed}, nil
}
