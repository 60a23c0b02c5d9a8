package director_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"uvs/lab"
)

// TestFWMark is firewall-mark services end to end through the host's own
// rules, typed with Debian's iptables and nft: NAT real servers (the NAT
// topology; DR is the lab's, TestFWMarkDR).
func TestFWMark(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) { testFWMark(t, mode) })
	}
}

// mark runs a command in the director's namespace that must succeed.
func (e *env) mark(t *testing.T, cmd string, args ...string) {
	t.Helper()
	if out, err := e.n.Director.Exec(cmd, args...); err != nil {
		t.Fatalf("%s %s: %v\n%s", cmd, strings.Join(args, " "), err, out)
	}
}

// server is a real server's name from an answer ("rs1-8080" is rs1).
func server(answer string) string {
	return strings.SplitN(strings.TrimSuffix(strings.Fields(answer + " ")[0], ":"), "-", 2)[0]
}

// echoConn opens a connection to addr (an echo port) and returns it with
// the server that answered its first line.
func (e *env) echoConn(t *testing.T, addr string) (net.Conn, *bufio.Reader, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.dialFrom(ctx, "", addr)
	if err != nil {
		return nil, nil, "", err
	}
	r := bufio.NewReader(c)
	ans, err := echo(c, r, "hello")
	if err != nil {
		c.Close()
		return nil, nil, "", err
	}
	return c, r, server(ans), nil
}

