package director_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"uvs/lab"
	"uvs/testbed"
)

// The end-to-end tests build the LVS-NAT lab's topology in namespaces, run
// the real `director` binary in the director's namespace, and talk through
// it with real sockets, once per packet I/O backend.

var binary string // the director binary built for the tests

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // the tests skip themselves
		}
		bin, remove, err := lab.BuildDirector("../cmd/director")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer remove()
		binary = bin
		return m.Run()
	}()
	os.Exit(code)
}

// bulkSize is what the bulk server sends: 64 MiB.
const bulkSize = 64 << 20

// env is one topology with a running director and the real servers'
// services.
type env struct {
	t   *testing.T
	n   *lab.NATNet
	d   *lab.Director
	dir string
	io  string
}

func newEnv(t *testing.T, io string) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	n, err := lab.BuildNAT("uvse2e", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	e := &env{t: t, n: n, dir: t.TempDir(), io: io}
	// The tutorial's first step: IP forwarding on. The director must keep
	// the kernel out of balanced traffic all the same.
	if err := n.Director.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if err := n.Director.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	for i, rs := range n.RS {
		name := fmt.Sprintf("rs%d", i+1)
		e.serveHTTP(rs, ":80", name)
		e.serveHTTP(rs, ":8080", name+"-8080")
		pc, err := rs.ListenPacket("udp", ":53")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(testbed.ServeUDPEcho(pc, name+" "))
		e.serveBulk(rs, ":9000")
		e.serveEcho(rs, ":7000", name)
	}
	return e
}

func (e *env) start(extra ...string) {
	e.t.Helper()
	e.d = startDirector(e.t, e.n.Director, e.dir, append([]string{"--io", e.io}, extra...)...)
}

// startDirector runs the director in h until the test ends, and shows
// its log if the test failed.
func startDirector(t *testing.T, h *testbed.Host, dir string, args ...string) *lab.Director {
	t.Helper()
	d, err := lab.StartDirector(h, binary, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("director stop: %v", err)
		}
		if t.Failed() {
			t.Logf("director log:\n%s", d.Log())
		}
	})
	return d
}

// ipvsadm runs a command that must succeed.
func (e *env) ipvsadm(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code, err := e.d.Ipvsadm(args...)
	if err != nil || code != 0 {
		t.Fatalf("ipvsadm %s: code %d err %v\n%s%s", strings.Join(args, " "), code, err, out, errs)
	}
	return out
}

func (e *env) serveHTTP(h *testbed.Host, addr, body string) {
	for _, network := range []string{"tcp4", "tcp6"} {
		l, err := h.Listen(network, addr)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(testbed.ServeHTTP(l, body))
	}
}

// serveBulk sends bulkSize bytes of a fixed pseudo-random stream to each
// client, then closes.
func (e *env) serveBulk(h *testbed.Host, addr string) {
	e.serve(h, addr, func(c net.Conn) {
		w := bufio.NewWriterSize(c, 1<<16)
		r := rand.NewChaCha8([32]byte{1})
		buf := make([]byte, 1<<16)
		for sent := 0; sent < bulkSize; sent += len(buf) {
			r.Read(buf)
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
		w.Flush()
	})
}

// serveEcho answers each line with name + ": " + the line.
func (e *env) serveEcho(h *testbed.Host, addr, name string) {
	e.serve(h, addr, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := fmt.Fprintf(c, "%s: %s\n", name, sc.Text()); err != nil {
				return
			}
		}
	})
}

func (e *env) serve(h *testbed.Host, addr string, fn func(net.Conn)) {
	for _, network := range []string{"tcp4", "tcp6"} {
		l, err := h.Listen(network, addr)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(60 * time.Second))
					fn(c)
				}()
			}
		}()
	}
}

// get fetches url from the client and returns the body and the client
// address the server saw.
func (e *env) get(url string) (body, seen string, err error) {
	hc := e.n.Client.HTTPClient()
	hc.Timeout = 5 * time.Second
	resp, err := hc.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), resp.Header.Get("X-Client-Addr"), err
}

