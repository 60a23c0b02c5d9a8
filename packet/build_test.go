package packet_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"uvs/packet"
	"uvs/packet/packettest"
)

func decodeGP(t *testing.T, b []byte, ether bool) gopacket.Packet {
	t.Helper()
	first := layers.LayerTypeIPv4
	if ether {
		first = layers.LayerTypeEthernet
	} else if b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(b, first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	return pkt
}

func TestBuildUnreachable(t *testing.T) {
	for name, f := range fixtures() {
		if f.Proto == packettest.ICMP {
			continue
		}
		for _, big := range []bool{false, true} {
			if big {
				f.Payload = bytes.Repeat([]byte{0xab}, 1400)
			}
			frame := f.Bytes()
			var p packet.Parsed
			if r := p.Decode(frame, f.Ether); r != packet.OK {
				t.Fatalf("%s: %v", name, r)
			}
			dst := make([]byte, 2000)
			n := packet.BuildUnreachable(dst, &p)
			if n == 0 {
				t.Fatalf("%s: nothing built", name)
			}
			out := dst[:n]
			if err := packettest.Verify(out, f.Ether); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			pkt := decodeGP(t, out, f.Ether)
			l3 := p.L3
			ipLen := len(frame) - l3
			var src, to net.IP
			var quote []byte
			switch ip := pkt.NetworkLayer().(type) {
			case *layers.IPv4:
				src, to = ip.SrcIP, ip.DstIP
				c := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
				if c.TypeCode.Type() != 3 || c.TypeCode.Code() != 3 {
					t.Errorf("%s: ICMP %v", name, c.TypeCode)
				}
				quote = c.Payload
				if n-l3 > 576 || len(quote) != min(ipLen, 576-28) {
					t.Errorf("%s: %d bytes from L3 on, quoting %d of %d", name, n-l3, len(quote), ipLen)
				}
			case *layers.IPv6:
				src, to = ip.SrcIP, ip.DstIP
				c := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
				if c.TypeCode.Type() != 1 || c.TypeCode.Code() != 4 {
					t.Errorf("%s: ICMPv6 %v", name, c.TypeCode)
				}
				quote = c.Payload[4:]
				if n-l3 > 1280 || len(quote) != min(ipLen, 1280-48) {
					t.Errorf("%s: %d bytes from L3 on, quoting %d of %d", name, n-l3, len(quote), ipLen)
				}
			}
			if !src.Equal(f.Dst.AsSlice()) || !to.Equal(f.Src.AsSlice()) {
				t.Errorf("%s: answer %v -> %v", name, src, to)
			}
			if !bytes.Equal(quote, frame[l3:l3+len(quote)]) {
				t.Errorf("%s: quote is not the packet", name)
			}
			if f.Ether {
				eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
				if !bytes.Equal(eth.SrcMAC, packettest.RouterMAC) || !bytes.Equal(eth.DstMAC, packettest.ClientMAC) {
					t.Errorf("%s: MACs %v -> %v", name, eth.SrcMAC, eth.DstMAC)
				}
				if q, ok := pkt.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q); (f.VLAN != 0) != ok || (ok && q.VLANIdentifier != f.VLAN) {
					t.Errorf("%s: VLAN tag lost or added", name)
				}
			}
			// Built in place over the frame itself, the answer is the same.
			inPlace := append(frame, make([]byte, 200)...)
			p.Decode(inPlace[:len(frame)], f.Ether)
			if m := packet.BuildUnreachable(inPlace[:cap(inPlace)], &p); m != n || !bytes.Equal(inPlace[:m], out) {
				t.Errorf("%s: built in place differs", name)
			}
		}
	}
}

func TestBuildFragNeeded(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f := fixtures()["v4/eth/tcp"]
		if v6 {
			f = fixtures()["v6/eth/tcp"]
		}
		f.Payload = make([]byte, 1500)
		var p packet.Parsed
		p.Decode(f.Bytes(), true)
		dst := make([]byte, 1600)
		n := packet.BuildFragNeeded(dst, &p, 1480)
		if err := packettest.Verify(dst[:n], true); err != nil {
			t.Errorf("v6 %v: %v", v6, err)
		}
		pkt := decodeGP(t, dst[:n], true)
		if v6 {
			c := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if c.TypeCode.Type() != 2 || c.TypeCode.Code() != 0 || !bytes.Equal(c.Payload[:4], []byte{0, 0, 0x05, 0xc8}) {
				t.Errorf("packet too big: %v MTU % x", c.TypeCode, c.Payload[:4])
			}
		} else {
			c := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if c.TypeCode.Type() != 3 || c.TypeCode.Code() != 4 || c.Seq != 1480 {
				t.Errorf("frag needed: %v MTU %d", c.TypeCode, c.Seq)
			}
		}
	}
}

