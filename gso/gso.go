// Package gso cuts a GSO super-packet, as the kernel hands it over with a
// virtio-net header (PACKET_VNET_HDR, IFF_VNET_HDR), into packets of MTU
// size, each with full checksums, in userspace.
//
// The director needs this for tunnelling: the virtio-net header has no GSO
// type for IPIP, GRE or GUE, so a 64 KiB TCP segment that is to be wrapped
// in an outer IP header must be cut before it is wrapped, and each piece's
// checksum completed, because the kernel will not finish a checksum inside
// an encapsulation it was not told about.
//
// The way one super-packet goes, in the order the code runs:
//
//  1. parse: find the IP header's length (IPv4 IHL; IPv6 fixed header and
//     extension headers), the IP packet's end, the L4 header and its
//     length, and check them against the GSO type; count the segments.
//  2. for each segment: copy the headers and the segment's share of the
//     payload, sum the payload, then fix the IP header (total or payload
//     length; IPv4 ID and header checksum) and the L4 header (TCP sequence
//     and flags, or UDP length) and write the L4 checksum computed from the
//     pseudo-header, the L4 header and the payload sum.
//
// Only the GSO type, GSO size and flags of the virtio-net header are used.
// Its HdrLen and CsumStart count from the start of the frame the header
// precedes, which for AF_PACKET includes the Ethernet header, so they are
// not trusted: the headers are found by parsing the IP packet. CsumOffset
// (relative to CsumStart, so independent of the link header) is used for a
// packet that is not GSO but needs its checksum completed.
//
// Supported: GSOTCPv4 and GSOTCPv6 (TSO, with or without the GSOECN flag)
// and GSOUDPL4 (USO) over IPv4 and IPv6. IPv4 options are copied into every
// segment. IPv6 hop-by-hop and destination options headers before the L4
// header are copied into every segment; a routing header (which changes
// the pseudo-header's destination) and a fragment header are refused with
// ErrUnsupported, as is GSOUDP (UFO, which means IP fragmentation). A
// length field of zero (IPv4 total length, IPv6 payload length) on a GSO
// packet means "as long as the buffer", as with BIG TCP; an IPv6 jumbogram
// (payload length zero and a hop-by-hop header, RFC 2675) is refused with
// ErrUnsupported.
//
// Nothing here allocates or does I/O: the functions work on the caller's
// byte slices.
package gso

import (
	"encoding/binary"
	"errors"

	"uvs/link"
)

// Errors returned by Segment, Count and Complete.
var (
	// ErrTooManySegments: dst (or lens) has fewer entries than the packet
	// has segments. Count says how many are needed.
	ErrTooManySegments = errors.New("gso: more segments than destination buffers")
	// ErrShortBuffer: a destination buffer is shorter than off plus its
	// segment's length.
	ErrShortBuffer = errors.New("gso: destination buffer too short")
	// ErrMalformed: the packet is truncated or inconsistent, or does not
	// match its virtio-net header (for example a TCPv4 GSO type on a UDP
	// or IPv6 packet, or a GSO size of zero).
	ErrMalformed = errors.New("gso: malformed packet")
	// ErrUnsupported: a GSO type (UFO, or unknown) or a header this
	// package does not handle.
	ErrUnsupported = errors.New("gso: unsupported GSO type or header")
)

const (
	protoHopByHop = 0
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoDstOpts  = 60

	ipv4MinLen = 20
	ipv6Len    = 40
	tcpMinLen  = 20
	udpLen     = 8

	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80

	maxIPLen = 0xffff // the largest IPv4 total length or IPv6 payload length
)

// layout is what parse finds out about a packet.
type layout struct {
	v6      bool
	end     int // length of the IP packet; pkt[end:] is link padding
	l4      int // offset of the L4 header
	hdrLen  int // offset of the payload: l4 plus the L4 header's length
	proto   uint8
	gsoSize int // 0: not GSO, one segment
	csum    int // not GSO: offset of the checksum field to complete, -1 for none
	n       int // number of segments
}

