package director_test

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
)

// TestClientPortReuse: the client's kernel picks ephemeral ports per
// destination, so it reuses a port towards another virtual service while
// its earlier connection from that port is still in the director's table.
// When both services send it to the same real server, the two share the
// real server's four-tuple (the director's reply tuple). The new
// connection must go through once the old one is over: closed (TIME_WAIT),
// or cut by deleting its service (with --io tun its packets then no
// longer reach the director, so its entry stays ESTABLISHED). While the
// old one is open the real server could not tell the two apart: the new
// one is refused, and counted.
func TestClientPortReuse(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		for _, how := range []string{"closed", "service deleted", "open"} {
			t.Run(mode+"/"+how, func(t *testing.T) {
				e := newSchedEnv(t, mode, "--metrics", lab.DirOuterIP+":9100")
				a, b := lab.DirOuterIP+":7011", lab.DirOuterIP+":7012"
				for _, svc := range []string{a, b} {
					e.ipvsadm(t, "-A", "-t", svc, "-s", "rr")
					e.ipvsadm(t, "-a", "-t", svc, "-r", schedRS[0]+":"+nameService, "-m")
				}
				const port = 40000
				c, err := e.dialPort(port, a, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if name, err := readName(c); err != nil || name != "rs1" {
					t.Fatalf("first connection: %q, %v", name, err)
				}
				switch how {
				case "open":
					defer c.Close()
					c2, err := e.dialPort(port, b, 1500*time.Millisecond)
					if err == nil {
						c2.Close()
						t.Fatalf("a second connection over an open one's real-server tuple was accepted")
					}
					if n := e.dropped(t, "tuple_in_use"); n < 1 {
						t.Errorf("refused SYNs counted as tuple_in_use: %d, want at least 1", n)
					}
					return
				case "service deleted":
					e.ipvsadm(t, "-D", "-t", a)
					c.Close()
				case "closed":
					c.Close()
					for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.ipvsadm(t, "-L", "-n", "-c"), "TIME_WAIT"); {
						if time.Now().After(deadline) {
							t.Fatalf("first connection not in TIME_WAIT:\n%s", e.ipvsadm(t, "-L", "-n", "-c"))
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
				c, err = e.dialPort(port, b, 5*time.Second)
				if err != nil {
					t.Fatalf("second connection from the same client port, to %s: %v\n%s", b, err, e.ipvsadm(t, "-L", "-n", "-c"))
				}
				defer c.Close()
				if name, err := readName(c); err != nil || name != "rs1" {
					t.Fatalf("second connection: %q, %v", name, err)
				}
				if n := e.dropped(t, "tuple_in_use"); n != 0 {
					t.Errorf("tuple_in_use drops: %d, want 0", n)
				}
			})
		}
	}
}

// dropped scrapes the director's uvs_dropped_packets_total for reason
// (the director runs with --metrics on lab.DirOuterIP:9100).
func (e *env) dropped(t *testing.T, reason string) int {
	t.Helper()
	prefix := `uvs_dropped_packets_total{reason="` + reason + `"} `
	for _, l := range strings.Split(e.scrape(t), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("metrics lack %s", prefix)
	return 0
}

// dialPort connects from the client's address and port, within timeout. It
// sets SO_REUSEADDR so that the port can be taken again while the
// client's own socket from it is in TIME_WAIT.
func (e *env) dialPort(port int, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := e.n.Client.Do(func() error {
		d := net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(lab.ClientIP), Port: port},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
				}); err != nil {
					return err
				}
				return serr
			},
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// readName reads the name service's answer.
func readName(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}