func (e *env) dial(addr string) net.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.n.Client.Dial(ctx, "tcp", addr)
	if err != nil {
		e.t.Fatalf("dial %s: %v", addr, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// echo sends a line on c and returns the answer.
func echo(c net.Conn, r *bufio.Reader, line string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return strings.TrimSpace(s), err
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// sniffFrom counts the IPv4 packets that arrive at h with a source in
// prefix, until the returned function is called.
func sniffFrom(t *testing.T, h *testbed.Host, prefix netip.Prefix) func() int {
	t.Helper()
	var fd int
	err := h.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for !stop.Load() {
			k, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || k < 20 {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if prefix.Contains(netip.AddrFrom4([4]byte(buf[12:16]))) {
				n.Add(1)
			}
		}
	}()
	return func() int {
		stop.Store(true)
		<-done
		unix.Close(fd)
		return int(n.Load())
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// snmp reads one counter of /proc/net/snmp inside h ("Tcp", "OutRsts").
func snmp(t *testing.T, h *testbed.Host, proto, field string) int64 {
	t.Helper()
	out, err := h.Exec("cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != proto+":" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == field && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	t.Fatalf("no %s %s in /proc/net/snmp", proto, field)
	return 0
}

func TestNAT(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) { testNAT(t, mode) })
	}
	// The default for afpacket is affine workers (every worker reads every
	// port; the fanout programs keep each connection on one of them);
	// workers per port are still there to choose.
	t.Run("afpacket-per-port", func(t *testing.T) { testNAT(t, "afpacket", "--afpacket-affine=false") })
}

func testNAT(t *testing.T, mode string, extra ...string) {
	e := newEnv(t, mode)
	e.start(extra...)
	vip := lab.DirOuterIP

	t.Run("rr alternates and servers see the client", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", vip+":80", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS1IP, "-m")
		e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS2IP, "-m")
		defer e.ipvsadm(t, "-D", "-t", vip+":80")
		rstD := snmp(t, e.n.Director, "Tcp", "OutRsts")
		leaks := sniffFrom(t, e.n.Client, netip.MustParsePrefix("198.18.1.0/24"))
		fwd := snmp(t, e.n.Director, "Ip", "ForwDatagrams")
		var got []string
		for i := 0; i < 6; i++ {
			body, seen, err := e.get("http://" + vip + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			got = append(got, body)
			if host, _, _ := net.SplitHostPort(seen); host != lab.ClientIP {
				t.Errorf("real server saw client %q, want %s", seen, lab.ClientIP)
			}
		}
		// rr, newest server first: rs2 (added last) then rs1.
		want := []string{"rs2", "rs1", "rs2", "rs1", "rs2", "rs1"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("answers %v, want %v", got, want)
		}
		// The kernel kept out: no resets from the director's stack (a
		// SYN for its own address), no packet from a real server's address
		// reached the client (an un-NATed reply), and with AF_PACKET
		// nothing forwarded by the kernel.
		if n := snmp(t, e.n.Director, "Tcp", "OutRsts"); n != rstD {
			t.Errorf("director kernel sent %d resets", n-rstD)
		}
		if n := leaks(); n != 0 {
			t.Errorf("%d packets from a real server's address reached the client un-NATed", n)
		}
		if mode == "afpacket" {
			if n := snmp(t, e.n.Director, "Ip", "ForwDatagrams"); n != fwd {
				t.Errorf("director kernel forwarded %d datagrams with ip_forward on", n-fwd)
			}
		}
		out := e.ipvsadm(t, "-L", "-n", "--stats", "--exact", "-t", vip+":80")
		if !regexp.MustCompile(`(?m)^TCP  198\.18\.0\.1:80 +6 `).MatchString(out) {
			t.Errorf("stats do not count 6 connections:\n%s", out)
		}
	})

	t.Run("bulk 64 MiB intact", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", vip+":9000", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", vip+":9000", "-r", lab.RS1IP, "-m")
		defer e.ipvsadm(t, "-D", "-t", vip+":9000")
		c := e.dial(hostPort(vip, 9000))
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil || n != bulkSize {
			t.Fatalf("received %d bytes, err %v", n, err)
		}
		want := sha256.New()
		r := rand.NewChaCha8([32]byte{1})
		io.CopyN(want, r, bulkSize)
		if hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
			t.Fatal("bulk transfer corrupted")
		}
	})

	t.Run("udp", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-u", vip+":53", "-s", "rr")
		e.ipvsadm(t, "-a", "-u", vip+":53", "-r", lab.RS1IP, "-m")
		e.ipvsadm(t, "-a", "-u", vip+":53", "-r", lab.RS2IP, "-m")
		defer e.ipvsadm(t, "-D", "-u", vip+":53")
		seen := map[string]bool{}
		for i := 0; i < 4; i++ {
			ans, err := udpAsk(e.n.Client, hostPort(vip, 53), "hello")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(ans, "from "+lab.ClientIP) && !strings.Contains(ans, "from "+lab.ClientIP+":") {
				t.Errorf("answer %q does not show the client's address", ans)
			}
			seen[strings.Fields(ans)[0]] = true
		}
		if !seen["rs1"] || !seen["rs2"] {
			t.Errorf("UDP answers came from %v, want both servers", seen)
		}
	})

	t.Run("port mapping", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", vip+":80", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS1IP+":8080", "-m")
		defer e.ipvsadm(t, "-D", "-t", vip+":80")
		body, _, err := e.get("http://" + vip + "/")
		if err != nil || body != "rs1-8080" {
			t.Fatalf("got %q, %v; want rs1-8080", body, err)
		}
	})

	t.Run("weight 0 and edits keep open connections", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", vip+":7000", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", vip+":7000", "-r", lab.RS1IP, "-m")
		defer e.ipvsadm(t, "-D", "-t", vip+":7000")
		c := e.dial(hostPort(vip, 7000))
		r := bufio.NewReader(c)
		if ans, err := echo(c, r, "one"); err != nil || ans != "rs1: one" {
			t.Fatalf("echo: %q %v", ans, err)
		}
		e.ipvsadm(t, "-e", "-t", vip+":7000", "-r", lab.RS1IP, "-m", "-w", "0")
		if ans, err := echo(c, r, "two"); err != nil || ans != "rs1: two" {
			t.Fatalf("after weight 0: %q %v", ans, err)
		}
		// No new connection goes to a quiesced server: with no other
		// server, the client is refused at once.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if nc, err := e.n.Client.Dial(ctx, "tcp", hostPort(vip, 7000)); err == nil {
			nc.Close()
			t.Fatal("new connection accepted by a weight-0 server")
		}
		e.ipvsadm(t, "-a", "-t", vip+":7000", "-r", lab.RS2IP, "-m")
		e.ipvsadm(t, "-E", "-t", vip+":7000", "-s", "wrr")
		if ans, err := echo(c, r, "three"); err != nil || ans != "rs1: three" {
			t.Fatalf("after edits: %q %v", ans, err)
		}
		c2 := e.dial(hostPort(vip, 7000))
		if ans, err := echo(c2, bufio.NewReader(c2), "new"); err != nil || ans != "rs2: new" {
			t.Fatalf("new connection: %q %v", ans, err)
		}
		out := e.ipvsadm(t, "-L", "-n", "-t", vip+":7000")
		if !strings.Contains(out, rsLine(lab.RS1IP+":7000", 0, 1, 0)) {
			t.Errorf("listing does not show the open connection on the quiesced server:\n%s", out)
		}
	})

	t.Run("no server fails fast", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", vip+":81", "-s", "rr")
		defer e.ipvsadm(t, "-D", "-t", vip+":81")
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := e.n.Client.Dial(ctx, "tcp", hostPort(vip, 81))
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial: %v, want connection refused", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refusal took %v", d)
		}
	})

	t.Run("icmp port unreachable from a real server", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-u", vip+":54", "-s", "rr")
		e.ipvsadm(t, "-a", "-u", vip+":54", "-r", lab.RS1IP, "-m") // nothing listens on :54
		defer e.ipvsadm(t, "-D", "-u", vip+":54")
		_, err := udpAsk(e.n.Client, hostPort(vip, 54), "anyone?")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("got %v, want connection refused (translated ICMP)", err)
		}
	})

	t.Run("ipv6", func(t *testing.T) {
		v6 := "[" + lab.DirOuterIP6 + "]"
		e.ipvsadm(t, "-A", "-t", v6+":80", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", v6+":80", "-r", "["+lab.RS1IP6+"]:80", "-m")
		e.ipvsadm(t, "-a", "-t", v6+":80", "-r", "["+lab.RS2IP6+"]:80", "-m")
		defer e.ipvsadm(t, "-D", "-t", v6+":80")
		var got []string
		for i := 0; i < 4; i++ {
			body, seen, err := e.get("http://" + v6 + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			got = append(got, body)
			if host, _, _ := net.SplitHostPort(seen); host != lab.ClientIP6 {
				t.Errorf("real server saw %q, want %s", seen, lab.ClientIP6)
			}
		}
		if strings.Join(got, ",") != "rs2,rs1,rs2,rs1" {
			t.Errorf("answers %v", got)
		}
		e.ipvsadm(t, "-A", "-t", v6+":9000", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", v6+":9000", "-r", "["+lab.RS2IP6+"]:9000", "-m")
		defer e.ipvsadm(t, "-D", "-t", v6+":9000")
		c := e.dial(hostPort(lab.DirOuterIP6, 9000))
		c.SetDeadline(time.Now().Add(60 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != bulkSize {
			t.Fatalf("IPv6 bulk: %d bytes, %v", n, err)
		}
		// A VIP that is no address of the host: the director answers
		// neighbour solicitations for it (AF_PACKET) or adds it (TUN).
		extra := "[2001:2::100]"
		e.ipvsadm(t, "-A", "-t", extra+":80", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", extra+":80", "-r", "["+lab.RS1IP6+"]:80", "-m")
		defer e.ipvsadm(t, "-D", "-t", extra+":80")
		if body, _, err := e.get("http://" + extra + "/"); err != nil || body != "rs1" {
			t.Errorf("IPv6 extra VIP: %q %v", body, err)
		}
		e.ipvsadm(t, "-A", "-u", v6+":53", "-s", "rr")
		e.ipvsadm(t, "-a", "-u", v6+":53", "-r", "["+lab.RS1IP6+"]:53", "-m")
		defer e.ipvsadm(t, "-D", "-u", v6+":53")
		if ans, err := udpAsk(e.n.Client, hostPort(lab.DirOuterIP6, 53), "hi6"); err != nil || !strings.HasPrefix(ans, "rs1 hi6 from ["+lab.ClientIP6+"]") {
			t.Errorf("IPv6 UDP: %q %v", ans, err)
		}
		e.ipvsadm(t, "-A", "-t", v6+":81", "-s", "rr")
		defer e.ipvsadm(t, "-D", "-t", v6+":81")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := e.n.Client.Dial(ctx, "tcp", hostPort(lab.DirOuterIP6, 81)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("IPv6 no-server dial: %v, want refused", err)
		}
	})

	if mode != "afpacket" {
		return
	}
	// A socket whose interface goes down reports it once (ENETDOWN) and
	// comes back with the interface: no worker may stop there.
	t.Run("interfaces going down and up stop no worker", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", vip+":80", "-s", "rr")
		e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS1IP, "-m")
		e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS2IP, "-m")
		defer e.ipvsadm(t, "-D", "-t", vip+":80")
		for _, ifn := range []string{"eth0", "eth1"} {
			for _, st := range []string{"down", "up"} {
				if out, err := e.n.Director.Exec("ip", "link", "set", ifn, st); err != nil {
					t.Fatal(out, err)
				}
			}
		}
		waitFor(t, func() bool { _, _, err := e.get("http://" + vip + "/"); return err == nil })
		seen := map[string]bool{}
		for i := 0; i < 8; i++ {
			body, _, err := e.get("http://" + vip + "/")
			if err != nil {
				t.Fatalf("request %d after the interfaces came back: %v", i, err)
			}
			seen[body] = true
		}
		if !seen["rs1"] || !seen["rs2"] {
			t.Errorf("answers after the interfaces came back: %v, want rs1 and rs2", seen)
		}
		if strings.Contains(e.d.Log(), "worker stops") {
			t.Errorf("a worker stopped:\n%s", e.d.Log())
		}
		for _, want := range []string{"served interface down", "served interface up"} {
			if n := strings.Count(e.d.Log(), want); n < 2 {
				t.Errorf("%q logged %d times for two interfaces:\n%s", want, n, e.d.Log())
			}
		}
	})
}

// TestReload checks the rules file: loaded at start, reloaded on SIGHUP
// without breaking an open connection whose server stays, and a bad file
// changes nothing.
func TestReload(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			rules := filepath.Join(e.dir, "rules")
			vip := lab.DirOuterIP + ":7000"
			write := func(s string) {
				if err := os.WriteFile(rules, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("-A -t " + vip + " -s rr\n-a -t " + vip + " -r " + lab.RS1IP + ":7000 -m -w 1\n")
			e.start("--rules", rules)
			c := e.dial(vip)
			r := bufio.NewReader(c)
			if ans, err := echo(c, r, "a"); err != nil || ans != "rs1: a" {
				t.Fatalf("echo: %q %v", ans, err)
			}
			// Reload with a second server and another scheduler.
			write("-A -t " + vip + " -s wrr\n-a -t " + vip + " -r " + lab.RS1IP + ":7000 -m -w 1\n-a -t " + vip + " -r " + lab.RS2IP + ":7000 -m -w 3\n")
			e.d.Signal(syscall.SIGHUP)
			waitFor(t, func() bool { return strings.Contains(e.ipvsadm(t, "-L", "-n"), "198.18.1.3:7000") })
			if ans, err := echo(c, r, "b"); err != nil || ans != "rs1: b" {
				t.Fatalf("after reload: %q %v", ans, err)
			}
			out := e.ipvsadm(t, "-L", "-n")
			if !strings.Contains(out, rsLine(lab.RS1IP+":7000", 1, 1, 0)) {
				t.Errorf("reload lost the connection count:\n%s", out)
			}
			// A bad file is refused whole.
			write("-A -t " + lab.DirOuterIP + ":7001 -s rr\n-a -t " + vip + " -r 198.18.1.300 -m\n")
			e.d.Signal(syscall.SIGHUP)
			time.Sleep(300 * time.Millisecond)
			if now := e.ipvsadm(t, "-L", "-n"); now != out {
				t.Errorf("bad rules file half-applied:\n%s", now)
			}
			if ans, err := echo(c, r, "c"); err != nil || ans != "rs1: c" {
				t.Fatalf("after bad reload: %q %v", ans, err)
			}
		})
	}
}

// rsLine is a NAT real server's line in ipvsadm -L -n.
func rsLine(addr string, weight, active, inactive int) string {
	return fmt.Sprintf("  -> %-28s %-7s %-6d %-10d %-10d", addr, "Masq", weight, active, inactive)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 5 s")
}

// udpAsk sends one datagram from a new socket and waits for the answer.
func udpAsk(h *testbed.Host, addr, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.Dial(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// hostState is what the director may change in its namespace, as text.
func hostState(t *testing.T, h *testbed.Host) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-4", "rule", "show"}, {"ip", "-6", "rule", "show"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "-br", "addr"}, {"ip", "-br", "link"},
		{"cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding", "/proc/sys/net/ipv4/conf/all/rp_filter",
			"/proc/sys/net/ipv4/tcp_early_demux", "/proc/sys/net/ipv4/udp_early_demux"},
	} {
		out, err := h.Exec(args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		// Kernel-made IPv6 link-local routes of the TUN come and go with it.
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(args, " "), out)
	}
	err := h.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTables()
		if err != nil {
			return err
		}
		for _, tb := range tables {
			fmt.Fprintf(&b, "nft table %v %s\n", tb.Family, tb.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestStopRestoresHost checks that everything the director changes on the
// host while it runs is undone when it stops.
func TestStopRestoresHost(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			h := e.n.Director
			for _, kv := range [][2]string{{"net.ipv4.ip_forward", "0"}, {"net.ipv4.conf.all.rp_filter", "1"}} {
				if err := h.Sysctl(kv[0], kv[1]); err != nil {
					t.Fatal(err)
				}
			}
			before := hostState(t, h)
			e.start()
			// A VIP that is not a host address, a NAT server, and IPv6.
			e.ipvsadm(t, "-A", "-t", "198.18.0.100:80", "-s", "rr")
			e.ipvsadm(t, "-a", "-t", "198.18.0.100:80", "-r", lab.RS1IP, "-m")
			e.ipvsadm(t, "-A", "-u", "["+lab.DirOuterIP6+"]:53", "-s", "rr")
			e.ipvsadm(t, "-a", "-u", "["+lab.DirOuterIP6+"]:53", "-r", "["+lab.RS1IP6+"]:53", "-m")
			// The non-local VIP works (the director answers ARP for it, or
			// adds it to the host with the TUN backend).
			if body, _, err := e.get("http://198.18.0.100/"); err != nil || body != "rs1" {
				t.Fatalf("extra VIP: %q %v", body, err)
			}
			during := hostState(t, h)
			if during == before {
				t.Fatal("no host change while running: the test would not see a leak")
			}
			if err := e.d.Stop(); err != nil {
				t.Fatal(err)
			}
			after := hostState(t, h)
			if after != before {
				t.Errorf("host state not restored.\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// TestPersistence: a persistent service sends a client back to the same
// server while its template lives, and lists the template.
func TestPersistence(t *testing.T) {
	e := newEnv(t, "afpacket")
	e.start()
	vip := lab.DirOuterIP + ":80"
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr", "-p", "60")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")
	var got []string
	for i := 0; i < 4; i++ {
		body, _, err := e.get("http://" + vip + "/")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, body)
	}
	if strings.Join(got, ",") != "rs2,rs2,rs2,rs2" {
		t.Errorf("persistent answers %v, want rs2 every time", got)
	}
	out := e.ipvsadm(t, "-L", "-n", "--persistent-conn")
	want := fmt.Sprintf("  -> %-28s %-9d %-11d", lab.RS2IP+":80", 1, 1)
	if !strings.Contains(out, want) {
		t.Errorf("--persistent-conn does not show the template on rs2 (%q):\n%s", want, out)
	}
	conns := e.ipvsadm(t, "-L", "-n", "-c")
	if !regexp.MustCompile(`TCP 0[01]:[0-9]{2}  ASSURED     198\.18\.0\.2:0 +198\.18\.0\.1:80 +198\.18\.1\.3:80`).MatchString(conns) {
		t.Errorf("no template in the connection listing:\n%s", conns)
	}
}

// TestInterfaceRemoved: a served interface that is deleted is logged,
// saying what to do (its sockets cannot follow a new one of that name).
func TestInterfaceRemoved(t *testing.T) {
	e := newEnv(t, "afpacket")
	e.start()
	if out, err := e.n.Director.Exec("ip", "link", "del", "eth0"); err != nil {
		t.Fatal(out, err)
	}
	waitFor(t, func() bool { return strings.Contains(e.d.Log(), "served interface removed") })
	if !strings.Contains(e.d.Log(), "name=eth0") {
		t.Errorf("the log does not name the interface:\n%s", e.d.Log())
	}
}

// TestPortZeroService: a persistent service on port 0 takes every port of
// its VIP, and a real server on port 0 gets the port the client asked
// for; the host's rules keep the kernel out of those too (no reset from
// the director's stack, no un-NATed reply), on both backends.
func TestPortZeroService(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			e.start()
			vip := lab.DirOuterIP
			e.ipvsadm(t, "-A", "-t", vip+":0", "-s", "rr", "-p", "60")
			e.ipvsadm(t, "-a", "-t", vip+":0", "-r", lab.RS1IP, "-m")
			rstD := snmp(t, e.n.Director, "Tcp", "OutRsts")
			leaks := sniffFrom(t, e.n.Client, netip.MustParsePrefix("198.18.1.0/24"))
			for _, c := range []struct{ port, want string }{{"80", "rs1"}, {"8080", "rs1-8080"}, {"80", "rs1"}} {
				body, _, err := e.get("http://" + vip + ":" + c.port + "/")
				if err != nil || body != c.want {
					t.Errorf("port %s: %q, %v; want %q", c.port, body, err, c.want)
				}
			}
			if n := snmp(t, e.n.Director, "Tcp", "OutRsts"); n != rstD {
				t.Errorf("director kernel sent %d resets", n-rstD)
			}
			if n := leaks(); n != 0 {
				t.Errorf("%d packets from a real server's address reached the client un-NATed", n)
			}
		})
	}
}

// TestRefusals: what this director cannot do yet is refused with a clear
// message and changes nothing; ipvsadm's own errors keep their wording.
func TestRefusals(t *testing.T) {
	e := newEnv(t, "afpacket")
	e.start()
	vip := lab.DirOuterIP + ":80"
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	before := e.ipvsadm(t, "-S", "-n")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-A", "-t", lab.DirOuterIP + ":81", "-s", "rr", "-g"}, 2, "Illegal 'forwarding-method' option with the 'add-service' command"},
		{[]string{"-A", "-t", vip, "-s", "rr"}, 255, "Service already exists"},
		{[]string{"-A", "-t", lab.DirOuterIP + ":82", "-s", "nosuch"}, 255, "Scheduler or persistence engine not found"},
	} {
		out, errs, code, err := e.d.Ipvsadm(c.args...)
		if err != nil || code != c.code || !strings.Contains(errs, c.want) || out != "" {
			t.Errorf("ipvsadm %s: code %d (want %d), stderr %q (want %q), stdout %q, err %v",
				strings.Join(c.args, " "), code, c.code, errs, c.want, out, err)
		}
	}
	if after := e.ipvsadm(t, "-S", "-n"); after != before {
		t.Errorf("a refused command changed the table:\n%s\nthen\n%s", before, after)
	}
	// The classic name works too, through a symlink.
	link := filepath.Join(e.dir, "ipvsadm")
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	cmd := e.n.Director.Command(link, "-S", "-n")
	cmd.Env = append(os.Environ(), "UVS_SOCKET="+e.d.Socket)
	out, err := cmd.Output()
	if err != nil || string(out) != before {
		t.Errorf("ipvsadm through a symlink: %q, %v; want %q", out, err, before)
	}
}

// TestMetrics scrapes --metrics after traffic: node_exporter's IPVS names
// with the real counts.
func TestMetrics(t *testing.T) {
	e := newEnv(t, "afpacket")
	e.start("--metrics", lab.DirOuterIP+":9100") // its own address, over its loopback
	vip := lab.DirOuterIP + ":80"
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m", "-w", "3")
	for i := 0; i < 3; i++ {
		if _, _, err := e.get("http://" + vip + "/"); err != nil {
			t.Fatal(err)
		}
	}
	b := e.scrape(t)
	labels := `local_address="198.18.0.1",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.2",remote_port="80"`
	for _, want := range []string{
		"node_ipvs_connections_total 3\n",
		"node_ipvs_backend_weight{" + labels + "} 3\n",
		"node_ipvs_backend_connections_inactive{" + labels + "} 3\n",
		"uvs_backend_connections_total{" + labels + "} 3\n",
		// Three light requests: no socket overflowed, no send failed.
		"uvs_dropped_packets_total{reason=\"socket_queue_full\"} 0\n",
		"uvs_dropped_packets_total{reason=\"send_failed\"} 0\n",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", b)
	}
}

// scrape fetches the metrics of a director started with --metrics on
// lab.DirOuterIP:9100 (its own address, over its loopback).
func (e *env) scrape(t *testing.T) string {
	t.Helper()
	return scrapeFrom(t, e.n.Director, lab.DirOuterIP+":9100")
}

// TestRestartAfterKill: a director killed outright leaves its filter
// behind (nothing runs to remove it); the next start removes it, serves,
// and leaves the host as it found it.
func TestRestartAfterKill(t *testing.T) {
	for _, io := range []string{"afpacket", "tun"} {
		t.Run(io, func(t *testing.T) { testRestartAfterKill(t, io) })
	}
}

func testRestartAfterKill(t *testing.T, io string) {
	e := newEnv(t, io)
	before := hostState(t, e.n.Director)
	first, err := lab.StartDirector(e.n.Director, binary, e.dir, "--io", io)
	if err != nil {
		t.Fatal(err)
	}
	e.d = first
	vip := lab.DirOuterIP + ":80"
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
	// And a VIP that is not an address of the host (with TUN, the
	// director adds it).
	e.ipvsadm(t, "-A", "-t", "198.18.0.100:80", "-s", "rr")
	e.ipvsadm(t, "-a", "-t", "198.18.0.100:80", "-r", lab.RS1IP, "-m")
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Stop() // reaps it
	d, err := lab.StartDirector(e.n.Director, binary, e.dir, "--io", io)
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")
	if body, _, err := e.get("http://" + vip + "/"); err != nil || body != "rs2" {
		t.Fatalf("after restart: %q %v", body, err)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if after := hostState(t, e.n.Director); after != before {
		t.Errorf("host not restored after a restart.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestTUNLocalTimeWait: a VIP that a local server used before leaves
// TIME_WAIT sockets in the director's host; a client reusing its port must
// still get through the TUN backend at once (early demux would tie the
// SYN to the local socket, and the kernel would not forward it).
func TestTUNLocalTimeWait(t *testing.T) {
	e := newEnv(t, "tun")
	e.start()
	const port = 8081
	vip := hostPort(lab.DirOuterIP, port)
	l, err := e.n.Director.Listen("tcp4", vip)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close() // the local server closes first: TIME_WAIT here
		}
	}()
	local := &net.TCPAddr{IP: net.ParseIP(lab.ClientIP), Port: 42424}
	dial := func() (time.Duration, error) {
		var c net.Conn
		start := time.Now()
		err := e.n.Client.Do(func() error {
			d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
			var err error
			c, err = d.Dial("tcp4", vip)
			return err
		})
		if err != nil {
			return 0, err
		}
		took := time.Since(start)
		c.SetDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, c) // the local server's close
		c.Close()
		return took, nil
	}
	if _, err := dial(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP+":80", "-m")
	time.Sleep(100 * time.Millisecond)
	took, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if took > 500*time.Millisecond {
		t.Errorf("connection through the director took %v: the SYN was lost", took)
	}
}

// Thousands of services load, and the host's rules stay a handful: the
// ingress chains match through sets, filled in several netlink batches
// (one rule per service and real server no longer fit one past a few
// hundred services). Every change swaps in a new generation of sets and
// deletes the old one.
func TestManyServices(t *testing.T) {
	const services = 1000
	e := newEnv(t, "afpacket")
	var rules strings.Builder
	for i := range services {
		vip := fmt.Sprintf("198.18.%d.%d", 2+i/250, i%250+1)
		fmt.Fprintf(&rules, "-A -t %s:80 -s rr\n", vip)
		for r := range 2 {
			fmt.Fprintf(&rules, "-a -t %s:80 -r 198.18.1.%d:%d -m -w 1\n", vip, 100+(2*i+r)%150, 8000+i)
		}
	}
	file := filepath.Join(e.dir, "many.rules")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start("--rules", file)
	if n := strings.Count(e.ipvsadm(t, "-L", "-n"), "TCP "); n != services {
		t.Fatalf("%d services listed, want %d", n, services)
	}
	vip := lab.DirOuterIP
	e.ipvsadm(t, "-A", "-t", vip+":80", "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS1IP, "-m")
	if body, _, err := e.get("http://" + vip + "/"); err != nil || body != "rs1" {
		t.Fatalf("GET through the director: %q, %v", body, err)
	}
	out, err := e.n.Director.Exec("nft", "list", "chain", "netdev", "uvs", "in-eth0")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, " drop"); n == 0 || n > 30 {
		t.Errorf("%d drop rules in the ingress chain, want a handful:\n%s", n, out)
	}
	out, err = e.n.Director.Exec("nft", "list", "sets", "netdev")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "\tset "); n != 14 {
		t.Errorf("%d sets after three changes, want one generation of 14:\n%.2000s", n, out)
	}
}
