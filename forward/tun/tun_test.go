package tun_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"uvs/forward/tun"
	"uvs/packet"
	"uvs/packet/packettest"
)

var (
	client4 = netip.MustParseAddr("198.18.0.10")
	vip4    = netip.MustParseAddr("198.18.1.1")
	dir4    = netip.MustParseAddr("198.18.2.1")
	rs4     = netip.MustParseAddr("198.18.2.20")
	client6 = netip.MustParseAddr("2001:2::10")
	vip6    = netip.MustParseAddr("2001:2:0:1::1")
	dir6    = netip.MustParseAddr("2001:2:0:2::1")
	rs6     = netip.MustParseAddr("2001:2:0:2::20")
)

const guePort = 6080

// inner builds a client -> VIP packet of family v (4 or 6), TCP or UDP,
// with traffic class tos, the IPv4 DF bit df and TTL ttl.
func inner(v int, proto uint8, tos uint8, df bool, ttl uint8) []byte {
	f := packettest.Frame{
		Src: client4, Dst: vip4, TTL: ttl, Proto: proto, SrcPort: 40000, DstPort: 80,
		TCPFlags: 16 | 8, Payload: []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
	}
	if v == 6 {
		f.Src, f.Dst = client6, vip6
	}
	b := f.Bytes()
	if v == 4 {
		b[1] = tos
		if df {
			b[6] |= 0x40
		}
		h := packet.IPv4(b)
		h.SetChecksum(h.ComputeChecksum())
	} else {
		b[0] = 0x60 | tos>>4
		b[1] = b[1]&0x0f | tos<<4
	}
	return b
}

func tunnel(typ tun.Type, outer int, csum tun.Csum) *tun.Tunnel {
	t := &tun.Tunnel{Type: typ, Src: dir4, Dst: rs4, Csum: csum}
	if outer == 6 {
		t.Src, t.Dst = dir6, rs6
	}
	if typ == tun.GUE {
		t.Port = guePort
	}
	return t
}

// encap puts in at offset tun.MaxOverhead of a new buffer and encapsulates
// it.
func encap(t *testing.T, tn *tun.Tunnel, in []byte) (buf []byte, start int) {
	t.Helper()
	buf = make([]byte, tun.MaxOverhead+len(in))
	copy(buf[tun.MaxOverhead:], in)
	start, ok := tn.Encap(buf, tun.MaxOverhead, len(in))
	if !ok {
		t.Fatalf("Encap failed")
	}
	if want := tun.MaxOverhead - tn.Overhead(); start != want {
		t.Fatalf("start %d, want %d", start, want)
	}
	if !bytes.Equal(buf[tun.MaxOverhead:], in) {
		t.Fatalf("inner packet changed")
	}
	return buf, start
}

func ecnEncap(tos uint8) uint8 {
	if tos&3 == 3 {
		return tos&^3 | 2
	}
	return tos
}

type combo struct {
	typ          tun.Type
	outer, inner int
	csum         tun.Csum
}

func (c combo) String() string {
	return fmt.Sprintf("%v/%din%d/%v", c.typ, c.inner, c.outer, c.csum)
}

func combos() []combo {
	var cs []combo
	for _, typ := range []tun.Type{tun.IPIP, tun.GUE, tun.GRE} {
		for _, outer := range []int{4, 6} {
			for _, in := range []int{4, 6} {
				for _, csum := range []tun.Csum{tun.NoCsum, tun.WithCsum, tun.RemCsum} {
					cs = append(cs, combo{typ, outer, in, csum})
				}
			}
		}
	}
	return cs
}

// TestEncap checks every type, outer and inner family and checksum option
// against gopacket's decoding of the result, then decapsulates it again,
// from the outer IP header and from the outer payload.
func TestEncap(t *testing.T) {
	for _, c := range combos() {
		for _, proto := range []uint8{packettest.TCP, packettest.UDP} {
			for _, tos := range []uint8{0, 0xb8 | 3, 0x2a} {
				for _, df := range []bool{false, true} {
					for _, fixedTTL := range []uint8{0, 200} {
						name := fmt.Sprintf("%v/p%d/tos%#x/df%v/ttl%d", c, proto, tos, df, fixedTTL)
						t.Run(name, func(t *testing.T) {
							in := inner(c.inner, proto, tos, df, 63)
							tn := tunnel(c.typ, c.outer, c.csum)
							tn.TTL = fixedTTL
							buf, start := encap(t, tn, in)
							checkOuter(t, c, tn, buf[start:], in, tos, df)
							checkDecap(t, c, tn, buf[start:], in)
						})
					}
				}
			}
		}
	}
}

