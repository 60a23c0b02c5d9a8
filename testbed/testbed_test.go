package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

const testPrefix = "uvstb"

// newBed makes a bed that is closed, and checked to be gone, when the test
// ends however it ends.
func newBed(t *testing.T) *Bed {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	b, err := New(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := namespaces(t, b.Prefix()); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
	})
	return b
}

// namespaces lists the named namespaces starting with prefix.
func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(nsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// net3 is client — router — server, dual stack:
//
//	client eth0 198.18.0.2/24 2001:2::2/64
//	router eth0 198.18.0.1/24 2001:2::1/64, eth1 198.18.1.1/24 2001:2:0:1::1/64
//	server eth0 198.18.1.2/24 2001:2:0:1::2/64
type net3 struct{ client, router, server *Host }

func buildNet3(t *testing.T, b *Bed) net3 {
	t.Helper()
	var n net3
	var err error
	for _, p := range []struct {
		h    **Host
		name string
	}{{&n.client, "client"}, {&n.router, "router"}, {&n.server, "server"}} {
		*p.h, err = b.Host(p.name)
		must(t, err)
	}
	must(t, b.Link(n.client, "eth0", n.router, "eth0"))
	must(t, b.Link(n.router, "eth1", n.server, "eth0"))
	for _, a := range []struct {
		h          *Host
		ifname, ip string
	}{
		{n.client, "eth0", "198.18.0.2/24"}, {n.client, "eth0", "2001:2::2/64"},
		{n.router, "eth0", "198.18.0.1/24"}, {n.router, "eth0", "2001:2::1/64"},
		{n.router, "eth1", "198.18.1.1/24"}, {n.router, "eth1", "2001:2:0:1::1/64"},
		{n.server, "eth0", "198.18.1.2/24"}, {n.server, "eth0", "2001:2:0:1::2/64"},
	} {
		must(t, a.h.Addr(a.ifname, a.ip))
	}
	must(t, n.client.Route("default", "198.18.0.1"))
	must(t, n.client.Route("default", "2001:2::1"))
	must(t, n.server.Route("default", "198.18.1.1"))
	must(t, n.server.Route("default6", "2001:2:0:1::1"))
	return n
}

// exchange does one HTTP request and one UDP echo from c to the server at
// ip, and checks that the server saw c's own address each time.
func exchange(t *testing.T, c *Host, ip, clientIP string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+net.JoinHostPort(ip, "80")+"/", nil)
	must(t, err)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("GET from %s to %s: %v", c.Short, ip, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	if string(body) != "hello\n" {
		t.Errorf("GET %s: body %q, want %q", ip, body, "hello\n")
	}
	seen, _, err := net.SplitHostPort(resp.Header.Get(ClientAddrHeader))
	if err != nil || seen != clientIP {
		t.Errorf("GET %s: server saw client %q (%v), want %s", ip, resp.Header.Get(ClientAddrHeader), err, clientIP)
	}

	conn, err := c.Dial(ctx, "udp", net.JoinHostPort(ip, "7"))
	must(t, err)
	defer conn.Close()
	must(t, conn.SetDeadline(time.Now().Add(3*time.Second)))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatalf("udp write to %s: %v", ip, err)
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("udp echo from %s: %v", ip, err)
	}
	want := "echo: ping from " + conn.LocalAddr().String()
	if got := string(buf[:n]); got != want {
		t.Errorf("udp echo from %s: %q, want %q", ip, got, want)
	}
	if la, ok := conn.LocalAddr().(*net.UDPAddr); !ok || !la.IP.Equal(net.ParseIP(clientIP)) {
		t.Errorf("udp from %s: local address %v is not the client's %s", c.Short, conn.LocalAddr(), clientIP)
	}
}

// serve starts the HTTP server on port 80 and the UDP echo on port 7, both
// dual stack, in h.
func serve(t *testing.T, h *Host) {
	t.Helper()
	l, err := h.Listen("tcp", ":80")
	must(t, err)
	t.Cleanup(ServeHTTP(l, "hello"))
	pc, err := h.ListenPacket("udp", ":7")
	must(t, err)
	t.Cleanup(ServeUDPEcho(pc, "echo: "))
}

