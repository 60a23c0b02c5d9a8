package gopacketcheck_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"uvs/gso"
	"uvs/link"
	"uvs/packet"
)

// Every truncation of a valid super-packet is refused as malformed: the IP
// length then says more than the buffer holds.
func TestSegmentTruncated(t *testing.T) {
	for _, s := range []super{
		{payload: 3000, tsopt: true, partial: true},
		{v6: true, payload: 3000, partial: true, dstopts: true},
		{udp: true, payload: 3000, partial: true},
		{v6: true, udp: true, payload: 3000},
	} {
		b := s.build(t)
		h := s.hdr(1000)
		dst, lens := buffers(4, 2000)
		for n := range len(b) {
			if _, err := gso.Count(b[:n], h); !errors.Is(err, gso.ErrMalformed) {
				t.Errorf("%v truncated to %d: Count error %v, want ErrMalformed", s, n, err)
			}
			if _, err := gso.Segment(b[:n], h, dst, 0, lens); !errors.Is(err, gso.ErrMalformed) {
				t.Errorf("%v truncated to %d: Segment error %v, want ErrMalformed", s, n, err)
			}
		}
	}
}

func TestSegmentErrors(t *testing.T) {
	tcp4 := super{payload: 3000, partial: true}
	tcp6 := super{v6: true, payload: 3000, partial: true}
	udp4 := super{udp: true, payload: 3000, partial: true}
	with := func(h link.VnetHdr, f func(*link.VnetHdr)) link.VnetHdr { f(&h); return h }
	edit := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	t4, t6, u4 := tcp4.build(t), tcp6.build(t), udp4.build(t)
	h4, h6, hu := tcp4.hdr(1000), tcp6.hdr(1000), udp4.hdr(1000)

	// An IPv6 packet whose extension header is of type typ.
	withExt := func(typ byte) []byte {
		return edit(t6, func(b []byte) []byte {
			ext := []byte{b[6], 0, 0, 0, 0, 0, 0, 0}
			b = append(b[:40], append(ext, b[40:]...)...)
			b[6] = typ
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
			return b
		})
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		h    link.VnetHdr
		want error
	}{
		{"empty", nil, h4, gso.ErrMalformed},
		{"GSO size 0", t4, with(h4, func(h *link.VnetHdr) { h.GSOSize = 0 }), gso.ErrMalformed},
		{"TCPv4 on IPv6", t6, h4, gso.ErrMalformed},
		{"TCPv6 on IPv4", t4, h6, gso.ErrMalformed},
		{"TCPv4 on UDP", u4, h4, gso.ErrMalformed},
		{"UDP L4 on TCP", t4, hu, gso.ErrMalformed},
		{"UFO", u4, with(hu, func(h *link.VnetHdr) { h.GSOType = link.GSOUDP }), gso.ErrUnsupported},
		{"unknown GSO type", t4, with(h4, func(h *link.VnetHdr) { h.GSOType = 2 }), gso.ErrUnsupported},
		{"version 5", edit(t4, func(b []byte) []byte { b[0] = 0x55; return b }), h4, gso.ErrMalformed},
		{"IHL 4", edit(t4, func(b []byte) []byte { b[0] = 0x44; return b }), h4, gso.ErrMalformed},
		{"IHL past end", edit(t4[:40], func(b []byte) []byte { b[0] = 0x4f; return b }), h4, gso.ErrMalformed},
		{"total length below header", edit(t4, func(b []byte) []byte { b[3] = 19; b[2] = 0; return b }), h4, gso.ErrMalformed},
		{"IPv4 fragment", edit(t4, func(b []byte) []byte { b[6] |= 0x20; return b }), h4, gso.ErrUnsupported},
		{"TCP data offset 4", edit(t4, func(b []byte) []byte { b[32] = 0x40; return b }), h4, gso.ErrMalformed},
		{"TCP header past end", edit(t4[:60], func(b []byte) []byte { b[32] = 0xf0; b[3] = 60; return b }), h4, gso.ErrMalformed},
		{"IPv6 routing header", withExt(43), h6, gso.ErrUnsupported},
		{"IPv6 fragment header", withExt(44), h6, gso.ErrUnsupported},
		{"IPv6 ext header past end", edit(withExt(60)[:200], func(b []byte) []byte { b[41] = 255; b[4], b[5] = 0, 160; return b }), h6, gso.ErrMalformed},
		{"segment longer than 64 KiB", bigV6(t, 70000), with(h6, func(h *link.VnetHdr) { h.GSOSize = 0xffff }), gso.ErrMalformed},
		{"IPv6 jumbogram", (super{v6: true, payload: 70000}).build(t), h6, gso.ErrUnsupported},
		{"odd checksum offset", t4, link.VnetHdr{Flags: link.VnetHdrFNeedsCsum, CsumOffset: 15}, gso.ErrMalformed},
		{"checksum offset past end", t4, link.VnetHdr{Flags: link.VnetHdrFNeedsCsum, CsumOffset: 4000}, gso.ErrMalformed},
	} {
		if _, err := gso.Count(c.pkt, c.h); !errors.Is(err, c.want) {
			t.Errorf("%s: Count error %v, want %v", c.name, err, c.want)
		}
		dst, lens := buffers(100, 70000)
		if _, err := gso.Segment(c.pkt, c.h, dst, 0, lens); !errors.Is(err, c.want) {
			t.Errorf("%s: Segment error %v, want %v", c.name, err, c.want)
		}
	}
}