func checkOuter(t *testing.T, c combo, tn *tun.Tunnel, out, in []byte, tos uint8, df bool) {
	t.Helper()
	first := layers.LayerTypeIPv4
	if c.outer == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(out, first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	// gopacket's VerifyChecksums does not know which network layer a
	// nested transport layer belongs to: the outer checksums are checked
	// one by one below, the inner packet's by packettest.
	if err := packettest.Verify(out[len(out)-len(in):], false); err != nil {
		t.Fatalf("inner packet: %v", err)
	}
	wantTTL := uint8(63)
	if tn.TTL != 0 {
		wantTTL = tn.TTL
	}
	wantTOS := ecnEncap(tos)
	innerProto := layers.IPProtocolIPv4
	if c.inner == 6 {
		innerProto = layers.IPProtocolIPv6
	}
	wantProto := innerProto
	switch c.typ {
	case tun.GUE:
		wantProto = layers.IPProtocolUDP
	case tun.GRE:
		wantProto = layers.IPProtocolGRE
	}
	var payload []byte
	var src, dst net.IP
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		if packettest.Fold(packettest.Sum(ip.Contents)) != 0xffff {
			t.Errorf("IPv4 header checksum %#04x does not verify", ip.Checksum)
		}
		if ip.IHL != 5 || int(ip.Length) != len(out) {
			t.Errorf("IHL %d, length %d, want 5, %d", ip.IHL, ip.Length, len(out))
		}
		if ip.TOS != wantTOS || ip.TTL != wantTTL || ip.Protocol != wantProto {
			t.Errorf("TOS %#x TTL %d protocol %v, want %#x %d %v", ip.TOS, ip.TTL, ip.Protocol, wantTOS, wantTTL, wantProto)
		}
		wantDF := df && c.inner == 4
		if gotDF := ip.Flags&layers.IPv4DontFragment != 0; gotDF != wantDF || ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			t.Errorf("flags %v offset %d, want DF %v", ip.Flags, ip.FragOffset, wantDF)
		}
		payload, src, dst = ip.Payload, ip.SrcIP, ip.DstIP
	case *layers.IPv6:
		if ip.TrafficClass != wantTOS || ip.HopLimit != wantTTL || ip.NextHeader != wantProto || ip.FlowLabel != 0 {
			t.Errorf("class %#x hop limit %d next %v flow %d, want %#x %d %v 0",
				ip.TrafficClass, ip.HopLimit, ip.NextHeader, ip.FlowLabel, wantTOS, wantTTL, wantProto)
		}
		if int(ip.Length) != len(out)-40 {
			t.Errorf("payload length %d, want %d", ip.Length, len(out)-40)
		}
		payload, src, dst = ip.Payload, ip.SrcIP, ip.DstIP
	default:
		t.Fatalf("no outer IP layer")
	}
	if !src.Equal(net.IP(tn.Src.AsSlice())) || !dst.Equal(net.IP(tn.Dst.AsSlice())) {
		t.Errorf("outer %v -> %v, want %v -> %v", src, dst, tn.Src, tn.Dst)
	}

	switch c.typ {
	case tun.IPIP:
		if !bytes.Equal(payload, in) {
			t.Errorf("IPIP payload is not the inner packet")
		}
	case tun.GRE:
		g, ok := pkt.Layer(layers.LayerTypeGRE).(*layers.GRE)
		if !ok {
			t.Fatalf("no GRE layer")
		}
		wantEther := layers.EthernetTypeIPv4
		if c.inner == 6 {
			wantEther = layers.EthernetTypeIPv6
		}
		wantCsum := c.csum == tun.WithCsum // RemCsum is NoCsum for GRE
		if g.ChecksumPresent != wantCsum || g.RoutingPresent || g.KeyPresent || g.SeqPresent || g.Version != 0 || g.Protocol != wantEther {
			t.Errorf("GRE %+v, want checksum %v protocol %v", g, wantCsum, wantEther)
		}
		if _, res := g.VerifyChecksum(); !res.Valid {
			t.Errorf("GRE checksum %#04x, want %#04x", res.Actual, res.Correct)
		}
		if !bytes.Equal(g.Payload, in) {
			t.Errorf("GRE payload is not the inner packet")
		}
	case tun.GUE:
		u, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			t.Fatalf("no UDP layer")
		}
		if u.DstPort != guePort || u.SrcPort < 32768 || u.SrcPort >= 61000 || int(u.Length) != len(payload) {
			t.Errorf("UDP %d -> %d length %d", u.SrcPort, u.DstPort, u.Length)
		}
		if want := srcPortOf(in); uint16(u.SrcPort) != want {
			t.Errorf("UDP source port %d, want %d", u.SrcPort, want)
		}
		if c.csum == tun.NoCsum {
			if u.Checksum != 0 {
				t.Errorf("UDP checksum %#04x, want 0", u.Checksum)
			}
		} else {
			ps := packettest.PseudoHeader(src.To16()[16-len(tn.Src.AsSlice()):], dst.To16()[16-len(tn.Dst.AsSlice()):], 17, len(payload))
			if u.Checksum == 0 || packettest.Fold(packettest.Sum(append(ps, payload...))) != 0xffff {
				t.Errorf("UDP checksum %#04x does not verify", u.Checksum)
			}
		}
		g := u.Payload
		if want := []byte{0, byte(innerProto), 0, 0}; !bytes.Equal(g[:4], want) {
			t.Errorf("GUE header % x, want % x", g[:4], want)
		}
		if !bytes.Equal(g[4:], in) {
			t.Errorf("GUE payload is not the inner packet")
		}
	}
}

