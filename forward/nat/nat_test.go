package nat_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"uvs/forward/nat"
	"uvs/packet"
	"uvs/packet/packettest"
)

var (
	client4 = netip.MustParseAddr("198.18.0.10")
	vip4    = netip.MustParseAddr("198.18.1.1")
	rs4     = netip.MustParseAddr("198.18.2.20")
	router4 = netip.MustParseAddr("198.18.3.1")
	client6 = netip.MustParseAddr("2001:2::10")
	vip6    = netip.MustParseAddr("2001:2:0:1::1")
	rs6     = netip.MustParseAddr("2001:2:0:2::20")
	router6 = netip.MustParseAddr("2001:2:0:3::1")
)

const (
	cport = 40000
	vport = 80
	rport = 8080
)

type family struct {
	name                     string
	client, vip, rs, router  netip.Addr
	unreachType, unreachCode uint8
	tooBigType, tooBigCode   uint8
	ipHdr                    int
}

var families = []family{
	{"v4", client4, vip4, rs4, router4, 3, 3, 3, 4, 20},
	{"v6", client6, vip6, rs6, router6, 1, 4, 2, 0, 40},
}

// variant is a shape of frame: link layer, header extras, protocol.
type variant struct {
	name  string
	frame packettest.Frame // addresses, ports and TTL are filled in per test
}

func variants() []variant {
	var vs []variant
	payload := []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
	for _, l2 := range []string{"raw", "eth", "vlan"} {
		base := packettest.Frame{Ether: l2 != "raw", Payload: payload}
		if l2 == "vlan" {
			base.VLAN = 7
		}
		for _, proto := range []string{"tcp", "udp", "udp-nocsum", "tcp-options"} {
			f := base
			switch proto {
			case "tcp", "tcp-options":
				f.Proto, f.TCPFlags = packettest.TCP, 16|8
				f.IPv4Options, f.ExtHeaders = proto == "tcp-options", proto == "tcp-options"
			case "udp", "udp-nocsum":
				f.Proto, f.NoUDPChecksum = packettest.UDP, proto == "udp-nocsum"
			}
			vs = append(vs, variant{l2 + "/" + proto, f})
		}
	}
	return vs
}

func with(f packettest.Frame, src, dst netip.Addr, sport, dport uint16, ttl uint8) packettest.Frame {
	f.Src, f.Dst, f.SrcPort, f.DstPort, f.TTL = src, dst, sport, dport, ttl
	return f
}

func decode(t testing.TB, b []byte, ether bool) *packet.Parsed {
	t.Helper()
	p := new(packet.Parsed)
	if r := p.Decode(b, ether); r != packet.OK {
		t.Fatalf("Decode = %v", r)
	}
	return p
}

func mustEqual(t *testing.T, what string, got, want []byte, ether bool) {
	t.Helper()
	if err := packettest.Verify(got, ether); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got % x\nwant % x", what, got, want)
	}
}

// The rewritten packet is byte for byte what gopacket builds for the
// rewritten addresses, ports and TTL, checksums computed from scratch.
func TestDNATAndSNAT(t *testing.T) {
	for _, fam := range families {
		for _, v := range variants() {
			if fam.name == "v6" && v.frame.NoUDPChecksum {
				continue // mandatory in IPv6
			}
			name := fam.name + "/" + v.name
			in := with(v.frame, fam.client, fam.vip, cport, vport, 64).Bytes()
			p := decode(t, in, v.frame.Ether)
			nat.DNAT(p, fam.rs.AsSlice(), rport, false)
			mustEqual(t, name+" DNAT", in, with(v.frame, fam.client, fam.rs, cport, rport, 63).Bytes(), v.frame.Ether)

			reply := with(v.frame, fam.rs, fam.client, rport, cport, 64).Bytes()
			p = decode(t, reply, v.frame.Ether)
			nat.SNAT(p, fam.vip.AsSlice(), vport, false)
			mustEqual(t, name+" SNAT", reply, with(v.frame, fam.vip, fam.client, vport, cport, 63).Bytes(), v.frame.Ether)
		}
	}
}