func TestBuildTimeExceeded(t *testing.T) {
	var p packet.Parsed
	p.Decode(fixtures()["v6/raw/udp"].Bytes(), false)
	dst := make([]byte, 1500)
	n := packet.BuildTimeExceeded(dst, &p)
	var q packet.Parsed
	if r := q.Decode(dst[:n], false); r != packet.OK || q.ICMPType != packet.ICMPv6TimeExceeded || q.Inner.DstPort != 53 {
		t.Errorf("time exceeded decodes as %v type %d inner %+v", r, q.ICMPType, q.Inner)
	}
	if err := packettest.Verify(dst[:n], false); err != nil {
		t.Error(err)
	}
}

func TestBuildICMPErrorRefuses(t *testing.T) {
	bcast := netip.MustParseAddr("255.255.255.255")
	mcast6 := netip.MustParseAddr("ff02::1")
	later := fixtures()["v4/raw/udp"]
	later.FragOffset = 10
	cases := map[string]packettest.Frame{
		"icmp error":         {Src: vip4, Dst: client4, Proto: packettest.ICMP, Type: 3, Code: 1, Payload: quoteOf(false, packettest.TCP, 28)},
		"icmpv6 error":       {Src: vip6, Dst: client6, Proto: packettest.ICMP, Type: 1, Code: 4, Payload: quoteOf(true, packettest.TCP, 48)},
		"broadcast":          {Src: client4, Dst: bcast, Proto: packettest.UDP, SrcPort: 1, DstPort: 2},
		"multicast v6":       {Src: client6, Dst: mcast6, Proto: packettest.UDP, SrcPort: 1, DstPort: 2},
		"unspecified source": {Src: netip.IPv4Unspecified(), Dst: vip4, Proto: packettest.UDP, SrcPort: 68, DstPort: 67},
		"later fragment":     later,
	}
	dst := make([]byte, 1500)
	for name, f := range cases {
		var p packet.Parsed
		if r := p.Decode(f.Bytes(), false); r != packet.OK {
			t.Fatalf("%s: %v", name, r)
		}
		if n := packet.BuildUnreachable(dst, &p); n != 0 {
			t.Errorf("%s: answered with %d bytes", name, n)
		}
	}
	// Packet too big is the exception for multicast (RFC 4443 2.4 e.2).
	var p packet.Parsed
	p.Decode(cases["multicast v6"].Bytes(), false)
	if packet.BuildFragNeeded(dst, &p, 1280) == 0 {
		t.Errorf("no packet too big for a multicast packet")
	}
	// Too small a buffer: nothing.
	p.Decode(fixtures()["v4/raw/udp"].Bytes(), false)
	if n := packet.BuildUnreachable(dst[:40], &p); n != 0 {
		t.Errorf("built %d bytes into 40", n)
	}
}

func TestBuildARP(t *testing.T) {
	clientMAC := [6]byte{2, 0, 0, 0, 0, 1}
	vipMAC := [6]byte{2, 0, 0, 0, 0, 0xaa}
	buf := make([]byte, 64)
	n := packet.BuildARPRequest(buf, clientMAC, client4.AsSlice(), vip4.AsSlice())
	req := decodeGP(t, buf[:n], true)
	a := req.Layer(layers.LayerTypeARP).(*layers.ARP)
	eth := req.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if a.Operation != 1 || !bytes.Equal(a.SourceHwAddress, clientMAC[:]) || !bytes.Equal(a.SourceProtAddress, client4.AsSlice()) ||
		!bytes.Equal(a.DstProtAddress, vip4.AsSlice()) || eth.DstMAC.String() != "ff:ff:ff:ff:ff:ff" {
		t.Errorf("request: %+v to %v", a, eth.DstMAC)
	}
	var p packet.Parsed
	if r := p.Decode(buf[:n], true); r != packet.OK {
		t.Fatal(r)
	}
	out := make([]byte, 64)
	m := packet.BuildARPReply(out, &p, vipMAC)
	rep := decodeGP(t, out[:m], true)
	a = rep.Layer(layers.LayerTypeARP).(*layers.ARP)
	eth = rep.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if a.Operation != 2 || !bytes.Equal(a.SourceHwAddress, vipMAC[:]) || !bytes.Equal(a.SourceProtAddress, vip4.AsSlice()) ||
		!bytes.Equal(a.DstHwAddress, clientMAC[:]) || !bytes.Equal(a.DstProtAddress, client4.AsSlice()) ||
		!bytes.Equal(eth.DstMAC, clientMAC[:]) || !bytes.Equal(eth.SrcMAC, vipMAC[:]) {
		t.Errorf("reply: %+v, %v -> %v", a, eth.SrcMAC, eth.DstMAC)
	}
	// A reply is not answered.
	p.Decode(out[:m], true)
	if packet.BuildARPReply(out, &p, vipMAC) != 0 {
		t.Errorf("answered an ARP reply")
	}
}