// parse finds the headers of pkt and checks them against h.
func parse(pkt []byte, h link.VnetHdr) (layout, error) {
	var l layout
	l.csum = -1
	typ := h.GSOType &^ link.GSOECN
	gso := typ != link.GSONone
	switch typ {
	case link.GSONone, link.GSOTCPv4, link.GSOTCPv6, link.GSOUDPL4:
	default:
		return l, ErrUnsupported
	}
	needCsum := h.Flags&link.VnetHdrFNeedsCsum != 0
	if len(pkt) == 0 {
		return l, ErrMalformed
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4MinLen {
			return l, ErrMalformed
		}
		ihl := int(pkt[0]&0xf) * 4
		if ihl < ipv4MinLen || ihl > len(pkt) {
			return l, ErrMalformed
		}
		l.end = int(binary.BigEndian.Uint16(pkt[2:]))
		if l.end == 0 && gso {
			l.end = len(pkt)
		}
		if l.end < ihl || l.end > len(pkt) {
			return l, ErrMalformed
		}
		l.l4 = ihl
		l.proto = pkt[9]
		if (gso || needCsum) && binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return l, ErrUnsupported // a fragment
		}
	case 6:
		if len(pkt) < ipv6Len {
			return l, ErrMalformed
		}
		l.v6 = true
		l.end = ipv6Len + int(binary.BigEndian.Uint16(pkt[4:]))
		if l.end == ipv6Len && gso {
			if pkt[6] == protoHopByHop {
				return l, ErrUnsupported // a jumbogram (RFC 2675)
			}
			l.end = len(pkt)
		}
		if l.end > len(pkt) {
			return l, ErrMalformed
		}
		if gso || needCsum {
			var err error
			l.l4, l.proto, err = skipExtHeaders(pkt[:l.end], gso)
			if err != nil {
				return l, err
			}
		}
	default:
		return l, ErrMalformed
	}

	if !gso {
		l.n = 1
		l.hdrLen = l.end
		if needCsum {
			// A TCP or UDP checksum, or any other the kernel left to
			// finish: the field at CsumOffset from the L4 header holds the
			// pseudo-header sum.
			l.csum = l.l4 + int(h.CsumOffset)
			if l.csum+2 > l.end || h.CsumOffset&1 != 0 {
				return l, ErrMalformed
			}
		}
		return l, nil
	}

	switch typ {
	case link.GSOTCPv4, link.GSOTCPv6:
		if l.v6 != (typ == link.GSOTCPv6) || l.proto != protoTCP {
			return l, ErrMalformed
		}
		if l.end-l.l4 < tcpMinLen {
			return l, ErrMalformed
		}
		thl := int(pkt[l.l4+12]>>4) * 4
		if thl < tcpMinLen || thl > l.end-l.l4 {
			return l, ErrMalformed
		}
		l.hdrLen = l.l4 + thl
	case link.GSOUDPL4:
		if l.proto != protoUDP || l.end-l.l4 < udpLen {
			return l, ErrMalformed
		}
		l.hdrLen = l.l4 + udpLen
	}
	l.gsoSize = int(h.GSOSize)
	if l.gsoSize == 0 {
		return l, ErrMalformed
	}
	payload := l.end - l.hdrLen
	l.n = (payload + l.gsoSize - 1) / l.gsoSize
	if l.n == 0 {
		l.n = 1 // headers only: one segment of headers
	}
	// The largest segment must fit its own length field.
	seg := l.hdrLen + min(l.gsoSize, payload)
	if l.v6 {
		seg -= ipv6Len
	}
	if seg > maxIPLen {
		return l, ErrMalformed
	}
	return l, nil
}

