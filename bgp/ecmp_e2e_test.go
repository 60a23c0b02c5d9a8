package bgp_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
	"uvs/testbed"
)

// The client's workload: long-lived connections that exchange a line
// every echoEvery, and transfers back to back (uploads and downloads of
// transferSize, paced so that each lasts about a second and one is always
// under way when a director goes).
const (
	flows4, flows6 = 24, 6
	echoEvery      = 100 * time.Millisecond
	transferSize   = 4 << 20
	transferChunk  = 64 << 10
	transferPause  = 15 * time.Millisecond // between chunks
	port           = "7000"
	metricsPort    = "9110"
)

// TestECMP is the scale-out setup end to end: a router running BIRD 2
// spreads a VIP by ECMP over three directors, each running the real
// director with --sloppy-tcp, -s sh (sh-port) and the same rules, which
// announce the VIP (IPv4 and IPv6) over BGP; three DR real servers; a
// client with 30 long-lived connections and transfers in flight. The
// directors come and go — killed with SIGKILL, started again, all their
// real servers at weight 0 and back, stopped with SIGTERM — and every
// established connection goes on: no reset, every exchange answered
// intact by the server the connection started with, every transfer
// complete and intact.
func TestECMP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	for _, c := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs BIRD 2 (Debian: apt-get install bird2): %v", err)
		}
	}
	bin, remove, err := lab.BuildDirector("../cmd/director")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	n, err := lab.BuildECMP("uvsecmp", 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	for i, rs := range n.RS {
		serve(t, rs, fmt.Sprintf("rs%d", i+1))
	}
	dir := t.TempDir()
	bird, err := lab.StartBIRD(n.Router, dir, n.BIRDConfig(filepath.Join(dir, "bird.log")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("BIRD's log:\n%s", bird.Log())
		}
		bird.Stop()
	})

	ds := newDirectors(t, n, bin)
	for i := range n.Directors {
		ds.start(i)
	}
	all := []int{0, 1, 2}
	ds.waitPaths(bird, all, 30*time.Second)
	if out, err := n.Router.Exec("ip", "route", "show", lab.ECMPVIP); err != nil || strings.Count(out, "nexthop via") != 3 {
		t.Fatalf("the router's kernel route to the VIP is not over the three directors (%v):\n%s", err, out)
	}
	ds.metrics(0, `uvs_bgp_peer_up{peer="198.18.1.1"} 1`, `uvs_bgp_peer_up{peer="2001:2:0:1::1"} 1`, "uvs_bgp_announced_vips 2")

	l := startLoad(t, n.Client)
	defer l.finish()
	l.progress(2 * time.Second)
	victim := 2
	c := ds.flows(victim, l.flowAddrs())
	if c == 0 {
		t.Fatalf("d%d carried none of the long-lived connections before it was killed", victim+1)
	}
	t.Logf("d%d carries %d of the %d long-lived connections", victim+1, c, flows4+flows6)

	// SIGKILL: its sessions close with the process, BIRD withdraws its
	// paths, and its flows go on through the others.
	t.Logf("kill -9 d%d", victim+1)
	ds.kill(victim)
	ds.waitPaths(bird, []int{0, 1}, 20*time.Second)
	l.progress(2 * time.Second)

	// Back: its path returns, and the flows that ECMP hands it now are
	// taken over mid-way (--sloppy-tcp) to the server they had.
	t.Logf("d%d started again", victim+1)
	ds.start(victim)
	ds.waitPaths(bird, all, 30*time.Second)
	l.progress(2 * time.Second)
	if c := ds.flows(victim, l.flowAddrs()); c == 0 {
		t.Errorf("d%d took over none of the long-lived connections after its return", victim+1)
	} else {
		t.Logf("d%d took over %d long-lived connections mid-way", victim+1, c)
	}

	// Every real server of d2 at weight 0 (as a health checker with
	// inhibit_on_failure sets them), in one reload: its VIPs are
	// withdrawn, its flows go to the others; then the weights come back.
	t.Log("d2: every real server at weight 0")
	ds.reload(1, 0)
	ds.waitPaths(bird, []int{0, 2}, 20*time.Second)
	ds.metrics(1, `uvs_bgp_peer_up{peer="198.18.1.1"} 1`, "uvs_bgp_announced_vips 0")
	l.progress(2 * time.Second)
	t.Log("d2: weights back to 1")
	ds.reload(1, 1)
	ds.waitPaths(bird, all, 20*time.Second)
	l.progress(time.Second)

	// SIGTERM: d1 withdraws first and forwards during the drain; BIRD
	// has dropped its path while it still runs.
	t.Log("SIGTERM d1")
	if err := ds.d[0].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ds.waitPaths(bird, []int{1, 2}, 20*time.Second)
	if ds.d[0].Exited() {
		t.Errorf("d1 exited before BIRD had dropped its path")
	}
	ds.stop(0)
	log := ds.logs[0][len(ds.logs[0])-1].Log()
	i, j, k := strings.Index(log, "VIPs withdrawn; draining"), strings.Index(log, "BGP speaker stopped"), strings.Index(log, "msg=\"stopped;")
	if i < 0 || j < i || k < j {
		t.Errorf("d1's log does not show the withdrawal, then the sessions closed, then the director stopped:\n%s", log)
	}
	l.progress(2 * time.Second)
	l.finish()
	t.Logf("%d exchanges, %d transfers, %d connection attempts refused and retried, flows per server %v",
		l.exchanges.Load(), l.transfers.Load(), l.refused.Load(), l.perServer())
}