func TestBuildNDP(t *testing.T) {
	clientMAC := [6]byte{2, 0, 0, 0, 0, 1}
	vipMAC := [6]byte{2, 0, 0, 0, 0, 0xaa}
	buf := make([]byte, 128)
	n := packet.BuildNeighborSolicit(buf, clientMAC, client6.AsSlice(), vip6.AsSlice())
	if err := packettest.Verify(buf[:n], true); err != nil {
		t.Errorf("solicitation: %v", err)
	}
	sol := decodeGP(t, buf[:n], true)
	ns := sol.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation)
	ip := sol.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	eth := sol.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !ns.TargetAddress.Equal(vip6.AsSlice()) || ip.DstIP.String() != "ff02::1:ff00:1" || ip.HopLimit != 255 ||
		eth.DstMAC.String() != "33:33:ff:00:00:01" || len(ns.Options) != 1 || !bytes.Equal(ns.Options[0].Data, clientMAC[:]) {
		t.Errorf("solicitation for %v to %v (%v), options %v", ns.TargetAddress, ip.DstIP, eth.DstMAC, ns.Options)
	}

	var p packet.Parsed
	if r := p.Decode(buf[:n], true); r != packet.OK {
		t.Fatal(r)
	}
	out := make([]byte, 128)
	m := packet.BuildNeighborAdvert(out, &p, vipMAC)
	if err := packettest.Verify(out[:m], true); err != nil {
		t.Errorf("advertisement: %v", err)
	}
	adv := decodeGP(t, out[:m], true)
	na := adv.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	ip = adv.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	eth = adv.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !na.TargetAddress.Equal(vip6.AsSlice()) || !na.Solicited() || !na.Override() || na.Router() ||
		!ip.SrcIP.Equal(vip6.AsSlice()) || !ip.DstIP.Equal(client6.AsSlice()) || ip.HopLimit != 255 ||
		!bytes.Equal(eth.DstMAC, clientMAC[:]) || !bytes.Equal(eth.SrcMAC, vipMAC[:]) ||
		len(na.Options) != 1 || na.Options[0].Type != layers.ICMPv6OptTargetAddress || !bytes.Equal(na.Options[0].Data, vipMAC[:]) {
		t.Errorf("advertisement %+v from %v to %v (%v -> %v)", na, ip.SrcIP, ip.DstIP, eth.SrcMAC, eth.DstMAC)
	}

	// Duplicate address detection: from ::, answered to all nodes.
	n = packet.BuildNeighborSolicit(buf, clientMAC, make([]byte, 16), vip6.AsSlice())
	p.Decode(buf[:n], true)
	// The solicitation's checksum is irrelevant here; the answer's is not.
	m = packet.BuildNeighborAdvert(out, &p, vipMAC)
	adv = decodeGP(t, out[:m], true)
	na = adv.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	ip = adv.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if na.Solicited() || ip.DstIP.String() != "ff02::1" {
		t.Errorf("DAD answer solicited %v to %v", na.Solicited(), ip.DstIP)
	}
	if err := packettest.Verify(out[:m], true); err != nil {
		t.Errorf("DAD advertisement: %v", err)
	}

	// A solicitation that crossed a router (hop limit below 255) is not answered.
	n = packet.BuildNeighborSolicit(buf, clientMAC, client6.AsSlice(), vip6.AsSlice())
	buf[14+7] = 254
	p.Decode(buf[:n], true)
	if packet.BuildNeighborAdvert(out, &p, vipMAC) != 0 {
		t.Errorf("answered a solicitation with hop limit 254")
	}
}

func TestBuildersAllocateNothing(t *testing.T) {
	var p, q packet.Parsed
	p.Decode(fixtures()["v6/vlan/tcp"].Bytes(), true)
	mac := [6]byte{2, 0, 0, 0, 0, 0xaa}
	buf := make([]byte, 1500)
	ns := make([]byte, 128)
	n := packet.BuildNeighborSolicit(ns, mac, client6.AsSlice(), vip6.AsSlice())
	q.Decode(ns[:n], true)
	if a := testing.AllocsPerRun(100, func() {
		packet.BuildUnreachable(buf, &p)
		packet.BuildFragNeeded(buf, &p, 1400)
		packet.BuildNeighborAdvert(buf, &q, mac)
		packet.BuildNeighborSolicit(buf, mac, client6.AsSlice(), vip6.AsSlice())
		packet.BuildARPRequest(buf, mac, client4.AsSlice(), vip4.AsSlice())
	}); a != 0 {
		t.Errorf("builders allocate %v times per run", a)
	}
}
