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
	e := newEnv(t, "afpacket")
	e.start()
	vip := lab.DirOuterIP + ":53"
	e.ipvsadm(t, "-A", "-u", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-u", vip, "-r", lab.RS1IP, "-m")
	noPorts := snmp(t, e.n.Director, "Udp", "NoPorts")
	unreach := snmp(t, e.n.Director, "Icmp", "OutDestUnreachs")
	err := e.n.Client.Do(func() error {
		c, err := net.Dial("udp4", vip)
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
			want := "rs1 " + string(payload) + " from " + lab.ClientIP + ":"
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
	if n := snmp(t, e.n.Director, "Udp", "NoPorts"); n != noPorts {
		t.Errorf("the director's kernel took %d datagrams for a port of its own", n-noPorts)
	}
	if n := snmp(t, e.n.Director, "Icmp", "OutDestUnreachs"); n != unreach {
		t.Errorf("the director's kernel sent %d destination unreachable errors", n-unreach)
	}
	// Nor does it hold the later fragments of its copy, waiting 30 s for
	// a first fragment the director's rules dropped: they would fill the
	// memory reassembly shares with the director's own.
	out, err := e.n.Director.Exec("cat", "/proc/net/sockstat")
	if err != nil || !strings.Contains(out, "FRAG: inuse 0 memory 0") {
		t.Errorf("the director's kernel holds fragments: %v\n%s", err, out)
	}
}
