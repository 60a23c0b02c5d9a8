package director_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
	"uvs/testbed"
)

// fwdEnv is a DR or TUN topology with a running director: the client,
// the director and the real servers, each serving HTTP on :80 (body: its
// name), a bulk stream on :9000, a sink on :9001 (answers the sha256 of
// what it read) and UDP echo on :53, on every address (the VIP included).
type fwdEnv struct {
	t        *testing.T
	client   *testbed.Host
	director *testbed.Host
	rs       []*testbed.Host
	d        *lab.Director
	dir      string
}

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
}

func (e *fwdEnv) serveAll(vips ...string) {
	x := &env{t: e.t}
	for i, rs := range e.rs {
		name := fmt.Sprintf("rs%d", i+1)
		x.serveHTTP(rs, ":80", name)
		x.serveHTTP(rs, ":8080", name)
		x.serveBulk(rs, ":9000")
		x.serve(rs, ":9001", func(c net.Conn) {
			h := sha256.New()
			if _, err := io.Copy(h, c); err != nil {
				return
			}
			io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
		})
		// UDP servers bind the VIPs: a wildcard socket would answer from
		// the address the route picks, not from the VIP the client asked.
		for _, vip := range vips {
			pc, err := rs.ListenPacket("udp", net.JoinHostPort(vip, "53"))
			if err != nil {
				e.t.Fatal(err)
			}
			e.t.Cleanup(testbed.ServeUDPEcho(pc, name+" "))
		}
	}
}

func (e *fwdEnv) start(args ...string) {
	e.t.Helper()
	e.d = startDirector(e.t, e.director, e.dir, args...)
}

func (e *fwdEnv) ipvsadm(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code, err := e.d.Ipvsadm(args...)
	if err != nil || code != 0 {
		t.Fatalf("ipvsadm %s: code %d err %v\n%s%s", strings.Join(args, " "), code, err, out, errs)
	}
	return out
}

// get fetches http://addr/ from the client: the body and the client
// address the server saw.
func (e *fwdEnv) get(addr string) (body, seen string, err error) {
	x := &env{t: e.t, n: &lab.NATNet{Client: e.client}}
	return x.get("http://" + addr + "/")
}

// roundRobin checks that six requests to vip:80 alternate between the
// two servers and that each server saw the client's own address.
func (e *fwdEnv) roundRobin(t *testing.T, vip, clientIP string) {
	t.Helper()
	var got []string
	for i := 0; i < 6; i++ {
		body, seen, err := e.get(net.JoinHostPort(vip, "80"))
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		got = append(got, body)
		if host, _, _ := net.SplitHostPort(seen); host != clientIP {
			t.Errorf("real server saw client %q, want %s", seen, clientIP)
		}
	}
	want := []string{"rs2", "rs1", "rs2", "rs1", "rs2", "rs1"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("answers %v, want %v", got, want)
	}
}