func TestRoutedExchange(t *testing.T) {
	b := newBed(t)
	n := buildNet3(t, b)
	serve(t, n.server)

	hostFwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	must(t, err)

	// Without forwarding on the router nothing gets across: the traffic
	// really goes through it.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if c, err := n.client.Dial(ctx, "tcp", "198.18.1.2:80"); err == nil {
		c.Close()
		t.Error("connected across the router before forwarding was on")
	}
	cancel()

	must(t, n.router.Forward())
	var inside []byte
	must(t, n.router.Do(func() error {
		var err error
		inside, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}))
	if strings.TrimSpace(string(inside)) != "1" {
		t.Errorf("router ip_forward = %q after Forward", inside)
	}
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(after) != string(hostFwd) {
		t.Errorf("host ip_forward changed from %q to %q", hostFwd, after)
	}

	t.Run("IPv4", func(t *testing.T) { exchange(t, n.client, "198.18.1.2", "198.18.0.2") })
	t.Run("IPv6", func(t *testing.T) { exchange(t, n.client, "2001:2:0:1::2", "2001:2::2") })
}

func TestBridge(t *testing.T) {
	b := newBed(t)
	sw, err := b.Host("sw")
	must(t, err)
	var hosts []*Host
	for _, name := range []string{"a", "b", "c"} {
		h, err := b.Host(name)
		must(t, err)
		hosts = append(hosts, h)
	}
	// Two calls: the second adds a port to the existing bridge.
	must(t, b.Bridge(sw, "br0", "eth0", hosts[0], hosts[1]))
	must(t, b.Bridge(sw, "br0", "eth0", hosts[2]))
	ips := []string{"198.18.2.1", "198.18.2.2", "198.18.2.3"}
	for i, h := range hosts {
		must(t, h.Addr("eth0", ips[i]+"/24"))
		must(t, h.Addr("eth0", "2001:2:0:2::"+string(rune('1'+i))+"/64"))
	}
	serve(t, hosts[1])
	serve(t, hosts[2])
	exchange(t, hosts[0], ips[1], ips[0])
	exchange(t, hosts[0], ips[2], ips[0])
	exchange(t, hosts[0], "2001:2:0:2::3", "2001:2:0:2::1")

	macs := map[string]bool{}
	for _, h := range hosts {
		m := h.MAC("eth0")
		if len(m) != 6 {
			t.Fatalf("%s: MAC(eth0) = %v", h.Short, m)
		}
		macs[m.String()] = true
		var seen net.HardwareAddr
		must(t, h.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err == nil {
				seen = ifi.HardwareAddr
			}
			return err
		}))
		if seen.String() != m.String() {
			t.Errorf("%s: MAC(eth0) = %v, inside the host eth0 has %v", h.Short, m, seen)
		}
	}
	if len(macs) != len(hosts) {
		t.Errorf("hosts share MAC addresses: %v", macs)
	}
	if m := hosts[0].MAC("nope0"); m != nil {
		t.Errorf("MAC of a missing interface = %v, want nil", m)
	}
}

func TestDoSwitchesAndRestores(t *testing.T) {
	b := newBed(t)
	h1, err := b.Host("one")
	must(t, err)
	h2, err := b.Host("two")
	must(t, err)
	must(t, b.Link(h1, "x1", h2, "y1"))

	names := func(h *Host) []string {
		var got []string
		must(t, h.Do(func() error {
			ifs, err := net.Interfaces()
			for _, i := range ifs {
				got = append(got, i.Name)
			}
			return err
		}))
		slices.Sort(got)
		return got
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := names(h1); !slices.Equal(got, []string{"lo", "x1"}) {
				t.Errorf("interfaces in one: %v", got)
			}
			if got := names(h2); !slices.Equal(got, []string{"lo", "y1"}) {
				t.Errorf("interfaces in two: %v", got)
			}
		}()
	}
	wg.Wait()

	// The netlink package's own functions work inside Do, as Host says.
	must(t, h1.Do(func() error {
		_, err := netlink.LinkByName("x1")
		return err
	}))

	// Every thread the runtime hands out afterwards is back in the
	// process's own namespace.
	want, err := nsIDByPath("/proc/self/ns/net")
	must(t, err)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			got, err := nsIDByPath("/proc/thread-self/ns/net")
			if err != nil || got != want {
				t.Errorf("a thread is left in namespace %v (%v), want %v", got, err, want)
			}
		}()
	}
	wg.Wait()

	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("panic in Do came back as %v, want boom", r)
			}
		}()
		_ = h1.Do(func() error { panic("boom") })
	}()
}

