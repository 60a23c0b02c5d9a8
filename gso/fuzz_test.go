package gso_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"uvs/gso"
	"uvs/link"
	"uvs/packet"
)

// ref is the test's own reading of a packet's layout, to check Segment's
// output against: the IP packet's end, the L4 header and the payload.
type ref struct {
	v6              bool
	end, l4, hdrLen int
	proto           uint8
}

// parseRef reads pkt as Segment documents it: IPv4 IHL or the IPv6 fixed
// header plus hop-by-hop and destination options (and routing, when
// routing is set); a length field of zero means the whole buffer when gso
// is set. It returns false for anything it does not understand.
func parseRef(pkt []byte, gso, routing bool) (r ref, ok bool) {
	if len(pkt) < 20 {
		return r, false
	}
	be := binary.BigEndian
	switch pkt[0] >> 4 {
	case 4:
		r.l4 = int(pkt[0]&0xf) * 4
		r.end = int(be.Uint16(pkt[2:]))
		if r.end == 0 && gso {
			r.end = len(pkt)
		}
		r.proto = pkt[9]
		if r.l4 < 20 || r.end < r.l4 || r.end > len(pkt) {
			return r, false
		}
	case 6:
		if len(pkt) < 40 {
			return r, false
		}
		r.v6 = true
		r.end = 40 + int(be.Uint16(pkt[4:]))
		if r.end == 40 && gso {
			r.end = len(pkt)
		}
		if r.end > len(pkt) {
			return r, false
		}
		r.l4, r.proto = 40, pkt[6]
		for r.proto == 0 || r.proto == 60 || (routing && r.proto == 43) {
			if r.end-r.l4 < 8 {
				return r, false
			}
			r.proto = pkt[r.l4]
			r.l4 += (int(pkt[r.l4+1]) + 1) * 8
			if r.l4 > r.end {
				return r, false
			}
		}
	default:
		return r, false
	}
	switch r.proto {
	case 6:
		if r.end-r.l4 < 20 {
			return r, false
		}
		r.hdrLen = r.l4 + int(pkt[r.l4+12]>>4)*4
	case 17:
		r.hdrLen = r.l4 + 8
	}
	return r, r.hdrLen <= r.end
}

func addrs(b []byte, v6 bool) (src, dst []byte) {
	if v6 {
		return b[8:24], b[24:40]
	}
	return b[12:16], b[16:20]
}

const fuzzMaxSegs = 64

