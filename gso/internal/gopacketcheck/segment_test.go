package gopacketcheck_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"uvs/gso"
	"uvs/link"
	"uvs/packet"
)

var (
	src4 = net.IP{198, 18, 0, 1}
	dst4 = net.IP{198, 19, 0, 2}
	src6 = net.ParseIP("2001:2::1")
	dst6 = net.ParseIP("2001:2::2")
)

// super describes a GSO super-packet to build.
type super struct {
	v6, udp bool
	payload int
	flags   uint8 // TCP flags; ACK is always added
	tsopt   bool  // TCP timestamps option (32-byte header, as Linux sends)
	partial bool  // L4 checksum field holds the pseudo-header sum only
	dstopts bool  // IPv6 destination options header before the L4 header
	id      uint16
	seq     uint32
}

func (s super) String() string {
	v := "4"
	if s.v6 {
		v = "6"
	}
	p := "tcp"
	if s.udp {
		p = "udp"
	}
	return fmt.Sprintf("%s%s/len%d/flags%#x/ts%v/partial%v/dstopts%v", p, v, s.payload, s.flags, s.tsopt, s.partial, s.dstopts)
}

func payloadBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// build serializes s with gopacket, full checksums, then makes the checksum
// partial or adds an extension header as asked.
func (s super) build(t testing.TB) []byte {
	t.Helper()
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	proto := layers.IPProtocolTCP
	if s.udp {
		proto = layers.IPProtocolUDP
	}
	if s.v6 {
		l := &layers.IPv6{Version: 6, TrafficClass: 0x02, HopLimit: 64, NextHeader: proto, SrcIP: src6, DstIP: dst6}
		ip, ipl = l, l
	} else {
		l := &layers.IPv4{Version: 4, TOS: 0x02, TTL: 64, Id: s.id, Flags: layers.IPv4DontFragment, Protocol: proto, SrcIP: src4, DstIP: dst4}
		ip, ipl = l, l
	}
	var l4 gopacket.SerializableLayer
	if s.udp {
		u := &layers.UDP{SrcPort: 40000, DstPort: 40001}
		_ = u.SetNetworkLayerForChecksum(ip)
		l4 = u
	} else {
		tc := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: s.seq, Ack: 0x01020304, Window: 512, ACK: true}
		f := s.flags
		tc.FIN, tc.SYN, tc.RST, tc.PSH = f&0x01 != 0, f&0x02 != 0, f&0x04 != 0, f&0x08 != 0
		tc.URG, tc.ECE, tc.CWR = f&0x20 != 0, f&0x40 != 0, f&0x80 != 0
		if s.tsopt {
			tc.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
			}
		}
		_ = tc.SetNetworkLayerForChecksum(ip)
		l4 = tc
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ipl, l4, gopacket.Payload(payloadBytes(s.payload))); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	ihl := 20
	if s.v6 {
		ihl = 40
	}
	if s.dstopts {
		// Nothing in the pseudo-header changes: it has the L4 length.
		ext := []byte{b[6], 0, 1, 4, 0, 0, 0, 0} // next header, length 0, PadN
		b = append(b[:40], append(ext, b[40:]...)...)
		b[6] = 60
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		ihl += 8
	}
	if s.partial {
		at := ihl + 16
		if s.udp {
			at = ihl + 6
		}
		srcA, dstA := b[12:16], b[16:20]
		if s.v6 {
			srcA, dstA = b[8:24], b[24:40]
		}
		binary.BigEndian.PutUint16(b[at:], packet.PartialChecksum(srcA, dstA, uint8(proto), len(b)-ihl))
	}
	return b
}

