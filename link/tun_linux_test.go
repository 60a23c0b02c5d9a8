package link

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	tunLocal  = net.IPv4(198, 18, 0, 1) // on the tun
	tunRemote = net.IPv4(198, 18, 1, 1) // routed into it
)

// tunNS creates a namespace with a multi-queue TUN "uvsln0" holding
// 198.18.0.1/32 and a route for 198.18.1.1/32 into it.
func tunNS(tb testing.TB) (*testNS, *TUN) {
	tb.Helper()
	ns := newNS(tb)
	var t *TUN
	ns.do(tb, func() (err error) {
		t, err = OpenTUN("uvsln0", &TUNConfig{MTU: 1400, MultiQueue: true})
		return err
	})
	tb.Cleanup(func() { t.Close() })
	ns.addr(tb, "uvsln0", "198.18.0.1/32")
	err := ns.nl.RouteAdd(&netlink.Route{
		LinkIndex: t.Index(),
		Dst:       &net.IPNet{IP: tunRemote, Mask: net.CIDRMask(32, 32)},
	})
	if err != nil {
		tb.Fatalf("route into tun: %v", err)
	}
	return ns, t
}

func TestTUNInfo(t *testing.T) {
	needRoot(t)
	ns, tun := tunNS(t)
	l, err := ns.nl.LinkByName("uvsln0")
	if err != nil {
		t.Fatal(err)
	}
	if tun.Ethernet() || !tun.VnetHdr() || tun.Name() != "uvsln0" || tun.Index() != l.Attrs().Index ||
		tun.MTU() != 1400 || l.Attrs().MTU != 1400 || l.Attrs().OperState == netlink.OperDown {
		t.Errorf("tun: eth %v vnet %v %s #%d mtu %d; link #%d mtu %d state %v",
			tun.Ethernet(), tun.VnetHdr(), tun.Name(), tun.Index(), tun.MTU(),
			l.Attrs().Index, l.Attrs().MTU, l.Attrs().OperState)
	}
	if tun.Offload()&unix.TUN_F_TSO4 == 0 || tun.Offload()&unix.TUN_F_CSUM == 0 {
		t.Errorf("offload flags %#x lack CSUM or TSO4", tun.Offload())
	}
}

func TestTUNReadsUDP(t *testing.T) {
	needRoot(t)
	ns, tun := tunNS(t)
	c := dialUDP(t, ns, nil, &net.UDPAddr{IP: tunRemote, Port: 7777})
	payload := []byte("into the tun")
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(5*time.Second, func() { tun.Close() })
	defer timer.Stop()
	bufs, sizes := frameBufs(tun.BatchSize(), headroom)
	for {
		n, err := tun.Read(bufs, sizes, headroom)
		if err != nil {
			t.Fatalf("Read before the datagram arrived: %v", err)
		}
		for i := 0; i < n; i++ {
			f := bufs[i][headroom : headroom+sizes[i]]
			p := gopacket.NewPacket(f[VnetHdrLen:], layers.LayerTypeIPv4, gopacket.NoCopy)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if ip == nil || udp == nil || udp.DstPort != 7777 {
				continue // e.g. IPv6 noise; this tun has no v6 route, but be lenient
			}
			if !ip.SrcIP.Equal(tunLocal) || !ip.DstIP.Equal(tunRemote) || !bytes.Equal(udp.Payload, payload) {
				t.Fatalf("read %s -> %s payload %q", ip.SrcIP, ip.DstIP, udp.Payload)
			}
			return
		}
	}
}

// udpPacket builds vnet header + IPv4/UDP from tunRemote:7777 to dst, with
// complete checksums.
func udpPacket(tb testing.TB, headroom int, dst *net.UDPAddr, payload []byte) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: tunRemote, DstIP: dst.IP.To4()}
	udp := &layers.UDP{SrcPort: 7777, DstPort: layers.UDPPort(dst.Port)}
	udp.SetNetworkLayerForChecksum(ip)
	sb := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, udp, gopacket.Payload(payload))
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, headroom+VnetHdrLen, headroom+VnetHdrLen+len(sb.Bytes()))
	return append(out, sb.Bytes()...) // zero vnet header: no GSO, checksum complete
}

