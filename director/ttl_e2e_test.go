package director_test

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"uvs/lab"
	"uvs/testbed"
)

// TestTTLOneHop: a packet loses one hop across the director, both ways,
// as across IPVS (and any router), whichever backend and whether or not
// the kernel forwarded it to or for the director (the TUN device, a
// marked packet's copy).
func TestTTLOneHop(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			e.start()
			vip := lab.DirOuterIP
			// rs1 answers each datagram with the TTL it arrived with.
			pc, err := e.n.RS[0].ListenPacket("udp4", ":5300")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(serveTTL(t, pc))
			e.ipvsadm(t, "-A", "-u", vip+":5300", "-s", "rr")
			e.ipvsadm(t, "-a", "-u", vip+":5300", "-r", lab.RS1IP, "-m")
			e.mark(t, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "udp", "-d", vip, "--dport", "5301", "-j", "MARK", "--set-mark", "20")
			e.ipvsadm(t, "-A", "-f", "20", "-s", "rr")
			e.ipvsadm(t, "-a", "-f", "20", "-r", lab.RS1IP+":5300", "-m")
			for _, port := range []string{"5300", "5301"} {
				atServer, atClient, err := askTTL(e.n.Client, net.JoinHostPort(vip, port))
				if err != nil {
					t.Fatalf("port %s: %v", port, err)
				}
				if atServer != 63 || atClient != 63 {
					t.Errorf("port %s: TTL %d at the server, %d back at the client; want 63 and 63 (sent with 64)", port, atServer, atClient)
				}
			}
		})
	}
}

// serveTTL answers every datagram on pc with the TTL it arrived with.
func serveTTL(t *testing.T, pc net.PacketConn) (stop func()) {
	p := ipv4.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			_, cm, from, err := p.ReadFrom(buf)
			if err != nil {
				return
			}
			if cm != nil {
				p.WriteTo([]byte(strconv.Itoa(cm.TTL)), nil, from)
			}
		}
	}()
	return func() { pc.Close(); <-done }
}

// askTTL sends one datagram with TTL 64 from h to addr and returns the TTL
// the server saw and the one its answer arrived with.
func askTTL(h *testbed.Host, addr string) (atServer, atClient int, err error) {
	pc, err := h.ListenPacket("udp4", ":0")
	if err != nil {
		return 0, 0, err
	}
	defer pc.Close()
	p := ipv4.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		return 0, 0, err
	}
	if err := p.SetTTL(64); err != nil {
		return 0, 0, err
	}
	to, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return 0, 0, err
	}
	p.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := p.WriteTo([]byte("ttl?"), nil, to); err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 64)
	n, cm, _, err := p.ReadFrom(buf)
	if err != nil {
		return 0, 0, err
	}
	if cm == nil {
		return 0, 0, fmt.Errorf("no TTL with the answer")
	}
	atServer, err = strconv.Atoi(string(buf[:n]))
	return atServer, cm.TTL, err
}
