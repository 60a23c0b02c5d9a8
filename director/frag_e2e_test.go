package director_test

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"uvs/lab"
)

// TestFragmentedUDP: UDP datagrams larger than the links, fragmented by
// their senders, go through a NAT service both ways, as through IPVS
// (which reassembles them): the director reads each reassembled, rewrites
// it and sends it on as fragments again. The director's kernel does not
// see them: it would reassemble its own copy for the VIP, its local
// address, find no socket and answer "port unreachable", which a
// connected client socket reports on its next read.
func TestFragmentedUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := "IPv4"
		if v6 {
			name = "IPv6"
		}
		t.Run(name, func(t *testing.T) { testFragmentedUDP(t, v6) })
	}
}

func testFragmentedUDP(t *testing.T, v6 bool) {
	e := newEnv(t, "afpacket")
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
