package healthcheck

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"uvs/service"
)

// Target identifies a real server of a service: what the monitor keeps
// state for and reports on.
type Target struct {
	Service service.Key
	Addr    netip.Addr
	Port    uint16
}

func (t Target) String() string {
	return t.Service.String() + " -r " + netip.AddrPortFrom(t.Addr, t.Port).String()
}

// Event is a change of a target: up or down, or, while up, a new weight
// from a MISC_CHECK with misc_dynamic.
type Event struct {
	Target Target
	Up     bool
	// Weight is -1 for "the configured weight" (no MISC_CHECK with
	// misc_dynamic asks for another); otherwise the weight that dynamic
	// MISC_CHECKs ask for (with several, the smallest: keepalived adds their
	// offsets from the configured weight, which the monitor does not know).
	Weight int
	Reason string // the attempt that made the change, e.g. "TCP_CHECK connect 198.18.0.2:80: connection refused"
	At     time.Time
}

// Monitor runs the checkers of many targets and reports when a target goes
// up or down. A target is up when all its checkers are up.
//
// Scheduling: every checker has one timer (time.AfterFunc), so the runtime's
// timer heap is the only scheduler and a checker between attempts costs no
// goroutine. An attempt runs on the goroutine its timer starts, and arms the
// timer for the next one when it is over: delay_loop after it (or
// delay_before_retry, see record). Attempts of different checkers run
// concurrently; those of one checker never do.
//
// Events are handed to onChange by one goroutine of the monitor, in the
// order they happened, one call at a time: never concurrently, for one
// target or for several. onChange may call State, Set and Remove; it must
// not call Close, which waits for it. A slow onChange delays later events,
// not the checks.
type Monitor struct {
	onChange func(Event)
	log      *slog.Logger
	env      env

	ctx      context.Context // cancelled by Close: attempts in flight stop
	cancel   context.CancelFunc
	inflight sync.WaitGroup

	mu      sync.Mutex
	targets map[Target]*target
	closed  bool

	evMu   sync.Mutex
	evCond sync.Cond
	evQ    []Event
	evStop bool
	evDone chan struct{}
}

type target struct {
	key      Target
	labels   [6]string // the backend labels of the metrics
	checkers []*checker
	up       bool
	weight   int // dynamic weight last reported while up, -1 none

	transUp, transDown uint64
	durations          map[string]*histogram // by checker name
}

type checker struct {
	tg     *target
	spec   Spec   // normal; never changed, read by attempts without the lock
	name   string // TCP_CHECK, …
	ctx    context.Context
	cancel context.CancelFunc
	timer  *time.Timer

	// Under Monitor.mu:
	stopped bool
	up      bool
	failed  int // consecutive failed attempts while up
	weight  int // last dynamic weight reported, -1 none
}

// RunIn makes the monitor's attempts through do, which runs a function in
// another network namespace (testbed's Host.Do), so that their sockets and
// programs are made there: for tests and labs whose real servers are in
// namespaces of their own. Call it before the first Set.
func (m *Monitor) RunIn(do func(func() error) error) {
	m.mu.Lock()
	m.env = env{do: do}
	m.mu.Unlock()
}

