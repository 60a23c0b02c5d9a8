package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testLimits are the default bounds with times short enough for tests.
func testLimits() limits {
	l := defaultLimits
	l.busyWait = 200 * time.Millisecond
	l.readTimeout = time.Second
	l.writeTimeout = 2 * time.Second
	return l
}

// echo answers "ok <args> <len(stdin)>" and counts its calls.
func echo(calls *atomic.Int64) Handler {
	return func(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		calls.Add(1)
		n, _ := io.Copy(io.Discard, stdin)
		fmt.Fprintf(stdout, "ok %s %d", strings.Join(args, ","), n)
		return 0
	}
}

// serveWith serves h with lim on a fresh socket, through wrap if not nil.
func serveWith(t *testing.T, lim limits, h Handler, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		l = wrap(l)
	}
	s := newServer(l, path, h, slog.New(slog.DiscardHandler), lim)
	t.Cleanup(func() { s.Close() })
	return path
}

// mustCall makes a call that must succeed with "ok …" within timeout.
func mustCall(t *testing.T, path string, req Request, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := Call(ctx, path, req)
	if err != nil {
		t.Errorf("call: %v", err)
		return
	}
	want := fmt.Sprintf("ok %s %d", strings.Join(req.Args, ","), len(req.Stdin))
	if resp.Code != 0 || string(resp.Stdout) != want {
		t.Errorf("call: code %d stdout %q stderr %q, want %q", resp.Code, resp.Stdout, resp.Stderr, want)
	}
}

// raw sends payload as is (pausing pause between its halves if not zero),
// shuts the sending side if end, and returns the reply (a timeout is fatal).
func raw(t *testing.T, path string, payload []byte, pause time.Duration, end bool, timeout time.Duration) Response {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if pause > 0 {
		c.Write(payload[:len(payload)/2])
		time.Sleep(pause)
		payload = payload[len(payload)/2:]
	}
	c.Write(payload)
	if end {
		c.(*net.UnixConn).CloseWrite()
	}
	var r Response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return r
}

// flakyListener fails its first fails Accepts with EMFILE, as accept(2) does
// when the process is out of file descriptors.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestAcceptRetriesAfterEMFILE(t *testing.T) {
	var calls atomic.Int64
	fl := &flakyListener{}
	fl.fails.Store(6)
	path := serveWith(t, testLimits(), echo(&calls), func(l net.Listener) net.Listener { fl.Listener = l; return fl })
	for i := range 3 {
		mustCall(t, path, Request{Args: []string{"-L", fmt.Sprint(i)}}, 5*time.Second)
	}
	if fl.fails.Load() >= 0 {
		t.Errorf("the listener failed only %d of 6 times", 6-fl.fails.Load()-1)
	}
}

// TestAcceptRLimitNoFile runs a control socket in a process that runs out
// of file descriptors (RLIMIT_NOFILE) while a client waits, then gives them
// back: the waiting client and the next are served.
func TestAcceptRLimitNoFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "UVS_CONTROL_HELPER=emfile", "UVS_SOCKET="+path)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	// The helper says "full" once out of files.
	line := make([]byte, 5)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "full\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q %v\n%s", line, err, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	for _, arg := range []string{"-L", "-Z"} {
		resp, err := Call(ctx, path, Request{Args: []string{arg}})
		if err != nil || string(resp.Stdout) != "ok "+arg+" 0" {
			t.Errorf("call %s: %v %q %q", arg, err, resp.Stdout, resp.Stderr)
		}
	}
	stdin.Close()
	rest, _ := io.ReadAll(stdout)
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper: %v %s\n%s", err, rest, logs.String())
	}
	if !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the helper's accept never failed:\n%s", logs.String())
	}
}

// emfileHelper serves, runs out of files (saying "full" on its standard
// output) for half a second, during which the test connects, then closes
// them and serves until its standard input ends (10 s at most).
func emfileHelper() int {
	var calls atomic.Int64
	s, err := Listen(os.Getenv("UVS_SOCKET"), echo(&calls), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lim.Max = old.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var files []*os.File
	for range 100 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		files = append(files, f)
	}
	if len(files) == 100 {
		fmt.Fprintln(os.Stderr, "never ran out of files")
		return 1
	}
	os.Stdout.WriteString("full\n")
	time.Sleep(500 * time.Millisecond) // the test connects; accept fails
	for _, f := range files {
		f.Close()
	}
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	if calls.Load() != 2 {
		fmt.Fprintln(os.Stderr, "served", calls.Load(), "calls, want 2")
		return 1
	}
	return 0
}

