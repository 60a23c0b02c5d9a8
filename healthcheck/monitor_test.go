package healthcheck

import (
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"uvs/service"
)

// The monitor tests use short delays (100-400 ms) and assert what happened
// and in which order, counted at the server, never how fast: every wait has
// a generous bound only so that a broken monitor fails instead of hanging.

const eventWait = 10 * time.Second

var vip = netip.MustParseAddr("198.18.0.100")

func realServer(port uint16) Target {
	return Target{Service: service.Key{Proto: service.TCP, Addr: vip, Port: 80}, Addr: netip.MustParseAddr(srvIP), Port: port}
}

func waitEvent(t *testing.T, events <-chan Event) Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(eventWait):
		t.Fatal("no event")
	}
	panic("unreachable")
}

func noEvent(t *testing.T, events <-chan Event, d time.Duration) {
	t.Helper()
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func wantEvent(t *testing.T, ev Event, tg Target, up bool, weight int, reason string) {
	t.Helper()
	if ev.Target != tg || ev.Up != up || ev.Weight != weight || !strings.Contains(ev.Reason, reason) || ev.At.IsZero() {
		t.Fatalf("event %+v, want %v up=%v weight=%d reason with %q", ev, tg, up, weight, reason)
	}
}

func wantState(t *testing.T, m *Monitor, tg Target, up, ok bool) {
	t.Helper()
	if gotUp, gotOK := m.State(tg); gotUp != up || gotOK != ok {
		t.Fatalf("State(%v) = %v, %v; want %v, %v", tg, gotUp, gotOK, up, ok)
	}
}

// countingHTTP is a real server that answers 200 or 500 as told and keeps
// the time and answer of every request: the attempts, seen from the server.
type countingHTTP struct {
	mu       sync.Mutex
	ok       bool
	attempts []served
}

type served struct {
	at time.Time
	ok bool
}

func (c *countingHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	ok := c.ok
	c.attempts = append(c.attempts, served{time.Now(), ok})
	c.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusInternalServerError)
	}
}

func (c *countingHTTP) set(ok bool) {
	c.mu.Lock()
	c.ok = ok
	c.mu.Unlock()
}

func (c *countingHTTP) seen() []served {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]served(nil), c.attempts...)
}

// wait returns the attempts once there are at least n.
func (c *countingHTTP) wait(t *testing.T, n int) []served {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		if a := c.seen(); len(a) >= n {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server saw %d attempts, waited for %d", len(c.seen()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCountingHTTP(t *testing.T, l *testLab, port uint16, ok bool) (*countingHTTP, Spec) {
	c := &countingHTTP{ok: ok}
	serveHTTP(t, l.srv, ap(srvIP, port), nil, c)
	return c, Spec{Kind: HTTPGet, Addr: ap(srvIP, port), URLs: []URL{{Path: "/"}}, ConnectTimeout: 2 * time.Second}
}

// before counts the attempts made before t, and those of them that passed.
func before(a []served, t time.Time) (n, ok int) {
	for _, s := range a {
		if s.at.Before(t) {
			n++
			if s.ok {
				ok++
			}
		}
	}
	return n, ok
}

// gapsAtLeast checks that attempts from..to-1 are at least d apart.
func gapsAtLeast(t *testing.T, what string, a []served, from, to int, d time.Duration) {
	t.Helper()
	// Timers never fire early; the margin is for where the server stamps
	// an attempt (after the connection is made) against where it started.
	const margin = 10 * time.Millisecond
	for i := from + 1; i < to; i++ {
		if gap := a[i].at.Sub(a[i-1].at); gap < d-margin {
			t.Errorf("%s: attempts %d and %d are %v apart, want at least %v", what, i, i+1, gap, d)
		}
	}
}

// An up checker that fails is retried retry times, delay_before_retry
// apart, and the target goes down at the retry+1st failure; a down checker
// is not retried, only tried every delay_loop; one success brings it back.
func TestMonitorRetry(t *testing.T) {
	l := lab(t)
	srv, spec := newCountingHTTP(t, l, 9001, false)
	spec.Retry, spec.DelayBeforeRetry, spec.DelayLoop = 2, 100*time.Millisecond, 400*time.Millisecond
	m, events := l.monitor(t)
	tg := realServer(9001)
	m.Set(tg, []Spec{spec}, true)
	wantState(t, m, tg, true, true)

	down := waitEvent(t, events)
	wantEvent(t, down, tg, false, -1, "HTTP_GET http://198.18.0.2:9001/: status 500")
	wantState(t, m, tg, false, true)
	a := srv.wait(t, 5)
	if n, _ := before(a, down.At); n != spec.Retry+1 {
		t.Errorf("down after %d attempts, want retry+1 = %d", n, spec.Retry+1)
	}
	gapsAtLeast(t, "retries", a, 0, 3, spec.DelayBeforeRetry)
	gapsAtLeast(t, "down, not retried", a, 2, 5, spec.DelayLoop)

	srv.set(true)
	up := waitEvent(t, events)
	wantEvent(t, up, tg, true, -1, "status 200")
	wantState(t, m, tg, true, true)
	a = srv.seen()
	if _, ok := before(a, up.At); ok != 1 {
		t.Errorf("up after %d successful attempts, want 1", ok)
	}
	noEvent(t, events, 2*spec.DelayLoop)
}

// A target is up only while all its checkers are.
func TestMonitorAllMustPass(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	state := newStateFile(t, dir, "0")
	script := writeScript(t, dir, "state.sh", `exit "$(cat `+state.path+`)"`)
	tcp := newTCPServer(t, l.srv, ap(srvIP, 9002))
	m, events := l.monitor(t)
	tg := realServer(9002)
	m.Set(tg, []Spec{
		{Kind: TCPCheck, Addr: ap(srvIP, 9002), DelayLoop: 100 * time.Millisecond, ConnectTimeout: 5 * time.Second},
		{Kind: MiscCheck, MiscPath: script, DelayLoop: 100 * time.Millisecond, MiscTimeout: 5 * time.Second},
	}, true)
	noEvent(t, events, 300*time.Millisecond)

	state.set(t, "1")
	wantEvent(t, waitEvent(t, events), tg, false, -1, "MISC_CHECK "+script+": exit status 1")
	// The other checker goes on while one is down (its next attempt is
	// due within its delay_loop; waited for, not timed).
	accepted := tcp.accepted.Load()
	for deadline := time.Now().Add(10 * time.Second); tcp.accepted.Load() == accepted; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("TCP_CHECK made no attempt in 10 s while MISC_CHECK was down")
		}
	}
	state.set(t, "0")
	wantEvent(t, waitEvent(t, events), tg, true, -1, "MISC_CHECK")

	// Refused, or reset when an attempt meets the listener closing.
	tcp.close()
	wantEvent(t, waitEvent(t, events), tg, false, -1, "TCP_CHECK connect 198.18.0.2:9002: ")
	wantState(t, m, tg, false, true)
}