// hdr is the virtio-net header the kernel would hand over with s. HdrLen
// and CsumStart are given as AF_PACKET does, counting a 14-byte Ethernet
// header, which Segment must ignore.
func (s super) hdr(gsoSize int) link.VnetHdr {
	h := link.VnetHdr{Flags: link.VnetHdrFNeedsCsum, GSOSize: uint16(gsoSize), CsumStart: 14 + 20, CsumOffset: 16}
	switch {
	case s.udp:
		h.GSOType = link.GSOUDPL4
		h.CsumOffset = 6
	case s.v6:
		h.GSOType = link.GSOTCPv6
	default:
		h.GSOType = link.GSOTCPv4
	}
	if s.v6 {
		h.CsumStart = 14 + 40
	}
	if s.flags&0x80 != 0 {
		h.GSOType |= link.GSOECN
	}
	if !s.partial {
		h.Flags = 0
	}
	h.HdrLen = h.CsumStart + 20
	return h
}

func buffers(n, size int) ([][]byte, []int) {
	dst := make([][]byte, n)
	for i := range dst {
		dst[i] = make([]byte, size)
	}
	return dst, make([]int, n)
}

const off = 34 // headroom, as the director leaves for an outer header

// decode parses a segment with gopacket, failing on any decoding error.
func decode(t testing.TB, b []byte) gopacket.Packet {
	t.Helper()
	first := layers.LayerTypeIPv4
	if b[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(b, first, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	return p
}

// verify checks segs (cut from orig, built from s, with gsoSize) the way a
// receiver would, and against orig.
func verify(t *testing.T, s super, orig []byte, gsoSize int, segs [][]byte) {
	t.Helper()
	op := decode(t, orig)
	var payload []byte
	nextSeq := uint32(0)
	for i, b := range segs {
		p := decode(t, b)
		last := i == len(segs)-1
		var srcA, dstA []byte
		var l4 int
		switch ip := p.NetworkLayer().(type) {
		case *layers.IPv4:
			o := op.NetworkLayer().(*layers.IPv4)
			if int(ip.Length) != len(b) {
				t.Fatalf("seg %d: IPv4 length %d, packet %d", i, ip.Length, len(b))
			}
			if ip.Id != o.Id+uint16(i) {
				t.Errorf("seg %d: IPv4 ID %#x, want %#x", i, ip.Id, o.Id+uint16(i))
			}
			if c := packet.Checksum(b[:ip.IHL*4], 0); c != 0 {
				t.Errorf("seg %d: IPv4 header checksum does not verify (%#x)", i, c)
			}
			if ip.TTL != o.TTL || ip.TOS != o.TOS || ip.Flags != o.Flags || ip.FragOffset != 0 || ip.Protocol != o.Protocol {
				t.Errorf("seg %d: IPv4 fields changed: %+v", i, ip)
			}
			srcA, dstA, l4 = b[12:16], b[16:20], int(ip.IHL)*4
		case *layers.IPv6:
			if int(ip.Length) != len(b)-40 {
				t.Fatalf("seg %d: IPv6 payload length %d, packet %d", i, ip.Length, len(b))
			}
			srcA, dstA, l4 = b[8:24], b[24:40], 40
			if s.dstopts {
				l4 += 8
			}
		}
		proto := uint8(layers.IPProtocolTCP)
		if s.udp {
			proto = uint8(layers.IPProtocolUDP)
		}
		if c := packet.Checksum(b[l4:], packet.PseudoHeaderSum(srcA, dstA, proto, len(b)-l4)); c != 0 {
			t.Errorf("seg %d: L4 checksum does not verify (%#x)", i, c)
		}
		var pl []byte
		if s.udp {
			u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if int(u.Length) != len(b)-l4 {
				t.Errorf("seg %d: UDP length %d, want %d", i, u.Length, len(b)-l4)
			}
			if u.Checksum == 0 {
				t.Errorf("seg %d: UDP checksum 0", i)
			}
			if u.SrcPort != 40000 || u.DstPort != 40001 {
				t.Errorf("seg %d: ports %d %d", i, u.SrcPort, u.DstPort)
			}
			pl = u.Payload
		} else {
			tc := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			o := op.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if i == 0 {
				nextSeq = o.Seq
			}
			if tc.Seq != nextSeq {
				t.Errorf("seg %d: seq %#x, want %#x", i, tc.Seq, nextSeq)
			}
			if tc.FIN != (o.FIN && last) || tc.PSH != (o.PSH && last) || tc.CWR != (o.CWR && i == 0) {
				t.Errorf("seg %d/%d: FIN %v PSH %v CWR %v; super-packet FIN %v PSH %v CWR %v", i, len(segs), tc.FIN, tc.PSH, tc.CWR, o.FIN, o.PSH, o.CWR)
			}
			if tc.ACK != o.ACK || tc.ECE != o.ECE || tc.SYN != o.SYN || tc.RST != o.RST || tc.Ack != o.Ack || tc.Window != o.Window || tc.DataOffset != o.DataOffset {
				t.Errorf("seg %d: TCP fields changed", i)
			}
			if !bytes.Equal(b[l4+20:l4+int(tc.DataOffset)*4], orig[len(orig)-len(o.Payload)-len(o.Contents)+20:len(orig)-len(o.Payload)]) {
				t.Errorf("seg %d: TCP options changed", i)
			}
			pl = tc.Payload
			nextSeq += uint32(len(pl))
		}
		if len(pl) != gsoSize && !last {
			t.Errorf("seg %d: payload %d bytes, want %d", i, len(pl), gsoSize)
		}
		if len(pl) > gsoSize || (len(pl) == 0 && s.payload != 0) {
			t.Errorf("seg %d: payload %d bytes, GSO size %d", i, len(pl), gsoSize)
		}
		payload = append(payload, pl...)
	}
	if !bytes.Equal(payload, payloadBytes(s.payload)) {
		t.Errorf("payloads concatenated: %d bytes, differ from the original %d", len(payload), s.payload)
	}
}

func TestSegment(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			for _, gsoSize := range []int{1448, 1001} {
				for _, n := range []int{0, 1, gsoSize - 1, gsoSize, gsoSize + 1, 3 * gsoSize, 64000} {
					for _, partial := range []bool{true, false} {
						flagSets := []uint8{0, 0x08 | 0x01, 0x80 | 0x40 | 0x08, 0x80 | 0x08 | 0x01 | 0x20}
						if udp {
							flagSets = []uint8{0}
						}
						for _, flags := range flagSets {
							for _, tsopt := range []bool{false, true} {
								for _, dstopts := range []bool{false, true} {
									if tsopt && udp || dstopts && !v6 {
										continue
									}
									s := super{v6: v6, udp: udp, payload: n, flags: flags, tsopt: tsopt, partial: partial,
										dstopts: dstopts, id: 0xfffe, seq: 0xffffff00}
									t.Run(fmt.Sprintf("%v/gso%d", s, gsoSize), func(t *testing.T) {
										testSegment(t, s, gsoSize)
									})
								}
							}
						}
					}
				}
			}
		}
	}
}

func testSegment(t *testing.T, s super, gsoSize int) {
	orig := s.build(t)
	in := append([]byte(nil), orig...)
	h := s.hdr(gsoSize)
	want := max(1, (s.payload+gsoSize-1)/gsoSize)
	c, err := gso.Count(in, h)
	if err != nil || c != want {
		t.Fatalf("Count = %d, %v; want %d", c, err, want)
	}
	dst, lens := buffers(want+1, off+gsoSize+80)
	n, err := gso.Segment(in, h, dst, off, lens)
	if err != nil || n != want {
		t.Fatalf("Segment = %d, %v; want %d", n, err, want)
	}
	if !bytes.Equal(in, orig) {
		t.Fatal("Segment changed its input")
	}
	segs := make([][]byte, n)
	for i := range segs {
		segs[i] = dst[i][off : off+lens[i]]
	}
	verify(t, s, orig, gsoSize, segs)
}
