package director_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
)

// TestPathMTU: a packet larger than the MTU of the interface the director
// would send it out of is not sent (the kernel would refuse it, or a
// physical link drop it) but answered, as a router and IPVS answer it:
// ICMP "fragmentation needed" or ICMPv6 "packet too big", quoting the
// packet as its sender sent it, so that the sender's kernel lowers its
// path MTU and resends smaller. Without it, path MTU discovery through
// the director is a black hole.
func TestPathMTU(t *testing.T) {
	e := newEnv(t, "afpacket")
	e.start("--metrics", lab.DirOuterIP+":9100")
	// The MTUs change while the director runs: it follows them.
	setMTU := func(t *testing.T, dev, mtu string) {
		t.Helper()
		if out, err := e.n.Director.Exec("ip", "link", "set", "dev", dev, "mtu", mtu); err != nil {
			t.Fatalf("set MTU: %v: %s", err, out)
		}
	}
	setMTU(t, "eth1", "1400")

	for _, v6 := range []bool{false, true} {
		name, vip, rs := "udp4", lab.DirOuterIP+":53", lab.RS1IP+":53"
		if v6 {
			name, vip, rs = "udp6", "["+lab.DirOuterIP6+"]:53", "["+lab.RS1IP6+"]:53"
		}
		t.Run(name+" to a real server behind a smaller MTU", func(t *testing.T) {
			e.ipvsadm(t, "-A", "-u", vip, "-s", "rr")
			defer e.ipvsadm(t, "-D", "-u", vip)
			e.ipvsadm(t, "-a", "-u", vip, "-r", rs, "-m")
			mtu, err := udpPathMTU(e, vip, v6)
			if err != nil {
				t.Fatal(err)
			}
			if mtu != 1400 {
				t.Errorf("the client's path MTU to %s: %d, want 1400 (the director's inner interface)", vip, mtu)
			}
		})
	}

	t.Run("tcp4 replies to a client behind a smaller MTU", func(t *testing.T) {
		// The client's side is the small one now; its own interface
		// keeps 1500, so only the director's answers can teach the real
		// server.
		setMTU(t, "eth1", "1500")
		setMTU(t, "eth0", "1400")
		// Forget what the UDP subtest taught the client about the VIP, or
		// its SYN would ask for segments that fit already.
		if out, err := e.n.Client.Exec("ip", "route", "flush", "cache"); err != nil {
			t.Fatalf("flush the client's route cache: %v: %s", err, out)
		}
		const size = 256 << 10
		body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
		e.serve(e.n.RS[0], ":9001", func(c net.Conn) { c.Write(body) })
		vip := lab.DirOuterIP + ":9001"
		e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
		defer e.ipvsadm(t, "-D", "-t", vip)
		e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP+":9001", "-m")
		var got []byte
		err := e.n.Client.Do(func() error {
			c, err := net.DialTimeout("tcp", vip, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			got, err = io.ReadAll(c)
			return err
		})
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("download through the director: %d of %d bytes, %v", len(got), len(body), err)
		}
		// The real server learned the path MTU to the client from the
		// director's answers to its full-sized segments.
		out, err := e.n.RS[0].Exec("ip", "-4", "route", "get", lab.ClientIP)
		if err != nil || !strings.Contains(out, "mtu 1400") {
			t.Errorf("real server's route to the client: %v\n%s\nwant a learned mtu 1400", err, out)
		}
	})

	if n := e.dropped(t, "too_big"); n < 3 {
		t.Errorf("too_big drops: %d, want at least one per subtest", n)
	}
}

// udpPathMTU sends datagrams with DF from the client to vip until the
// client's kernel reports a path MTU below 1500 (or 3 s pass), after one
// small datagram that must be echoed, and returns that path MTU.
func udpPathMTU(e *env, vip string, v6 bool) (int, error) {
	mtu := 0
	err := e.n.Client.Do(func() error {
		level, discover, query := syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_MTU
		if v6 {
			level, discover, query = syscall.IPPROTO_IPV6, syscall.IPV6_MTU_DISCOVER, syscall.IPV6_MTU
		}
		c, rc, err := dialUDPWith("udp", vip, func(fd int) error {
			return syscall.SetsockoptInt(fd, level, discover, syscall.IP_PMTUDISC_DO)
		})
		if err != nil {
			return err
		}
		defer c.Close()
		var serr error
		// The service works for datagrams that fit.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(make([]byte, 1200)); err != nil {
			return err
		}
		if _, err := c.Read(make([]byte, 2048)); err != nil {
			return err
		}
		big := make([]byte, 1450) // 1478 or 1498 bytes of IP packet
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			// Once the kernel knows the smaller MTU, it refuses the
			// datagram itself (EMSGSIZE).
			c.Write(big)
			time.Sleep(50 * time.Millisecond)
			if err := rc.Control(func(fd uintptr) {
				mtu, serr = syscall.GetsockoptInt(int(fd), level, query)
			}); err != nil || serr != nil {
				return errors.Join(err, serr)
			}
			if mtu < 1500 {
				break
			}
		}
		return nil
	})
	return mtu, err
}

// dialUDPWith connects a UDP socket to addr (in the calling namespace)
// after set has set its options, and returns it with its raw connection.
func dialUDPWith(network, addr string, set func(fd int) error) (*net.UDPConn, syscall.RawConn, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, nil, err
	}
	uc := c.(*net.UDPConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil || serr != nil {
		c.Close()
		return nil, nil, errors.Join(err, serr)
	}
	return uc, rc, nil
}
