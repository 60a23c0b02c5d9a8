package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"uvs/bench/harness"
	"uvs/bench/synflood"
	"uvs/lab"
)

// ratio is ok out of total.
type ratio struct{ ok, total int }

func pct(r ratio) string {
	if r.total == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f %% (%d/%d)", 100*float64(r.ok)/float64(r.total), r.ok, r.total)
}

// snapshot is the balancer's state at one moment.
type snapshot struct {
	at       time.Time
	table    int64
	tableOK  bool
	drops    map[string]float64
	rss, hwm int64 // kB
	rssOK    bool
}

// attempt is one legitimate new-connection request.
type attempt struct {
	start time.Time
	took  time.Duration
	err   string // "" when it succeeded
}

// kaConn is one established keep-alive connection's record.
type kaConn struct {
	served  int
	maxLat  time.Duration
	err     string    // why it ended early ("" if it survived)
	endedAt time.Time // when it failed
}

// result is one path's measurement.
type result struct {
	path, label, err string
	tableName        string
	flood            synflood.Result
	floodErr         string
	start            time.Time // legitimate traffic began
	floodStart       time.Time
	floodEnd         time.Time
	end              time.Time // legitimate traffic stopped

	before, atEnd, after10, final snapshot
	hasAfter10                    bool
	peakTable                     int64
	peakRSS                       int64 // sampled VmRSS, kB
	samples                       []snapshot

	attempts            []attempt
	pre, during, post   ratio
	recovery            time.Duration
	recovered           bool
	lastFail            time.Duration // after the flood's end; <0: none
	errKinds            map[string]int
	ka                  []kaConn
	kaSurvived, kaTotal int
	kaServed, kaFailed  int
}

func (r *result) recoveryText() string {
	switch {
	case r.err != "":
		return "n/a"
	case !r.recovered:
		return fmt.Sprintf("not within %.0f s", r.end.Sub(r.floodEnd).Seconds())
	}
	return fmt.Sprintf("%.1f s", r.recovery.Seconds())
}