// A payload length of zero on a GSO packet means "the whole buffer" (BIG
// TCP); 70000 bytes in 1448-byte segments.
func TestSegmentZeroLength(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := super{v6: v6, payload: 70000 - 60, partial: true}
		b := s.build(t)
		if v6 {
			b = bigV6(t, s.payload)
		} else {
			b[2], b[3] = 0, 0
		}
		dst, lens := buffers(60, 1600)
		n, err := gso.Segment(b, s.hdr(1448), dst, 0, lens)
		if err != nil || n != (s.payload+1447)/1448 {
			t.Fatalf("v6 %v: Segment = %d, %v", v6, n, err)
		}
		var got []byte
		hl := 40
		if v6 {
			hl = 60
		}
		for i := range n {
			got = append(got, dst[i][hl:lens[i]]...)
		}
		if !bytes.Equal(got, payloadBytes(s.payload)) {
			t.Errorf("v6 %v: payload differs", v6)
		}
	}
}

// bigV6 is a TCP/IPv6 packet with payload bytes of payload and a payload
// length of zero, without the jumbo option gopacket adds.
func bigV6(t *testing.T, payload int) []byte {
	b := (super{v6: true, payload: payload, partial: true}).build(t)
	if b[6] != 0 || b[42] != 0xc2 {
		t.Fatalf("gopacket did not add a jumbo option: %x", b[:48])
	}
	b = append(b[:40], b[48:]...)
	b[6] = 6
	b[4], b[5] = 0, 0
	return b
}

func TestSegmentTooManySegments(t *testing.T) {
	s := super{payload: 5000, partial: true}
	b := s.build(t)
	h := s.hdr(1000)
	dst, lens := buffers(5, 1100)
	if n, err := gso.Segment(b, h, dst, 0, lens); err != nil || n != 5 {
		t.Fatalf("Segment = %d, %v; want 5", n, err)
	}
	if _, err := gso.Segment(b, h, dst[:4], 0, lens); !errors.Is(err, gso.ErrTooManySegments) {
		t.Errorf("4 buffers: %v, want ErrTooManySegments", err)
	}
	if _, err := gso.Segment(b, h, dst, 0, lens[:4]); !errors.Is(err, gso.ErrTooManySegments) {
		t.Errorf("4 lengths: %v, want ErrTooManySegments", err)
	}
	if _, err := gso.Segment(b, h, dst, 61, lens); !errors.Is(err, gso.ErrShortBuffer) {
		t.Errorf("offset 61 in 1100-byte buffers: %v, want ErrShortBuffer", err)
	}
	if _, err := gso.Segment(b, h, dst, 2000, lens); !errors.Is(err, gso.ErrShortBuffer) {
		t.Errorf("offset past the buffers: %v, want ErrShortBuffer", err)
	}
	if _, err := gso.Segment(b, h, dst, -1, lens); !errors.Is(err, gso.ErrShortBuffer) {
		t.Errorf("offset -1: %v, want ErrShortBuffer", err)
	}
	if n, err := gso.Segment(b, h, dst, 60, lens); err != nil || n != 5 {
		t.Errorf("offset 60 in 1100-byte buffers: %d, %v", n, err)
	}
}