// directors runs the directors of the topology, each with its own rules
// file and socket directory.
type directors struct {
	t     *testing.T
	n     *lab.ECMPNet
	bin   string
	dirs  []string
	d     []*lab.Director
	logs  [][]*lab.Director // every process run, for the logs
	rules []string
}

func newDirectors(t *testing.T, n *lab.ECMPNet, bin string) *directors {
	ds := &directors{t: t, n: n, bin: bin}
	for range n.Directors {
		dir := t.TempDir()
		ds.dirs = append(ds.dirs, dir)
		ds.rules = append(ds.rules, filepath.Join(dir, "rules"))
		ds.d = append(ds.d, nil)
		ds.logs = append(ds.logs, nil)
	}
	for i := range n.Directors {
		ds.writeRules(i, 1)
	}
	t.Cleanup(func() {
		for i, d := range ds.d {
			if d != nil && !d.Exited() {
				if err := d.Stop(); err != nil {
					t.Errorf("d%d: stop: %v", i+1, err)
				}
			}
		}
		if t.Failed() {
			for i, ps := range ds.logs {
				for _, p := range ps {
					t.Logf("d%d's log:\n%s", i+1, p.Log())
				}
			}
		}
	})
	return ds
}

// writeRules writes director i's rules: the VIP's port, IPv4 and IPv6,
// scheduled by sh on the client's address and port, every real server at
// weight w, in the order ipvsadm -S lists them.
func (ds *directors) writeRules(i int, w int) {
	var b strings.Builder
	for _, v := range []struct {
		vip string
		rs  func(int) string
	}{{lab.ECMPVIP, lab.ECMPRSIP}, {"[" + lab.ECMPVIP6 + "]", func(i int) string { return "[" + lab.ECMPRSIP6(i) + "]" }}} {
		fmt.Fprintf(&b, "-A -t %s:%s -s sh -b sh-port\n", v.vip, port)
		for j := range ds.n.RS {
			fmt.Fprintf(&b, "-a -t %s:%s -r %s:%s -g -w %d\n", v.vip, port, v.rs(j), port, w)
		}
	}
	if err := os.WriteFile(ds.rules[i], []byte(b.String()), 0o600); err != nil {
		ds.t.Fatal(err)
	}
}