// bulk downloads 64 MiB from vip:9000 and uploads 64 MiB to vip:9001,
// both checked by sha256.
func (e *fwdEnv) bulk(t *testing.T, vip string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := e.client.Dial(ctx, "tcp", net.JoinHostPort(vip, "9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	want := sha256.New()
	io.CopyN(want, rand.NewChaCha8([32]byte{1}), bulkSize)
	if err != nil || n != bulkSize || hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("download: %d bytes, err %v, intact %v", n, err, hex.EncodeToString(h.Sum(nil)) == hex.EncodeToString(want.Sum(nil)))
	}

	u, err := e.client.Dial(ctx, "tcp", net.JoinHostPort(vip, "9001"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.CopyN(u, rand.NewChaCha8([32]byte{1}), bulkSize); err != nil {
		t.Fatalf("upload: %v", err)
	}
	u.(*net.TCPConn).CloseWrite()
	sum, err := io.ReadAll(u)
	if err != nil || string(sum) != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("upload: the server read %q (err %v), want %s", sum, err, hex.EncodeToString(want.Sum(nil)))
	}
}

// udp asks vip:53 twice from the client and wants both servers.
func (e *fwdEnv) udp(t *testing.T, vip string) {
	t.Helper()
	seen := map[string]bool{}
	for i := range 4 {
		ans, err := udpAsk(e.client, net.JoinHostPort(vip, "53"), fmt.Sprintf("q%d", i))
		if err != nil {
			t.Fatalf("udp %d: %v", i, err)
		}
		seen[strings.Fields(ans)[0]] = true
	}
	if !seen["rs1"] || !seen["rs2"] {
		t.Errorf("udp answers came from %v, want rs1 and rs2", seen)
	}
}

// noReplies checks that the director's counters for the service show
// traffic in and none out: the replies never crossed it.
func (e *fwdEnv) noReplies(t *testing.T, svc string) {
	t.Helper()
	out := e.ipvsadm(t, "-L", "-n", "--stats", "--exact")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(svc) + ` +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no stats line for %s:\n%s", svc, out)
	}
	if m[2] == "0" || m[3] != "0" || m[5] != "0" {
		t.Errorf("%s: InPkts %s OutPkts %s OutBytes %s, want InPkts > 0 and nothing out:\n%s", svc, m[2], m[3], m[5], out)
	}
}

// TestDR is the tutorial's LVS-DR example end to end: real servers with
// the VIP on lo, the director rewriting only the MAC address.
func TestDR(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) { testDR(t, mode) })
	}
}

func testDR(t *testing.T, mode string) {
	skipUnlessRoot(t)
	n, err := lab.BuildDR("uvsdr", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	for _, rs := range n.RS {
		if err := lab.SetupDRRealServer(rs, lab.DRVIP, lab.DRVIP6); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Director.Forward(); err != nil { // the tutorial's ip_forward=1
		t.Fatal(err)
	}
	e := &fwdEnv{t: t, client: n.Client, director: n.Director, rs: n.RS, dir: t.TempDir()}
	e.serveAll(lab.DRVIP, lab.DRVIP6)
	e.start("--io", mode)

	for _, fam := range []struct{ name, vip, client, rs1, rs2 string }{
		{"ipv4", lab.DRVIP, lab.DRClientIP, lab.DRRSIP(0), lab.DRRSIP(1)},
		{"ipv6", lab.DRVIP6, lab.DRClientIP6, lab.DRRSIP6(0), lab.DRRSIP6(1)},
	} {
		t.Run(fam.name, func(t *testing.T) {
			vip := fam.vip
			if strings.Contains(vip, ":") {
				vip = "[" + vip + "]"
			}
			for _, port := range []string{"80", "9000", "9001"} {
				e.ipvsadm(t, "-A", "-t", vip+":"+port, "-s", "rr")
				e.ipvsadm(t, "-a", "-t", vip+":"+port, "-r", fam.rs1, "-g")
				e.ipvsadm(t, "-a", "-t", vip+":"+port, "-r", fam.rs2) // -g is the default
				defer e.ipvsadm(t, "-D", "-t", vip+":"+port)
			}
			e.ipvsadm(t, "-A", "-u", vip+":53", "-s", "rr")
			e.ipvsadm(t, "-a", "-u", vip+":53", "-r", fam.rs1, "-g")
			e.ipvsadm(t, "-a", "-u", vip+":53", "-r", fam.rs2, "-g")
			defer e.ipvsadm(t, "-D", "-u", vip+":53")

			rsts := snmp(t, n.Director, "Tcp", "OutRsts")
			e.roundRobin(t, fam.vip, fam.client)
			e.udp(t, fam.vip)
			e.bulk(t, fam.vip)
			if got := snmp(t, n.Director, "Tcp", "OutRsts"); got != rsts {
				t.Errorf("the director's kernel sent %d resets for its VIP", got-rsts)
			}
			e.noReplies(t, "TCP  "+vip+":80")
			// The director tracks the client's packets only: closed
			// HTTP connections rest in FIN_WAIT (IPVS's input-only table).
			out := e.ipvsadm(t, "-L", "-n", "-c")
			if !strings.Contains(out, "FIN_WAIT") {
				t.Errorf("connection table has no FIN_WAIT entry:\n%s", out)
			}
			lst := e.ipvsadm(t, "-L", "-n", "-t", vip+":80")
			if !strings.Contains(lst, "Route") {
				t.Errorf("listing does not show Route:\n%s", lst)
			}
		})
	}

	// The tutorial's PCC example: a port-zero persistent service; every
	// port a client asks for goes to the server it got first.
	t.Run("persistence, port zero", func(t *testing.T) {
		e.ipvsadm(t, "-A", "-t", lab.DRVIP+":0", "-p", "1200")
		e.ipvsadm(t, "-a", "-t", lab.DRVIP+":0", "-r", lab.DRRSIP(0), "-g", "-w", "10")
		e.ipvsadm(t, "-a", "-t", lab.DRVIP+":0", "-r", lab.DRRSIP(1), "-g", "-w", "5")
		defer e.ipvsadm(t, "-D", "-t", lab.DRVIP+":0")
		var first string
		for i := range 6 {
			port := []string{"80", "8080"}[i%2]
			got, _, err := e.get(net.JoinHostPort(lab.DRVIP, port))
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if first == "" {
				first = got
			}
			if got != first {
				t.Errorf("request %d (port %s) went to %s, the first to %s", i, port, got, first)
			}
		}
		out := e.ipvsadm(t, "-L", "-n", "-c")
		if !regexp.MustCompile(`TCP +\S+ +(NONE|ASSURED) +198\.18\.0\.2:0 +198\.18\.0\.100:0 +198\.18\.0\.1[12]:0`).MatchString(out) {
			t.Errorf("no persistence template in:\n%s", out)
		}
	})
}

// startRealServer runs `director realserver ARGS...` in h until the test
// ends.
func startRealServer(t *testing.T, h *testbed.Host, args ...string) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "realserver.state")
	cmd := h.Command(binary, append([]string{"realserver", "--state", state}, args...)...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("realserver in %s: %v\n%s", h.Name, err, log.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("realserver in %s did not stop\n%s", h.Name, log.String())
		}
		if t.Failed() {
			t.Logf("realserver in %s:\n%s", h.Name, log.String())
		}
	})
	// Ready when its TUN device holds the VIP.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := h.Exec("ip", "-o", "addr", "show", "dev", "uvsrs0")
		if strings.Contains(out, lab.TUNVIP) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("realserver in %s not ready:\n%s", h.Name, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTUN is LVS-TUN end to end: the director wraps the client's packets
// for real servers behind a router, which take them out with `director
// realserver` (no ipip module here) and answer the client directly.
func TestTUN(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) { testTUN(t, mode) })
	}
}