// A packet that is not GSO comes out whole, its checksum completed when
// the header says NeedsCsum, link padding dropped.
func TestSegmentNotGSO(t *testing.T) {
	for _, s := range []super{
		{payload: 1000},
		{payload: 1001, tsopt: true},
		{v6: true, payload: 7},
		{v6: true, payload: 0, dstopts: true},
		{udp: true, payload: 100},
		{v6: true, udp: true, payload: 1301},
	} {
		full := s.build(t)
		s.partial = true
		part := s.build(t)
		h := s.hdr(0)
		h.GSOType, h.GSOSize = link.GSONone, 0
		h.CsumStart = 0xdead // must not be used
		padded := append(append([]byte(nil), part...), 0, 0, 0, 0)
		dst, lens := buffers(1, 2000)
		n, err := gso.Segment(padded, h, dst, off, lens)
		if err != nil || n != 1 {
			t.Fatalf("%v: Segment = %d, %v", s, n, err)
		}
		if got := dst[0][off : off+lens[0]]; !bytes.Equal(got, full) {
			t.Errorf("%v: checksum not completed as gopacket computes it:\n%x\n%x", s, got, full)
		}
		// In place.
		in := append([]byte(nil), part...)
		if n, err := gso.Segment(in, h, [][]byte{in}, 0, lens); err != nil || n != 1 || !bytes.Equal(in, full) {
			t.Errorf("%v: in place: %d, %v", s, n, err)
		}
		// Without NeedsCsum: a copy, unchanged.
		h.Flags = 0
		if n, err := gso.Segment(padded, h, dst, 0, lens); err != nil || n != 1 || !bytes.Equal(dst[0][:lens[0]], part) {
			t.Errorf("%v: without NeedsCsum: %d, %v", s, n, err)
		}
	}
}

func TestComplete(t *testing.T) {
	s := super{payload: 1000, partial: true, tsopt: true}
	b := s.build(t)
	full := (super{payload: 1000, tsopt: true}).build(t)
	if err := gso.Complete(b, 20, 16); err != nil || !bytes.Equal(b, full) {
		t.Fatalf("Complete: %v", err)
	}
	if c := packet.Checksum(b[20:], packet.PseudoHeaderSum(b[12:16], b[16:20], 6, len(b)-20)); c != 0 {
		t.Errorf("checksum does not verify: %#x", c)
	}
	for _, c := range [][2]int{{-1, 16}, {20, -2}, {20, 15}, {len(b) - 1, 0}, {len(b), 0}, {len(b) + 1, 0}, {20, len(b) - 21}} {
		if err := gso.Complete(b, c[0], c[1]); !errors.Is(err, gso.ErrMalformed) {
			t.Errorf("Complete(%d, %d): %v, want ErrMalformed", c[0], c[1], err)
		}
	}
	if err := gso.Complete(b, 20, len(b)-22); err != nil {
		t.Errorf("field at the very end: %v", err)
	}
}

// A UDP checksum that comes to zero is sent as 0xffff. The payload is
// chosen so that the sum of everything else is 0xffff.
func TestSegmentUDPZeroChecksum(t *testing.T) {
	s := super{udp: true, payload: 2}
	b := s.build(t)
	h := s.hdr(1000)
	l4 := b[20:]
	binary.BigEndian.PutUint16(l4[6:], 0)
	binary.BigEndian.PutUint16(l4[8:], 0)
	rest := packet.Fold(packet.Sum(l4, packet.PseudoHeaderSum(b[12:16], b[16:20], 17, len(l4))))
	binary.BigEndian.PutUint16(l4[8:], 0xffff-rest)
	dst, lens := buffers(1, 100)
	if _, err := gso.Segment(b, h, dst, 0, lens); err != nil {
		t.Fatal(err)
	}
	if c := binary.BigEndian.Uint16(dst[0][26:]); c != 0xffff {
		t.Errorf("UDP checksum %#x, want 0xffff", c)
	}
}