func TestTrailingBytesRejected(t *testing.T) {
	var calls atomic.Int64
	path := serveWith(t, testLimits(), echo(&calls), nil)
	for _, tc := range []struct {
		payload string
		pause   time.Duration
	}{
		{`{"args":["-C"]}garbage`, 0},
		{`{"args":["-C"]}` + "\n" + `{"args":["-C"]}` + "\n", 0},
		{`{"args":["-C"]}` + "\n ]", 0},
		{`{"args":["-C"]}` + "\n" + `{"args":["-C"]}` + "\n", 50 * time.Millisecond},
	} {
		r := raw(t, path, []byte(tc.payload), tc.pause, true, 5*time.Second)
		if r.Code == 0 || !strings.Contains(string(r.Stderr), "bad control request") {
			t.Errorf("%q: code %d stdout %q stderr %q", tc.payload, r.Code, r.Stdout, r.Stderr)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the command ran %d times", n)
	}
	// White space after the request is fine.
	r := raw(t, path, []byte(" {\"args\":[\"-C\"]} \n\t\n"), 0, true, 5*time.Second)
	if r.Code != 0 || string(r.Stdout) != "ok -C 0" {
		t.Errorf("white space: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}

// rules10k is an `ipvsadm -S -n` file for 10 000 IPv6 services with two real
// servers each, addresses and numbers as long as such a file has.
func rules10k() []byte {
	var b bytes.Buffer
	for i := range 10000 {
		vip := fmt.Sprintf("[2001:db8:ffff:ffff::%x:%x]:65000", i/256+0x1000, i%256+0x1000)
		fmt.Fprintf(&b, "-A -t %s -s wlc -p 300\n", vip)
		for r := 1; r <= 2; r++ {
			fmt.Fprintf(&b, "-a -t %s -r [2001:db8:aaaa:bbbb::%x:%d]:65000 -m -w 100\n", vip, i+0x1000, r)
		}
	}
	return b.Bytes()
}

func TestRequestSize(t *testing.T) {
	var calls atomic.Int64
	path := serveWith(t, testLimits(), echo(&calls), nil)
	// A rules file for 10 000 services fits with room to spare.
	rules := rules10k()
	req := Request{Args: []string{"-R"}, Stdin: rules}
	b, _ := json.Marshal(req)
	t.Logf("10 000 IPv6 services, 2 real servers each: rules %d bytes, request %d bytes, limit %d", len(rules), len(b), MaxRequest)
	if 2*len(b) > MaxRequest {
		t.Errorf("request for 10 000 services is %d bytes: less than twice that fits in %d", len(b), MaxRequest)
	}
	mustCall(t, path, req, 10*time.Second)

	// Too large: Call says so without sending, the director if sent.
	big := Request{Args: []string{"-R"}, Stdin: bytes.Repeat([]byte("x"), MaxRequest)}
	if _, err := Call(context.Background(), path, big); err == nil || !strings.Contains(err.Error(), "larger than the director takes") {
		t.Errorf("Call of an oversized request: %v", err)
	}
	b, _ = json.Marshal(big)
	r := raw(t, path, b, 0, true, 10*time.Second)
	if r.Code == 0 || !strings.Contains(string(r.Stderr), "too large") {
		t.Errorf("oversized request: code %d stderr %q", r.Code, r.Stderr)
	}
	// A request that never ends times out.
	start := time.Now()
	r = raw(t, path, []byte(`{"args":["-L"]}`), 0, false, 5*time.Second)
	if r.Code == 0 || !strings.Contains(string(r.Stderr), "timed out") {
		t.Errorf("unfinished request: code %d stderr %q", r.Code, r.Stderr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("unfinished request answered after %v", d)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the command ran %d times, want 1", n)
	}
	mustCall(t, path, Request{Args: []string{"-L"}}, 5*time.Second)
}

// TestMemoryBounded sends many large requests at once, some never finished,
// some oversized: the heap stays small and legitimate requests, small and
// large, are served meanwhile.
func TestMemoryBounded(t *testing.T) {
	const slow, oversized = 12, 6
	var calls atomic.Int64
	lim := testLimits()
	lim.readTimeout = 2 * time.Second
	path := serveWith(t, lim, echo(&calls), nil)
	head := []byte(`{"args":["-R"],"stdin":"`)
	slowPayload := append(head, bytes.Repeat([]byte("A"), 7<<20)...)
	bigPayload := append(head, bytes.Repeat([]byte("A"), 9<<20)...)
	legit := Request{Args: []string{"-R"}, Stdin: rules10k()}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for range 200 { // at most 200 samples of about 50 ms
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	var answered atomic.Int64
	for i := range slow + oversized {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(8 * time.Second))
			if i < slow {
				c.Write(slowPayload) // and never finish
			} else {
				c.Write(bigPayload)
				c.(*net.UnixConn).CloseWrite()
			}
			var r Response
			if err := json.NewDecoder(c).Decode(&r); err == nil && r.Code != 0 {
				answered.Add(1)
			}
		}()
	}
	// Meanwhile, legitimate requests are served.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	mustCall(t, path, Request{Args: []string{"-L", "-n"}}, 2*time.Second)
	t.Logf("small request served in %v", time.Since(start))
	mustCall(t, path, legit, 15*time.Second)
	t.Logf("large request served in %v", time.Since(start))
	wg.Wait()
	close(stop)
	<-sampled
	grew := int64(peak.Load()) - int64(base)
	t.Logf("heap grew by at most %.1f MiB; %d of %d abusive requests answered with an error", float64(grew)/(1<<20), answered.Load(), slow+oversized)
	if grew > 48<<20 {
		t.Errorf("heap grew by %d MiB under %d large requests", grew>>20, slow+oversized)
	}
	if n := answered.Load(); n != slow+oversized {
		t.Errorf("%d of %d abusive requests got an error", n, slow+oversized)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the command ran %d times, want 2", n)
	}
}

// TestThousandConnections opens a thousand connections at once that send
// nothing: each gets an error (busy or timed out) soon, and a normal request
// is served during the flood and right after.
func TestThousandConnections(t *testing.T) {
	var calls atomic.Int64
	path := serveWith(t, testLimits(), echo(&calls), nil)
	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	var busy, timedOut, other atomic.Int64
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(time.Now().Add(8 * time.Second))
			var r Response
			switch err := json.NewDecoder(c).Decode(&r); {
			case err != nil:
				other.Add(1)
			case r.Busy:
				busy.Add(1)
			case strings.Contains(string(r.Stderr), "timed out"):
				timedOut.Add(1)
			default:
				other.Add(1)
			}
		}()
	}
	mustCall(t, path, Request{Args: []string{"-L"}}, 8*time.Second)
	t.Logf("request during the flood served after %v", time.Since(start))
	wg.Wait()
	t.Logf("%d busy, %d timed out, %d other, in %v", busy.Load(), timedOut.Load(), other.Load(), time.Since(start))
	if other.Load() != 0 || busy.Load()+timedOut.Load() != n {
		t.Errorf("of %d idle connections %d got no error", n, other.Load())
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("the flood took %v to clear", d)
	}
	mustCall(t, path, Request{Args: []string{"-L"}}, time.Second)
}

// TestThousandCalls makes a thousand calls at once: all are served.
func TestThousandCalls(t *testing.T) {
	var calls atomic.Int64
	lim := testLimits()
	lim.readTimeout = 5 * time.Second // a thousand clients share two cores
	path := serveWith(t, lim, echo(&calls), nil)
	const n = 1000
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustCall(t, path, Request{Args: []string{"-L", fmt.Sprint(i)}}, 20*time.Second)
		}()
	}
	wg.Wait()
	if calls.Load() != n {
		t.Errorf("served %d of %d", calls.Load(), n)
	}
}