func testFWMark(t *testing.T, mode string) {
	e := newEnv(t, mode)
	e.start()
	vip, vip6 := lab.DirOuterIP, lab.DirOuterIP6
	// The tutorial's lines, for this topology's VIP: 80 and 8080 (TCP)
	// and 53 (UDP) marked 20; port 80 of the IPv6 VIP marked 20 too.
	for _, port := range []string{"80", "8080"} {
		e.mark(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "-d", vip, "--dport", port, "-j", "MARK", "--set-mark", "20")
	}
	e.mark(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "udp", "-d", vip, "--dport", "53", "-j", "MARK", "--set-mark", "20")
	e.mark(t, "ip6tables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "-d", vip6, "--dport", "80", "-j", "MARK", "--set-mark", "20")
	e.ipvsadm(t, "-A", "-f", "20", "-s", "wlc", "-p", "1200")
	e.ipvsadm(t, "-a", "-f", "20", "-r", lab.RS1IP, "-m", "-w", "3")
	e.ipvsadm(t, "-a", "-f", "20", "-r", lab.RS2IP, "-m", "-w", "2")
	e.ipvsadm(t, "-A", "-f", "20", "-6", "-s", "wlc", "-p", "1200")
	e.ipvsadm(t, "-a", "-f", "20", "-6", "-r", lab.RS1IP6, "-m", "-w", "3")
	e.ipvsadm(t, "-a", "-f", "20", "-6", "-r", lab.RS2IP6, "-m", "-w", "2")

	t.Run("listing", func(t *testing.T) {
		want := "FWM  20 wlc persistent 1200\n" +
			rsLine(lab.RS1IP+":0", 3, 0, 0) + "\n" + rsLine(lab.RS2IP+":0", 2, 0, 0) + "\n" +
			"FWM  20 IPv6 wlc persistent 1200\n"
		if out := e.ipvsadm(t, "-L", "-n"); !strings.Contains(out, want) {
			t.Errorf("listing:\n%s\nwant it to hold:\n%s", out, want)
		}
		if out := e.ipvsadm(t, "-S", "-n"); !strings.Contains(out, "-A -f 20 -s wlc -p 1200\n") || !strings.Contains(out, "-A -f 20 -6 -s wlc -p 1200\n") {
			t.Errorf("ipvsadm -S:\n%s", out)
		}
	})

	t.Run("one client keeps its server across ports and protocols", func(t *testing.T) {
		var got []string
		for i := range 6 {
			port := []string{"80", "8080"}[i%2]
			body, seen, err := e.get("http://" + net.JoinHostPort(vip, port) + "/")
			if err != nil {
				t.Fatalf("request %d to port %s: %v", i+1, port, err)
			}
			if host, _, _ := net.SplitHostPort(seen); host != lab.ClientIP {
				t.Errorf("real server saw client %q, want %s", seen, lab.ClientIP)
			}
			got = append(got, server(body))
		}
		ans, err := udpAsk(e.n.Client, net.JoinHostPort(vip, "53"), "q")
		if err != nil {
			t.Fatalf("udp: %v", err)
		}
		got = append(got, server(ans))
		for _, s := range got[1:] {
			if s != got[0] {
				t.Fatalf("answers from %v, want one server for every port and protocol of the mark", got)
			}
		}
		out := e.ipvsadm(t, "-L", "-n", "-c")
		tmpl := regexp.MustCompile(`(?m)^IP +\S+ +(NONE|ASSURED) +` + regexp.QuoteMeta(lab.ClientIP) + `:0 +0\.0\.0\.20:0 +198\.18\.1\.[23]:0$`)
		if !tmpl.MatchString(out) {
			t.Errorf("no firewall-mark template for the client in:\n%s", out)
		}
	})

	t.Run("several clients spread by wlc and each keeps its server", func(t *testing.T) {
		seen := map[string]bool{}
		for i := range 6 {
			src := fmt.Sprintf("198.18.0.%d", 10+i)
			if err := e.n.Client.Addr("eth0", src+"/24"); err != nil {
				t.Fatal(err)
			}
			first := ""
			for j, port := range []string{"80", "8080", "80"} {
				body, _, err := e.getFrom(src, "http://"+net.JoinHostPort(vip, port)+"/")
				if err != nil {
					t.Fatalf("client %s request %d: %v", src, j+1, err)
				}
				if first == "" {
					first = server(body)
				}
				if server(body) != first {
					t.Errorf("client %s: port %s went to %s, its first request to %s", src, port, server(body), first)
				}
			}
			seen[first] = true
		}
		if !seen["rs1"] || !seen["rs2"] {
			t.Errorf("six clients went to %v, want both servers", seen)
		}
	})

	t.Run("IPv6", func(t *testing.T) {
		hc := e.n.Client.HTTPClient()
		hc.Timeout = 5 * time.Second
		first := ""
		for i := range 3 {
			resp, err := hc.Get("http://[" + vip6 + "]/")
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			var b strings.Builder
			bufio.NewReader(resp.Body).WriteTo(&b)
			resp.Body.Close()
			if first == "" {
				first = server(b.String())
			}
			if server(b.String()) != first {
				t.Errorf("request %d went to %s, the first to %s", i+1, server(b.String()), first)
			}
		}
	})

	t.Run("a packet not marked is not balanced", func(t *testing.T) {
		if name, err := e.pick(t, net.JoinHostPort(vip, "7000")); err == nil {
			t.Fatalf("port 7000 is marked by nothing, yet %s answered", name)
		}
	})

	t.Run("a rule added, changed, and the same rules in nft", func(t *testing.T) {
		// Held across every change: an established connection keeps its
		// server.
		e.mark(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "-d", vip, "--dport", "7000", "-j", "MARK", "--set-mark", "20")
		c, r, name, err := e.echoConn(t, net.JoinHostPort(vip, "7000"))
		if err != nil {
			t.Fatalf("port 7000 once marked: %v", err)
		}
		defer c.Close()
		// Changed: 7000 now gets mark 21, served by a service of its own
		// with rs2 alone; new connections go there, the held one stays.
		e.ipvsadm(t, "-A", "-f", "21", "-s", "rr")
		e.ipvsadm(t, "-a", "-f", "21", "-r", lab.RS2IP, "-m")
		e.mark(t, "iptables", "-t", "mangle", "-R", "PREROUTING", "4", "-i", "eth0", "-p", "tcp", "-d", vip, "--dport", "7000", "-j", "MARK", "--set-mark", "21")
		for i := range 4 {
			c2, _, got, err := e.echoConn(t, net.JoinHostPort(vip, "7000"))
			if err != nil || got != "rs2" {
				t.Fatalf("new connection %d after the change: %q %v, want rs2", i+1, got, err)
			}
			c2.Close()
		}
		if got, err := echo(c, r, "after"); err != nil || got != name+": after" {
			t.Fatalf("the held connection (to %s) after the change: %q %v", name, got, err)
		}
		// A rule deleted, and one written with nft in its place: its own
		// table, mark 22 on UDP 53.
		e.mark(t, "iptables", "-t", "mangle", "-D", "PREROUTING", "-i", "eth0", "-p", "udp", "-d", vip, "--dport", "53", "-j", "MARK", "--set-mark", "20")
		e.mark(t, "nft", "add", "table", "ip", "uvstest")
		e.mark(t, "nft", "add", "chain", "ip", "uvstest", "pre", "{ type filter hook prerouting priority mangle; }")
		e.mark(t, "nft", "add", "rule", "ip", "uvstest", "pre", "iifname", "eth0", "ip", "daddr", vip, "udp", "dport", "53", "meta", "mark", "set", "22")
		e.ipvsadm(t, "-A", "-f", "22", "-s", "rr")
		e.ipvsadm(t, "-a", "-f", "22", "-r", lab.RS1IP, "-m")
		for i := range 3 {
			ans, err := udpAsk(e.n.Client, net.JoinHostPort(vip, "53"), fmt.Sprintf("n%d", i))
			if err != nil || server(ans) != "rs1" {
				t.Fatalf("udp %d with the nft rule: %q %v, want rs1 (mark 22)", i+1, ans, err)
			}
		}
	})

	t.Run("one-packet scheduling with marks", func(t *testing.T) {
		e.mark(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "udp", "-d", vip, "--dport", "5353", "-j", "MARK", "--set-mark", "23")
		e.ipvsadm(t, "-A", "-f", "23", "-s", "rr", "-o")
		e.ipvsadm(t, "-a", "-f", "23", "-r", lab.RS1IP, "-m")
		e.ipvsadm(t, "-a", "-f", "23", "-r", lab.RS2IP, "-m")
		if out := e.ipvsadm(t, "-L", "-n"); !strings.Contains(out, "FWM  23 rr ops\n") {
			t.Errorf("listing has no FWM  23 rr ops:\n%s", out)
		}
	})
	if t.Failed() {
		out, _ := e.n.Director.Exec("nft", "list", "ruleset")
		t.Logf("director's ruleset:\n%s", out)
	}
}

// TestFWMarkPrecedence: a packet both a mark service and an address
// service match goes to the mark service, as IPVS looks up the mark
// first, with either backend; a datagram to an address service that no
// rule marks is balanced once, not once per copy the director sees.
func TestFWMarkPrecedence(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			e.start()
			vip := lab.DirOuterIP
			e.ipvsadm(t, "-A", "-t", vip+":80", "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip+":80", "-r", lab.RS1IP, "-m")
			e.ipvsadm(t, "-A", "-u", vip+":53", "-s", "rr")
			e.ipvsadm(t, "-a", "-u", vip+":53", "-r", lab.RS1IP, "-m")
			e.mark(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "-d", vip, "--dport", "80", "-j", "MARK", "--set-mark", "20")
			e.ipvsadm(t, "-A", "-f", "20", "-s", "rr")
			e.ipvsadm(t, "-a", "-f", "20", "-r", lab.RS2IP, "-m")
			vip6 := "[" + lab.DirOuterIP6 + "]"
			e.ipvsadm(t, "-A", "-t", vip6+":80", "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip6+":80", "-r", lab.RS1IP6, "-m")
			e.mark(t, "ip6tables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "-d", lab.DirOuterIP6, "--dport", "80", "-j", "MARK", "--set-mark", "20")
			e.ipvsadm(t, "-A", "-f", "20", "-6", "-s", "rr")
			e.ipvsadm(t, "-a", "-f", "20", "-6", "-r", lab.RS2IP6, "-m")
			for i := range 3 {
				for _, v := range []string{vip, vip6} {
					body, _, err := e.get("http://" + v + "/")
					if err != nil || server(body) != "rs2" {
						t.Fatalf("request %d to %s: %q %v, want rs2 (the mark service's)", i+1, v, body, err)
					}
				}
			}
			// UDP 53, not marked: the address service's, each datagram
			// answered once.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.n.Client.Dial(ctx, "udp", net.JoinHostPort(vip, "53"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 512)
			for i := range 20 {
				msg := fmt.Sprintf("q%d", i)
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				n, err := c.Read(buf)
				if got := string(buf[:n]); err != nil || !strings.HasPrefix(got, "rs1 "+msg+" ") {
					t.Fatalf("datagram %d: answer %q %v, want %q…", i+1, got, err, "rs1 "+msg)
				}
			}
			c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			if n, err := c.Read(buf); err == nil {
				t.Fatalf("an answer too many: %q (a datagram balanced twice)", buf[:n])
			}
		})
	}
}

// TestFWMarkRuleDeleted: deleting the rule that marked an established
// connection keeps the connection on its server, as IPVS finds it by its
// entry; new connections are then what the remaining rules make them.
func TestFWMarkRuleDeleted(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			e.start()
			t.Cleanup(func() {
				if t.Failed() {
					out, _ := e.n.Director.Exec("nft", "list", "ruleset")
					t.Logf("director's ruleset:\n%s", out)
				}
			})
			vip := lab.DirOuterIP
			// TCP 7000 has an address service too (rs1); UDP 53 has none.
			e.ipvsadm(t, "-A", "-t", vip+":7000", "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip+":7000", "-r", lab.RS1IP, "-m")
			rules := [][]string{
				{"-p", "tcp", "-d", vip, "--dport", "7000", "-j", "MARK", "--set-mark", "20"},
				{"-p", "udp", "-d", vip, "--dport", "53", "-j", "MARK", "--set-mark", "20"},
			}
			for _, r := range rules {
				e.mark(t, "iptables", append([]string{"-t", "mangle", "-A", "PREROUTING", "-i", "eth0"}, r...)...)
			}
			e.ipvsadm(t, "-A", "-f", "20", "-s", "rr")
			e.ipvsadm(t, "-a", "-f", "20", "-r", lab.RS2IP, "-m")

			c, r, name, err := e.echoConn(t, net.JoinHostPort(vip, "7000"))
			if err != nil || name != "rs2" {
				t.Fatalf("TCP 7000, marked: %q %v, want rs2", name, err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			u, err := e.n.Client.Dial(ctx, "udp", net.JoinHostPort(vip, "53"))
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			ask := func(msg string) (string, error) {
				u.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := u.Write([]byte(msg)); err != nil {
					return "", err
				}
				buf := make([]byte, 512)
				n, err := u.Read(buf)
				return string(buf[:n]), err
			}
			if got, err := ask("before"); err != nil || server(got) != "rs2" {
				t.Fatalf("UDP 53, marked: %q %v, want rs2", got, err)
			}
			for _, r := range rules {
				e.mark(t, "iptables", append([]string{"-t", "mangle", "-D", "PREROUTING", "-i", "eth0"}, r...)...)
			}
			for i := range 3 {
				msg := fmt.Sprintf("after %d", i)
				if got, err := echo(c, r, msg); err != nil || got != "rs2: "+msg {
					t.Fatalf("the held TCP connection after the rule went: %q %v", got, err)
				}
				if got, err := ask(msg); err != nil || server(got) != "rs2" {
					t.Fatalf("the UDP flow after the rule went: %q %v, want rs2", got, err)
				}
			}
			// New connections: TCP 7000 is the address service's, UDP 53
			// nobody's.
			for i := range 3 {
				c2, _, got, err := e.echoConn(t, net.JoinHostPort(vip, "7000"))
				if err != nil || got != "rs1" {
					t.Fatalf("new connection %d to 7000: %q %v, want rs1", i+1, got, err)
				}
				c2.Close()
			}
			if ans, err := udpAsk(e.n.Client, net.JoinHostPort(vip, "53"), "new"); err == nil {
				t.Fatalf("UDP 53 is marked by nothing now, yet %q answered", ans)
			}
		})
	}
}