// skipExtHeaders walks the IPv6 extension headers of the IPv6 packet b and
// returns the offset and protocol of the upper-layer header. Hop-by-hop and
// destination options are skipped; a routing header is skipped only when
// the packet is not GSO (its pseudo-header then need not be rebuilt), and a
// fragment header is refused.
func skipExtHeaders(b []byte, gso bool) (off int, proto uint8, err error) {
	off, proto = ipv6Len, b[6]
	for {
		switch proto {
		case protoRouting:
			if gso {
				return off, proto, ErrUnsupported
			}
		case protoHopByHop, protoDstOpts:
		case protoFragment:
			return off, proto, ErrUnsupported
		default:
			return off, proto, nil
		}
		// Every one of these is at least 8 bytes, so the walk ends.
		if len(b)-off < 8 {
			return off, proto, ErrMalformed
		}
		n := (int(b[off+1]) + 1) * 8
		if n > len(b)-off {
			return off, proto, ErrMalformed
		}
		proto = b[off]
		off += n
	}
}

// Count returns how many segments Segment would produce for pkt and h, so
// the caller can size its buffers, or the error Segment would return for
// the packet itself.
func Count(pkt []byte, h link.VnetHdr) (int, error) {
	l, err := parse(pkt, h)
	if err != nil {
		return 0, err
	}
	return l.n, nil
}