// srcPortOf is the kernel's udp_flow_src_port mapping of FlowHash.
func srcPortOf(in []byte) uint16 {
	h := tun.FlowHash(in)
	h ^= h << 16
	return uint16(uint64(h)*(60999-32768)>>32) + 32768
}

func checkDecap(t *testing.T, c combo, tn *tun.Tunnel, out, in []byte) {
	t.Helper()
	orig := append([]byte(nil), out...)
	d, err := tun.Decap(out, guePort)
	if err != nil {
		t.Fatalf("Decap: %v", err)
	}
	if d.Type != c.typ || d.Inner != tn.Overhead() || d.Len != len(in) || d.OuterSrc != tn.Src || d.OuterDst != tn.Dst {
		t.Fatalf("Decap = %+v, want type %v inner %d len %d", d, c.typ, tn.Overhead(), len(in))
	}
	if !bytes.Equal(out[d.Inner:d.Inner+d.Len], in) || !bytes.Equal(out, orig) {
		t.Fatalf("Decap changed or misplaced the inner packet")
	}
	// Through a socket: the outer IP header (and for GUE the UDP header)
	// stripped.
	ipl := 20
	if c.outer == 6 {
		ipl = 40
	}
	proto := map[tun.Type]uint8{tun.IPIP: uint8(c.inner/6*41 + c.inner%6), tun.GUE: 17, tun.GRE: 47}[c.typ]
	pl := out[ipl:]
	if c.typ == tun.GUE {
		pl = pl[8:]
	}
	off, n, err := tun.DecapPayload(proto, pl)
	if err != nil {
		t.Fatalf("DecapPayload(%d): %v", proto, err)
	}
	if !bytes.Equal(pl[off:off+n], in) {
		t.Fatalf("DecapPayload: wrong inner packet at %d+%d", off, n)
	}
}

// partial gives in the partial checksum an offloading sender leaves: the
// folded pseudo-header sum in the transport checksum field. It returns
// csum_start and csum_offset.
func partial(in []byte) (start, offset int) {
	var src, dst []byte
	var proto uint8
	if in[0]>>4 == 4 {
		start, src, dst, proto = int(in[0]&0xf)*4, in[12:16], in[16:20], in[9]
	} else {
		start, src, dst, proto = 40, in[8:24], in[24:40], in[6]
	}
	offset = 16
	if proto == packet.ProtoUDP {
		offset = 6
	}
	ps := packet.PartialChecksum(src, dst, proto, len(in)-start)
	binary.BigEndian.PutUint16(in[start+offset:], ps)
	return start, offset
}