func testTUN(t *testing.T, mode string) {
	skipUnlessRoot(t)
	n, err := lab.BuildTUN("uvstun", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	for _, rs := range n.RS {
		startRealServer(t, rs, "--vip", lab.TUNVIP+","+lab.TUNVIP6,
			"--from", lab.TUNDirIP+","+lab.TUNDirIP6, "--gue-port", "6080")
	}
	e := &fwdEnv{t: t, client: n.Client, director: n.Director, rs: n.RS, dir: t.TempDir()}
	e.serveAll(lab.TUNVIP, lab.TUNVIP6)
	e.start("--io", mode)

	for _, c := range []struct {
		name, vip, client, rs1, rs2 string
		opts                        []string
		bulk                        bool
	}{
		{"ipip4", lab.TUNVIP, lab.TUNClientIP, lab.TUNRSIP(0), lab.TUNRSIP(1), nil, true},
		{"ipip6", lab.TUNVIP6, lab.TUNClientIP6, lab.TUNRSIP6(0), lab.TUNRSIP6(1), nil, true},
		{"gue4", lab.TUNVIP, lab.TUNClientIP, lab.TUNRSIP(0), lab.TUNRSIP(1), []string{"--tun-type", "gue", "--tun-port", "6080", "--tun-csum"}, true},
		{"gue6", lab.TUNVIP6, lab.TUNClientIP6, lab.TUNRSIP6(0), lab.TUNRSIP6(1), []string{"--tun-type", "gue", "--tun-port", "6080"}, false},
		{"gre4", lab.TUNVIP, lab.TUNClientIP, lab.TUNRSIP(0), lab.TUNRSIP(1), []string{"--tun-type", "gre"}, false},
		{"gre6-csum", lab.TUNVIP6, lab.TUNClientIP6, lab.TUNRSIP6(0), lab.TUNRSIP6(1), []string{"--tun-type", "gre", "--tun-csum"}, false},
		// IPVS lets a tunnelling server be of the other family.
		{"ipv4-in-ipv6", lab.TUNVIP, lab.TUNClientIP, lab.TUNRSIP6(0), lab.TUNRSIP6(1), nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			vip := c.vip
			if strings.Contains(vip, ":") {
				vip = "[" + vip + "]"
			}
			rs := func(a, port string) string {
				if strings.Contains(a, ":") {
					return "[" + a + "]:" + port
				}
				return a + ":" + port
			}
			ports := []string{"80"}
			if c.bulk {
				ports = append(ports, "9000", "9001")
			}
			for _, port := range ports {
				e.ipvsadm(t, "-A", "-t", vip+":"+port, "-s", "rr")
				e.ipvsadm(t, append([]string{"-a", "-t", vip + ":" + port, "-r", rs(c.rs1, port), "-i"}, c.opts...)...)
				e.ipvsadm(t, append([]string{"-a", "-t", vip + ":" + port, "-r", rs(c.rs2, port), "-i"}, c.opts...)...)
				defer e.ipvsadm(t, "-D", "-t", vip+":"+port)
			}
			e.ipvsadm(t, "-A", "-u", vip+":53", "-s", "rr")
			e.ipvsadm(t, append([]string{"-a", "-u", vip + ":53", "-r", rs(c.rs1, "53"), "-i"}, c.opts...)...)
			e.ipvsadm(t, append([]string{"-a", "-u", vip + ":53", "-r", rs(c.rs2, "53"), "-i"}, c.opts...)...)
			defer e.ipvsadm(t, "-D", "-u", vip+":53")

			e.roundRobin(t, c.vip, c.client)
			e.udp(t, c.vip)
			if c.bulk {
				e.bulk(t, c.vip)
			}
			e.noReplies(t, "TCP  "+vip+":80")
			if c.name == "ipip4" {
				e.onePacket(t, c.vip, vip, rs(c.rs1, "53"), rs(c.rs2, "53"))
			}
			lst := e.ipvsadm(t, "-L", "-n", "-t", vip+":80")
			if !strings.Contains(lst, "Tunnel") {
				t.Errorf("listing does not show Tunnel:\n%s", lst)
			}
		})
	}
	// Tunnelling servers of a firewall-mark service: TCP 80 and UDP 53
	// marked by the host's rules; port 0 servers take the packet's port.
	t.Run("fwmark", func(t *testing.T) {
		for _, proto := range []string{"tcp", "udp"} {
			port := map[string]string{"tcp": "80", "udp": "53"}[proto]
			args := []string{"-t", "mangle", "-A", "PREROUTING", "-p", proto, "-d", lab.TUNVIP, "--dport", port, "-j", "MARK", "--set-mark", "30"}
			if out, err := e.director.Exec("iptables", args...); err != nil {
				t.Fatalf("iptables: %v\n%s", err, out)
			}
		}
		e.ipvsadm(t, "-A", "-f", "30", "-s", "rr")
		e.ipvsadm(t, "-a", "-f", "30", "-r", lab.TUNRSIP(0), "-i")
		e.ipvsadm(t, "-a", "-f", "30", "-r", lab.TUNRSIP(1), "-i")
		e.roundRobin(t, lab.TUNVIP, lab.TUNClientIP)
		e.udp(t, lab.TUNVIP)
		if lst := e.ipvsadm(t, "-L", "-n", "-f", "30"); !strings.Contains(lst, "Tunnel") {
			t.Errorf("listing does not show Tunnel:\n%s", lst)
		}
	})
}