// NewMonitor returns a monitor with no targets. onChange, if not nil,
// receives every change (see Monitor); log, if not nil, gets a line for each
// change of a checker or a target.
func NewMonitor(onChange func(Event), log *slog.Logger) *Monitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{
		onChange: onChange,
		log:      log,
		targets:  make(map[Target]*target),
		evDone:   make(chan struct{}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.evCond.L = &m.evMu
	go m.deliver()
	return m
}

// Set adds target t with the given checkers, or replaces the checkers of t.
//
// A new target starts up, or down when startUp is false (keepalived's
// alpha: "On daemon startup assume that all RSs are down and healthchecks
// failed"); its checkers start the same, and each makes its first attempt
// after a random part of its Warmup. A target without checkers stays as it
// starts (keepalived warns that an alpha real server without checkers "will
// never be able to be activated").
//
// Replacing: with the same specs (compared after defaults), nothing
// changes: state, retries in progress and schedule are kept, and startUp is
// not looked at. Otherwise the checkers whose spec is unchanged are kept as
// they are, the others are dropped, and new ones start up if the target is
// up, or as startUp says if it is down (keepalived 2.0.14 at reload: "If a
// new checker is added at a reload, unless the real server already has
// failed checkers, then ignore the alpha mode of the checker"). The target
// may change state at once, e.g. when its only failed checker is dropped.
func (m *Monitor) Set(t Target, specs []Spec, startUp bool) {
	norm := make([]Spec, len(specs))
	for i := range specs {
		norm[i] = specs[i].normal()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	tg := m.targets[t]
	if tg == nil {
		tg = &target{key: t, labels: backendLabels(t), up: startUp, weight: -1, durations: make(map[string]*histogram)}
		for i := range norm {
			tg.checkers = append(tg.checkers, m.newChecker(tg, &norm[i], startUp))
		}
		m.targets[t] = tg
		m.log.Debug("healthcheck: target added", "target", t.String(), "checkers", len(norm), "up", startUp)
		if len(norm) == 0 && !startUp {
			m.log.Warn("healthcheck: target starts down and has no checkers: it never comes up", "target", t.String())
		}
		return
	}
	if sameSpecs(tg.checkers, norm) {
		return
	}
	old := tg.checkers
	kept := make([]bool, len(old))
	initUp := tg.up || startUp
	tg.checkers = nil
next:
	for i := range norm {
		for j, c := range old {
			if !kept[j] && c.spec.equal(&norm[i]) {
				kept[j] = true
				tg.checkers = append(tg.checkers, c)
				continue next
			}
		}
		tg.checkers = append(tg.checkers, m.newChecker(tg, &norm[i], initUp))
	}
	for j, c := range old {
		if !kept[j] {
			c.stop()
		}
	}
	m.log.Debug("healthcheck: checkers replaced", "target", t.String(), "checkers", len(norm))
	m.update(tg, "checkers changed", time.Now())
}

func sameSpecs(cs []*checker, specs []Spec) bool {
	if len(cs) != len(specs) {
		return false
	}
	for i, c := range cs {
		if !c.spec.equal(&specs[i]) {
			return false
		}
	}
	return true
}

// newChecker makes a checker of tg and arms its first attempt. m.mu is held.
func (m *Monitor) newChecker(tg *target, s *Spec, up bool) *checker {
	c := &checker{tg: tg, spec: *s, name: s.name(), up: up, weight: -1}
	c.ctx, c.cancel = context.WithCancel(m.ctx)
	c.timer = time.AfterFunc(warmup(s.Warmup), func() { m.fire(c) })
	return c
}

// warmup is when a checker's first attempt is made: "Optional random delay
// to start the initial check for maximum N seconds" (keepalived.conf(5)).
func warmup(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}

// stop ends c: no more attempts, and the one in flight, if any, is cut short
// and its result dropped. Monitor.mu is held.
func (c *checker) stop() {
	c.stopped = true
	c.timer.Stop()
	c.cancel()
}

// Remove stops the checkers of t and forgets it. No event is sent for it.
func (m *Monitor) Remove(t Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tg := m.targets[t]
	if tg == nil {
		return
	}
	for _, c := range tg.checkers {
		c.stop()
	}
	delete(m.targets, t)
	m.log.Debug("healthcheck: target removed", "target", t.String())
}

// State returns whether t is up, and whether the monitor has t.
func (m *Monitor) State(t Target) (up bool, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tg := m.targets[t]
	if tg == nil {
		return false, false
	}
	return tg.up, true
}

// Close stops every checker, waits for the attempts in flight to end (a
// MISC_CHECK program gets SIGTERM) and for a call of onChange in progress
// to return. Events not yet delivered are dropped; none follow. The monitor
// has no targets afterwards.
func (m *Monitor) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	for _, tg := range m.targets {
		for _, c := range tg.checkers {
			c.stop()
		}
	}
	m.targets = map[Target]*target{}
	m.mu.Unlock()
	m.cancel()
	m.inflight.Wait()

	m.evMu.Lock()
	m.evStop = true
	m.evQ = nil
	m.evCond.Signal()
	m.evMu.Unlock()
	<-m.evDone
}

// fire makes one attempt of c; its timer calls it.
func (m *Monitor) fire(c *checker) {
	m.mu.Lock()
	if c.stopped {
		m.mu.Unlock()
		return
	}
	m.inflight.Add(1)
	m.mu.Unlock()
	defer m.inflight.Done()

	start := time.Now()
	r := m.env.check(c.ctx, &c.spec)
	now := time.Now()

	m.mu.Lock()
	defer m.mu.Unlock()
	if c.stopped {
		return
	}
	c.tg.observe(c.name, now.Sub(start))
	c.timer.Reset(m.record(c, r, now))
}

// record applies the result of an attempt of c and returns when to make
// the next one. Monitor.mu is held.
//
// keepalived's rules (keepalived.conf(5) of 2.2.7 unless said otherwise):
//   - retry is the "Retry count to make additional checks if check of an
//     alive server fails"; they are delay_before_retry apart. So an up
//     checker goes down at its retry+1st failure in a row, and a checker
//     that is down is not retried: it is tried again after delay_loop.
//     (keepalived 1.2.20's ChangeLog: "If tcp check fails on an alive
//     server, keepalived will perform another checks until n_retry counter
//     reaches zero, or until the check succeeds"; "Retry on every error,
//     including timeout and connection error, but only when RS is up.")
//   - One success brings a checker up, at once: "do not wait for
//     delay_loop after a successfull check to bring the server UP" (same
//     entry). keepalived has no rise count for real servers.
//   - A success, or a failure that is not retried, is followed by the next
//     attempt after delay_loop ("delay timer for checker polling").
func (m *Monitor) record(c *checker, r Result, now time.Time) time.Duration {
	next := c.spec.DelayLoop
	switch {
	case r.Up:
		c.failed = 0
		if r.Weight >= 0 || c.spec.MiscDynamic {
			// A dynamic MISC_CHECK's 0 is the configured weight again
			// (checkMisc).
			c.weight = r.Weight
		}
		if !c.up {
			c.up = true
			m.log.Info("healthcheck: checker up", "target", c.tg.key.String(), "checker", c.name, "reason", r.Reason)
		}
	case c.up:
		c.failed++
		if c.failed <= c.spec.Retry {
			next = c.spec.DelayBeforeRetry
			m.log.Debug("healthcheck: checker failed, retrying", "target", c.tg.key.String(), "checker", c.name,
				"retry", c.failed, "of", c.spec.Retry, "reason", r.Reason)
			return next
		}
		c.up, c.failed = false, 0
		m.log.Info("healthcheck: checker down", "target", c.tg.key.String(), "checker", c.name,
			"retries", c.spec.Retry, "reason", r.Reason)
	}
	m.update(c.tg, r.Reason, now)
	return next
}

// update works out the state of tg from its checkers and reports a change.
// Monitor.mu is held.
//
// A real server is up only when all its checkers are: keepalived counts a
// real server's failed checkers and takes the server out while there is
// one (keepalived.conf(5): MISC_CHECK scripts "cause a real server to be
// configured down if they exit with a non-zero status", whatever the other
// checkers say; keepalived 2.0.14's ChangeLog: "If the real server already
// has failed checkers, then setting an alpha mode checker down initially
// won't take down the real server").
func (m *Monitor) update(tg *target, reason string, now time.Time) {
	up, weight := tg.up, -1
	if len(tg.checkers) > 0 {
		up = true
		for _, c := range tg.checkers {
			up = up && c.up
			if c.weight >= 0 && (weight < 0 || c.weight < weight) {
				weight = c.weight
			}
		}
	}
	switch {
	case up != tg.up:
		tg.up = up
		ev := Event{Target: tg.key, Up: up, Weight: -1, Reason: reason, At: now}
		if up {
			tg.transUp++
			ev.Weight = weight
			tg.weight = weight
			m.log.Info("healthcheck: real server up", "target", tg.key.String(), "reason", reason)
		} else {
			tg.transDown++
			m.log.Warn("healthcheck: real server down", "target", tg.key.String(), "reason", reason)
		}
		m.emit(ev)
	case up && weight != tg.weight:
		tg.weight = weight
		m.log.Info("healthcheck: real server weight", "target", tg.key.String(), "weight", weight, "reason", reason)
		m.emit(Event{Target: tg.key, Up: true, Weight: weight, Reason: reason, At: now})
	}
}

// emit queues ev for onChange.
func (m *Monitor) emit(ev Event) {
	if m.onChange == nil {
		return
	}
	m.evMu.Lock()
	if !m.evStop {
		m.evQ = append(m.evQ, ev)
		m.evCond.Signal()
	}
	m.evMu.Unlock()
}

// deliver is the goroutine that calls onChange.
func (m *Monitor) deliver() {
	defer close(m.evDone)
	m.evMu.Lock()
	for {
		for len(m.evQ) == 0 && !m.evStop {
			m.evCond.Wait()
		}
		if m.evStop {
			m.evMu.Unlock()
			return
		}
		ev := m.evQ[0]
		m.evQ[0] = Event{}
		m.evQ = m.evQ[1:]
		m.evMu.Unlock()
		m.onChange(ev)
		m.evMu.Lock()
	}
}