// TestEncapPartial encapsulates packets with an offloaded checksum: GUE
// with RemCsum sends it partial with the remote checksum option and Decap
// completes it; every other tunnel completes it before sending.
func TestEncapPartial(t *testing.T) {
	for _, c := range combos() {
		for _, proto := range []uint8{packettest.TCP, packettest.UDP} {
			t.Run(fmt.Sprintf("%v/p%d", c, proto), func(t *testing.T) {
				complete := inner(c.inner, proto, 0, true, 63)
				in := append([]byte(nil), complete...)
				cs, co := partial(in)
				tn := tunnel(c.typ, c.outer, c.csum)
				buf := make([]byte, tun.MaxOverhead+len(in))
				copy(buf[tun.MaxOverhead:], in)
				start, ok := tn.EncapPartial(buf, tun.MaxOverhead, len(in), cs, co)
				if !ok {
					t.Fatalf("EncapPartial failed")
				}
				out := buf[start:]
				rem := c.typ == tun.GUE && c.csum == tun.RemCsum
				over := tn.Overhead()
				if rem {
					over += tun.RemCsumOptionLen
					g := out[over-tun.RemCsumOptionLen-4 : over]
					want := []byte{2, byte(map[int]int{4: 4, 6: 41}[c.inner]), 0, 1, 0x80, 0, 0, 0,
						0, byte(cs), 0, byte(cs + co)}
					if !bytes.Equal(g, want) {
						t.Fatalf("GUE header % x, want % x", g, want)
					}
					if !bytes.Equal(out[over:], in) {
						t.Fatalf("inner packet changed")
					}
				} else if !bytes.Equal(out[over:], complete) {
					t.Fatalf("inner checksum not completed")
				}
				if start != tun.MaxOverhead-over {
					t.Fatalf("start %d, want %d", start, tun.MaxOverhead-over)
				}
				if !rem {
					checkOuter(t, c, tn, out, complete, 0, true)
				}
				d, err := tun.Decap(out, guePort)
				if err != nil {
					t.Fatalf("Decap: %v", err)
				}
				if d.Inner != over || !bytes.Equal(out[d.Inner:d.Inner+d.Len], complete) {
					t.Fatalf("Decap: inner at %d, want %d, or checksum not completed", d.Inner, over)
				}
				if err := packettest.Verify(out[d.Inner:], false); err != nil {
					t.Fatalf("inner packet: %v", err)
				}
			})
		}
	}
}

func TestEncapRefuses(t *testing.T) {
	in4 := inner(4, packettest.TCP, 0, true, 64)
	good := tunnel(tun.IPIP, 4, tun.NoCsum)
	long := make([]byte, 65535)
	copy(long, in4)
	binary.BigEndian.PutUint16(long[2:], 65535-20+1) // fits alone, not with 20 more
	long = long[:65535-20+1]
	for _, tc := range []struct {
		name   string
		tn     *tun.Tunnel
		in     []byte
		off, n int
	}{
		{"no headroom", good, in4, 19, len(in4)},
		{"negative offset", good, in4, -1, len(in4)},
		{"n beyond buffer", good, in4, 20, len(in4) + 1},
		{"n shorter than the packet", good, in4, 20, len(in4) - 1},
		{"empty", good, nil, 20, 0},
		{"not IP", good, append([]byte{0x50}, in4[1:]...), 20, len(in4)},
		{"short IPv4 header", good, append([]byte{0x44}, in4[1:]...), 20, len(in4)},
		{"too long for IPv4", good, long, 20, len(long)},
		{"no source", &tun.Tunnel{Dst: rs4}, in4, 40, len(in4)},
		{"mixed families", &tun.Tunnel{Src: dir6, Dst: rs4}, in4, 40, len(in4)},
		{"unknown type", &tun.Tunnel{Type: 9, Src: dir4, Dst: rs4}, in4, 40, len(in4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, max(tc.off, 0)+len(tc.in))
			copy(buf[max(tc.off, 0):], tc.in)
			before := append([]byte(nil), buf...)
			if _, ok := tc.tn.Encap(buf, tc.off, tc.n); ok {
				t.Fatalf("Encap accepted")
			}
			if !bytes.Equal(buf, before) {
				t.Fatalf("Encap wrote on failure")
			}
		})
	}
	// An IPv6 outer header is not in its own payload length: 65535 of
	// payload fits.
	in6 := make([]byte, 65535)
	copy(in6, inner(6, packettest.UDP, 0, false, 64))
	binary.BigEndian.PutUint16(in6[4:], 65535-40-40)
	in6 = in6[:65535-40]
	buf := make([]byte, 40+len(in6))
	copy(buf[40:], in6)
	if _, ok := tunnel(tun.IPIP, 6, tun.NoCsum).Encap(buf, 40, len(in6)); !ok {
		t.Fatalf("IPv6 payload of 65535 refused")
	}
	if _, ok := tunnel(tun.GRE, 6, tun.NoCsum).Encap(buf, 40, len(in6)); ok {
		t.Fatalf("IPv6 payload of 65539 accepted")
	}
}

