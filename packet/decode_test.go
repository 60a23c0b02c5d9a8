package packet_test

import (
	"bytes"
	"net/netip"
	"testing"

	"uvs/packet"
	"uvs/packet/packettest"
)

var (
	client4 = netip.MustParseAddr("198.18.0.10")
	vip4    = netip.MustParseAddr("198.18.1.1")
	client6 = netip.MustParseAddr("2001:2::10")
	vip6    = netip.MustParseAddr("2001:2:0:1::1")
)

// fixtures is a set of well-formed frames covering what Decode supports.
func fixtures() map[string]packettest.Frame {
	payload := []byte("hello, real server")
	fs := map[string]packettest.Frame{}
	for _, v6 := range []bool{false, true} {
		src, dst, fam := client4, vip4, "v4"
		if v6 {
			src, dst, fam = client6, vip6, "v6"
		}
		for _, l2 := range []string{"raw", "eth", "vlan"} {
			base := packettest.Frame{Src: src, Dst: dst, Ether: l2 != "raw", Payload: payload}
			if l2 == "vlan" {
				base.VLAN = 42
			}
			f := base
			f.Proto, f.SrcPort, f.DstPort, f.TCPFlags = packettest.TCP, 40000, 80, 2|16
			fs[fam+"/"+l2+"/tcp"] = f
			f = base
			f.Proto, f.SrcPort, f.DstPort = packettest.UDP, 40001, 53
			fs[fam+"/"+l2+"/udp"] = f
			f = base
			f.Proto, f.SrcPort = packettest.ICMP, 777
			fs[fam+"/"+l2+"/echo"] = f
			f = base
			f.Proto, f.SrcPort, f.DstPort = packettest.TCP, 40002, 443
			f.IPv4Options, f.ExtHeaders = !v6, v6
			fs[fam+"/"+l2+"/tcp-options"] = f
		}
	}
	return fs
}

func ipHeaderLen(f packettest.Frame) int {
	n := packet.IPv4MinLen
	if f.Src.Is6() {
		n = packet.IPv6Len
	}
	if f.IPv4Options && f.Src.Is4() {
		n += 8
	}
	if f.ExtHeaders && f.Src.Is6() {
		n += 24
	}
	if f.Src.Is6() && (f.MoreFragments || f.FragOffset != 0) {
		n += 8
	}
	return n
}

func TestDecodeFixtures(t *testing.T) {
	for name, f := range fixtures() {
		t.Run(name, func(t *testing.T) {
			frame := f.Bytes()
			var p packet.Parsed
			if r := p.Decode(frame, f.Ether); r != packet.OK {
				t.Fatalf("Decode = %v", r)
			}
			l3 := 0
			if f.Ether {
				l3 = 14
				if f.VLAN != 0 {
					l3 = 18
				}
			}
			wantL2 := -1
			if f.Ether {
				wantL2 = 0
			}
			if p.L2 != wantL2 || p.L3 != l3 || p.L4 != l3+ipHeaderLen(f) {
				t.Errorf("offsets L2 %d L3 %d L4 %d, want %d %d %d", p.L2, p.L3, p.L4, wantL2, l3, l3+ipHeaderLen(f))
			}
			if !bytes.Equal(p.Src(), f.Src.AsSlice()) || !bytes.Equal(p.Dst(), f.Dst.AsSlice()) {
				t.Errorf("Src %v Dst %v", p.Src(), p.Dst())
			}
			wantVer, wantET := uint8(4), uint16(packet.EtherTypeIPv4)
			if f.Src.Is6() {
				wantVer, wantET = 6, packet.EtherTypeIPv6
			}
			if p.IPVersion != wantVer || p.EtherType != wantET {
				t.Errorf("IPVersion %d EtherType %#x", p.IPVersion, p.EtherType)
			}
			if p.TTL() != 64 || p.Fragment || p.IsICMPError() {
				t.Errorf("TTL %d Fragment %v ICMP error %v", p.TTL(), p.Fragment, p.IsICMPError())
			}
			if !bytes.Equal(frame[p.Payload:p.End()], f.Payload) {
				t.Errorf("payload %q", frame[p.Payload:p.End()])
			}
			switch f.Proto {
			case packettest.TCP, packettest.UDP:
				if p.Proto != f.Proto || p.SrcPort != f.SrcPort || p.DstPort != f.DstPort || p.TCPFlags != f.TCPFlags {
					t.Errorf("proto %d ports %d %d flags %#x", p.Proto, p.SrcPort, p.DstPort, p.TCPFlags)
				}
			case packettest.ICMP:
				wantType := uint8(packet.ICMPEchoRequest)
				if f.Src.Is6() {
					wantType = packet.ICMPv6EchoRequest
				}
				if p.ICMPType != wantType || p.SrcPort != f.SrcPort || p.DstPort != f.SrcPort {
					t.Errorf("ICMP type %d id %d %d", p.ICMPType, p.SrcPort, p.DstPort)
				}
			}
		})
	}
}

