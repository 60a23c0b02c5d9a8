package director_test

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"uvs/lab"
)

// TestFragmentedUDP: UDP datagrams larger than the links, fragmented by
// their senders, go through a NAT service both ways, as through IPVS
// (which reassembles them): the director reads each reassembled, rewrites
// it and sends it on as fragments again. The director's kernel does not
// see them: it would reassemble its own copy for the VIP, its local
// address, find no socket and answer "port unreachable", which a
// connected client socket reports on its next read.
func TestFragmentedUDP(t *testing.T) { eachBackendAndFamily(t, testFragmentedUDP) }

// eachBackendAndFamily runs f as a subtest for each I/O backend and IP
// family.
func eachBackendAndFamily(t *testing.T, f func(t *testing.T, io string, v6 bool)) {
	for _, io := range []string{"afpacket", "tun"} {
		for _, v6 := range []bool{false, true} {
			name := io + "/IPv4"
			if v6 {
				name = io + "/IPv6"
			}
			t.Run(name, func(t *testing.T) { f(t, io, v6) })
		}
	}
}

func testFragmentedUDP(t *testing.T, io string, v6 bool) {
	e := newEnv(t, io)
	e.start()
	vip, rs, network, client, proto := lab.DirOuterIP+":53", lab.RS1IP, "udp4", lab.ClientIP, "Udp"
	if v6 {
		vip, rs, network, client, proto = "["+lab.DirOuterIP6+"]:53", "["+lab.RS1IP6+"]:53", "udp6", "["+lab.ClientIP6+"]", "Udp6"
	}
	e.ipvsadm(t, "-A", "-u", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-u", vip, "-r", rs, "-m")
	noPorts := snmp6(t, e, v6, proto, "NoPorts")
	unreach := snmp6(t, e, v6, "Icmp", "OutDestUnreachs")
	err := e.n.Client.Do(func() error {
		c, err := net.Dial(network, vip)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 65536)
		for i, size := range []int{4000, 9000, 1200, 30000} {
			payload := bytes.Repeat([]byte{byte('a' + i)}, size)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(payload); err != nil {
				return fmt.Errorf("datagram %d (%d bytes): %w", i+1, size, err)
			}
			n, err := c.Read(buf)
			if err != nil {
				return fmt.Errorf("answer to datagram %d (%d bytes): %w", i+1, size, err)
			}
			want := "rs1 " + string(payload) + " from " + client + ":"
			if got := string(buf[:n]); !strings.HasPrefix(got, want) {
				return fmt.Errorf("answer to datagram %d (%d bytes): %d bytes, not the echo", i+1, size, n)
			}
		}
		// A burst: many datagrams complete within one batch of frames.
		const burst = 16
		for i := range burst {
			if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 3000)); err != nil {
				return fmt.Errorf("burst datagram %d: %w", i+1, err)
			}
		}
		for i := range burst {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if n, err := c.Read(buf); err != nil || n < 3000 {
				return fmt.Errorf("answer %d of a burst of %d: %d bytes, %v", i+1, burst, n, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// (Ip ReasmReqds would count the reassembly done for the director's
	// sockets too.)
	if n := snmp6(t, e, v6, proto, "NoPorts"); n != noPorts {
		t.Errorf("the director's kernel took %d datagrams for a port of its own", n-noPorts)
	}
	if n := snmp6(t, e, v6, "Icmp", "OutDestUnreachs"); n != unreach {
		t.Errorf("the director's kernel sent %d destination unreachable errors", n-unreach)
	}
	// Nor does it hold the later fragments of its copy, waiting 30 s for
	// a first fragment the director's rules dropped: they would fill the
	// memory reassembly shares with the director's own.
	file, want := "/proc/net/sockstat", "FRAG: inuse 0 memory 0"
	if v6 {
		file, want = "/proc/net/sockstat6", "FRAG6: inuse 0 memory 0"
	}
	out, err := e.n.Director.Exec("cat", file)
	if err != nil || !strings.Contains(out, want) {
		t.Errorf("the director's kernel holds fragments: %v\n%s", err, out)
	}
}

// snmp6 is snmp for IPv4, or the same counter of /proc/net/snmp6 (which
// names it Udp6NoPorts, Icmp6OutDestUnreachs) for IPv6.
func snmp6(t *testing.T, e *env, v6 bool, proto, field string) int64 {
	t.Helper()
	if !v6 {
		return snmp(t, e.n.Director, proto, field)
	}
	out, err := e.n.Director.Exec("cat", "/proc/net/snmp6")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSuffix(proto, "6") + "6" + field
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			var v int64
			fmt.Sscan(f[1], &v)
			return v
		}
	}
	t.Fatalf("no %s in /proc/net/snmp6", key)
	return 0
}

// TestOwnFragmentsPass: a NAT real server's own fragmented UDP to
// elsewhere, routed by the director's kernel and through no VIP, arrives
// whole while the server is a real server of a UDP service: the kernel's
// copy of a real server's fragments is only dropped when it is a
// balanced reply, which a port tells (found in review). With TUN the
// director reassembles them and hands the datagram back to the kernel.
func TestOwnFragmentsPass(t *testing.T) {
	for _, io := range []string{"afpacket", "tun"} {
		t.Run(io, func(t *testing.T) { testOwnFragmentsPass(t, io, false) })
	}
	t.Run("tun/IPv6", func(t *testing.T) { testOwnFragmentsPass(t, "tun", true) })
}

func testOwnFragmentsPass(t *testing.T, io string, v6 bool) {
	e := newEnv(t, io)
	e.start()
	vip, rs, network, client := lab.DirOuterIP+":53", lab.RS1IP+":53", "udp4", lab.ClientIP+":6000"
	if v6 {
		vip, rs, network, client = "["+lab.DirOuterIP6+"]:53", "["+lab.RS1IP6+"]:53", "udp6", "["+lab.ClientIP6+"]:6000"
	}
	e.ipvsadm(t, "-A", "-u", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-u", vip, "-r", rs, "-m")
	pc, err := e.n.Client.ListenPacket(network, ":6000")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, size := range []int{1000, 4000} {
		err := e.n.RS[0].Do(func() error {
			c, err := net.Dial(network, client)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(bytes.Repeat([]byte{'x'}, size))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil || n != size {
			t.Errorf("%d-byte datagram from the real server itself: got %d bytes, %v", size, n, err)
		}
	}
}

// TestUDPGSOTooBig: a client's UDP GSO send (three 1400-byte datagrams in
// one packet, without DF) towards real servers behind a 1200-byte MTU.
// Each segment is a datagram of its own: cutting the packet into
// fragments as one datagram would glue them together (found in review).
// The director drops it and counts it; a router would fragment each
// segment (not done here). Behind 1500 bytes the three arrive as sent.
func TestUDPGSOTooBig(t *testing.T) {
	for _, mtu := range []string{"1500", "1200"} {
		t.Run("mtu "+mtu, func(t *testing.T) {
			e := newEnv(t, "afpacket")
			e.start("--metrics", lab.DirOuterIP+":9100")
			if out, err := e.n.Director.Exec("ip", "link", "set", "dev", "eth1", "mtu", mtu); err != nil {
				t.Fatal(err, out)
			}
			pc, err := e.n.RS[0].ListenPacket("udp4", ":5400")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			vip := lab.DirOuterIP + ":5400"
			e.ipvsadm(t, "-A", "-u", vip, "-s", "rr")
			e.ipvsadm(t, "-a", "-u", vip, "-r", lab.RS1IP+":5400", "-m")
			err = e.n.Client.Do(func() error {
				c, _, err := dialUDPWith("udp4", vip, func(fd int) error {
					if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
						return err
					}
					return unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT, 1400)
				})
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write(bytes.Repeat([]byte{'z'}, 3*1400))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			buf := make([]byte, 65536)
			for {
				pc.SetReadDeadline(time.Now().Add(time.Second))
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				got = append(got, n)
			}
			want := fmt.Sprint([]int{1400, 1400, 1400})
			if mtu == "1200" {
				want = "[]"
				if n := e.dropped(t, "too_big"); n != 1 {
					t.Errorf("too_big drops: %d, want 1", n)
				}
			}
			if fmt.Sprint(got) != want {
				t.Errorf("the real server received datagrams of %v bytes, want %s", got, want)
			}
		})
	}
}

// TestLargePing: a 4000-byte ping from the client to a real server, with a
// UDP service on it, and the real server's fragmented echo reply back.
// Through TUN the reply is diverted into the director (a real server's
// ICMP is, by protocol); its fragments must go on as they came: the
// kernel forwards no whole IPv6 packet larger than the way out (found in
// review).
func TestLargePing(t *testing.T) {
	eachBackendAndFamily(t, func(t *testing.T, io string, v6 bool) {
		e := newEnv(t, io)
		e.start()
		vip, rs, target, network, proto := lab.DirOuterIP+":53", lab.RS1IP+":53", lab.RS1IP, "ip4:icmp", 1
		var typ icmp.Type = ipv4.ICMPTypeEcho
		if v6 {
			vip, rs, target, network, proto = "["+lab.DirOuterIP6+"]:53", "["+lab.RS1IP6+"]:53", lab.RS1IP6, "ip6:ipv6-icmp", 58
			typ = ipv6.ICMPTypeEchoRequest
		}
		e.ipvsadm(t, "-A", "-u", vip, "-s", "rr")
		e.ipvsadm(t, "-a", "-u", vip, "-r", rs, "-m")
		err := e.n.Client.Do(func() error {
			c, err := icmp.ListenPacket(network, "")
			if err != nil {
				return err
			}
			defer c.Close()
			data := bytes.Repeat([]byte{'p'}, 4000)
			m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: 7, Seq: 1, Data: data}}
			b, err := m.Marshal(nil)
			if err != nil {
				return err
			}
			if _, err := c.WriteTo(b, &net.IPAddr{IP: net.ParseIP(target)}); err != nil {
				return err
			}
			buf := make([]byte, 65536)
			for deadline := time.Now().Add(3 * time.Second); ; {
				c.SetReadDeadline(deadline)
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return fmt.Errorf("no echo reply: %w", err)
				}
				r, err := icmp.ParseMessage(proto, buf[:n])
				if err != nil {
					continue
				}
				if echo, ok := r.Body.(*icmp.Echo); ok && r.Type != typ && echo.ID == 7 && bytes.Equal(echo.Data, data) {
					return nil
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
