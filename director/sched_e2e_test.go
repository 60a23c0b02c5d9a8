package director_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
	"uvs/scheduler"
	"uvs/service"
	"uvs/testbed"
)

// The scheduler end-to-end tests need three real servers (the lab has
// two), so they build their own NAT topology, the lab's with a third real
// server, and check through the running director that each scheduler picks
// what the real kernel picks.

// Real servers of the scheduler topology, named rs1..rs3 in add order.
var schedRS = []string{lab.RSIP(0), lab.RSIP(1), lab.RSIP(2)}

// Extra client addresses for sh: each client address maps to a fixed
// server.
var shClients = func() []string {
	var a []string
	for i := 10; i < 26; i++ {
		a = append(a, "198.18.0."+strconv.Itoa(i))
	}
	return a
}()

// nameService is where the real servers answer with their name and then
// wait for the client to close first (see below).
const nameService = "7000"

// buildNAT3 is lab.BuildNAT with three real servers and extra client
// addresses for sh.
func buildNAT3(prefix string) (*lab.NATNet, error) {
	n, err := lab.BuildNAT(prefix, len(schedRS))
	if err != nil {
		return nil, err
	}
	for _, a := range shClients {
		if err := n.Client.Addr("eth0", a+"/24"); err != nil {
			n.Bed.Close()
			return nil, err
		}
	}
	return n, nil
}

// newSchedEnv builds the three-server topology, starts the real servers
// (HTTP on :80 answering with the name, the name service on :7000) and the
// director.
func newSchedEnv(t *testing.T, io string, args ...string) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	n, err := buildNAT3("uvssched")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	e := &env{t: t, n: n, dir: t.TempDir(), io: io}
	for i, rs := range n.RS {
		name := fmt.Sprintf("rs%d", i+1)
		e.serveHTTP(rs, ":80", name)
		e.serveName(rs, ":"+nameService, name)
	}
	e.start(args...)
	return e
}

// serveName answers each connection with name and a newline, then waits
// for the client to close before closing: the client closes first, so no
// real server holds a TIME_WAIT socket that could make a later SYN from a
// reused client port be scheduled twice (ipvs-oracle README, "Caveat").
func (e *env) serveName(h *testbed.Host, addr, name string) {
	e.serve(h, addr, func(c net.Conn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		io.Copy(io.Discard, c)
	})
}

// dialFrom connects from the client namespace, from local address src
// ("" for the kernel's choice).
func (e *env) dialFrom(ctx context.Context, src, addr string) (net.Conn, error) {
	var c net.Conn
	err := e.n.Client.Do(func() error {
		var d net.Dialer
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// pick opens one new connection to addr and returns the name of the real
// server that answered. The client closes it at once, first.
func (e *env) pick(t *testing.T, addr string) (string, error) {
	t.Helper()
	return e.pickSrc(t, "", addr, nil)
}

// pickHeld is pick leaving the connection open, in h.
func (e *env) pickHeld(t *testing.T, h *held, addr string) (string, error) {
	t.Helper()
	return e.pickSrc(t, "", addr, h)
}

// pickFrom is pick from client address src.
func (e *env) pickFrom(t *testing.T, src, addr string) (string, error) {
	t.Helper()
	return e.pickSrc(t, src, addr, nil)
}

func (e *env) pickSrc(t *testing.T, src, addr string, h *held) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.dialFrom(ctx, src, addr)
	if err != nil {
		return "", err
	}
	if h != nil {
		h.conns = append(h.conns, c)
		t.Cleanup(func() { c.Close() }) // if the test stops first
	} else {
		defer c.Close()
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read name from %s: %w", addr, err)
	}
	return strings.TrimSpace(name), nil
}

// getFrom fetches url from client address src on a new connection and
// returns the body and the client address the server saw.
func (e *env) getFrom(src, url string) (body, seen string, err error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return e.dialFrom(ctx, src, addr)
		},
	}}
	resp, err := hc.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), resp.Header.Get(testbed.ClientAddrHeader), err
}