// Segment cuts the IP packet pkt (starting at its IPv4 or IPv6 header, with
// no link-layer header), which the virtio-net header h describes, into
// packets of at most h.GSOSize payload bytes each. It writes segment i's IP
// packet to dst[i][off:] and sets lens[i] to its length, and returns the
// number of segments.
//
// Each segment is a complete packet: its IP total (IPv4) or payload (IPv6)
// length is its own; an IPv4 header gets the super-packet's ID plus i and a
// new header checksum, as the kernel's TSO does; a TCP segment's sequence
// number is advanced by the payload before it, FIN and PSH are kept only on
// the last segment and CWR only on the first; a UDP (USO) segment is a
// datagram of its own with its own length. The L4 checksum is computed in
// full in software, whatever the field held (partial or full).
//
// A packet that is not GSO (h.GSOType without GSOECN is GSONone) gives one
// segment, a copy of pkt; with VnetHdrFNeedsCsum its checksum is completed
// as Complete does, at h.CsumOffset from the L4 header. GSOUDP (UFO) is
// refused with ErrUnsupported. Trailing bytes after the IP packet's length
// (link padding) are dropped.
//
// Only h.GSOType, h.GSOSize and h.Flags are used (and h.CsumOffset for a
// non-GSO packet): h.HdrLen and h.CsumStart count from the start of the
// link frame, so the headers are found by parsing pkt instead.
//
// len(dst[i]) (not its capacity) must be at least off plus the segment's
// length, and lens at least as long as the number of segments
// (ErrTooManySegments otherwise). dst must not overlap pkt, except that
// for a non-GSO packet dst[0][off:] may be pkt itself. On error the
// contents of dst and lens are unspecified.
func Segment(pkt []byte, h link.VnetHdr, dst [][]byte, off int, lens []int) (int, error) {
	l, err := parse(pkt, h)
	if err != nil {
		return 0, err
	}
	if len(dst) < l.n || len(lens) < l.n {
		return 0, ErrTooManySegments
	}
	if off < 0 {
		return 0, ErrShortBuffer
	}
	if l.gsoSize == 0 {
		if len(dst[0])-off < l.end || off > len(dst[0]) {
			return 0, ErrShortBuffer
		}
		b := dst[0][off : off+l.end]
		copy(b, pkt[:l.end])
		if l.csum >= 0 {
			complete(b[l.l4:], l.csum-l.l4)
		}
		lens[0] = l.end
		return 1, nil
	}

	// The headers of every segment are those of the super-packet with a
	// few 16-bit words changed, so their sums are taken once here without
	// those words (a one's complement subtraction adds the complement),
	// and each segment adds its own values back.
	be := binary.BigEndian
	var ipBase, id uint32
	if !l.v6 {
		id = uint32(be.Uint16(pkt[4:]))
		ipBase = sum(pkt[:l.l4], 0) + uint32(^be.Uint16(pkt[2:])) + (^id & 0xffff) + uint32(^be.Uint16(pkt[10:]))
	}
	// The L4 base includes the pseudo-header but its length.
	var addrs uint32
	if l.v6 {
		addrs = sum(pkt[8:40], uint32(l.proto))
	} else {
		addrs = sum(pkt[12:20], uint32(l.proto))
	}
	t := pkt[l.l4:l.hdrLen]
	l4Base := sum(t, addrs)
	var seq uint32
	var flags uint8
	if l.proto == protoTCP {
		seq, flags = be.Uint32(t[4:]), t[13]
		l4Base += uint32(^be.Uint16(t[4:])) + uint32(^be.Uint16(t[6:])) + uint32(^be.Uint16(t[12:])) + uint32(^be.Uint16(t[16:]))
	} else {
		l4Base += uint32(^be.Uint16(t[4:])) + uint32(^be.Uint16(t[6:]))
	}
	l4Base = uint32(fold(l4Base))
	ipBase = uint32(fold(ipBase))

	for i := 0; i < l.n; i++ {
		start := l.hdrLen + i*l.gsoSize
		plen := min(l.gsoSize, l.end-start)
		n := l.hdrLen + plen
		if off > len(dst[i]) || len(dst[i])-off < n {
			return 0, ErrShortBuffer
		}
		s := dst[i][off : off+n]
		copy(s, pkt[:l.hdrLen])
		copy(s[l.hdrLen:], pkt[start:start+plen])
		ck := sum(s[l.hdrLen:], l4Base)

		if l.v6 {
			be.PutUint16(s[4:], uint16(n-ipv6Len))
		} else {
			segID := uint16(id + uint32(i))
			be.PutUint16(s[2:], uint16(n))
			be.PutUint16(s[4:], segID)
			be.PutUint16(s[10:], ^fold(ipBase+uint32(n)+uint32(segID)))
		}

		u := s[l.l4:]
		ulen := uint32(len(u))
		var at int
		if l.proto == protoTCP {
			sq := seq + uint32(i*l.gsoSize)
			f := flags
			if i != l.n-1 {
				f &^= tcpFIN | tcpPSH
			}
			if i != 0 {
				f &^= tcpCWR
			}
			be.PutUint32(u[4:], sq)
			u[13] = f
			ck += sq>>16 + sq&0xffff + uint32(u[12])<<8 + uint32(f) + ulen
			at = 16
		} else {
			be.PutUint16(u[4:], uint16(ulen))
			ck += 2 * ulen // the UDP length and the pseudo-header's
			at = 6
		}
		c := ^fold(ck)
		if c == 0 && l.proto == protoUDP {
			c = 0xffff // zero means "no checksum" in UDP
		}
		be.PutUint16(u[at:], c)
		lens[i] = n
	}
	return l.n, nil
}

// Complete finishes a partial L4 checksum in place, as the kernel does for
// a packet marked VnetHdrFNeedsCsum: the field at csumStart+csumOffset
// holds the pseudo-header sum, and gets the checksum of everything from
// csumStart to the end of pkt. Here both offsets are relative to pkt (the
// IP header, not the link frame), and pkt must end where the IP packet
// ends (no link padding). csumOffset must be even (every protocol's is),
// so that the field is one 16-bit word of the sum. A result of zero is
// written as 0xffff, which is the same number in one's complement and
// keeps UDP from reading it as "no checksum".
func Complete(pkt []byte, csumStart, csumOffset int) error {
	if csumStart < 0 || csumOffset < 0 || csumOffset&1 != 0 || csumStart > len(pkt) || csumOffset > len(pkt)-csumStart-2 {
		return ErrMalformed
	}
	complete(pkt[csumStart:], csumOffset)
	return nil
}

func complete(b []byte, at int) {
	c := ^fold(sum(b, 0))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[at:], c)
}