// TestCloseAfterFailure builds half a bed, starts a process in it, fails,
// and checks that the deferred Close leaves nothing behind.
func TestCloseAfterFailure(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8):", err)
	}
	b, err := New(testPrefix)
	must(t, err)
	var sleeper *exec.Cmd
	func() {
		defer func() { _ = recover() }()
		defer b.Close()
		a, err := b.Host("a")
		must(t, err)
		c, err := b.Host("c")
		must(t, err)
		must(t, b.Link(a, "eth0", c, "eth0"))
		if got := namespaces(t, b.Prefix()); len(got) != 2 {
			t.Errorf("namespaces while built: %v, want 2", got)
		}
		// ip netns exec finds the namespace and runs inside it.
		out, err := a.Exec("ip", "-o", "link", "show")
		must(t, err)
		if !strings.Contains(out, "eth0") || strings.Count(out, "\n") != 2 {
			t.Errorf("links seen by a command in a: %q", out)
		}
		sleeper = c.Command("sleep", "60")
		must(t, sleeper.Start())
		if err := b.Link(a, "much-too-long-name", c, "eth1"); err == nil {
			t.Error("Link accepted a 18-character interface name")
		}
		panic("test fails midway")
	}()

	if left := namespaces(t, b.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if sleeper != nil {
		done := make(chan error, 1)
		go func() { done <- sleeper.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				t.Error("sleep 60 exited cleanly; want killed")
			}
		case <-time.After(5 * time.Second):
			_ = sleeper.Process.Kill()
			t.Error("process started in the bed survived Close")
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Host("late"); err == nil {
		t.Error("Host on a closed bed succeeded")
	}
}

func TestCleanup(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8):", err)
	}
	b, err := New(testPrefix)
	must(t, err)
	defer b.Close()
	other := newBed(t)
	keep, err := other.Host("keep")
	must(t, err)

	h, err := b.Host("stale")
	must(t, err)
	// A process started outside this package, as a user of the lab would.
	cmd := exec.Command("ip", "netns", "exec", h.Name, "sleep", "60")
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// As if the bed's process had been killed: only Cleanup runs.
	must(t, Cleanup(b.Prefix()))
	if left := namespaces(t, b.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left after Cleanup: %v", left)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Error("process in a stale namespace survived Cleanup")
	}
	if got := namespaces(t, other.Prefix()); !slices.Equal(got, []string{keep.Name}) {
		t.Errorf("Cleanup of one bed touched another: %v", got)
	}
	// Close after Cleanup finds the names gone and does not mind.
	if err := b.Close(); err != nil {
		t.Errorf("Close after Cleanup: %v", err)
	}
}