// getFromPort is getFrom from source port sport too (for mh-port).
func (e *env) getFromPort(src string, sport int, url string) (body, seen string, err error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			var c net.Conn
			err := e.n.Client.Do(func() error {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src), Port: sport}}
				var err error
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		},
	}}
	resp, err := hc.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), resp.Header.Get(testbed.ClientAddrHeader), err
}

// held are connections a subtest keeps open.
type held struct{ conns []net.Conn }

// deleteService closes the connections in h, waits until the director has
// seen every connection of svc end (TIME_WAIT or CLOSE), and deletes svc.
// Deleting the service first would cut its open connections: they would
// stay open on the real servers and, with --io tun, in the director's
// table too (their packets no longer reach it), and a later subtest's
// connection from the same client port to the same real server would meet
// them. The client reuses ports across services: the kernel picks them per
// destination.
func (e *env) deleteService(t *testing.T, svc string, h *held) {
	t.Helper()
	for _, c := range h.conns {
		c.Close()
	}
	var out string
	for deadline := time.Now().Add(5 * time.Second); ; {
		out = e.ipvsadm(t, "-L", "-n", "-c")
		if allEnded(out, svc) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("connections of %s still open 5 s after the client closed them:\n%s", svc, out)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.ipvsadm(t, "-D", "-t", svc)
}

// allEnded reports whether every connection of virtual service svc in an
// ipvsadm -L -n -c listing is in TIME_WAIT or CLOSE.
func allEnded(listing, svc string) bool {
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		// pro expire state source virtual destination
		if len(f) == 6 && f[4] == svc && f[2] != "TIME_WAIT" && f[2] != "CLOSE" {
			return false
		}
	}
	return true
}

// picks makes n sequential new connections to addr, each closed by the
// client before the next, and returns the servers' names in order.
func (e *env) picks(t *testing.T, addr string, n int) []string {
	t.Helper()
	var got []string
	for i := range n {
		name, err := e.pick(t, addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		got = append(got, name)
	}
	return got
}

// addServers adds schedRS[i]:7000 as NAT real servers in order, with
// weights (all 1 if none given).
func (e *env) addServers(t *testing.T, vip string, weights ...int) {
	t.Helper()
	for i, ip := range schedRS {
		w := 1
		if weights != nil {
			w = weights[i]
		}
		e.ipvsadm(t, "-a", "-t", vip, "-r", ip+":"+nameService, "-m", "-w", strconv.Itoa(w))
	}
}

func TestSchedulers(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) { testSchedulers(t, mode) })
	}
}