func (ds *directors) start(i int) {
	ds.t.Helper()
	args := append([]string{"--rules", ds.rules[i], "--sloppy-tcp", "--workers", "1",
		"--metrics", net.JoinHostPort(lab.ECMPDirIP(i), metricsPort)}, ds.n.DirectorBGPArgs(2*time.Second)...)
	d, err := lab.StartDirector(ds.n.Directors[i], ds.bin, ds.dirs[i], args...)
	if err != nil {
		ds.t.Fatalf("d%d: %v", i+1, err)
	}
	ds.d[i] = d
	ds.logs[i] = append(ds.logs[i], d)
}

func (ds *directors) kill(i int) {
	ds.t.Helper()
	if err := ds.d[i].Signal(syscall.SIGKILL); err != nil {
		ds.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !ds.d[i].Exited(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			ds.t.Fatalf("d%d still runs 10 s after SIGKILL", i+1)
		}
	}
}

func (ds *directors) stop(i int) {
	ds.t.Helper()
	if err := ds.d[i].Stop(); err != nil {
		ds.t.Fatalf("d%d: stop: %v", i+1, err)
	}
}

// reload rewrites director i's rules with every weight w and makes it
// reload them (SIGHUP): one change.
func (ds *directors) reload(i, w int) {
	ds.t.Helper()
	ds.writeRules(i, w)
	before := strings.Count(ds.d[i].Log(), "rules reloaded")
	if err := ds.d[i].Signal(syscall.SIGHUP); err != nil {
		ds.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); strings.Count(ds.d[i].Log(), "rules reloaded") == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			ds.t.Fatalf("d%d did not reload its rules:\n%s", i+1, ds.d[i].Log())
		}
	}
}

// waitPaths waits until BIRD routes both VIPs over exactly the directors
// in idx.
func (ds *directors) waitPaths(bird *lab.BIRD, idx []int, timeout time.Duration) {
	ds.t.Helper()
	var v4, v6 []string
	for _, i := range idx {
		v4 = append(v4, lab.ECMPDirIP(i))
		v6 = append(v6, lab.ECMPDirIP6(i))
	}
	if _, err := bird.WaitPaths(lab.ECMPVIP+"/32", v4, timeout); err != nil {
		ds.t.Fatal(err)
	}
	if _, err := bird.WaitPaths(lab.ECMPVIP6+"/128", v6, timeout); err != nil {
		ds.t.Fatal(err)
	}
}

// metrics checks that director i's metrics hold every line of want. The
// router asks, over the LAN (the directors have no route to the client).
func (ds *directors) metrics(i int, want ...string) {
	ds.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ds.n.Router.Dial(ctx, "tcp", net.JoinHostPort(lab.ECMPDirIP(i), metricsPort))
	if err != nil {
		ds.t.Fatalf("d%d: metrics: %v", i+1, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /metrics HTTP/1.0\r\n\r\n")
	body, err := io.ReadAll(c)
	if err != nil {
		ds.t.Fatalf("d%d: metrics: %v", i+1, err)
	}
	for _, w := range want {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w) + `$`).Match(body) {
			ds.t.Errorf("d%d: metrics lack %q", i+1, w)
		}
	}
}

// flows counts the connections in director i's table (ipvsadm -L -n -c)
// whose client address and port are in clients.
func (ds *directors) flows(i int, clients map[string]bool) int {
	ds.t.Helper()
	out, errs, code, err := ds.d[i].Ipvsadm("-L", "-n", "-c")
	if err != nil || code != 0 {
		ds.t.Fatalf("d%d: ipvsadm -L -n -c: %d %v %s", i+1, code, err, errs)
	}
	n := 0
	for line := range strings.Lines(out) {
		// pro expire state source virtual destination
		if f := strings.Fields(line); len(f) == 6 && clients[f[3]] {
			n++
		}
	}
	return n
}

