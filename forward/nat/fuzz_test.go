package nat_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"uvs/forward/nat"
	"uvs/packet"
	"uvs/packet/packettest"
)

func fuzzSeeds() (frames [][]byte, ether []bool) {
	for _, fam := range families {
		for _, v := range variants() {
			frames = append(frames, with(v.frame, fam.client, fam.vip, cport, vport, 64).Bytes())
			ether = append(ether, v.frame.Ether)
			inner := v.frame
			inner.Ether, inner.VLAN = false, 0
			frames = append(frames, icmpError(v.frame.Ether, fam.rs, fam.client, fam.unreachType, fam.unreachCode, 0,
				with(inner, fam.client, fam.rs, cport, rport, 63), fam.ipHdr+8).Bytes())
			ether = append(ether, v.frame.Ether)
		}
	}
	return frames, ether
}

// FuzzRewrite applies a rewrite (op: DNAT, SNAT, ICMPToClient,
// ICMPToServer) to any frame Decode accepts: it never panics, the
// addresses and ports end up as asked, and valid checksums stay valid,
// partial ones included.
func FuzzRewrite(f *testing.F) {
	frames, ether := fuzzSeeds()
	for i, b := range frames {
		f.Add(b, ether[i], rs6.AsSlice(), uint16(rport), uint8(i), i%3 == 0)
	}
	f.Fuzz(func(t *testing.T, frame []byte, ether bool, addr []byte, port uint16, op uint8, partial bool) {
		// The engine owns its inputs (and may share their memory): work on copies.
		frame = append([]byte(nil), frame...)
		addr = append([]byte(nil), addr...)
		var p packet.Parsed
		if p.Decode(frame, ether) != packet.OK || p.IPVersion == 0 {
			return
		}
		al := len(p.Src())
		if len(addr) < al {
			addr = append(addr, make([]byte, al-len(addr))...)
		}
		addr = addr[:al]
		hasPorts := p.L4 >= 0 && (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP)
		partial = partial && hasPorts && op%4 < 2
		if op&4 != 0 {
			// Most mutated frames have broken checksums; fix them so the
			// checksum properties are tested on many shapes.
			fixChecksums(&p)
		}
		if partial {
			// Only an offloaded packet has a partial checksum; make one.
			makePartial(&p)
		}
		valid := packettest.Verify(frame, ether) == nil
		ttl := p.TTL()
		innerPorts := p.Inner.L4 >= 0 && (p.Inner.Proto == packet.ProtoTCP || p.Inner.Proto == packet.ProtoUDP)

		switch op % 4 {
		case 0:
			nat.DNAT(&p, addr, port, partial)
			checkRewritten(t, &p, p.Dst(), addr, hasPorts, p.L4+2, port)
		case 1:
			nat.SNAT(&p, addr, port, partial)
			checkRewritten(t, &p, p.Src(), addr, hasPorts, p.L4, port)
		case 2:
			nat.ICMPToClient(&p, addr, port)
			if p.IsICMPError() {
				checkRewritten(t, &p, p.InnerDst(), addr, innerPorts, p.Inner.L4+2, port)
			}
		case 3:
			nat.ICMPToServer(&p, addr, port)
			if p.IsICMPError() {
				checkRewritten(t, &p, p.InnerSrc(), addr, innerPorts, p.Inner.L4, port)
			}
		}
		if op%4 < 2 || p.IsICMPError() {
			if want := max(int(ttl), 1) - 1; int(p.TTL()) != want {
				t.Fatalf("TTL %d -> %d", ttl, p.TTL())
			}
		}
		if partial {
			got := binary.BigEndian.Uint16(frame[l4Check(&p):])
			want := packet.PartialChecksum(p.Src(), p.Dst(), p.Proto, p.L4Len())
			if got != want && got^want != 0xffff {
				t.Fatalf("partial checksum %#04x, want %#04x", got, want)
			}
			complete(&p)
		}
		var q packet.Parsed
		if r := q.Decode(frame, ether); r != packet.OK {
			t.Fatalf("rewritten frame decodes as %v", r)
		}
		if valid {
			if err := packettest.Verify(frame, ether); err != nil {
				t.Fatalf("valid before, not after: %v", err)
			}
		}
	})
}

func checkRewritten(t *testing.T, p *packet.Parsed, got, want []byte, ports bool, portOff int, port uint16) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("address %v, want %v", got, want)
	}
	if ports && portOff >= 0 {
		if g := binary.BigEndian.Uint16(p.Buf[portOff:]); g != port {
			t.Fatalf("port %d, want %d", g, port)
		}
	}
}

// fixChecksums recomputes every checksum of p from scratch with the
// reference sum: the quoted IPv4 header, the L4 or ICMP checksum (unless p
// is a fragment), the IPv4 header.
func fixChecksums(p *packet.Parsed) {
	b := p.Buf
	v4hdr := func(l3 int) {
		h := packet.IPv4(b[l3:])
		h.SetChecksum(0)
		h.SetChecksum(^packettest.Fold(packettest.Sum(h[:h.HeaderLen()])))
	}
	if p.IsICMPError() && p.IPVersion == 4 {
		v4hdr(p.Inner.L3)
	}
	if p.L4 >= 0 && !p.Fragment {
		seg := b[p.L4:p.End()]
		var o int
		pseudo := true
		switch {
		case p.Proto == packet.ProtoTCP:
			o = 16
		case p.Proto == packet.ProtoUDP:
			o = 6
		case p.Proto == packet.ProtoICMPv6 && p.IPVersion == 6:
			o = 2
		case p.Proto == packet.ProtoICMP && p.IPVersion == 4:
			o, pseudo = 2, false
		default:
			o = -1
		}
		if o >= 0 {
			binary.BigEndian.PutUint16(seg[o:], 0)
			var s uint32
			if pseudo {
				s = packettest.Sum(packettest.PseudoHeader(p.Src(), p.Dst(), p.Proto, len(seg)))
			}
			ck := ^packettest.Fold(s + packettest.Sum(seg))
			if ck == 0 && p.Proto == packet.ProtoUDP {
				ck = 0xffff
			}
			binary.BigEndian.PutUint16(seg[o:], ck)
		}
	}
	if p.IPVersion == 4 {
		v4hdr(p.L3)
	}
}