// runPath measures one path on a topology of its own (a fresh one per
// path: the real servers' half-open connections and SYN-ACK retries of one
// flood must not reach into the next path's measurement).
func runPath(ctx context.Context, c *config, name, label string, log *slog.Logger) (r *result) {
	r = &result{path: name, label: label, lastFail: -1}
	fail := func(err error) *result {
		r.err = err.Error()
		return r
	}
	t, err := harness.Build(ctx, prefix, log)
	if err != nil {
		return fail(fmt.Errorf("topology: %w", err))
	}
	defer func() {
		if err := t.Close(); err != nil {
			log.Warn("teardown", "err", err)
		}
	}()
	// The forged sources are somewhere out on the Internet, behind the
	// client's side: the director routes the real servers' SYN-ACKs to
	// them back through the client, whose kernel (not a router) drops them.
	if err := t.Net.Director.Route(c.sources.String(), lab.ClientIP); err != nil {
		return fail(err)
	}
	a, err := startPath(ctx, c, t, name)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := a.stop(); err != nil {
			log.Warn("path stop", "path", name, "err", err)
		}
	}()
	r.tableName = a.probe.tableName()
	if err := waitService(ctx, t.Net.Client, 10*time.Second); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, a.logs()))
	}
	var senders []*synflood.Sender
	defer func() {
		for _, s := range senders {
			s.Close()
		}
	}()
	err = t.Net.Client.Do(func() error {
		mac, err := synflood.Neighbour("eth0", netip.MustParseAddr(lab.DirOuterIP), 3*time.Second)
		if err != nil {
			return err
		}
		for range c.senders {
			s, err := synflood.Open("eth0", mac)
			if err != nil {
				return err
			}
			senders = append(senders, s)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}

	// Legitimate traffic, for the whole measurement.
	lctx, stopLegit := context.WithCancel(ctx)
	defer stopLegit()
	var wg sync.WaitGroup
	r.start = time.Now()
	var mu sync.Mutex // guards r.attempts, r.ka, r.samples
	r.ka = make([]kaConn, c.keepalive)
	for i := range c.keepalive {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := keepalive(lctx, c, t)
			mu.Lock()
			r.ka[i] = k
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		newConns(lctx, c, t, func(a attempt) {
			mu.Lock()
			r.attempts = append(r.attempts, a)
			mu.Unlock()
		})
	}()
	snap := func() snapshot {
		s := snapshot{at: time.Now()}
		if v, err := a.probe.table(); err == nil {
			s.table, s.tableOK = v, true
		}
		if d, err := a.probe.drops(); err == nil {
			s.drops = d
		}
		s.rss, s.hwm, s.rssOK = a.probe.rss()
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
			r.samples = append(r.samples, s)
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

	sleep(ctx, c.pre)
	r.before = snap()
	log.Info("flood", "path", name, "rate", c.rate, "duration", c.duration, "count", c.count, "senders", c.senders)
	r.floodStart = time.Now()
	fr, ferr := synflood.Flood(ctx, senders, synflood.Config{
		Dst:      netip.AddrPortFrom(netip.MustParseAddr(harness.VIP), harness.HTTPPort),
		Sources:  c.sources,
		Exclude:  []netip.Addr{netip.MustParseAddr(lab.ClientIP), netip.MustParseAddr(harness.ClientReturnIP)},
		Count:    c.count,
		Duration: c.duration,
		Rate:     c.rate,
	})
	r.floodEnd = time.Now()
	r.flood = fr
	if ferr != nil {
		r.floodErr = ferr.Error()
	}
	r.atEnd = snap()
	log.Info("flood over", "path", name, "sent", fr.Sent, "refused", fr.Refused, "rate", fmt.Sprintf("%.0f/s", fr.Rate()))

	// After the flood: until new connections succeed again and the
	// 10-second reading is taken, or c.after passes.
	for ctx.Err() == nil {
		now := time.Now()
		if !r.hasAfter10 && now.Sub(r.floodEnd) >= 10*time.Second {
			r.after10, r.hasAfter10 = snap(), true
		}
		mu.Lock()
		rec, ok := recovery(r.attempts, r.floodEnd, now.Add(-c.newTimeout-500*time.Millisecond))
		mu.Unlock()
		if r.hasAfter10 && ok || now.Sub(r.floodEnd) >= c.after {
			r.recovery, r.recovered = rec, ok
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	stopLegit()
	r.end = time.Now()
	wg.Wait()
	r.final = snap()
	stopSampling()
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	r.summarize(c)
	return r
}

// summarize computes the figures from the records.
func (r *result) summarize(c *config) {
	slices.SortFunc(r.attempts, func(a, b attempt) int { return a.start.Compare(b.start) })
	r.errKinds = map[string]int{}
	for _, a := range r.attempts {
		var into *ratio
		switch {
		case a.start.Before(r.floodStart):
			into = &r.pre
		case a.start.Before(r.floodEnd):
			into = &r.during
		default:
			into = &r.post
			if a.err != "" {
				r.lastFail = a.start.Sub(r.floodEnd)
			}
		}
		into.total++
		if a.err == "" {
			into.ok++
		} else if !a.start.Before(r.floodStart) {
			r.errKinds[errKind(a.err)]++
		}
	}
	// Recovery, with every attempt known now.
	r.recovery, r.recovered = recovery(r.attempts, r.floodEnd, r.end)
	for _, k := range r.ka {
		r.kaTotal++
		r.kaServed += k.served
		if k.err == "" {
			r.kaSurvived++
		} else {
			r.kaFailed++
		}
	}
	for _, s := range r.samples {
		r.peakTable = max(r.peakTable, s.table)
		r.peakRSS = max(r.peakRSS, s.rss)
	}
}

// recoveryRun is how many new connections in a row must succeed (one
// second's worth at 20/s) for the service to count as back.
const recoveryRun = 20

// recovery is the time from end to the start of the first run of
// recoveryRun successful new connections that started after end, among
// the attempts that started before known (later ones may still be in
// flight).
func recovery(as []attempt, end, known time.Time) (time.Duration, bool) {
	var after []attempt
	for _, a := range as {
		if !a.start.Before(end) && a.start.Before(known) {
			after = append(after, a)
		}
	}
	slices.SortFunc(after, func(a, b attempt) int { return a.start.Compare(b.start) })
	run := 0
	var runStart time.Time
	for _, a := range after {
		if a.err != "" {
			run = 0
			continue
		}
		if run == 0 {
			runStart = a.start
		}
		if run++; run >= recoveryRun {
			return runStart.Sub(end), true
		}
	}
	return 0, false
}

// errKind sorts a failed request's error into a few kinds.
func errKind(e string) string {
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
// 1/c.newRate seconds until ctx is done; each gives up after c.newTimeout.
func newConns(ctx context.Context, c *config, t *harness.Topo, record func(attempt)) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.newRate))
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
			hc := t.Net.Client.HTTPClient()
			hc.Timeout = c.newTimeout
			// Not ctx: a request under way when the measurement ends
			// runs to its own timeout, so it is not counted as failed.
			rctx, cancel := context.WithTimeout(context.Background(), c.newTimeout)
			defer cancel()
			start := time.Now()
			err := get(rctx, hc)
			a := attempt{start: start, took: time.Since(start)}
			if err != nil {
				a.err = err.Error()
			}
			record(a)
		}()
	}
}

// keepalive opens one connection to the VIP and sends a request on it
// every c.kaInterval until ctx is done or a request fails (an error, a
// reset, or no answer within c.kaTimeout), which ends it.
func keepalive(ctx context.Context, c *config, t *harness.Topo) (k kaConn) {
	fail := func(err error) kaConn {
		k.err, k.endedAt = err.Error(), time.Now()
		return k
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := t.Net.Client.Dial(dctx, "tcp", net.JoinHostPort(harness.VIP, strconv.Itoa(harness.HTTPPort)))
	cancel()
	if err != nil {
		return fail(fmt.Errorf("dial: %w", err))
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	req := []byte("GET " + harness.SmallFile + " HTTP/1.1\r\nHost: " + harness.VIP + "\r\n\r\n")
	next := time.Now()
	for ctx.Err() == nil {
		start := time.Now()
		conn.SetDeadline(start.Add(c.kaTimeout))
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
		k.served++
		k.maxLat = max(k.maxLat, time.Since(start))
		next = next.Add(c.kaInterval)
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