// serve runs the real server's service on :7000 (IPv4 and IPv6, the VIPs
// included). A connection's first line says what it wants:
//
//	echo         then every line is answered with "NAME LINE"
//	up N         N bytes follow; the answer is their sha256, in hex
//	down N SEED  the answer is N bytes of ChaCha8(SEED), paced
func serve(t *testing.T, h *testbed.Host, name string) {
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	for _, network := range []string{"tcp4", "tcp6"} {
		l, err := h.Listen(network, ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for c := range conns {
				c.Close()
			}
		})
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns[c] = true
				mu.Unlock()
				go func() {
					defer func() {
						mu.Lock()
						delete(conns, c)
						mu.Unlock()
						c.Close()
					}()
					c.SetDeadline(time.Now().Add(5 * time.Minute))
					handle(c, name)
				}()
			}
		}()
	}
}

func handle(c net.Conn, name string) {
	r := bufio.NewReader(c)
	first, err := r.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(first)
	switch {
	case len(f) == 1 && f[0] == "echo":
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, name+" "+line); err != nil {
				return
			}
		}
	case len(f) == 2 && f[0] == "up":
		size, _ := strconv.ParseInt(f[1], 10, 64)
		h := sha256.New()
		if _, err := io.CopyN(h, r, size); err != nil {
			return
		}
		io.WriteString(c, hex.EncodeToString(h.Sum(nil))+"\n")
	case len(f) == 3 && f[0] == "down":
		size, _ := strconv.ParseInt(f[1], 10, 64)
		seed, _ := strconv.ParseUint(f[2], 10, 8)
		paced(c, io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size))
	}
}

// paced copies src to w a chunk at a time, with a pause between chunks.
func paced(w io.Writer, src io.Reader) error {
	buf := make([]byte, transferChunk)
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			time.Sleep(transferPause)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// load is the client's workload.
type load struct {
	t      *testing.T
	client *testbed.Host
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	exchanges, transfers, refused atomic.Int64
	perFlow                       [flows4 + flows6]atomic.Int64 // exchanges by flow

	mu      sync.Mutex
	errs    []string
	servers map[string]int  // flows per real server
	addrs   map[string]bool // the long-lived connections' client ends, ADDR:PORT
}

func startLoad(t *testing.T, client *testbed.Host) *load {
	l := &load{t: t, client: client, stop: make(chan struct{}), servers: map[string]int{}, addrs: map[string]bool{}}
	for i := range flows4 + flows6 {
		vip := lab.ECMPVIP
		if i >= flows4 {
			vip = lab.ECMPVIP6
		}
		l.wg.Add(1)
		go l.echo(i, vip)
	}
	for i, vip := range []string{lab.ECMPVIP, lab.ECMPVIP, lab.ECMPVIP6} {
		l.wg.Add(1)
		go l.transferLoop(i, vip)
	}
	return l
}

func (l *load) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, args...))
}

// dial connects to vip, trying again (five times at most) when the
// attempt is refused: a director whose servers all went to weight 0
// answers a SYN with "port unreachable" until the router has moved its
// flows, a few milliseconds. Connections once established must not fail.
func (l *load) dial(vip string) (net.Conn, error) {
	var err error
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var c net.Conn
		c, err = l.client.Dial(ctx, "tcp", net.JoinHostPort(vip, port))
		cancel()
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		l.refused.Add(1)
		time.Sleep(200 * time.Millisecond)
	}
	return nil, err
}