// stateFile is what a MISC_CHECK script exits with, changed atomically.
type stateFile struct{ path string }

func newStateFile(t *testing.T, dir, v string) *stateFile {
	s := &stateFile{path: dir + "/state"}
	s.set(t, v)
	return s
}

func (s *stateFile) set(t *testing.T, v string) {
	t.Helper()
	tmp := s.path + ".new"
	if err := os.WriteFile(tmp, []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		t.Fatal(err)
	}
}

// alpha: the target starts down and comes up at its first success; while
// down its failing checker is tried every delay_loop, without retries.
func TestMonitorAlpha(t *testing.T) {
	l := lab(t)
	newTCPServer(t, l.srv, ap(srvIP, 9003))
	m, events := l.monitor(t)
	tg := realServer(9003)
	m.Set(tg, []Spec{{Kind: TCPCheck, Addr: ap(srvIP, 9003), DelayLoop: time.Hour}}, false)
	wantEvent(t, waitEvent(t, events), tg, true, -1, "TCP_CHECK connected to 198.18.0.2:9003")
	wantState(t, m, tg, true, true)

	srv, spec := newCountingHTTP(t, l, 9004, false)
	spec.Retry, spec.DelayBeforeRetry, spec.DelayLoop = 3, 20*time.Millisecond, 200*time.Millisecond
	failing := realServer(9004)
	m.Set(failing, []Spec{spec}, false)
	a := srv.wait(t, 3)
	gapsAtLeast(t, "alpha, failing", a, 0, 3, spec.DelayLoop)
	wantState(t, m, failing, false, true)
	noEvent(t, events, 0)
}

// Remove stops the checks of a target.
func TestMonitorRemove(t *testing.T) {
	l := lab(t)
	srv, spec := newCountingHTTP(t, l, 9005, true)
	spec.DelayLoop = 100 * time.Millisecond
	m, events := l.monitor(t)
	tg := realServer(9005)
	m.Set(tg, []Spec{spec}, true)
	srv.wait(t, 2)
	m.Remove(tg)
	wantState(t, m, tg, false, false)
	time.Sleep(2 * spec.DelayLoop) // an attempt in flight at Remove ends
	n := len(srv.seen())
	time.Sleep(5 * spec.DelayLoop)
	if got := len(srv.seen()); got != n {
		t.Errorf("%d attempts after Remove", got-n)
	}
	noEvent(t, events, 0)
	m.Remove(tg) // again: nothing
}