func testSchedulers(t *testing.T, mode string) {
	e := newSchedEnv(t, mode)
	vip := lab.DirOuterIP

	t.Run("wrr 4,3,2 follows the kernel", func(t *testing.T) {
		svc := vip + ":7001"
		e.ipvsadm(t, "-A", "-t", svc, "-s", "wrr")
		defer e.ipvsadm(t, "-D", "-t", svc)
		e.addServers(t, svc, 4, 3, 2)
		// Recorded on a real kernel (IPVS.md): A=4, B=3, C=2 added in
		// that order.
		kernel := strings.NewReplacer("A", "rs1", "B", "rs2", "C", "rs3").
			Replace("C B A A B A C B A C B A A B A C B A")
		want := strings.Fields(kernel)
		got := e.picks(t, svc, len(want))
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("wrr order\n got %v\nwant %v (real kernel)", got, want)
		}
	})

	t.Run("rr visits the newest server first", func(t *testing.T) {
		svc := vip + ":7002"
		e.ipvsadm(t, "-A", "-t", svc, "-s", "rr")
		defer e.ipvsadm(t, "-D", "-t", svc)
		e.addServers(t, svc)
		// Real kernel: .2, .3, .4 added in that order are picked
		// .4 .3 .2 .4 .3 .2 (IPVS.md).
		want := []string{"rs3", "rs2", "rs1", "rs3", "rs2", "rs1"}
		if got := e.picks(t, svc, len(want)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("rr order %v, want %v", got, want)
		}
	})

	t.Run("sh maps each client to a fixed server", func(t *testing.T) {
		// Two sh services with the same servers and weights: sh hashes
		// the client address only, so each client lands on the same
		// server in both. The HTTP one shows that the server sees the
		// client's own address; the name service, where the client
		// closes first, is asked twice more.
		web, names := vip+":80", vip+":7003"
		weights := []int{4, 3, 2}
		for _, svc := range []string{web, names} {
			e.ipvsadm(t, "-A", "-t", svc, "-s", "sh")
			defer e.ipvsadm(t, "-D", "-t", svc)
		}
		for i, ip := range schedRS {
			e.ipvsadm(t, "-a", "-t", web, "-r", ip, "-m", "-w", strconv.Itoa(weights[i]))
		}
		e.addServers(t, names, weights...)
		want := shExpected(t, vip, weights)
		servers := map[string]bool{}
		for _, src := range shClients {
			body, seen, err := e.getFrom(src, "http://"+web+"/")
			if err != nil {
				t.Fatalf("client %s: %v", src, err)
			}
			if body != want[src] {
				t.Errorf("client %s: HTTP answered by %s, want %s", src, body, want[src])
			}
			if host, _, _ := net.SplitHostPort(seen); host != src {
				t.Errorf("real server saw client %s, want %s", host, src)
			}
			for i := range 2 {
				got, err := e.pickFrom(t, src, names)
				if err != nil {
					t.Fatalf("client %s connection %d: %v", src, i+1, err)
				}
				if got != want[src] {
					t.Errorf("client %s connection %d went to %s, want %s", src, i+1, got, want[src])
				}
			}
			servers[want[src]] = true
		}
		if len(servers) < 2 {
			t.Errorf("all clients on %v: the addresses do not exercise the mapping", servers)
		}
	})

	t.Run("mh picks what the kernel's table picks", func(t *testing.T) {
		// Recorded on a real 6.1 kernel (scheduler/testdata/kernel-6.1-mh.out,
		// "e2e" sections): real servers 198.18.1.2, .3, .4 (rs1..rs3) port
		// 80 added in that order, the kernel's choice for each of
		// shClients; mh hashes the real servers' addresses and ports and
		// the client's address (and port with mh-port), not the VIP.
		kernel := func(picks string) []string {
			return strings.Fields(strings.NewReplacer("2", "rs1", "3", "rs2", "4", "rs3").Replace(picks))
		}
		svc, ports := vip+":7007", vip+":7008"
		e.ipvsadm(t, "-A", "-t", svc, "-s", "mh", "-b", "mh-fallback")
		defer e.ipvsadm(t, "-D", "-t", svc)
		for i, ip := range schedRS {
			e.ipvsadm(t, "-a", "-t", svc, "-r", ip+":80", "-m", "-w", strconv.Itoa(4-i))
		}
		check := func(what string, want []string) {
			t.Helper()
			for i, src := range shClients {
				body, seen, err := e.getFrom(src, "http://"+svc+"/")
				if err != nil {
					t.Fatalf("%s: client %s: %v", what, src, err)
				}
				if body != want[i] {
					t.Errorf("%s: client %s went to %s, the kernel chose %s", what, src, body, want[i])
				}
				if host, _, _ := net.SplitHostPort(seen); host != src {
					t.Errorf("real server saw client %s, want %s", host, src)
				}
			}
		}
		check("weights 4,3,2", kernel("2 2 3 3 3 4 3 4 3 2 2 4 3 3 2 2"))
		// rs2 quiesced: its clients fall back to other slots; nobody
		// else moves.
		e.ipvsadm(t, "-e", "-t", svc, "-r", schedRS[1]+":80", "-m", "-w", "0")
		check("rs2 at weight 0, mh-fallback", kernel("2 2 4 2 2 4 2 4 2 2 2 4 4 2 2 2"))

		// mh-port: one client address, source ports 30000..30015.
		e.ipvsadm(t, "-A", "-t", ports, "-s", "mh", "-b", "mh-port")
		defer e.ipvsadm(t, "-D", "-t", ports)
		for _, ip := range schedRS {
			e.ipvsadm(t, "-a", "-t", ports, "-r", ip+":80", "-m", "-w", "1")
		}
		want := kernel("2 3 2 4 2 3 3 2 2 3 3 2 2 3 2 3")
		src := shClients[0]
		for i := range want {
			sport := 30000 + i
			body, seen, err := e.getFromPort(src, sport, "http://"+ports+"/")
			if err != nil {
				t.Fatalf("mh-port: %s:%d: %v", src, sport, err)
			}
			if body != want[i] {
				t.Errorf("mh-port: %s:%d went to %s, the kernel chose %s", src, sport, body, want[i])
			}
			if seen != net.JoinHostPort(src, strconv.Itoa(sport)) {
				t.Errorf("mh-port: real server saw %s, want %s:%d", seen, src, sport)
			}
		}
	})

	t.Run("lc prefers fewer open connections", func(t *testing.T) {
		svc := vip + ":7004"
		e.ipvsadm(t, "-A", "-t", svc, "-s", "lc")
		var open held
		defer e.deleteService(t, svc, &open)
		e.ipvsadm(t, "-a", "-t", svc, "-r", schedRS[0]+":"+nameService, "-m")
		hold := func(want string) {
			t.Helper()
			got, err := e.pickHeld(t, &open, svc)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("new connection went to %s, want %s\n%s", got, want, e.ipvsadm(t, "-L", "-n", "-t", svc))
			}
		}
		hold("rs1")
		hold("rs1")
		e.ipvsadm(t, "-a", "-t", svc, "-r", schedRS[1]+":"+nameService, "-m")
		hold("rs2") // 0 open against 2
		hold("rs2") // 1 against 2
		hold("rs2") // 2 against 2: a tie goes to the newest server
		hold("rs1") // 3 against 2
		out := e.ipvsadm(t, "-L", "-n", "-t", svc)
		for _, l := range []string{rsLine(schedRS[0]+":"+nameService, 1, 3, 0), rsLine(schedRS[1]+":"+nameService, 1, 3, 0)} {
			if !strings.Contains(out, l) {
				t.Errorf("listing lacks %q:\n%s", l, out)
			}
		}
	})

	t.Run("upper threshold stops new connections", func(t *testing.T) {
		svc := vip + ":7005"
		rs1 := schedRS[0] + ":" + nameService
		e.ipvsadm(t, "-A", "-t", svc, "-s", "rr")
		var open held
		defer e.deleteService(t, svc, &open)
		e.ipvsadm(t, "-a", "-t", svc, "-r", rs1, "-m", "-x", "2", "-y", "1")
		thresholds := func(active int) {
			t.Helper()
			out := e.ipvsadm(t, "-L", "-n", "--thresholds", "-t", svc)
			if l := thresholdLine(rs1, 2, 1, active, 0); !strings.Contains(out, l) {
				t.Errorf("--thresholds listing lacks %q:\n%s", l, out)
			}
		}
		thresholds(0)
		for i := range 2 {
			if got, err := e.pickHeld(t, &open, svc); err != nil || got != "rs1" {
				t.Fatalf("connection %d: %q, %v", i+1, got, err)
			}
		}
		thresholds(2)
		// Two open connections reach -x 2: the only server is overloaded
		// and a third client is refused.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.dialFrom(ctx, "", svc)
		if err == nil {
			c.Close()
			t.Fatal("a third connection was accepted by a server with -x 2")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("third connection: %v, want connection refused", err)
		}
		// Another server takes the new connections.
		e.ipvsadm(t, "-a", "-t", svc, "-r", schedRS[1]+":"+nameService, "-m")
		for i := range 2 {
			if got, err := e.pick(t, svc); err != nil || got != "rs2" {
				t.Fatalf("connection %d after adding rs2: %q, %v", i+1, got, err)
			}
		}
	})

	t.Run("closed connections count toward the threshold", func(t *testing.T) {
		// As on a real kernel (ipvs-oracle): -x 2, two connections the
		// client closed are still inactive entries, so a third client is
		// refused and the listing shows 0 active, 2 inactive.
		svc := vip + ":7006"
		rs1 := schedRS[0] + ":" + nameService
		e.ipvsadm(t, "-A", "-t", svc, "-s", "rr")
		defer e.ipvsadm(t, "-D", "-t", svc)
		e.ipvsadm(t, "-a", "-t", svc, "-r", rs1, "-m", "-x", "2")
		if got := e.picks(t, svc, 2); strings.Join(got, " ") != "rs1 rs1" {
			t.Fatalf("picks %v", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.dialFrom(ctx, "", svc)
		if err == nil {
			c.Close()
			t.Fatal("a third connection was accepted by a server with -x 2 and two closed connections")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("third connection: %v, want connection refused", err)
		}
		out := e.ipvsadm(t, "-L", "-n", "--thresholds", "-t", svc)
		if l := thresholdLine(rs1, 2, 0, 0, 2); !strings.Contains(out, l) {
			t.Errorf("--thresholds listing lacks %q:\n%s", l, out)
		}
	})
}

// shExpected computes each client's server with the scheduler package, for
// the service's real servers added in schedRS order with weights, and
// checks that against IPVS.md's rule: 256 buckets filled walking the list
// newest first, each server taking weight buckets in a row; bucket =
// hash_32(client address, 8).
func shExpected(t *testing.T, vip string, weights []int) map[string]string {
	t.Helper()
	key := service.Key{Proto: service.TCP, Addr: netip.MustParseAddr(vip), Port: 80}
	cfg := service.NewConfig()
	if err := cfg.AddService(&service.Service{Key: key, Scheduler: "sh"}); err != nil {
		t.Fatal(err)
	}
	name := map[netip.Addr]string{}
	for i, ip := range schedRS {
		a := netip.MustParseAddr(ip)
		name[a] = fmt.Sprintf("rs%d", i+1)
		if err := cfg.AddDest(key, &service.Dest{Addr: a, Port: 80, Fwd: service.FwdMasq, Weight: int32(weights[i])}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := scheduler.New("sh", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dests := cfg.Service(key).Dests
	s.Update(dests)

	var buckets []string // IPVS.md's table, newest server first
	for i := len(schedRS) - 1; len(buckets) < 256; i = (i + len(schedRS) - 1) % len(schedRS) {
		for range weights[i] {
			buckets = append(buckets, fmt.Sprintf("rs%d", i+1))
		}
	}
	want := map[string]string{}
	for _, src := range shClients {
		a := netip.MustParseAddr(src)
		d := s.Schedule(&scheduler.Flow{Proto: 6, Src: a, Dst: key.Addr, SrcPort: 40000, DstPort: 80})
		if d == nil {
			t.Fatalf("sh picked no server for %s", src)
		}
		b := a.As4()
		x := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if rule := buckets[(x*0x61C88647)>>24]; rule != name[d.Addr] {
			t.Fatalf("scheduler package maps %s to %s, IPVS.md's rule to %s", src, name[d.Addr], rule)
		}
		want[src] = name[d.Addr]
	}
	return want
}

// thresholdLine is a real server's line in ipvsadm -L -n --thresholds.
func thresholdLine(addr string, upper, lower, active, inactive int) string {
	return fmt.Sprintf("  -> %-28s %-10d %-10d %-10d %-10d", addr, upper, lower, active, inactive)
}