// l4Check is the offset of the TCP or UDP checksum field in a decoded frame.
func l4Check(p *packet.Parsed) int {
	if p.Proto == packet.ProtoTCP {
		return p.L4 + 16
	}
	return p.L4 + 6
}

// makePartial turns the L4 checksum into what a sender offloading it puts
// there: the folded pseudo-header sum.
func makePartial(p *packet.Parsed) {
	ps := packet.PartialChecksum(p.Src(), p.Dst(), p.Proto, p.L4Len())
	binary.BigEndian.PutUint16(p.Buf[l4Check(p):], ps)
}

// complete does what the kernel does with a partial checksum on sending.
func complete(p *packet.Parsed) {
	o := l4Check(p)
	seg := p.Buf[p.L4:p.End()]
	binary.BigEndian.PutUint16(p.Buf[o:], ^packettest.Fold(packettest.Sum(seg)))
}

// GSO packets come with a partial checksum: after the rewrite it is the
// pseudo-header sum of the new addresses, and completing it gives the
// packet gopacket builds.
func TestPartialChecksum(t *testing.T) {
	for _, fam := range families {
		for _, v := range variants() {
			if v.frame.NoUDPChecksum {
				continue
			}
			v.frame.Payload = bytes.Repeat([]byte("segment "), 2000) // a 16 KB super-packet
			name := fam.name + "/" + v.name
			for _, dnat := range []bool{true, false} {
				in := with(v.frame, fam.client, fam.vip, cport, vport, 64)
				out := with(v.frame, fam.client, fam.rs, cport, rport, 63)
				if !dnat {
					in = with(v.frame, fam.rs, fam.client, rport, cport, 64)
					out = with(v.frame, fam.vip, fam.client, vport, cport, 63)
				}
				b := in.Bytes()
				p := decode(t, b, v.frame.Ether)
				makePartial(p)
				if dnat {
					nat.DNAT(p, fam.rs.AsSlice(), rport, true)
				} else {
					nat.SNAT(p, fam.vip.AsSlice(), vport, true)
				}
				got := binary.BigEndian.Uint16(b[l4Check(p):])
				if want := packet.PartialChecksum(p.Src(), p.Dst(), p.Proto, p.L4Len()); got != want && got^want != 0xffff {
					t.Errorf("%s dnat %v: partial checksum %#04x, want %#04x", name, dnat, got, want)
				}
				complete(p)
				mustEqual(t, fmt.Sprintf("%s dnat %v completed", name, dnat), b, out.Bytes(), v.frame.Ether)
			}
		}
	}
}

// icmpError is an ICMP error from src to dst quoting the first n bytes of
// the IP packet quoted.
func icmpError(ether bool, src, dst netip.Addr, typ, code uint8, info uint32, quoted packettest.Frame, n int) packettest.Frame {
	q := quoted.Bytes()
	return packettest.Frame{Ether: ether, Src: src, Dst: dst, TTL: 64, Proto: packettest.ICMP, Type: typ, Code: code, Info: info,
		Payload: q[:min(n, len(q))]}
}

