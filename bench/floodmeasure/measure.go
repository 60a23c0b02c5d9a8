// Package floodmeasure measures what a balancing path still serves under a
// SYN flood from forged sources (issue 13): while legitimate clients use
// the service — established keep-alive connections and a steady stream of
// new connections — it floods the service with SYNs from forged sources
// (bench/synflood) for a bounded time, and records the clients' success,
// the balancer's state (through a Probe) and how long after the flood new
// connections succeed again. bench/cmd/flood and the flood workload of
// bench/cmd/compare use it.
package floodmeasure

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"uvs/bench/synflood"
	"uvs/lab"
	"uvs/testbed"
)

// Config is one measurement's settings.
type Config struct {
	Rate                  float64 // flood SYN/s; 0: unpaced
	Duration              time.Duration
	Count                 int64 // SYNs at most
	Senders               int   // flood sockets
	Sources               netip.Prefix
	Keepalive             int // established keep-alive connections
	KAInterval, KATimeout time.Duration
	NewRate               float64 // legitimate new connections per second
	NewTimeout            time.Duration
	// Pre is the legitimate traffic before the flood; After bounds the
	// wait for recovery after it.
	Pre, After time.Duration
	// Wait10 keeps measuring until 10 s after the flood (the After10
	// reading) even when new connections succeed again sooner.
	Wait10 bool
}

// Env is where the measurement runs: the lab's client and director
// namespaces and the balanced HTTP service.
type Env struct {
	Client, Director *testbed.Host
	Service          netip.AddrPort // the VIP and port the path balances
	File             string         // fetched by the legitimate clients
	// Exclude are addresses of the lab's that no forged source may take.
	Exclude []netip.Addr
}

// Probe reads the balancer's state.
type Probe interface {
	// Table is the number of entries in its connection table.
	Table() (int64, error)
	// Drops are its drop counters by reason (cumulative).
	Drops() (map[string]float64, error)
	// RSS is its resident memory and peak (VmRSS, VmHWM) in kB; ok is
	// false for a kernel path.
	RSS() (cur, peak int64, ok bool)
	// TableName says what Table counts.
	TableName() string
}

// Ratio is OK out of Total.
type Ratio struct{ OK, Total int }

// Pct is the ratio as a percentage with its counts, "n/a" for none.
func Pct(r Ratio) string {
	if r.Total == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f %% (%d/%d)", 100*float64(r.OK)/float64(r.Total), r.OK, r.Total)
}

// Frac is the ratio as a fraction, NaN for none.
func (r Ratio) Frac() float64 {
	if r.Total == 0 {
		return math.NaN()
	}
	return float64(r.OK) / float64(r.Total)
}

// Snapshot is the balancer's state at one moment.
type Snapshot struct {
	At       time.Time
	Table    int64
	TableOK  bool
	Drops    map[string]float64
	RSS, HWM int64 // kB
	RSSOK    bool
}

// Attempt is one legitimate new-connection request.
type Attempt struct {
	Start time.Time
	Took  time.Duration
	Err   string // "" when it succeeded
}

// KAConn is one established keep-alive connection's record.
type KAConn struct {
	Served  int
	MaxLat  time.Duration
	Err     string    // why it ended early ("" if it survived)
	EndedAt time.Time // when it failed
}

// Result is one path's measurement.
type Result struct {
	TableName  string
	Flood      synflood.Result
	FloodErr   string
	Start      time.Time // legitimate traffic began
	FloodStart time.Time
	FloodEnd   time.Time
	End        time.Time // legitimate traffic stopped

	Before, AtEnd, After10, Final Snapshot
	HasAfter10                    bool
	PeakTable                     int64
	PeakRSS                       int64 // sampled VmRSS, kB
	Samples                       []Snapshot

	Attempts            []Attempt
	Pre, During, Post   Ratio
	Recovery            time.Duration
	Recovered           bool
	LastFail            time.Duration // after the flood's end; <0: none
	ErrKinds            map[string]int
	KA                  []KAConn
	KASurvived, KATotal int
	KAServed, KAFailed  int
}

// RecoveryText is the recovery time, or that there was none.
func (r *Result) RecoveryText() string {
	if !r.Recovered {
		return fmt.Sprintf("not within %.0f s", r.End.Sub(r.FloodEnd).Seconds())
	}
	return fmt.Sprintf("%.1f s", r.Recovery.Seconds())
}