func TestTUNWriteReachesSocket(t *testing.T) {
	needRoot(t)
	ns, tun := tunNS(t)
	q1, err := tun.OpenQueue()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q1.Close() })
	var ln *net.UDPConn
	ns.do(t, func() (err error) {
		ln, err = net.ListenUDP("udp4", &net.UDPAddr{IP: tunLocal})
		return err
	})
	defer ln.Close()
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	dst := ln.LocalAddr().(*net.UDPAddr)

	for qi, q := range []*TUN{tun, q1} {
		payload := []byte{'q', byte('0' + qi)}
		if n, err := q.Write([][]byte{udpPacket(t, headroom, dst, payload)}, headroom); n != 1 || err != nil {
			t.Fatalf("queue %d: Write = %d, %v", qi, n, err)
		}
		buf := make([]byte, 100)
		n, from, err := ln.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("queue %d: socket got nothing: %v", qi, err)
		}
		if !bytes.Equal(buf[:n], payload) || !from.IP.Equal(tunRemote) || from.Port != 7777 {
			t.Errorf("queue %d: got %q from %s", qi, buf[:n], from)
		}
	}

	// A malformed packet is refused and dropped, the rest of the batch still goes.
	bad := make([]byte, headroom+VnetHdrLen+3)
	good := udpPacket(t, headroom, dst, []byte("after bad"))
	if n, err := tun.Write([][]byte{bad, good}, headroom); n != 1 || err == nil {
		t.Errorf("Write(bad, good) = %d, %v; want 1 and an error", n, err)
	}
	buf := make([]byte, 100)
	if n, _, err := ln.ReadFromUDP(buf); err != nil || string(buf[:n]) != "after bad" {
		t.Errorf("after a bad packet: %q, %v", buf[:n], err)
	}
}

func TestTUNOpenQueueNeedsMultiQueue(t *testing.T) {
	needRoot(t)
	ns := newNS(t)
	var tun *TUN
	ns.do(t, func() (err error) {
		tun, err = OpenTUN("uvsln1", nil)
		return err
	})
	defer tun.Close()
	if q, err := tun.OpenQueue(); err == nil {
		q.Close()
		t.Error("OpenQueue on a single-queue TUN succeeded")
	}
}

func TestTUNCloseUnblocksRead(t *testing.T) {
	needRoot(t)
	_, tun := tunNS(t)
	testCloseUnblocks(t, tun)
}

// icmpEcho builds vnet header + an ICMP echo request from tunRemote to
// tunLocal, which the kernel answers back into the tun.
func icmpEcho(tb testing.TB, headroom int) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: tunRemote, DstIP: tunLocal.To4()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	sb := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, icmp, gopacket.Payload(make([]byte, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, headroom+VnetHdrLen, headroom+VnetHdrLen+len(sb.Bytes()))
	return append(out, sb.Bytes()...)
}

func TestTUNReadWriteDoNotAllocate(t *testing.T) {
	needRoot(t)
	_, tun := tunNS(t)
	out := [][]byte{icmpEcho(t, headroom)}
	bufs, sizes := frameBufs(8, headroom)
	timer := time.AfterFunc(10*time.Second, func() { tun.Close() })
	defer timer.Stop()
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := tun.Write(out, headroom); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if _, err := tun.Read(bufs, sizes, headroom); err != nil {
			t.Fatalf("Read: %v", err)
		}
	})
	if allocs != 0 {
		t.Errorf("Write+Read allocate %.1f times per packet, want 0", allocs)
	}
}

// BenchmarkTUNEcho writes an ICMP echo request into the tun and reads the
// kernel's reply: one op is one round trip through the TUN.
func BenchmarkTUNEcho(b *testing.B) {
	needRoot(b)
	_, tun := tunNS(b)
	out := [][]byte{icmpEcho(b, headroom)}
	bufs, sizes := frameBufs(8, headroom)
	b.ReportAllocs()
	for b.Loop() {
		if n, err := tun.Write(out, headroom); n != 1 || err != nil {
			b.Fatalf("Write = %d, %v", n, err)
		}
		if _, err := tun.Read(bufs, sizes, headroom); err != nil {
			b.Fatalf("Read: %v", err)
		}
	}
}
