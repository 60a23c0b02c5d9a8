package gso_test

import (
	"encoding/binary"
	"testing"

	"uvs/gso"
	"uvs/link"
	"uvs/packet"
)

// The tests of this package build their packets by hand, so that its test
// binary (and with it FuzzSegment) does not link gopacket; the tests that
// build and decode with gopacket are in internal/gopacketcheck.

// fixture describes a super-packet: TCP (ACK|PSH|FIN, timestamps option)
// or UDP, over IPv4 or IPv6, with a partial checksum.
type fixture struct {
	v6, udp bool
	payload int
	gsoSize int
}

const off = 34 // headroom, as the director leaves for an outer header

func (f fixture) build() []byte {
	be := binary.BigEndian
	ihl, l4len := 20, 32
	if f.v6 {
		ihl = 40
	}
	proto := uint8(6)
	if f.udp {
		proto, l4len = 17, 8
	}
	b := make([]byte, ihl+l4len+f.payload)
	if f.v6 {
		copy(b, []byte{0x60, 0, 0, 0, 0, 0, proto, 64})
		be.PutUint16(b[4:], uint16(len(b)-40))
		copy(b[8:], []byte{0x20, 0x01, 0, 2, 15: 1})
		copy(b[24:], []byte{0x20, 0x01, 0, 2, 15: 2})
	} else {
		copy(b, []byte{0x45, 0, 0, 0, 0xff, 0xfe, 0x40, 0, 64, proto, 0, 0, 198, 18, 0, 1, 198, 19, 0, 2})
		be.PutUint16(b[2:], uint16(len(b)))
		be.PutUint16(b[10:], packet.Checksum(b[:20], 0))
	}
	t := b[ihl:]
	be.PutUint16(t[0:], 40000)
	be.PutUint16(t[2:], 40001)
	ck := 6
	if f.udp {
		be.PutUint16(t[4:], uint16(len(t)))
	} else {
		be.PutUint32(t[4:], 0xffffff00)
		be.PutUint32(t[8:], 0x01020304)
		t[12], t[13] = 8<<4, 0x19 // 32-byte header; ACK, PSH, FIN
		be.PutUint16(t[14:], 512)
		copy(t[20:], []byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8})
		ck = 16
	}
	for i := range t[l4len:] {
		t[l4len+i] = byte(i*7 + i>>8)
	}
	src, dst := b[12:16], b[16:20]
	if f.v6 {
		src, dst = b[8:24], b[24:40]
	}
	be.PutUint16(t[ck:], packet.PartialChecksum(src, dst, proto, len(t)))
	return b
}

// hdr is the virtio-net header for f, with HdrLen and CsumStart as
// AF_PACKET gives them (counting the Ethernet header).
func (f fixture) hdr() link.VnetHdr {
	h := link.VnetHdr{Flags: link.VnetHdrFNeedsCsum, GSOType: link.GSOTCPv4, GSOSize: uint16(f.gsoSize), CsumStart: 14 + 20, CsumOffset: 16}
	if f.v6 {
		h.GSOType, h.CsumStart = link.GSOTCPv6, 14+40
	}
	if f.udp {
		h.GSOType, h.CsumOffset = link.GSOUDPL4, 6
	}
	return h
}

func buffers(n, size int) ([][]byte, []int) {
	dst := make([][]byte, n)
	for i := range dst {
		dst[i] = make([]byte, size)
	}
	return dst, make([]int, n)
}

func TestAllocations(t *testing.T) {
	f := fixture{payload: 64000, gsoSize: 1448}
	b := f.build()
	h := f.hdr()
	dst, lens := buffers(45, 1600)
	if a := testing.AllocsPerRun(20, func() {
		if _, err := gso.Segment(b, h, dst, off, lens); err != nil {
			t.Fatal(err)
		}
		if _, err := gso.Count(b, h); err != nil {
			t.Fatal(err)
		}
		_ = gso.Complete(dst[0][off:off+lens[0]], 20, 16)
		_, _ = gso.Segment(b[:10], h, dst, off, lens)
	}); a != 0 {
		t.Errorf("%v allocations per run", a)
	}
}

func benchmarkSegment(b *testing.B, f fixture) {
	pkt := f.build()
	h := f.hdr()
	dst, lens := buffers(64, 2048)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := gso.Segment(pkt, h, dst, off, lens); err != nil {
			b.Fatal(err)
		}
	}
}

// 45 segments of 1448 bytes: a full 64 KiB TSO segment of a 1500-byte MTU
// TCP connection with timestamps.
func BenchmarkSegmentTCP4_64K(b *testing.B) {
	benchmarkSegment(b, fixture{payload: 45 * 1448, gsoSize: 1448})
}

func BenchmarkSegmentTCP6_64K(b *testing.B) {
	benchmarkSegment(b, fixture{v6: true, payload: 45 * 1428, gsoSize: 1428})
}

func BenchmarkSegmentUDP4_64K(b *testing.B) {
	benchmarkSegment(b, fixture{udp: true, payload: 44 * 1472, gsoSize: 1472})
}

func BenchmarkComplete1500(b *testing.B) {
	pkt := (fixture{payload: 1448}).build()
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		// Completing an already completed checksum sums the same bytes;
		// the work is what is measured.
		if err := gso.Complete(pkt, 20, 16); err != nil {
			b.Fatal(err)
		}
	}
}