// Check tells whether c is within bounds and its forged sources clear of
// the lab's subnets.
func (c *Config) Check() error {
	switch {
	case c.Duration < time.Second || c.Duration > 60*time.Second:
		return fmt.Errorf("-duration %v: want 1s to 60s", c.Duration)
	case c.Rate < 0:
		return fmt.Errorf("-rate %v: want 0 (unpaced) or more", c.Rate)
	case c.Count <= 0:
		return fmt.Errorf("-count %d: want 1 or more", c.Count)
	case c.Senders < 1 || c.Senders > 16:
		return fmt.Errorf("-senders %d: want 1 to 16", c.Senders)
	case c.Keepalive < 0 || c.Keepalive > 1000:
		return fmt.Errorf("-keepalive %d: want 0 to 1000", c.Keepalive)
	case c.KAInterval < 10*time.Millisecond || c.KATimeout < 100*time.Millisecond:
		return errors.New("-ka-interval at least 10ms, -ka-timeout at least 100ms")
	case c.NewRate <= 0 || c.NewRate > 1000:
		return fmt.Errorf("-new-rate %v: want more than 0, at most 1000", c.NewRate)
	case c.NewTimeout < 100*time.Millisecond:
		return errors.New("-new-timeout at least 100ms")
	case c.Pre < time.Second || c.Pre > time.Minute:
		return fmt.Errorf("-pre %v: want 1s to 1m", c.Pre)
	case c.After < c.NewTimeout || c.After > 3*time.Minute || c.Wait10 && c.After < 10*time.Second:
		return fmt.Errorf("-after %v: want up to 3m, at least the new-connection timeout (at least 10s when the 10-second reading is wanted)", c.After)
	case !c.Sources.IsValid() || !c.Sources.Addr().Is4():
		return errors.New("-sources: want an IPv4 prefix")
	}
	for _, n := range LabNets {
		if c.Sources.Overlaps(n) {
			return fmt.Errorf("-sources %v overlaps the lab's subnet %v", c.Sources, n)
		}
	}
	if c.Sources.Contains(netip.MustParseAddr(lab.ClientIP)) {
		return fmt.Errorf("-sources %v holds the client's address", c.Sources)
	}
	return nil
}

// LabNets are the lab's own subnets: the forged sources must stay clear
// of them.
var LabNets = []netip.Prefix{
	netip.MustParsePrefix("198.18.0.0/24"), // client — director
	netip.MustParsePrefix("198.18.1.0/24"), // director — real servers
	netip.MustParsePrefix("198.18.2.0/24"), // client — return router
}

