package packet_test

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"uvs/packet"
	"uvs/packet/packettest"
)

// seedFrames are well-formed frames of every kind Decode knows, for fuzz
// seeds: the fixtures, fragments, ICMP errors, ARP and NDP.
func seedFrames() (frames [][]byte, ether []bool) {
	add := func(b []byte, e bool) { frames, ether = append(frames, b), append(ether, e) }
	for _, f := range fixtures() {
		add(f.Bytes(), f.Ether)
	}
	for _, v6 := range []bool{false, true} {
		src, dst, typ, hl := vip4, client4, uint8(3), 28
		if v6 {
			src, dst, typ, hl = vip6, client6, 1, 48
		}
		for _, proto := range []uint8{packettest.TCP, packettest.UDP, packettest.ICMP} {
			add(packettest.Frame{Ether: true, Src: src, Dst: dst, Proto: packettest.ICMP, Type: typ, Code: 3,
				Payload: quoteOf(v6, proto, hl+20)}.Bytes(), true)
		}
		frag := packettest.Frame{Src: dst, Dst: src, Proto: packettest.UDP, SrcPort: 1, DstPort: 2, MoreFragments: true, ExtHeaders: v6, Payload: make([]byte, 32)}
		add(frag.Bytes(), false)
		frag.FragOffset, frag.MoreFragments = 4, false
		add(frag.Bytes(), false)
	}
	buf := make([]byte, 128)
	n := packet.BuildARPRequest(buf, [6]byte{2, 0, 0, 0, 0, 1}, client4.AsSlice(), vip4.AsSlice())
	add(append([]byte(nil), buf[:n]...), true)
	n = packet.BuildNeighborSolicit(buf, [6]byte{2, 0, 0, 0, 0, 1}, client6.AsSlice(), vip6.AsSlice())
	add(append([]byte(nil), buf[:n]...), true)
	return frames, ether
}

// FuzzDecode checks that Decode never panics, that what it accepts is
// consistent, and that it agrees with gopacket on the fields both decode.
func FuzzDecode(f *testing.F) {
	frames, ether := seedFrames()
	for i := range frames {
		f.Add(frames[i], ether[i])
	}
	f.Fuzz(func(t *testing.T, frame []byte, ether bool) {
		var p packet.Parsed
		r := p.Decode(frame, ether)
		if r != packet.OK {
			if r.String() == "unknown" {
				t.Fatalf("reason %d has no name", r)
			}
			return
		}
		checkInvariants(t, &p)
		if p.IPVersion != 0 {
			compareGopacket(t, &p, frame, ether)
		}
		// Whatever was accepted can be answered without a panic, within
		// the size rules.
		out := make([]byte, 1600)
		if n := packet.BuildUnreachable(out, &p); n > 0 {
			var q packet.Parsed
			// A quote cut inside long IPv6 extension headers is BadICMP.
			if r := q.Decode(out[:n], ether); r != packet.OK && r != packet.BadICMP {
				t.Fatalf("own ICMP error decodes as %v", r)
			}
			if err := packettest.Verify(out[:n], ether); err != nil {
				t.Fatalf("own ICMP error: %v", err)
			}
		}
	})
}

func checkInvariants(t *testing.T, p *packet.Parsed) {
	t.Helper()
	end := p.End()
	if p.L3 < 0 || p.L3 >= end || end > len(p.Buf) {
		t.Fatalf("L3 %d End %d len %d", p.L3, end, len(p.Buf))
	}
	if p.L4 >= 0 && (p.L4 < p.L3 || p.L4 > end) {
		t.Fatalf("L4 %d outside %d..%d", p.L4, p.L3, end)
	}
	if p.Payload >= 0 && (p.Payload < p.L3 || p.Payload > end || (p.L4 >= 0 && p.Payload < p.L4)) {
		t.Fatalf("Payload %d outside", p.Payload)
	}
	want := map[uint8]int{0: 4, 4: 4, 6: 16}[p.IPVersion]
	if len(p.Src()) != want || len(p.Dst()) != want {
		t.Fatalf("address lengths %d %d, want %d", len(p.Src()), len(p.Dst()), want)
	}
	if p.IsICMPError() {
		if p.Inner.L3 < p.L4+8 || p.Inner.L3 >= end || (p.Inner.L4 >= 0 && p.Inner.L4 > end) {
			t.Fatalf("Inner %+v outside %d..%d", p.Inner, p.L4, end)
		}
		if len(p.InnerSrc()) != want {
			t.Fatalf("inner address length %d", len(p.InnerSrc()))
		}
	}
}

func compareGopacket(t *testing.T, p *packet.Parsed, frame []byte, ether bool) {
	t.Helper()
	first := layers.LayerTypeIPv4
	if ether {
		first = layers.LayerTypeEthernet
	} else if p.IPVersion == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(frame, first, gopacket.DecodeOptions{NoCopy: true})
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		if ip.SrcIP == nil {
			return // gopacket refused it: it checks IPv4 options, we skip them
		}
		if p.IPVersion != 4 || !bytes.Equal(ip.SrcIP.To4(), p.Src()) || !bytes.Equal(ip.DstIP.To4(), p.Dst()) ||
			uint8(ip.Protocol) != p.Proto {
			t.Fatalf("gopacket IPv4 %v -> %v proto %d; ours v%d %v -> %v proto %d", ip.SrcIP, ip.DstIP, ip.Protocol, p.IPVersion, p.Src(), p.Dst(), p.Proto)
		}
	case *layers.IPv6:
		if ip.SrcIP == nil {
			return
		}
		if p.IPVersion != 6 || !bytes.Equal(ip.SrcIP, p.Src()) || !bytes.Equal(ip.DstIP, p.Dst()) {
			t.Fatalf("gopacket IPv6 %v -> %v; ours v%d %v -> %v", ip.SrcIP, ip.DstIP, p.IPVersion, p.Src(), p.Dst())
		}
	default:
		return // gopacket gave up earlier than we did
	}
	if p.L4 < 0 {
		return
	}
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		if p.Proto != packet.ProtoTCP || uint16(l.SrcPort) != p.SrcPort || uint16(l.DstPort) != p.DstPort || l.Contents[13] != p.TCPFlags {
			t.Fatalf("gopacket TCP %d -> %d; ours proto %d %d -> %d", l.SrcPort, l.DstPort, p.Proto, p.SrcPort, p.DstPort)
		}
	case *layers.UDP:
		if p.Proto != packet.ProtoUDP || uint16(l.SrcPort) != p.SrcPort || uint16(l.DstPort) != p.DstPort {
			t.Fatalf("gopacket UDP %d -> %d; ours proto %d %d -> %d", l.SrcPort, l.DstPort, p.Proto, p.SrcPort, p.DstPort)
		}
	}
	if c, ok := pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && p.Proto == packet.ProtoICMP && p.IPVersion == 4 {
		if c.TypeCode.Type() != p.ICMPType || c.TypeCode.Code() != p.ICMPCode {
			t.Fatalf("gopacket ICMP %v; ours %d/%d", c.TypeCode, p.ICMPType, p.ICMPCode)
		}
	}
	if c, ok := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok && p.Proto == packet.ProtoICMPv6 && p.IPVersion == 6 {
		if c.TypeCode.Type() != p.ICMPType || c.TypeCode.Code() != p.ICMPCode {
			t.Fatalf("gopacket ICMPv6 %v; ours %d/%d", c.TypeCode, p.ICMPType, p.ICMPCode)
		}
	}
}
