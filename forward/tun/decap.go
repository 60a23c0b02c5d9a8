package tun

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"uvs/packet"
)

// Why Decap and DecapPayload refuse a packet; a caller counts by these.
var (
	// ErrNotTunnel: a well-formed packet that is not IPIP, GRE or GUE to
	// the GUE port.
	ErrNotTunnel = errors.New("tun: not a tunnel packet")
	// ErrMalformed: truncated headers, lengths that do not fit, or an
	// inner packet that is not a whole IP packet of the family the
	// carrier announces.
	ErrMalformed = errors.New("tun: malformed packet")
	// ErrBadChecksum: the outer IPv4 header, UDP or GRE checksum does not
	// verify.
	ErrBadChecksum = errors.New("tun: bad checksum")
	// ErrUnsupported: a tunnel packet using something this package does
	// not take: GRE routing or a GRE version other than 0, GRE or GUE
	// carrying something other than IPv4 or IPv6, a GUE control message,
	// GUE version 2 or 3, unknown GUE flags or private flags, an IPv6
	// routing header with segments left.
	ErrUnsupported = errors.New("tun: unsupported tunnel feature")
	// ErrFragment: the outer packet is a fragment; reassemble first.
	ErrFragment = errors.New("tun: outer packet is a fragment")
)

// Decapped is where Decap found the inner packet, and what carried it.
type Decapped struct {
	Type Type
	// Inner and Len are the offset and length of the inner IP packet in
	// the buffer given to Decap; Len is the inner packet's own length.
	Inner, Len         int
	OuterSrc, OuterDst netip.Addr
}