// FuzzSegment feeds Segment any bytes under any virtio-net header fields.
// It must never panic, Count must agree with it, and whatever it accepts
// must come out as valid segments: IPv4 header and L4 checksums verify,
// lengths and TCP sequence numbers follow, and the payloads concatenate to
// the super-packet's.
//
// Run it with a short minimization time: the seeds are a few KiB, and
// minimizing each new input for the default 60 s leaves the workers doing
// little else (63 executions in a minute against half a million):
//
//	go test -run XX -fuzz FuzzSegment -fuzztime 60s -fuzzminimizetime 5s ./gso/
func FuzzSegment(f *testing.F) {
	for _, fx := range []fixture{
		{payload: 3000},
		{payload: 100},
		{v6: true, payload: 2500},
		{udp: true, payload: 2000},
		{v6: true, udp: true, payload: 1500},
		{payload: 0},
	} {
		b := fx.build()
		for _, gs := range []int{1000, 1448, 7} {
			fx.gsoSize = gs
			h := fx.hdr()
			f.Add(b, h.Flags, h.GSOType, h.GSOSize, h.CsumOffset)
		}
		h := fx.hdr()
		f.Add(b, h.Flags, uint8(link.GSONone), uint16(0), h.CsumOffset)
		f.Add(b, uint8(0), uint8(link.GSONone), uint16(0), uint16(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, flags, gsoType uint8, gsoSize, csumOffset uint16) {
		h := link.VnetHdr{Flags: flags, GSOType: gsoType, GSOSize: gsoSize, CsumOffset: csumOffset,
			HdrLen: 0xffff, CsumStart: 0xffff} // neither may be used
		in := append([]byte(nil), data...)
		count, cerr := gso.Count(in, h)
		dst, lens := buffers(min(max(count, 1), fuzzMaxSegs), off+len(data))
		n, err := gso.Segment(in, h, dst, off, lens)
		if !bytes.Equal(in, data) {
			t.Fatal("Segment changed its input")
		}
		switch {
		case cerr != nil:
			if err != cerr {
				t.Fatalf("Count error %v, Segment error %v", cerr, err)
			}
			return
		case count > fuzzMaxSegs:
			if !errors.Is(err, gso.ErrTooManySegments) {
				t.Fatalf("%d segments, %d buffers: %v", count, fuzzMaxSegs, err)
			}
			return
		case err != nil || n != count:
			t.Fatalf("Count %d, Segment %d, %v", count, n, err)
		}
		segs := make([][]byte, n)
		for i := range segs {
			segs[i] = dst[i][off : off+lens[i]]
		}
		if gsoType&^link.GSOECN == link.GSONone {
			checkNotGSO(t, data, h, segs[0])
			return
		}

		r, ok := parseRef(data, true, false)
		if !ok || (r.proto != 6 && r.proto != 17) {
			t.Fatalf("Segment accepted a packet the test cannot read: %x", data)
		}
		var payload []byte
		var seq uint32
		for i, s := range segs {
			sr, ok := parseRef(s, false, false)
			if !ok || sr.end != len(s) || sr.l4 != r.l4 || sr.hdrLen != r.hdrLen || sr.proto != r.proto {
				t.Fatalf("segment %d does not parse like its super-packet: %+v, %+v", i, sr, r)
			}
			if !r.v6 && packet.Checksum(s[:r.l4], 0) != 0 {
				t.Fatalf("segment %d: IPv4 header checksum does not verify", i)
			}
			src, dst := addrs(s, r.v6)
			if c := packet.Checksum(s[r.l4:], packet.PseudoHeaderSum(src, dst, r.proto, len(s)-r.l4)); c != 0 {
				t.Fatalf("segment %d: L4 checksum does not verify", i)
			}
			if r.proto == 17 && binary.BigEndian.Uint16(s[r.l4+4:]) != uint16(len(s)-r.l4) {
				t.Fatalf("segment %d: UDP length", i)
			}
			if r.proto == 6 {
				if i == 0 {
					seq = binary.BigEndian.Uint32(s[r.l4+4:])
				}
				if got := binary.BigEndian.Uint32(s[r.l4+4:]); got != seq {
					t.Fatalf("segment %d: seq %#x, want %#x", i, got, seq)
				}
				seq += uint32(len(s) - r.hdrLen)
			}
			pl := s[r.hdrLen:]
			if len(pl) > int(gsoSize) || (len(pl) != int(gsoSize) && i != n-1) {
				t.Fatalf("segment %d: payload %d bytes, GSO size %d", i, len(pl), gsoSize)
			}
			payload = append(payload, pl...)
		}
		if !bytes.Equal(payload, data[r.hdrLen:r.end]) {
			t.Fatal("payloads do not concatenate to the super-packet's")
		}
	})
}

// checkNotGSO checks the one segment of a packet that is not GSO: a copy of
// the IP packet, with the checksum field at CsumOffset from the L4 header
// completed if NeedsCsum.
func checkNotGSO(t *testing.T, data []byte, h link.VnetHdr, seg []byte) {
	if h.Flags&link.VnetHdrFNeedsCsum == 0 {
		if !bytes.HasPrefix(data, seg) {
			t.Fatal("not GSO: the segment is not the packet")
		}
		return
	}
	r, ok := parseRef(data, false, true)
	if !ok && r.l4 == 0 {
		t.Fatalf("Segment accepted a packet the test cannot read: %x", data)
	}
	if len(seg) != r.end {
		t.Fatalf("not GSO: segment %d bytes, IP packet %d", len(seg), r.end)
	}
	at := r.l4 + int(h.CsumOffset)
	if !bytes.Equal(seg[:at], data[:at]) || !bytes.Equal(seg[at+2:], data[at+2:r.end]) {
		t.Fatal("not GSO: more changed than the checksum field")
	}
	// The field held the pseudo-header sum; with it, the L4 part now sums
	// to 0xffff.
	old := uint32(binary.BigEndian.Uint16(data[at:]))
	if s := packet.Fold(packet.Sum(seg[r.l4:], old)); s != 0xffff {
		t.Fatalf("not GSO: completed checksum does not verify (%#x)", s)
	}
}