func TestICMPErrors(t *testing.T) {
	for _, fam := range families {
		for _, v := range variants() {
			if fam.name == "v6" && v.frame.NoUDPChecksum {
				continue
			}
			inner := v.frame
			inner.Ether, inner.VLAN = false, 0
			ether := v.frame.Ether
			hl := fam.ipHdr
			if v.frame.IPv4Options && fam.name == "v4" {
				hl += 8
			}
			if v.frame.ExtHeaders && fam.name == "v6" {
				hl += 24
			}
			// Quotes: the minimum (header + 8, without a TCP checksum),
			// enough for the TCP checksum, and the whole packet.
			for _, qlen := range []int{hl + 8, hl + 20, 1000} {
				name := fmt.Sprintf("%s/%s quoting %d", fam.name, v.name, qlen)
				for _, fromRouter := range []bool{false, true} {
					// Server side: an error about client -> real server (as
					// DNAT sent it), to the client.
					from, typ, code, info := fam.rs, fam.unreachType, fam.unreachCode, uint32(0)
					if fromRouter {
						from, typ, code, info = fam.router, fam.tooBigType, fam.tooBigCode, 1400
					}
					sent := with(inner, fam.client, fam.rs, cport, rport, 63)
					b := icmpError(v.frame.Ether, from, fam.client, typ, code, info, sent, qlen).Bytes()
					b = withMACs(b, v.frame)
					p := decode(t, b, ether)
					if !p.IsICMPError() || p.Inner.DstPort != rport {
						t.Fatalf("%s: decoded as %+v", name, p.Inner)
					}
					nat.ICMPToClient(p, fam.vip.AsSlice(), vport)
					orig := with(inner, fam.client, fam.vip, cport, vport, 63)
					want := withMACs(icmpError(ether, fam.vip, fam.client, typ, code, info, orig, qlen).Bytes(), v.frame)
					want = withTTL(want, ether, 63)
					mustEqual(t, name+" to client", b, want, ether)
				}

				// Client side: an error about virtual -> client (as SNAT
				// sent it), to the real server.
				sent := with(inner, fam.vip, fam.client, vport, cport, 63)
				b := withMACs(icmpError(ether, fam.client, fam.vip, fam.unreachType, fam.unreachCode, 0, sent, qlen).Bytes(), v.frame)
				p := decode(t, b, ether)
				nat.ICMPToServer(p, fam.rs.AsSlice(), rport)
				orig := with(inner, fam.rs, fam.client, rport, cport, 63)
				want := withMACs(icmpError(ether, fam.client, fam.rs, fam.unreachType, fam.unreachCode, 0, orig, qlen).Bytes(), v.frame)
				want = withTTL(want, ether, 63)
				mustEqual(t, name+" to server", b, want, ether)
			}
		}
	}
}

// withMACs rebuilds the link layer of an ICMP frame with the VLAN tag of
// shape, since the ICMP fixtures are built without one.
func withMACs(b []byte, shape packettest.Frame) []byte {
	if shape.VLAN == 0 || !shape.Ether {
		return b
	}
	out := append([]byte(nil), b[:12]...)
	out = append(out, 0x81, 0, byte(shape.VLAN>>8), byte(shape.VLAN))
	return append(out, b[12:]...)
}

// withTTL sets the outer TTL or hop limit, fixing the IPv4 checksum from
// scratch.
func withTTL(b []byte, ether bool, ttl uint8) []byte {
	var p packet.Parsed
	p.Decode(b, ether)
	if p.IPVersion == 6 {
		b[p.L3+7] = ttl
		return b
	}
	h := packet.IPv4(b[p.L3:])
	h.SetTTL(ttl)
	h.SetChecksum(0)
	h.SetChecksum(^packettest.Fold(packettest.Sum(h[:h.HeaderLen()])))
	return b
}

func TestLeavesOtherPacketsAlone(t *testing.T) {
	tcp := packettest.Frame{Src: client4, Dst: vip4, Proto: packettest.TCP, SrcPort: cport, DstPort: vport}
	b := tcp.Bytes()
	orig := append([]byte(nil), b...)
	p := decode(t, b, false)
	nat.ICMPToClient(p, vip4.AsSlice(), vport)
	nat.ICMPToServer(p, rs4.AsSlice(), rport)
	nat.DNAT(p, rs6.AsSlice(), rport, false) // wrong family
	nat.SNAT(p, vip6.AsSlice(), vport, false)
	if !bytes.Equal(b, orig) {
		t.Errorf("packet changed:\n% x\n% x", b, orig)
	}
}

// A later fragment has no ports: only the address and TTL change.
func TestLaterFragment(t *testing.T) {
	for _, fam := range families {
		f := packettest.Frame{Proto: packettest.UDP, FragOffset: 100, Payload: make([]byte, 48)}
		b := with(f, fam.client, fam.vip, 0, 0, 64).Bytes()
		p := decode(t, b, false)
		nat.DNAT(p, fam.rs.AsSlice(), rport, false)
		mustEqual(t, fam.name, b, with(f, fam.client, fam.rs, 0, 0, 63).Bytes(), false)
	}
}