// Ethernet pads short frames to 60 bytes; the padding is not payload.
func TestDecodeEthernetPadding(t *testing.T) {
	f := packettest.Frame{Ether: true, Src: client4, Dst: vip4, Proto: packettest.UDP, SrcPort: 1, DstPort: 2}
	frame := append(f.Bytes(), make([]byte, 10)...) // gopacket pads to 60 already
	var p packet.Parsed
	if r := p.Decode(frame, true); r != packet.OK {
		t.Fatalf("Decode = %v", r)
	}
	if want := 14 + 20 + 8; p.End() != want || p.Payload != want || p.IPLen() != 28 {
		t.Errorf("End %d Payload %d IPLen %d, want %d %d 28", p.End(), p.Payload, p.IPLen(), want, want)
	}
}

func TestDecodeFragments(t *testing.T) {
	for _, src := range []netip.Addr{client4, client6} {
		dst := vip4
		if src.Is6() {
			dst = vip6
		}
		first := packettest.Frame{Src: src, Dst: dst, Proto: packettest.UDP, SrcPort: 5000, DstPort: 53, MoreFragments: true, Payload: make([]byte, 64)}
		var p packet.Parsed
		// The first fragment's UDP length covers the whole datagram.
		b := first.Bytes()
		be := packet.UDP(b[ipHeaderLen(first):])
		be[4], be[5] = 0x10, 0
		if r := p.Decode(b, false); r != packet.OK || !p.Fragment || p.L4 < 0 || p.SrcPort != 5000 {
			t.Errorf("%v first fragment: %v Fragment %v L4 %d port %d", src, r, p.Fragment, p.L4, p.SrcPort)
		}
		later := first
		later.FragOffset, later.MoreFragments = 9, false
		if r := p.Decode(later.Bytes(), false); r != packet.OK || !p.Fragment || p.L4 != -1 || p.SrcPort != 0 || p.Proto != packet.ProtoUDP {
			t.Errorf("%v later fragment: %v Fragment %v L4 %d port %d proto %d", src, r, p.Fragment, p.L4, p.SrcPort, p.Proto)
		}
		if p.Payload != ipHeaderLen(later) || p.End()-p.Payload != 64 {
			t.Errorf("%v later fragment: data at %d..%d", src, p.Payload, p.End())
		}
	}
}

// quoteOf builds the packet client -> vip an error quotes, cut to n bytes.
func quoteOf(v6 bool, proto uint8, n int) []byte {
	f := packettest.Frame{Src: client4, Dst: vip4, Proto: proto, SrcPort: 40000, DstPort: 80, Payload: make([]byte, 100)}
	if v6 {
		f.Src, f.Dst = client6, vip6
	}
	b := f.Bytes()
	return b[:min(n, len(b))]
}