func TestOverheadAndMTU(t *testing.T) {
	for _, tc := range []struct {
		typ   tun.Type
		outer int
		csum  tun.Csum
		want  int
	}{
		{tun.IPIP, 4, tun.NoCsum, 20},
		{tun.IPIP, 6, tun.NoCsum, 40},
		{tun.GUE, 4, tun.NoCsum, 32},
		{tun.GUE, 4, tun.WithCsum, 32},
		{tun.GUE, 4, tun.RemCsum, 32},
		{tun.GUE, 6, tun.NoCsum, 52},
		{tun.GRE, 4, tun.NoCsum, 24},
		{tun.GRE, 4, tun.WithCsum, 28},
		{tun.GRE, 4, tun.RemCsum, 24},
		{tun.GRE, 6, tun.WithCsum, 48},
	} {
		tn := tunnel(tc.typ, tc.outer, tc.csum)
		if got := tn.Overhead(); got != tc.want {
			t.Errorf("%v/%d/%v: Overhead %d, want %d", tc.typ, tc.outer, tc.csum, got, tc.want)
		}
		if got := tn.MTUFor(1500); got != 1500-tc.want {
			t.Errorf("%v/%d/%v: MTUFor(1500) %d, want %d", tc.typ, tc.outer, tc.csum, got, 1500-tc.want)
		}
	}
	if tun.MaxOverhead != 60 {
		t.Errorf("MaxOverhead %d", tun.MaxOverhead)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		tn *tun.Tunnel
		ok bool
	}{
		{&tun.Tunnel{Type: tun.IPIP, Src: dir4, Dst: rs4}, true},
		{&tun.Tunnel{Type: tun.IPIP, Src: dir6, Dst: rs6}, true},
		{&tun.Tunnel{Type: tun.GUE, Src: dir4, Dst: rs4, Port: 6080, Csum: tun.RemCsum}, true},
		{&tun.Tunnel{Type: tun.GRE, Src: dir6, Dst: rs6, Csum: tun.WithCsum}, true},
		{&tun.Tunnel{Type: tun.IPIP, Dst: rs4}, false},
		{&tun.Tunnel{Type: tun.IPIP, Src: dir4, Dst: rs6}, false},
		{&tun.Tunnel{Type: tun.IPIP, Src: dir4, Dst: rs4, Csum: tun.WithCsum}, false},
		{&tun.Tunnel{Type: tun.IPIP, Src: dir4, Dst: rs4, Port: 1}, false},
		{&tun.Tunnel{Type: tun.GUE, Src: dir4, Dst: rs4}, false},
		{&tun.Tunnel{Type: tun.GRE, Src: dir4, Dst: rs4, Csum: tun.RemCsum}, false},
		{&tun.Tunnel{Type: 3, Src: dir4, Dst: rs4}, false},
		{&tun.Tunnel{Type: tun.GRE, Src: dir4, Dst: rs4, Csum: 3}, false},
		{&tun.Tunnel{Type: tun.IPIP, Src: dir6.WithZone("eth0"), Dst: rs6}, false},
	} {
		err := tc.tn.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, tun.ErrConfig)) {
			t.Errorf("%v %v %v -> %v: Validate = %v", tc.tn.Type, tc.tn.Csum, tc.tn.Src, tc.tn.Dst, err)
		}
	}
}

func TestIPv4ID(t *testing.T) {
	tn := tunnel(tun.IPIP, 4, tun.NoCsum)
	seen := map[uint16]bool{}
	for range 100 {
		buf, start := encap(t, tn, inner(6, packettest.UDP, 0, false, 64))
		seen[binary.BigEndian.Uint16(buf[start+4:])] = true
	}
	if len(seen) != 100 {
		t.Fatalf("%d distinct IDs in 100 packets", len(seen))
	}
}