func TestAllocatesNothing(t *testing.T) {
	b := with(variants()[1].frame, client4, vip4, cport, vport, 64).Bytes()
	e := icmpError(true, rs6, client6, 1, 4, 0, with(variants()[0].frame, client6, rs6, cport, rport, 63), 100).Bytes()
	var p, q packet.Parsed
	p.Decode(b, true)
	q.Decode(e, true)
	rs, vip, rs6b, vip6b := rs4.AsSlice(), vip4.AsSlice(), rs6.AsSlice(), vip6.AsSlice()
	if n := testing.AllocsPerRun(100, func() {
		nat.DNAT(&p, rs, rport, false)
		nat.SNAT(&p, vip, vport, true)
		nat.ICMPToClient(&q, vip6b, vport)
		nat.ICMPToServer(&q, rs6b, rport)
	}); n != 0 {
		t.Errorf("%v allocations per run", n)
	}
}

func benchFrame(b *testing.B) (*packet.Parsed, int) {
	f := packettest.Frame{Ether: true, Src: client4, Dst: vip4, Proto: packettest.TCP, SrcPort: cport, DstPort: vport,
		TCPFlags: 16, Payload: make([]byte, 1400)}
	p := decode(b, f.Bytes(), true)
	return p, p.L3 + 8
}

func BenchmarkDNAT(b *testing.B) {
	p, ttl := benchFrame(b)
	rs := rs4.AsSlice()
	b.ReportAllocs()
	for b.Loop() {
		p.Buf[ttl] = 64 // keep decrementing; the checksum is not checked here
		nat.DNAT(p, rs, rport, false)
	}
}

func BenchmarkSNAT(b *testing.B) {
	p, ttl := benchFrame(b)
	vip := vip4.AsSlice()
	b.ReportAllocs()
	for b.Loop() {
		p.Buf[ttl] = 64
		nat.SNAT(p, vip, vport, false)
	}
}

func BenchmarkDecodeAndDNAT(b *testing.B) {
	p, ttl := benchFrame(b)
	frame := p.Buf
	rs := rs4.AsSlice()
	var q packet.Parsed
	b.ReportAllocs()
	for b.Loop() {
		frame[ttl] = 64
		// The IPv4 checksum no longer verifies after the TTL reset; decode
		// as a raw frame would check it, so restore it first.
		h := packet.IPv4(frame[14:])
		h.SetChecksum(0)
		h.SetChecksum(h.ComputeChecksum())
		if q.Decode(frame, true) != packet.OK {
			b.Fatal("decode failed")
		}
		nat.DNAT(&q, rs, rport, false)
	}
}

// A UDP checksum that comes out as zero is sent as 0xffff: zero would mean
// "no checksum" (RFC 768).
func TestUDPChecksumNeverZero(t *testing.T) {
	for _, fam := range families {
		f := packettest.Frame{Proto: packettest.UDP, Payload: []byte("query")}
		// Find the port that makes the rewritten checksum zero: after the
		// address change the checksum is ck, and ~ck + ~vport + port must
		// be all ones, so port = ck + vport in one's complement.
		dry := with(f, fam.client, fam.vip, cport, vport, 64).Bytes()
		p := decode(t, dry, false)
		nat.DNAT(p, fam.rs.AsSlice(), vport, false)
		ck := binary.BigEndian.Uint16(dry[p.L4+6:])
		port := packet.Fold(uint32(ck) + vport)

		b := with(f, fam.client, fam.vip, cport, vport, 64).Bytes()
		p = decode(t, b, false)
		nat.DNAT(p, fam.rs.AsSlice(), port, false)
		if got := binary.BigEndian.Uint16(b[p.L4+6:]); got != 0xffff {
			t.Errorf("%s: checksum %#04x, want 0xffff", fam.name, got)
		}
		mustEqual(t, fam.name, b, with(f, fam.client, fam.rs, cport, port, 63).Bytes(), false)
	}
}