// Decap parses an outer IP packet, starting at its IPv4 or IPv6 header and
// ending where its length field says, carrying IPIP (protocol 4), IPv6
// (41), GRE (47) or, when it is UDP to guePort (0: no GUE), GUE. It checks
// the outer IPv4 header checksum, the UDP checksum unless it is zero (IPVS
// sends zero with --tun-nocsum in both families), and the GRE checksum
// when present; that the inner packet is a whole IP packet of the family
// the carrier announces; and it applies GUE remote checksum offload, which
// writes the completed checksum into pkt. Outer IPv6 extension headers
// (hop-by-hop, destination options, a routing header with no segments
// left) are skipped.
//
// GRE follows what Linux accepts (gre_parse_header): version 0, no
// routing (R bit); key and sequence numbers are skipped, other reserved
// bits ignored. GUE follows Linux's fou: variant 0 data messages with at
// most the private flags and the remote checksum offload option, and
// variant 1 (the UDP payload is the IP packet itself).
func Decap(pkt []byte, guePort uint16) (Decapped, error) {
	var d Decapped
	if len(pkt) == 0 {
		return d, ErrMalformed
	}
	var proto uint8
	var l4, end int
	var src, dst []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4Len {
			return d, ErrMalformed
		}
		ihl := int(pkt[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < ipv4Len || tot < ihl || tot > len(pkt) {
			return d, ErrMalformed
		}
		if packet.Fold(packet.Sum(pkt[:ihl], 0)) != 0xffff {
			return d, ErrBadChecksum
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return d, ErrFragment
		}
		proto, l4, end = pkt[9], ihl, tot
		src, dst = pkt[12:16], pkt[16:20]
		d.OuterSrc = netip.AddrFrom4([4]byte(src))
		d.OuterDst = netip.AddrFrom4([4]byte(dst))
	case 6:
		if len(pkt) < ipv6Len {
			return d, ErrMalformed
		}
		end = ipv6Len + int(binary.BigEndian.Uint16(pkt[4:]))
		if end > len(pkt) {
			return d, ErrMalformed
		}
		var err error
		if proto, l4, err = skipExtensions(pkt[:end], pkt[6]); err != nil {
			return d, err
		}
		src, dst = pkt[8:24], pkt[24:40]
		d.OuterSrc = netip.AddrFrom16([16]byte(src))
		d.OuterDst = netip.AddrFrom16([16]byte(dst))
	default:
		return d, ErrMalformed
	}

	p := pkt[l4:end]
	if proto == protoUDP {
		if guePort == 0 {
			return d, ErrNotTunnel
		}
		if len(p) < udpLen {
			return d, ErrMalformed
		}
		if binary.BigEndian.Uint16(p[2:]) != guePort {
			return d, ErrNotTunnel
		}
		ulen := int(binary.BigEndian.Uint16(p[4:]))
		if ulen < udpLen || ulen > len(p) {
			return d, ErrMalformed
		}
		p = p[:ulen]
		if binary.BigEndian.Uint16(p[6:]) != 0 &&
			packet.Fold(packet.Sum(p, packet.PseudoHeaderSum(src, dst, protoUDP, ulen))) != 0xffff {
			return d, ErrBadChecksum
		}
		l4 += udpLen
		p = p[udpLen:]
	}
	typ, inner, n, err := decapPayload(proto, p)
	if err != nil {
		return d, err
	}
	d.Type, d.Inner, d.Len = typ, l4+inner, n
	return d, nil
}

// DecapPayload is Decap for a socket that delivers only the outer payload:
// an IPv6 raw socket strips the IPv6 header, a UDP socket delivers the UDP
// payload. proto is 4, 41 or 47 for the payload of that IP protocol, or 17
// for a GUE payload (the UDP payload, GUE header first). It returns the
// offset and length of the inner IP packet in payload. Remote checksum
// offload is applied as by Decap; the outer checksums are the socket's to
// check, except GRE's own.
func DecapPayload(proto uint8, payload []byte) (inner, n int, err error) {
	_, inner, n, err = decapPayload(proto, payload)
	return inner, n, err
}

func decapPayload(proto uint8, p []byte) (typ Type, inner, n int, err error) {
	switch proto {
	case protoIPIP, protoIPv6:
		n, err = ipLength(p, proto == protoIPIP)
		return IPIP, 0, n, err
	case protoGRE:
		inner, n, err = greDecap(p)
		return GRE, inner, n, err
	case protoUDP:
		inner, n, err = gueDecap(p)
		return GUE, inner, n, err
	}
	return IPIP, 0, 0, ErrNotTunnel
}

// GRE header bits (RFC 2784, RFC 2890).
const (
	greC       = 0x8000 // checksum present
	greR       = 0x4000 // routing present (RFC 1701)
	greK       = 0x2000 // key present
	greS       = 0x1000 // sequence number present
	greVersion = 0x0007
)

func greDecap(p []byte) (inner, n int, err error) {
	if len(p) < greLen {
		return 0, 0, ErrMalformed
	}
	flags := binary.BigEndian.Uint16(p)
	if flags&(greVersion|greR) != 0 {
		return 0, 0, ErrUnsupported
	}
	hl := greLen
	for _, bit := range [...]uint16{greC, greK, greS} {
		if flags&bit != 0 {
			hl += 4
		}
	}
	if len(p) < hl {
		return 0, 0, ErrMalformed
	}
	if flags&greC != 0 && packet.Fold(packet.Sum(p, 0)) != 0xffff {
		return 0, 0, ErrBadChecksum
	}
	var v4 bool
	switch binary.BigEndian.Uint16(p[2:]) {
	case packet.EtherTypeIPv4:
		v4 = true
	case packet.EtherTypeIPv6:
	default:
		return 0, 0, ErrUnsupported
	}
	n, err = ipLength(p[hl:], v4)
	return hl, n, err
}

// GUE header fields (draft-ietf-intarea-gue; Linux include/net/gue.h).
const (
	gueControl     = 0x20       // C bit, in the first byte
	guePrivFlag    = 0x01       // private flags present (GUE_FLAG_PRIV), low byte of the flags
	gueRemCsumFlag = 0x80000000 // remote checksum offload, in the private flags
)

func gueDecap(p []byte) (inner, n int, err error) {
	if len(p) == 0 {
		return 0, 0, ErrMalformed
	}
	switch p[0] >> 6 {
	case 1:
		// Variant 1: no GUE header, the payload is an IPv4 (0100) or
		// IPv6 (0110) packet.
		switch p[0] >> 4 {
		case 4:
			n, err = ipLength(p, true)
		case 6:
			n, err = ipLength(p, false)
		default:
			err = ErrUnsupported
		}
		return 0, n, err
	case 0:
	default:
		return 0, 0, ErrUnsupported
	}
	if len(p) < gueLen {
		return 0, 0, ErrMalformed
	}
	if p[0]&gueControl != 0 {
		return 0, 0, ErrUnsupported
	}
	hl := gueLen + int(p[0]&0x1f)*4
	if len(p) < hl {
		return 0, 0, ErrMalformed
	}
	flags := binary.BigEndian.Uint16(p[2:])
	if flags&^guePrivFlag != 0 {
		return 0, 0, ErrUnsupported
	}
	opt, remStart, remField := gueLen, -1, 0
	if flags&guePrivFlag != 0 {
		if opt+4 > hl {
			return 0, 0, ErrMalformed
		}
		pf := binary.BigEndian.Uint32(p[opt:])
		opt += 4
		if pf&^gueRemCsumFlag != 0 {
			return 0, 0, ErrUnsupported
		}
		if pf&gueRemCsumFlag != 0 {
			if opt+4 > hl {
				return 0, 0, ErrMalformed
			}
			remStart = int(binary.BigEndian.Uint16(p[opt:]))
			remField = int(binary.BigEndian.Uint16(p[opt+2:]))
		}
	}
	var v4 bool
	switch p[1] {
	case protoIPIP:
		v4 = true
	case protoIPv6:
	default:
		return 0, 0, ErrUnsupported
	}
	if n, err = ipLength(p[hl:], v4); err != nil {
		return 0, 0, err
	}
	if remStart >= 0 {
		// The field must lie, word-aligned, within the summed part of
		// the inner packet.
		if remField < remStart || remField+2 > n || (remField-remStart)%2 != 0 {
			return 0, 0, ErrMalformed
		}
		completeChecksum(p[hl:hl+n], remStart, remField)
	}
	return hl, n, nil
}

// ipLength checks that b starts with a whole IPv4 (v4) or IPv6 packet and
// returns its length, from its own header.
func ipLength(b []byte, v4 bool) (int, error) {
	if v4 {
		if len(b) < ipv4Len || b[0]>>4 != 4 {
			return 0, ErrMalformed
		}
		ihl := int(b[0]&0xf) * 4
		n := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < ipv4Len || n < ihl || n > len(b) {
			return 0, ErrMalformed
		}
		return n, nil
	}
	if len(b) < ipv6Len || b[0]>>4 != 6 {
		return 0, ErrMalformed
	}
	n := ipv6Len + int(binary.BigEndian.Uint16(b[4:]))
	if n == ipv6Len && b[6] == packet.ProtoHopByHop {
		return 0, ErrMalformed // a jumbogram
	}
	if n > len(b) {
		return 0, ErrMalformed
	}
	return n, nil
}

// skipExtensions walks the IPv6 extension headers of pkt (next header nh
// after the fixed header) and returns the upper-layer protocol and its
// offset.
func skipExtensions(pkt []byte, nh uint8) (uint8, int, error) {
	off := ipv6Len
	for {
		switch nh {
		case packet.ProtoHopByHop, packet.ProtoDstOpts, packet.ProtoRouting:
			if off+8 > len(pkt) {
				return 0, 0, ErrMalformed
			}
			if nh == packet.ProtoRouting && pkt[off+3] != 0 {
				return 0, 0, ErrUnsupported // not at its final destination yet
			}
			nh = pkt[off]
			off += (int(pkt[off+1]) + 1) * 8
			if off > len(pkt) {
				return 0, 0, ErrMalformed
			}
		case packet.ProtoFragment:
			return 0, 0, ErrFragment
		default:
			return nh, off, nil
		}
	}
}