func TestDecodeICMPError(t *testing.T) {
	router4 := netip.MustParseAddr("198.18.2.1")
	router6 := netip.MustParseAddr("2001:2:0:2::1")
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{packettest.TCP, packettest.UDP} {
			f := packettest.Frame{Src: router4, Dst: client4, Proto: packettest.ICMP, Type: 3, Code: 4, Info: 1400, Payload: quoteOf(v6, proto, 28)}
			hl := 20
			if v6 {
				f.Src, f.Dst, f.Type, f.Code, f.Payload = router6, client6, 2, 0, quoteOf(v6, proto, 48)
				hl = 40
			}
			var p packet.Parsed
			if r := p.Decode(f.Bytes(), false); r != packet.OK {
				t.Fatalf("v6 %v proto %d: Decode = %v", v6, proto, r)
			}
			if !p.IsICMPError() || p.Inner.L3 != hl+8 || p.Inner.L4 != 2*hl+8 || p.Inner.Proto != proto ||
				p.Inner.SrcPort != 40000 || p.Inner.DstPort != 80 {
				t.Errorf("v6 %v proto %d: Inner %+v", v6, proto, p.Inner)
			}
			wantSrc, wantDst := client4.AsSlice(), vip4.AsSlice()
			if v6 {
				wantSrc, wantDst = client6.AsSlice(), vip6.AsSlice()
			}
			if !bytes.Equal(p.InnerSrc(), wantSrc) || !bytes.Equal(p.InnerDst(), wantDst) {
				t.Errorf("v6 %v: inner %v -> %v", v6, p.InnerSrc(), p.InnerDst())
			}
			// Without the ports the connection cannot be found.
			f.Payload = f.Payload[:hl+2]
			if r := p.Decode(f.Bytes(), false); r != packet.BadICMP {
				t.Errorf("v6 %v: quote without ports: %v, want BadICMP", v6, r)
			}
		}
	}
}

func TestDecodeARPAndNDP(t *testing.T) {
	mac := [6]byte{2, 0, 0, 0, 0, 9}
	buf := make([]byte, 128)
	n := packet.BuildARPRequest(buf, mac, client4.AsSlice(), vip4.AsSlice())
	var p packet.Parsed
	if r := p.Decode(buf[:n], true); r != packet.OK {
		t.Fatalf("ARP: %v", r)
	}
	if p.EtherType != packet.EtherTypeARP || p.IPVersion != 0 || !bytes.Equal(p.Src(), client4.AsSlice()) ||
		!bytes.Equal(p.Dst(), vip4.AsSlice()) || p.ARP().Op() != packet.ARPRequest {
		t.Errorf("ARP decoded as %+v", p)
	}
	n = packet.BuildNeighborSolicit(buf, mac, client6.AsSlice(), vip6.AsSlice())
	if r := p.Decode(buf[:n], true); r != packet.OK {
		t.Fatalf("NS: %v", r)
	}
	if p.ICMPType != packet.ICMPv6NeighborSolicit || !bytes.Equal(p.NDPTarget(), vip6.AsSlice()) {
		t.Errorf("NS type %d target %v", p.ICMPType, p.NDPTarget())
	}
}

func setIPv4Checksum(h packet.IPv4) {
	h.SetChecksum(0)
	h.SetChecksum(^packettest.Fold(packettest.Sum(h[:h.HeaderLen()])))
}