// Set with the same specs keeps the state; with other specs it keeps the
// state of the checkers that stay.
func TestMonitorReplace(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	state := newStateFile(t, dir, "1")
	script := writeScript(t, dir, "state.sh", `exit "$(cat `+state.path+`)"`)
	newTCPServer(t, l.srv, ap(srvIP, 9006))
	m, events := l.monitor(t)
	tg := realServer(9006)
	misc := Spec{Kind: MiscCheck, MiscPath: script, DelayLoop: 100 * time.Millisecond, MiscTimeout: 5 * time.Second}
	tcp := Spec{Kind: TCPCheck, Addr: ap(srvIP, 9006), DelayLoop: 100 * time.Millisecond}
	m.Set(tg, []Spec{misc}, true)
	wantEvent(t, waitEvent(t, events), tg, false, -1, "exit status 1")

	// The same checker written differently (connect_timeout's default
	// spelled out, a negative retry that counts as 0): nothing changes, and
	// startUp is not looked at (a reset to up would be followed by a
	// down event at the next failure).
	same := misc
	same.ConnectTimeout, same.Retry = DefaultConnectTimeout, -1
	m.Set(tg, []Spec{same}, true)
	wantState(t, m, tg, false, true)
	noEvent(t, events, 3*misc.DelayLoop)

	// A checker added to a down target starts as startUp says; the failed
	// one is kept, so the target stays down.
	m.Set(tg, []Spec{misc, tcp}, true)
	wantState(t, m, tg, false, true)
	noEvent(t, events, 3*misc.DelayLoop)

	// Dropping the failed checker leaves the up one: up at once.
	m.Set(tg, []Spec{tcp}, false)
	wantEvent(t, waitEvent(t, events), tg, true, -1, "checkers changed")
	wantState(t, m, tg, true, true)
	noEvent(t, events, 3*tcp.DelayLoop)
}

// misc_dynamic: exit status 2-255 sets the weight while the target is up,
// 0 brings back the configured weight (-1), 1 takes the target down.
func TestMonitorDynamicWeight(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	state := newStateFile(t, dir, "12")
	script := writeScript(t, dir, "state.sh", `exit "$(cat `+state.path+`)"`)
	m, events := l.monitor(t)
	tg := realServer(9007)
	m.Set(tg, []Spec{{Kind: MiscCheck, MiscPath: script, MiscDynamic: true, DelayLoop: 100 * time.Millisecond, MiscTimeout: 5 * time.Second}}, true)
	wantEvent(t, waitEvent(t, events), tg, true, 10, "exit status 12, weight 10")
	state.set(t, "22")
	wantEvent(t, waitEvent(t, events), tg, true, 20, "weight 20")
	state.set(t, "0")
	wantEvent(t, waitEvent(t, events), tg, true, -1, "exit status 0")
	noEvent(t, events, 300*time.Millisecond)
	state.set(t, "1")
	wantEvent(t, waitEvent(t, events), tg, false, -1, "exit status 1")
	state.set(t, "5")
	wantEvent(t, waitEvent(t, events), tg, true, 3, "weight 3")
}

// onChange may use the monitor; Close ends a MISC_CHECK in flight.
func TestMonitorCallbackAndClose(t *testing.T) {
	l := lab(t)
	newTCPServer(t, l.srv, ap(srvIP, 9008))
	dir := t.TempDir()
	pidFile := dir + "/pid"
	hang := writeScript(t, dir, "hang.sh", `echo $$ > `+pidFile+`; exec sleep 30`)

	seen := make(chan bool, 1)
	var m *Monitor
	m = NewMonitor(func(ev Event) {
		up, _ := m.State(ev.Target)
		m.Remove(ev.Target)
		m.Set(realServer(1), nil, true)
		seen <- up
	}, nil)
	m.env = l.env()
	t.Cleanup(m.Close)
	tg := realServer(9008)
	m.Set(tg, []Spec{{Kind: TCPCheck, Addr: ap(srvIP, 9008), DelayLoop: time.Hour}}, false)
	select {
	case up := <-seen:
		if !up {
			t.Error("State in onChange: down after an up event")
		}
	case <-time.After(eventWait):
		t.Fatal("no event")
	}
	wantState(t, m, tg, false, false)
	wantState(t, m, realServer(1), true, true)

	m.Set(realServer(9009), []Spec{{Kind: MiscCheck, MiscPath: hang, MiscTimeout: time.Hour}}, true)
	var pid int
	for deadline := time.Now().Add(eventWait); pid == 0; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(pidFile); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the script did not start")
		}
	}
	m.Close()
	waitGone(t, "Close", pid)
	m.Set(realServer(9010), []Spec{{Kind: TCPCheck, Addr: ap(srvIP, 9008)}}, true)
	wantState(t, m, realServer(9010), false, false)
	m.Close()
}

func TestWarmup(t *testing.T) {
	if d := warmup(0); d != 0 {
		t.Errorf("warmup(0) = %v", d)
	}
	var lo, hi time.Duration = time.Hour, 0
	for range 1000 {
		d := warmup(100 * time.Millisecond)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 0 || hi >= 100*time.Millisecond || hi-lo < 50*time.Millisecond {
		t.Errorf("1000 warmups of 100ms spread over [%v, %v]", lo, hi)
	}
}