// Measure runs legitimate traffic through the service for the whole
// measurement and floods it once in between, as c says; probe (nil: none)
// reads the balancer. The path must be set up and e.Service answering or
// about to. The forged sources are routed from the director back through
// the client (replacing any route to them), whose kernel drops the real
// servers' SYN-ACKs to them.
func Measure(ctx context.Context, c *Config, e Env, probe Probe, log *slog.Logger) (*Result, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	r := &Result{LastFail: -1}
	if probe != nil {
		r.TableName = probe.TableName()
	}
	// The forged sources are somewhere out on the Internet, behind the
	// client's side: the director routes the real servers' SYN-ACKs to
	// them back through the client, whose kernel (not a router) drops them.
	if out, err := e.Director.Exec("ip", "route", "replace", c.Sources.String(), "via", lab.ClientIP); err != nil {
		return nil, fmt.Errorf("route the forged sources: %w: %s", err, out)
	}
	if err := WaitService(ctx, e, 10*time.Second); err != nil {
		return nil, err
	}
	var senders []*synflood.Sender
	defer func() {
		for _, s := range senders {
			s.Close()
		}
	}()
	err := e.Client.Do(func() error {
		mac, err := synflood.Neighbour("eth0", netip.MustParseAddr(lab.DirOuterIP), 3*time.Second)
		if err != nil {
			return err
		}
		for range c.Senders {
			s, err := synflood.Open("eth0", mac)
			if err != nil {
				return err
			}
			senders = append(senders, s)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Legitimate traffic, for the whole measurement.
	lctx, stopLegit := context.WithCancel(ctx)
	defer stopLegit()
	var wg sync.WaitGroup
	r.Start = time.Now()
	var mu sync.Mutex // guards r.Attempts, r.KA, r.Samples
	r.KA = make([]KAConn, c.Keepalive)
	for i := range c.Keepalive {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := keepalive(lctx, c, e)
			mu.Lock()
			r.KA[i] = k
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		newConns(lctx, c, e, func(a Attempt) {
			mu.Lock()
			r.Attempts = append(r.Attempts, a)
			mu.Unlock()
		})
	}()
	snap := func() Snapshot {
		s := Snapshot{At: time.Now()}
		if probe == nil {
			return s
		}
		if v, err := probe.Table(); err == nil {
			s.Table, s.TableOK = v, true
		}
		if d, err := probe.Drops(); err == nil {
			s.Drops = d
		}
		s.RSS, s.HWM, s.RSSOK = probe.RSS()
		return s
	}
	// The balancer's state every second.
	sctx, stopSampler := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			s := snap()
			mu.Lock()
			r.Samples = append(r.Samples, s)
			mu.Unlock()
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var stopOnce sync.Once
	stopSampling := func() {
		stopOnce.Do(func() {
			stopSampler()
			<-samplerDone
		})
	}
	defer stopSampling()

	sleep(ctx, c.Pre)
	r.Before = snap()
	log.Info("flood", "service", e.Service, "rate", c.Rate, "duration", c.Duration, "count", c.Count, "senders", c.Senders)
	r.FloodStart = time.Now()
	fr, ferr := synflood.Flood(ctx, senders, synflood.Config{
		Dst:      e.Service,
		Sources:  c.Sources,
		Exclude:  e.Exclude,
		Count:    c.Count,
		Duration: c.Duration,
		Rate:     c.Rate,
	})
	r.FloodEnd = time.Now()
	r.Flood = fr
	if ferr != nil {
		r.FloodErr = ferr.Error()
	}
	r.AtEnd = snap()
	log.Info("flood over", "sent", fr.Sent, "refused", fr.Refused, "rate", fmt.Sprintf("%.0f/s", fr.Rate()))

	// After the flood: until new connections succeed again and the
	// 10-second reading is taken, or c.After passes.
	for ctx.Err() == nil {
		now := time.Now()
		if !r.HasAfter10 && now.Sub(r.FloodEnd) >= 10*time.Second {
			r.After10, r.HasAfter10 = snap(), true
		}
		mu.Lock()
		rec, ok := Recovery(r.Attempts, r.FloodEnd, now.Add(-c.NewTimeout-500*time.Millisecond))
		mu.Unlock()
		if (r.HasAfter10 || !c.Wait10) && ok || now.Sub(r.FloodEnd) >= c.After {
			r.Recovery, r.Recovered = rec, ok
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	stopLegit()
	r.End = time.Now()
	wg.Wait()
	r.Final = snap()
	stopSampling()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.summarize(c)
	return r, nil
}

// summarize computes the figures from the records.
func (r *Result) summarize(c *Config) {
	slices.SortFunc(r.Attempts, func(a, b Attempt) int { return a.Start.Compare(b.Start) })
	r.ErrKinds = map[string]int{}
	for _, a := range r.Attempts {
		var into *Ratio
		switch {
		case a.Start.Before(r.FloodStart):
			into = &r.Pre
		case a.Start.Before(r.FloodEnd):
			into = &r.During
		default:
			into = &r.Post
			if a.Err != "" {
				r.LastFail = a.Start.Sub(r.FloodEnd)
			}
		}
		into.Total++
		if a.Err == "" {
			into.OK++
		} else if !a.Start.Before(r.FloodStart) {
			r.ErrKinds[ErrKind(a.Err)]++
		}
	}
	// Recovery, with every attempt known now.
	r.Recovery, r.Recovered = Recovery(r.Attempts, r.FloodEnd, r.End)
	for _, k := range r.KA {
		r.KATotal++
		r.KAServed += k.Served
		if k.Err == "" {
			r.KASurvived++
		} else {
			r.KAFailed++
		}
	}
	for _, s := range r.Samples {
		r.PeakTable = max(r.PeakTable, s.Table)
		r.PeakRSS = max(r.PeakRSS, s.RSS)
	}
}

// RecoveryRun is how many new connections in a row must succeed (one
// second's worth at 20/s) for the service to count as back.
const RecoveryRun = 20

// Recovery is the time from end to the start of the first run of
// RecoveryRun successful new connections that started after end, among
// the attempts that started before known (later ones may still be in
// flight).
func Recovery(as []Attempt, end, known time.Time) (time.Duration, bool) {
	var after []Attempt
	for _, a := range as {
		if !a.Start.Before(end) && a.Start.Before(known) {
			after = append(after, a)
		}
	}
	slices.SortFunc(after, func(a, b Attempt) int { return a.Start.Compare(b.Start) })
	run := 0
	var runStart time.Time
	for _, a := range after {
		if a.Err != "" {
			run = 0
			continue
		}
		if run == 0 {
			runStart = a.Start
		}
		if run++; run >= RecoveryRun {
			return runStart.Sub(end), true
		}
	}
	return 0, false
}

// ErrKind sorts a failed request's error into a few kinds.
func ErrKind(e string) string {
	switch {
	case strings.Contains(e, "Client.Timeout") || strings.Contains(e, "deadline exceeded") || strings.Contains(e, "timeout"):
		return "timeout"
	case strings.Contains(e, "connection reset"):
		return "reset"
	case strings.Contains(e, "connection refused"):
		return "refused"
	case strings.Contains(e, "EOF"):
		return "closed (EOF)"
	}
	if len(e) > 60 {
		e = e[:60] + "…"
	}
	return e
}

// newConns makes a new connection from the client for one request every
// 1/c.NewRate seconds until ctx is done; each gives up after c.NewTimeout.
func newConns(ctx context.Context, c *Config, e Env, record func(Attempt)) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.NewRate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := e.Client.HTTPClient()
			hc.Timeout = c.NewTimeout
			// Not ctx: a request under way when the measurement ends
			// runs to its own timeout, so it is not counted as failed.
			rctx, cancel := context.WithTimeout(context.Background(), c.NewTimeout)
			defer cancel()
			start := time.Now()
			err := Get(rctx, hc, e)
			a := Attempt{Start: start, Took: time.Since(start)}
			if err != nil {
				a.Err = err.Error()
			}
			record(a)
		}()
	}
}

// keepalive opens one connection to the VIP and sends a request on it
// every c.KAInterval until ctx is done or a request fails (an error, a
// reset, or no answer within c.KATimeout), which ends it.
func keepalive(ctx context.Context, c *Config, e Env) (k KAConn) {
	fail := func(err error) KAConn {
		k.Err, k.EndedAt = err.Error(), time.Now()
		return k
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := e.Client.Dial(dctx, "tcp", e.Service.String())
	cancel()
	if err != nil {
		return fail(fmt.Errorf("dial: %w", err))
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	req := []byte("GET " + e.File + " HTTP/1.1\r\nHost: " + e.Service.Addr().String() + "\r\n\r\n")
	next := time.Now()
	for ctx.Err() == nil {
		start := time.Now()
		conn.SetDeadline(start.Add(c.KATimeout))
		if _, err := conn.Write(req); err != nil {
			return fail(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fail(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode != http.StatusOK || resp.Close {
			return fail(fmt.Errorf("status %s, close %v", resp.Status, resp.Close))
		}
		k.Served++
		k.MaxLat = max(k.MaxLat, time.Since(start))
		next = next.Add(c.KAInterval)
		if wait := time.Until(next); wait > 0 {
			sleep(ctx, wait)
		} else {
			next = time.Now()
		}
	}
	return k
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Get fetches e.File from e.Service on a new connection from the client.
func Get(ctx context.Context, hc *http.Client, e Env) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.Service.String()+e.File, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// WaitService fetches from the service until it answers or limit passes.
func WaitService(ctx context.Context, e Env, limit time.Duration) error {
	hc := e.Client.HTTPClient()
	hc.Timeout = time.Second
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		if err = Get(ctx, hc, e); err == nil {
			return nil
		}
	}
	return fmt.Errorf("the service does not answer within %v: %v", limit, err)
}