func TestDialErrorPermission(t *testing.T) {
	err := dialError("/run/uvs/director.sock", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)})
	if !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "root") || strings.Contains(err.Error(), "running?") {
		t.Errorf("EACCES: %v", err)
	}
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("EACCES not wrapped: %v", err)
	}
	err = dialError("/x", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)})
	if !strings.Contains(err.Error(), "is `director run` running?") {
		t.Errorf("ENOENT: %v", err)
	}
}

// asNobody runs this test binary as nobody to call the director at path and
// returns what it printed: "err: …" or "code N: stderr".
func asNobody(t *testing.T, path string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as nobody")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(path), "control.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "UVS_CONTROL_HELPER=call", "UVS_SOCKET="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.WaitDelay = time.Second
	timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, out)
	}
	return string(out)
}

// nobodyDir is a directory nobody can enter, for the socket and the binary.
func nobodyDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "uvs-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNonRootClientPermissionDenied(t *testing.T) {
	var calls atomic.Int64
	path := filepath.Join(nobodyDir(t), "d.sock")
	s, err := Listen(path, echo(&calls), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := asNobody(t, path)
	if !strings.Contains(out, "permission denied") || !strings.Contains(out, "root") || strings.Contains(out, "running?") {
		t.Errorf("nobody calling a 0600 socket: %s", out)
	}
}

func TestNonRootPeerRefused(t *testing.T) {
	var calls atomic.Int64
	path := filepath.Join(nobodyDir(t), "d.sock")
	s, err := Listen(path, echo(&calls), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Even with the socket opened to all, the director serves root only.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	out := asNobody(t, path)
	if !strings.Contains(out, "code 1: permission denied") || !strings.Contains(out, "root only") {
		t.Errorf("nobody calling through a 0666 socket: %s", out)
	}
	if calls.Load() != 0 {
		t.Errorf("the command ran for nobody")
	}
	mustCall(t, path, Request{Args: []string{"-L"}}, 5*time.Second)
}

func TestMain(m *testing.M) {
	switch os.Getenv("UVS_CONTROL_HELPER") {
	case "call":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := Call(ctx, SocketPath(), Request{Args: []string{"-L", "-n"}})
		if err != nil {
			fmt.Printf("err: %v\n", err)
		} else {
			fmt.Printf("code %d: %s", resp.Code, resp.Stderr)
		}
		os.Exit(0)
	case "emfile":
		os.Exit(emfileHelper())
	}
	os.Exit(m.Run())
}