func TestFlowHash(t *testing.T) {
	a := inner(4, packettest.TCP, 0, false, 64)
	b := inner(4, packettest.TCP, 0x10, true, 30) // same flow, other header fields
	if tun.FlowHash(a) != tun.FlowHash(b) {
		t.Errorf("same flow, different hashes")
	}
	// Fragments of a datagram hash alike, whatever their offset.
	f1, f2 := append([]byte(nil), a...), append([]byte(nil), a...)
	f1[6], f2[6], f2[7] = 0x20, 0x00, 0x10
	f2[20] ^= 0xff // a later fragment has no ports
	if tun.FlowHash(f1) != tun.FlowHash(f2) {
		t.Errorf("fragments hash differently")
	}
	ports := map[uint16]bool{}
	for _, v := range []int{4, 6} {
		for p := range 1000 {
			in := inner(v, packettest.UDP, 0, false, 64)
			l4 := 20
			if v == 6 {
				l4 = 40
			}
			binary.BigEndian.PutUint16(in[l4:], uint16(20000+p))
			port := srcPortOf(in)
			if port < 32768 || port >= 60999 {
				t.Fatalf("source port %d outside the ephemeral range", port)
			}
			ports[port] = true
		}
	}
	if len(ports) < 1900 {
		t.Errorf("2000 flows got %d source ports", len(ports))
	}
	for _, b := range [][]byte{nil, {0x45}, {0x60, 0}} {
		tun.FlowHash(b) // short packets: no panic
	}
}

func TestAllocatesNothing(t *testing.T) {
	in := inner(4, packettest.TCP, 0, true, 64)
	for _, c := range combos() {
		tn := tunnel(c.typ, c.outer, c.csum)
		buf := make([]byte, tun.MaxOverhead+len(in))
		copy(buf[tun.MaxOverhead:], in)
		var start int
		if n := testing.AllocsPerRun(100, func() {
			start, _ = tn.Encap(buf, tun.MaxOverhead, len(in))
		}); n != 0 {
			t.Errorf("%v: Encap allocates %v", c, n)
		}
		if n := testing.AllocsPerRun(100, func() {
			if _, err := tun.Decap(buf[start:], guePort); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%v: Decap allocates %v", c, n)
		}
	}
}

func benchEncap(b *testing.B, tn *tun.Tunnel) {
	in := inner(4, packettest.TCP, 0, true, 64)
	buf := make([]byte, tun.MaxOverhead+len(in))
	copy(buf[tun.MaxOverhead:], in)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, ok := tn.Encap(buf, tun.MaxOverhead, len(in)); !ok {
			b.Fatal("Encap failed")
		}
	}
}

func BenchmarkEncapIPIP4(b *testing.B) { benchEncap(b, tunnel(tun.IPIP, 4, tun.NoCsum)) }
func BenchmarkEncapIPIP6(b *testing.B) { benchEncap(b, tunnel(tun.IPIP, 6, tun.NoCsum)) }
func BenchmarkEncapGUE(b *testing.B)   { benchEncap(b, tunnel(tun.GUE, 4, tun.NoCsum)) }
func BenchmarkEncapGUECsum(b *testing.B) {
	benchEncap(b, tunnel(tun.GUE, 4, tun.WithCsum))
}
func BenchmarkEncapGRE(b *testing.B) { benchEncap(b, tunnel(tun.GRE, 4, tun.NoCsum)) }

func BenchmarkDecap(b *testing.B) {
	in := inner(4, packettest.TCP, 0, true, 64)
	buf := make([]byte, tun.MaxOverhead+len(in))
	copy(buf[tun.MaxOverhead:], in)
	start, _ := tunnel(tun.IPIP, 4, tun.NoCsum).Encap(buf, tun.MaxOverhead, len(in))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tun.Decap(buf[start:], guePort); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecapGUECsum(b *testing.B) {
	in := inner(4, packettest.TCP, 0, true, 64)
	buf := make([]byte, tun.MaxOverhead+len(in))
	copy(buf[tun.MaxOverhead:], in)
	start, _ := tunnel(tun.GUE, 4, tun.WithCsum).Encap(buf, tun.MaxOverhead, len(in))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tun.Decap(buf[start:], guePort); err != nil {
			b.Fatal(err)
		}
	}
}