func TestDecodeMalformed(t *testing.T) {
	tcp4 := packettest.Frame{Ether: true, Src: client4, Dst: vip4, Proto: packettest.TCP, SrcPort: 1, DstPort: 2, Payload: []byte("0123456789")}
	udp4 := tcp4
	udp4.Proto = packettest.UDP
	tcp6 := tcp4
	tcp6.Src, tcp6.Dst, tcp6.ExtHeaders = client6, vip6, true
	icmp4 := packettest.Frame{Ether: true, Src: vip4, Dst: client4, Proto: packettest.ICMP, Type: 3, Code: 3, Payload: quoteOf(false, packettest.UDP, 28)}
	cases := []struct {
		name  string
		f     packettest.Frame
		ether bool
		edit  func(b []byte) []byte
		want  packet.DropReason
	}{
		{"short ethernet", tcp4, true, func(b []byte) []byte { return b[:13] }, packet.TooShort},
		{"short vlan", tcp4, true, func(b []byte) []byte { b[12], b[13] = 0x81, 0; return b[:16] }, packet.TooShort},
		{"lldp", tcp4, true, func(b []byte) []byte { b[12], b[13] = 0x88, 0xcc; return b }, packet.UnknownEtherType},
		{"empty raw", tcp4, false, func(b []byte) []byte { return nil }, packet.TooShort},
		{"raw version 7", tcp4, false, func(b []byte) []byte { b = b[14:]; b[0] = 0x75; return b }, packet.BadIPVersion},
		{"v6 in v4 ethertype", tcp6, true, func(b []byte) []byte { b[12], b[13] = 8, 0; return b }, packet.BadIPVersion},
		{"short ipv4", tcp4, true, func(b []byte) []byte { return b[:30] }, packet.TooShort},
		{"ihl 4", tcp4, true, func(b []byte) []byte { b[14] = 0x44; return b }, packet.BadIHL},
		{"ihl past frame", tcp4, true, func(b []byte) []byte { b[14] = 0x4f; return b[:40] }, packet.BadIHL},
		{"total length 19", tcp4, true, func(b []byte) []byte { b[16], b[17] = 0, 19; return b }, packet.BadTotalLen},
		{"cut ipv4", tcp4, true, func(b []byte) []byte { return b[:len(b)-1] }, packet.Truncated},
		{"cut ipv6", tcp6, true, func(b []byte) []byte { return b[:len(b)-1] }, packet.Truncated},
		{"ipv4 checksum", tcp4, true, func(b []byte) []byte { b[22]--; return b }, packet.BadIPChecksum},
		{"tcp data offset 4", tcp4, true, func(b []byte) []byte { b[34+12] = 0x40; return b }, packet.BadL4},
		{"tcp data offset past packet", tcp4, true, func(b []byte) []byte { b[34+12] = 0xf0; return b }, packet.BadL4},
		{"udp length 7", udp4, true, func(b []byte) []byte { b[34+4], b[34+5] = 0, 7; return b }, packet.BadL4},
		{"udp length past packet", udp4, true, func(b []byte) []byte { b[34+4], b[34+5] = 0, 19; return b }, packet.BadL4},
		{"tcp header cut", tcp4, true, func(b []byte) []byte {
			b = b[:34+10]
			packet.IPv4(b[14:]).SetTotalLen(30)
			setIPv4Checksum(packet.IPv4(b[14:]))
			return b
		}, packet.BadL4},
		{"ext header past packet", tcp6, true, func(b []byte) []byte { b[54+1] = 200; return b }, packet.BadExtHeader},
		{"icmp quote not ipv4", icmp4, true, func(b []byte) []byte { b[42] = 0x65; return b }, packet.BadICMP},
		{"icmp quote short", icmp4, true, func(b []byte) []byte {
			b = b[:42+10]
			packet.IPv4(b[14:]).SetTotalLen(38)
			setIPv4Checksum(packet.IPv4(b[14:]))
			return b
		}, packet.BadICMP},
		{"arp for ipv6", tcp4, true, func(b []byte) []byte {
			b[12], b[13] = 8, 6
			b[14+5] = 16
			return b
		}, packet.BadARP},
		{"arp short", tcp4, true, func(b []byte) []byte { b[12], b[13] = 8, 6; return b[:14+27] }, packet.BadARP},
	}
	for _, c := range cases {
		b := c.edit(c.f.Bytes())
		var p packet.Parsed
		if r := p.Decode(b, c.ether); r != c.want {
			t.Errorf("%s: Decode = %v, want %v", c.name, r, c.want)
		}
	}
}

// Every cut of a well-formed frame is refused, without panicking.
func TestDecodeEveryTruncation(t *testing.T) {
	for name, f := range fixtures() {
		frame := f.Bytes()
		var p packet.Parsed
		for n := range len(frame) {
			if r := p.Decode(frame[:n], f.Ether); r == packet.OK {
				t.Errorf("%s cut to %d of %d bytes: decoded OK", name, n, len(frame))
			}
		}
	}
}

func TestReasons(t *testing.T) {
	seen := map[string]bool{}
	rs := packet.Reasons()
	if rs[0] != packet.OK {
		t.Errorf("Reasons()[0] = %v", rs[0])
	}
	for _, r := range rs {
		s := r.String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d has label %q", r, s)
		}
		seen[s] = true
	}
	if packet.DropReason(len(rs)).String() != "unknown" {
		t.Errorf("reason past the list has a label")
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	frame := fixtures()["v4/eth/tcp"].Bytes()
	icmp := packettest.Frame{Src: vip6, Dst: client6, Proto: packettest.ICMP, Type: 1, Code: 4, Payload: quoteOf(true, packettest.TCP, 60)}.Bytes()
	var p packet.Parsed
	if n := testing.AllocsPerRun(100, func() {
		p.Decode(frame, true)
		p.Decode(icmp, false)
	}); n != 0 {
		t.Errorf("Decode allocates %v times per run", n)
	}
}

func BenchmarkDecodeTCPv4(b *testing.B) {
	frame := fixtures()["v4/eth/tcp"].Bytes()
	var p packet.Parsed
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if p.Decode(frame, true) != packet.OK {
			b.Fatal("decode failed")
		}
	}
}