// echo runs one long-lived connection: a line every echoEvery, each
// answered by the same server.
func (l *load) echo(id int, vip string) {
	defer l.wg.Done()
	c, err := l.dial(vip)
	if err != nil {
		l.fail("flow %d: connect: %v", id, err)
		return
	}
	defer c.Close()
	l.mu.Lock()
	l.addrs[c.LocalAddr().(*net.TCPAddr).AddrPort().String()] = true
	l.mu.Unlock()
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, "echo\n"); err != nil {
		l.fail("flow %d: %v", id, err)
		return
	}
	tick := time.NewTicker(echoEvery)
	defer tick.Stop()
	server := ""
	for seq := 0; ; seq++ {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		msg := fmt.Sprintf("flow%d-%d", id, seq)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			l.fail("flow %d (%s), exchange %d: send: %v", id, server, seq, err)
			return
		}
		line, err := r.ReadString('\n')
		if err != nil {
			l.fail("flow %d (%s), exchange %d: %v", id, server, seq, err)
			return
		}
		name, got, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch {
		case got != msg:
			l.fail("flow %d, exchange %d: answer %q", id, seq, line)
			return
		case server == "":
			server = name
			l.mu.Lock()
			l.servers[name]++
			l.mu.Unlock()
		case name != server:
			l.fail("flow %d, exchange %d: answered by %s, not %s", id, seq, name, server)
			return
		}
		l.exchanges.Add(1)
		l.perFlow[id].Add(1)
	}
}

// transferLoop runs transfers one after the other, uploads and downloads
// in turn, until stop.
func (l *load) transferLoop(id int, vip string) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		var err error
		if i%2 == 0 {
			err = l.upload(vip, byte(id))
		} else {
			err = l.download(vip, byte(id))
		}
		if err != nil {
			l.fail("transfer loop %d, transfer %d (to %s): %v", id, i, vip, err)
			return
		}
		l.transfers.Add(1)
	}
}

func (l *load) upload(vip string, seed byte) error {
	c, err := l.dial(vip)
	if err != nil {
		return fmt.Errorf("upload: connect: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(c, "up %d\n", transferSize); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	want := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{seed}), transferSize), want)
	if err := paced(c, src); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("upload: the server's answer: %w", err)
	}
	if w := hex.EncodeToString(want.Sum(nil)); strings.TrimSpace(got) != w {
		return fmt.Errorf("upload: the server read %q, want %s", got, w)
	}
	return nil
}

func (l *load) download(vip string, seed byte) error {
	c, err := l.dial(vip)
	if err != nil {
		return fmt.Errorf("download: connect: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(c, "down %d %d\n", transferSize, seed); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	got, want := sha256.New(), sha256.New()
	n, err := io.Copy(got, c)
	if err != nil {
		return fmt.Errorf("download: after %d bytes: %w", n, err)
	}
	io.CopyN(want, rand.NewChaCha8([32]byte{seed}), transferSize)
	if n != transferSize || hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
		return fmt.Errorf("download: %d bytes, intact %v", n, hex.EncodeToString(got.Sum(nil)) == hex.EncodeToString(want.Sum(nil)))
	}
	return nil
}

// progress lets the workload run for d and checks that it went on: no
// failure, and every flow made an exchange since the start (waiting up to
// 10 s more for one held up by retransmissions: a flow that lost packets
// while its path changed retries after 0.2 s, 0.6 s, 1.4 s, 3 s, 6.2 s).
func (l *load) progress(d time.Duration) {
	l.t.Helper()
	var before [flows4 + flows6]int64
	for i := range l.perFlow {
		before[i] = l.perFlow[i].Load()
	}
	time.Sleep(d)
	for i := range l.perFlow {
		for deadline := time.Now().Add(10 * time.Second); l.perFlow[i].Load() == before[i]; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				l.check()
				l.t.Fatalf("flow %d made no exchange in %v", i, d+10*time.Second)
			}
		}
	}
	l.check()
}

func (l *load) check() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		l.t.Fatalf("%d failures, first ones:\n%s", len(l.errs), strings.Join(l.errs[:min(len(l.errs), 10)], "\n"))
	}
}

// finish stops the workload, waits for it and checks it.
func (l *load) finish() {
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
	})
	l.check()
}

// flowAddrs returns the long-lived connections' client ends.
func (l *load) flowAddrs() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.addrs)
}

func (l *load) perServer() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.servers
}