// TestTwoBeds runs two identical beds at once: same prefix, host names and
// addresses, separate namespaces.
func TestTwoBeds(t *testing.T) {
	beds := []*Bed{newBed(t), newBed(t)}
	if beds[0].Prefix() == beds[1].Prefix() {
		t.Fatalf("two beds share the prefix %s", beds[0].Prefix())
	}
	var wg sync.WaitGroup
	nets := make([]net3, 2)
	for i, b := range beds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nets[i] = buildNet3(t, b)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, n := range nets {
		must(t, n.router.Forward())
		l, err := n.server.Listen("tcp", ":80")
		must(t, err)
		t.Cleanup(ServeHTTP(l, "hello"))
		pc, err := n.server.ListenPacket("udp", ":7")
		must(t, err)
		t.Cleanup(ServeUDPEcho(pc, "echo: "))
		if i == 1 && n.server.Name == nets[0].server.Name {
			t.Fatalf("both beds named their server %s", n.server.Name)
		}
	}
	for _, n := range nets {
		exchange(t, n.client, "198.18.1.2", "198.18.0.2")
	}
	if got := len(namespaces(t, beds[0].Prefix())) + len(namespaces(t, beds[1].Prefix())); got != 6 {
		t.Errorf("%d namespaces for two beds of three hosts", got)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := New("a/b"); err == nil {
		t.Error("New accepted a prefix with a slash")
	}
	if err := Cleanup(""); err == nil {
		t.Error("Cleanup accepted an empty prefix")
	}
	b := newBed(t)
	h, err := b.Host("h")
	must(t, err)
	if _, err := b.Host("h"); err == nil {
		t.Error("second host with the same name")
	}
	for _, tc := range []struct{ name, dst, via string }{
		{"bad dst", "198.18.0.0", "198.18.0.1"},
		{"missing dev", "198.18.0.0/24", "nope0"},
	} {
		if err := h.Route(tc.dst, tc.via); err == nil {
			t.Errorf("%s: Route(%q, %q) succeeded", tc.name, tc.dst, tc.via)
		}
	}
	if err := h.Addr("lo", "198.18.0.1"); err == nil {
		t.Error("Addr without prefix length succeeded")
	}
	if err := h.Sysctl("net/../../etc/x", "1"); err == nil {
		t.Error("Sysctl accepted a key leaving /proc/sys")
	}
	if err := h.Sysctl("net.ipv4.no_such_key", "1"); err == nil {
		t.Error("Sysctl of a missing key succeeded")
	}
	must(t, h.Addr("lo", "198.18.9.1/32"))
	must(t, h.Route("198.18.10.0/24", "lo"))
}

// TestCloseWhileBuilding closes a bed from another goroutine while hosts are
// being added, as the lab does on Ctrl-C: building stops with ErrClosed,
// nothing is left, and the machine's own interfaces are untouched.
func TestCloseWhileBuilding(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	before, err := net.Interfaces()
	must(t, err)
	b, err := New(testPrefix)
	must(t, err)
	defer b.Close()

	built := make(chan error, 1)
	var last *Host
	go func() {
		var prev *Host
		for i := range 500 {
			h, err := b.Host(fmt.Sprintf("h%d", i))
			if err == nil && prev != nil {
				err = b.Link(prev, "up", h, "down")
			}
			if err == nil {
				err = h.Addr("lo", "198.18.3.1/32")
			}
			if err != nil {
				built <- err
				return
			}
			prev = h
			last = h
		}
		built <- nil
	}()
	for i := 0; i < 300 && len(namespaces(t, b.Prefix())) < 3; i++ {
		time.Sleep(time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-built:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("building stopped with %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("building did not stop after Close")
	}
	if left := namespaces(t, b.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	after, err := net.Interfaces()
	must(t, err)
	if len(after) != len(before) {
		t.Errorf("the machine's interfaces changed: %d before, %d after", len(before), len(after))
	}
	if last == nil {
		t.Fatal("no host was built before Close")
	}
	if err := last.Addr("lo", "198.18.3.2/32"); !errors.Is(err, ErrClosed) {
		t.Errorf("Addr after Close: %v, want ErrClosed", err)
	}
	if err := last.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
	if m := last.MAC("up"); m != nil {
		t.Errorf("MAC after Close: %v", m)
	}
}

// TestPair: two hosts on one link, their addresses on it, an exchange
// between them; a bad address leaves nothing behind.
func TestPair(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	b, a, s, err := Pair(testPrefix, "a", []string{"198.18.7.1/24"}, "s", []string{"198.18.7.2/24", "2001:2:0:7::2/64"})
	must(t, err)
	t.Cleanup(func() { b.Close() })
	serve(t, s)
	exchange(t, a, "198.18.7.2", "198.18.7.1")
	const prefix = testPrefix + "pair" // no other test's
	if _, _, _, err := Pair(prefix, "a", []string{"not-an-address"}, "s", nil); err == nil {
		t.Fatal("Pair took a bad address")
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), prefix+"-") {
		t.Errorf("a failed Pair left namespaces:\n%s", out)
	}
}