// TestTUNPathMTU lowers the MTU of the real servers' network below what
// the client sends: the router on the way drops the wrapped packets and
// says so to the director, which tells the client with the MTU inside
// the tunnel (as IPVS relays "fragmentation needed"). An upload and a
// download must complete intact.
func TestTUNPathMTU(t *testing.T) {
	skipUnlessRoot(t)
	n, err := lab.BuildTUN("uvstmtu", 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	// The real servers' segment carries 1400 bytes: its bridge ports, the
	// router's eth1 and the server's eth0.
	setMTU := func(h *testbed.Host, dev string) {
		if out, err := h.Exec("ip", "link", "set", "dev", dev, "mtu", "1400"); err != nil {
			t.Fatalf("%s %s: %v %s", h.Name, dev, err, out)
		}
	}
	out, err := n.SwB.Exec("sh", "-c", "ls /sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range strings.Fields(out) {
		if dev != "lo" {
			setMTU(n.SwB, dev)
		}
	}
	setMTU(n.Router, "eth1")
	setMTU(n.RS[0], "eth0")
	startRealServer(t, n.RS[0], "--vip", lab.TUNVIP+","+lab.TUNVIP6, "--from", lab.TUNDirIP+","+lab.TUNDirIP6)
	e := &fwdEnv{t: t, client: n.Client, director: n.Director, rs: n.RS, dir: t.TempDir()}
	e.serveAll(lab.TUNVIP, lab.TUNVIP6)
	e.start("--io", "afpacket", "--metrics", net.JoinHostPort(lab.TUNDirIP, "9219"))
	for _, fam := range []struct{ vip, svc, rs string }{
		{lab.TUNVIP, lab.TUNVIP, lab.TUNRSIP(0)},
		{lab.TUNVIP6, "[" + lab.TUNVIP6 + "]", "[" + lab.TUNRSIP6(0) + "]"},
	} {
		for _, port := range []string{"9000", "9001"} {
			e.ipvsadm(t, "-A", "-t", fam.svc+":"+port, "-s", "rr")
			e.ipvsadm(t, "-a", "-t", fam.svc+":"+port, "-r", fam.rs+":"+port, "-i")
		}
		e.bulk(t, fam.vip)
	}
	m := scrapeFrom(t, n.Director, net.JoinHostPort(lab.TUNDirIP, "9219"))
	if !regexp.MustCompile(`uvs_dropped_packets_total\{reason="tunnel_too_big"\} [1-9]`).MatchString(m) {
		t.Errorf("no relayed too-big counted:\n%s", grepLines(m, "uvs_dropped"))
	}
}

// scrapeFrom fetches /metrics from addr inside h.
func scrapeFrom(t *testing.T, h *testbed.Host, addr string) string {
	t.Helper()
	hc := h.HTTPClient()
	hc.Timeout = 5 * time.Second
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// onePacket checks one-packet scheduling (-o) through tunnels: datagrams
// from one client socket are scheduled one by one, so rr alternates them
// between the servers, and no connection entry stays behind.
func (e *fwdEnv) onePacket(t *testing.T, vip, svc, rs1, rs2 string) {
	t.Helper()
	e.ipvsadm(t, "-A", "-u", svc+":5353", "-s", "rr", "-o")
	defer e.ipvsadm(t, "-D", "-u", svc+":5353")
	// The servers echo on :53; the service's port maps to the servers'
	// only for NAT, so they listen on :5353 here too.
	for i, h := range e.rs {
		pc, err := h.ListenPacket("udp", net.JoinHostPort(vip, "5353"))
		if err != nil {
			t.Fatal(err)
		}
		defer testbed.ServeUDPEcho(pc, fmt.Sprintf("rs%d ", i+1))()
	}
	e.ipvsadm(t, "-a", "-u", svc+":5353", "-r", strings.Replace(rs1, ":53", ":5353", 1), "-i")
	e.ipvsadm(t, "-a", "-u", svc+":5353", "-r", strings.Replace(rs2, ":53", ":5353", 1), "-i")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.client.Dial(ctx, "udp", net.JoinHostPort(vip, "5353"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	buf := make([]byte, 512)
	for i := range 4 {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprintf(c, "q%d", i); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		got = append(got, strings.Fields(string(buf[:n]))[0])
	}
	if strings.Join(got, ",") != "rs2,rs1,rs2,rs1" {
		t.Errorf("one socket's datagrams went to %v, want rs2,rs1,rs2,rs1", got)
	}
	if out := e.ipvsadm(t, "-L", "-n", "-c"); strings.Contains(out, net.JoinHostPort(vip, "5353")+" ") {
		t.Errorf("one-packet scheduling left connection entries:\n%s", out)
	}
}
