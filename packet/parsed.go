// Package packet parses frames into offsets, gives header views over them,
// computes and updates internet checksums (full, incremental and partial),
// and builds the few packets a director answers with itself: ICMP errors,
// ARP replies and requests, NDP advertisements and solicitations.
//
// Nothing here allocates: a Parsed is a set of offsets into the caller's
// frame, and the builders write into the caller's buffer.
package packet

import "encoding/binary"

// Parsed is a decoded frame: offsets into Buf and the few fields the
// director matches connections on.
type Parsed struct {
	Buf []byte // the whole frame as given to Decode
	fields
}

// fields are Parsed's scalars, kept apart from Buf so that Decode resets
// them with a plain copy: a struct holding a pointer is copied through the
// write barrier, which cost a third of Decode.
type fields struct {
	// Offsets into Buf. L2 is -1 for a frame without an Ethernet header;
	// L4 and Payload are -1 when absent (a non-first fragment has no L4
	// header, only Payload: the fragment's data).
	L2, L3, L4, Payload int

	EtherType uint16 // 0x0800, 0x86dd, 0x0806; for raw IP frames from the version nibble
	IPVersion uint8  // 4 or 6; 0 for ARP
	Proto     uint8  // L4 protocol, after IPv6 hop-by-hop, routing, destination options and fragment headers

	SrcPort, DstPort   uint16 // TCP/UDP; for ICMP echo the identifier in both
	TCPFlags           uint8
	ICMPType, ICMPCode uint8

	// Fragment is set for an IPv4 packet with MF or an offset, and for an
	// IPv6 packet with a fragment header. L4 fields are only there for the
	// first fragment.
	Fragment bool
	// FragHdr is the offset in Buf of an IPv6 packet's fragment header,
	// and FragNH that of the Next Header byte naming it (in the fixed
	// header or the extension header before it); both -1 without one
	// (and for IPv4).
	FragHdr, FragNH int

	// Inner is the packet quoted by an ICMP or ICMPv6 error, so the
	// director can find the connection the error is about. Inner.L3 is -1
	// when the packet is not an ICMP error; Inner.L4 is -1 when the quote
	// holds no L4 header (a non-first fragment).
	Inner Quoted

	end int // end of the IP packet (or ARP message); what follows is link padding
}

var blank = fields{L2: -1, L3: -1, L4: -1, Payload: -1, FragHdr: -1, FragNH: -1, Inner: Quoted{L3: -1, L4: -1}}

// Quoted is the packet an ICMP error quotes. Its addresses are of the same
// family as the outer packet's.
type Quoted struct {
	L3, L4           int
	Proto            uint8
	SrcPort, DstPort uint16
}

// DropReason says why Decode refused a frame; 0 (OK) means it did not.
type DropReason uint8

// Reasons to refuse a frame.
const (
	OK               DropReason = iota
	TooShort                    // shorter than the Ethernet, VLAN or fixed IP header
	UnknownEtherType            // neither IPv4, IPv6 nor ARP
	BadIPVersion                // version nibble not 4 or 6, or not what the EtherType says
	BadIHL                      // IPv4 header length below 20 or beyond the frame
	BadTotalLen                 // IP length shorter than its own header
	Truncated                   // frame shorter than the IP length says
	BadIPChecksum               // IPv4 header checksum does not verify
	BadExtHeader                // IPv6 extension header runs past the packet
	BadL4                       // TCP or UDP header missing, short or inconsistent
	BadICMP                     // ICMP header short, or an error's quote unusable
	BadARP                      // not an Ethernet/IPv4 ARP message of full length
	numReasons
)

var reasonNames = [numReasons]string{
	OK:               "ok",
	TooShort:         "too_short",
	UnknownEtherType: "unknown_ethertype",
	BadIPVersion:     "bad_ip_version",
	BadIHL:           "bad_ihl",
	BadTotalLen:      "bad_total_len",
	Truncated:        "truncated",
	BadIPChecksum:    "bad_ip_checksum",
	BadExtHeader:     "bad_ext_header",
	BadL4:            "bad_l4",
	BadICMP:          "bad_icmp",
	BadARP:           "bad_arp",
}

// String is the reason as a metrics label value.
func (r DropReason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every reason Decode may return, OK first, so that metrics
// can be set up with all their labels.
func Reasons() []DropReason {
	rs := make([]DropReason, numReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// Decode parses frame, with an Ethernet header (and at most one 802.1Q tag)
// when ether is set, or as a bare IP packet otherwise. It never panics and
// never allocates; on a reason other than OK the fields are partly filled
// and not to be used. The IPv4 header checksum is checked, as a router
// does; IPv4 options are skipped unchecked; L4 checksums are not checked:
// they may be offloaded (partial).
func (p *Parsed) Decode(frame []byte, ether bool) DropReason {
	p.Buf = frame
	p.fields = blank
	off := 0
	if ether {
		if len(frame) < EthernetLen {
			return TooShort
		}
		p.L2 = 0
		p.EtherType = be16(frame[12:])
		off = EthernetLen
		if p.EtherType == EtherTypeVLAN {
			if len(frame) < EthernetLen+VLANTagLen {
				return TooShort
			}
			p.EtherType = be16(frame[16:])
			off += VLANTagLen
		}
		switch p.EtherType {
		case EtherTypeIPv4, EtherTypeIPv6:
		case EtherTypeARP:
			return p.decodeARP(off)
		default:
			return UnknownEtherType
		}
	} else {
		if len(frame) == 0 {
			return TooShort
		}
		switch frame[0] >> 4 {
		case 4:
			p.EtherType = EtherTypeIPv4
		case 6:
			p.EtherType = EtherTypeIPv6
		default:
			return BadIPVersion
		}
	}
	p.L3 = off
	if p.EtherType == EtherTypeIPv4 {
		return p.decodeIPv4()
	}
	return p.decodeIPv6()
}

func (p *Parsed) decodeARP(off int) DropReason {
	a := ARP(p.Buf[off:])
	if len(a) < ARPLen {
		return BadARP
	}
	if a.HardwareType() != 1 || a.ProtocolType() != EtherTypeIPv4 || a.HardwareLen() != 6 || a.ProtocolLen() != 4 {
		return BadARP
	}
	p.L3 = off
	p.end = off + ARPLen
	return OK
}

func (p *Parsed) decodeIPv4() DropReason {
	h := IPv4(p.Buf[p.L3:])
	if len(h) < IPv4MinLen {
		return TooShort
	}
	if h.Version() != 4 {
		return BadIPVersion
	}
	hl := h.HeaderLen()
	if hl < IPv4MinLen || hl > len(h) {
		return BadIHL
	}
	tl := int(h.TotalLen())
	if tl < hl {
		return BadTotalLen
	}
	if tl > len(h) {
		return Truncated
	}
	if headerSum(h[:hl]) != 0xffff {
		return BadIPChecksum
	}
	p.IPVersion = 4
	p.Proto = h.Protocol()
	p.end = p.L3 + tl
	p.Fragment = h.MoreFragments() || h.FragmentOffset() != 0
	if h.FragmentOffset() != 0 {
		p.Payload = p.L3 + hl
		return OK
	}
	return p.decodeL4(p.L3 + hl)
}

func (p *Parsed) decodeIPv6() DropReason {
	h := IPv6(p.Buf[p.L3:])
	if len(h) < IPv6Len {
		return TooShort
	}
	if h.Version() != 6 {
		return BadIPVersion
	}
	n := IPv6Len + int(h.PayloadLen())
	if n > len(h) {
		return Truncated
	}
	p.IPVersion = 6
	p.end = p.L3 + n
	off, nh, fragOff, fh, fnh, r := skipExtHeaders(p.Buf[:p.end], p.L3+IPv6Len, h.NextHeader(), p.L3+6)
	if r != OK {
		return r
	}
	p.Proto = nh
	p.Fragment = fragOff >= 0
	p.FragHdr, p.FragNH = fh, fnh
	if fragOff > 0 {
		p.Payload = off
		return OK
	}
	if nh == ProtoNoNext {
		return OK
	}
	return p.decodeL4(off)
}

// skipExtHeaders walks the IPv6 extension headers in b from off, next
// header nh (named by the byte at nhAt), up to the upper-layer header or a
// non-first fragment. fragOff is -1 without a fragment header, else the
// fragment offset in bytes; frag is the offset of the (first) fragment
// header and fragNH that of the byte naming it, -1 without one. Every
// header is at least 8 bytes, so the walk ends within len(b)/8 steps.
func skipExtHeaders(b []byte, off int, nh uint8, nhAt int) (next int, proto uint8, fragOff, frag, fragNH int, r DropReason) {
	fragOff, frag, fragNH = -1, -1, -1
	for {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoDstOpts:
			if off+8 > len(b) {
				return off, nh, fragOff, frag, fragNH, BadExtHeader
			}
			l := (int(b[off+1]) + 1) * 8
			if off+l > len(b) {
				return off, nh, fragOff, frag, fragNH, BadExtHeader
			}
			nh, nhAt = b[off], off
			off += l
		case ProtoFragment:
			if off+8 > len(b) {
				return off, nh, fragOff, frag, fragNH, BadExtHeader
			}
			if frag < 0 {
				frag, fragNH = off, nhAt
			}
			fragOff = int(be16(b[off+2:]) &^ 7)
			nh, nhAt = b[off], off
			off += 8
			if fragOff != 0 {
				return off, nh, fragOff, frag, fragNH, OK
			}
		default:
			return off, nh, fragOff, frag, fragNH, OK
		}
	}
}

func (p *Parsed) decodeL4(off int) DropReason {
	b := p.Buf[off:p.end]
	switch {
	case p.Proto == ProtoTCP:
		if len(b) < TCPMinLen {
			return BadL4
		}
		t := TCP(b)
		hl := t.HeaderLen()
		if hl < TCPMinLen || hl > len(b) {
			return BadL4
		}
		p.L4, p.Payload = off, off+hl
		p.SrcPort, p.DstPort, p.TCPFlags = t.SrcPort(), t.DstPort(), t.Flags()
	case p.Proto == ProtoUDP:
		if len(b) < UDPLen {
			return BadL4
		}
		u := UDP(b)
		// A first fragment holds only part of the datagram the length
		// covers; a longer packet than the length is trimmed, not refused.
		if n := int(u.Length()); n < UDPLen || (n > len(b) && !p.Fragment) {
			return BadL4
		}
		p.L4, p.Payload = off, off+UDPLen
		p.SrcPort, p.DstPort = u.SrcPort(), u.DstPort()
	case p.Proto == ProtoICMP && p.IPVersion == 4, p.Proto == ProtoICMPv6 && p.IPVersion == 6:
		if len(b) < ICMPLen {
			return BadICMP
		}
		c := ICMP(b)
		p.L4, p.Payload = off, off+ICMPLen
		p.ICMPType, p.ICMPCode = c.Type(), c.Code()
		switch {
		case isEcho(p.IPVersion, p.ICMPType):
			p.SrcPort, p.DstPort = c.ID(), c.ID()
		case isError(p.IPVersion, p.ICMPType):
			return p.decodeQuote(off + ICMPLen)
		case p.IPVersion == 6 && (p.ICMPType == ICMPv6NeighborSolicit || p.ICMPType == ICMPv6NeighborAdvert):
			if len(b) < ICMPLen+16 {
				return BadICMP
			}
		}
	default:
		p.L4 = off
	}
	return OK
}

func isEcho(v, typ uint8) bool {
	if v == 4 {
		return typ == ICMPEchoRequest || typ == ICMPEchoReply
	}
	return typ == ICMPv6EchoRequest || typ == ICMPv6EchoReply
}

func isError(v, typ uint8) bool {
	if v == 4 {
		switch typ {
		case ICMPUnreachable, ICMPSourceQuench, ICMPTimeExceeded, ICMPParamProblem:
			return true
		}
		return false
	}
	return typ >= ICMPv6Unreachable && typ <= ICMPv6ParamProblem
}

// decodeQuote parses the packet quoted by an ICMP error from off to the end
// of the outer packet. The quote is usually cut short, so lengths in its
// headers are not checked against what is there.
func (p *Parsed) decodeQuote(off int) DropReason {
	b := p.Buf[off:p.end]
	q := &p.Inner
	var l4 int
	if p.IPVersion == 4 {
		h := IPv4(b)
		if len(h) < IPv4MinLen || h.Version() != 4 {
			return BadICMP
		}
		hl := h.HeaderLen()
		if hl < IPv4MinLen || hl > len(h) {
			return BadICMP
		}
		q.L3, q.Proto = off, h.Protocol()
		if h.FragmentOffset() != 0 {
			return OK
		}
		l4 = off + hl
	} else {
		h := IPv6(b)
		if len(h) < IPv6Len || h.Version() != 6 {
			return BadICMP
		}
		next, nh, fragOff, _, _, r := skipExtHeaders(p.Buf[:p.end], off+IPv6Len, h.NextHeader(), off+6)
		if r != OK {
			return BadICMP
		}
		q.L3, q.Proto = off, nh
		if fragOff > 0 || nh == ProtoNoNext {
			return OK
		}
		l4 = next
	}
	q.L4 = l4
	rest := p.Buf[l4:p.end]
	switch {
	case q.Proto == ProtoTCP || q.Proto == ProtoUDP:
		// Ports are the first 4 bytes of both; without them the error
		// cannot be matched to a connection.
		if len(rest) < 4 {
			return BadICMP
		}
		q.SrcPort, q.DstPort = be16(rest), be16(rest[2:])
	case q.Proto == ProtoICMP && p.IPVersion == 4, q.Proto == ProtoICMPv6 && p.IPVersion == 6:
		if len(rest) >= ICMPLen && isEcho(p.IPVersion, rest[0]) {
			id := ICMP(rest).ID()
			q.SrcPort, q.DstPort = id, id
		}
	}
	return OK
}

// End is the offset in Buf where the IP packet (or ARP message) ends;
// bytes after it are link-layer padding.
func (p *Parsed) End() int { return p.end }

// IPLen is the length of the IP packet from its header on.
func (p *Parsed) IPLen() int { return p.end - p.L3 }

// L4Len is the length from the L4 header to the end of the packet, or 0
// without an L4 header.
func (p *Parsed) L4Len() int {
	if p.L4 < 0 {
		return 0
	}
	return p.end - p.L4
}

// Src is the source address: 4 or 16 bytes inside Buf. For ARP it is the
// sender's protocol address. Nil when the frame was not decoded.
func (p *Parsed) Src() []byte { return p.addr(p.L3, true) }

// Dst is the destination address: 4 or 16 bytes inside Buf. For ARP it is
// the target's protocol address.
func (p *Parsed) Dst() []byte { return p.addr(p.L3, false) }

// InnerSrc is the source address of the packet an ICMP error quotes, nil
// when p is not an ICMP error.
func (p *Parsed) InnerSrc() []byte { return p.addr(p.Inner.L3, true) }

// InnerDst is the destination address of the packet an ICMP error quotes.
func (p *Parsed) InnerDst() []byte { return p.addr(p.Inner.L3, false) }

func (p *Parsed) addr(l3 int, src bool) []byte {
	if l3 < 0 {
		return nil
	}
	var o, n int
	switch {
	case p.IPVersion == 4:
		o, n = 12, 4
	case p.IPVersion == 6:
		o, n = 8, 16
	case p.EtherType == EtherTypeARP:
		o, n = 14, 4
		if !src {
			o = 24
		}
		return p.Buf[l3+o : l3+o+n : l3+o+n]
	default:
		return nil
	}
	if !src {
		o += n
	}
	return p.Buf[l3+o : l3+o+n : l3+o+n]
}

// TTL is the IPv4 TTL or IPv6 hop limit, 0 for other frames.
func (p *Parsed) TTL() uint8 {
	switch p.IPVersion {
	case 4:
		return p.Buf[p.L3+8]
	case 6:
		return p.Buf[p.L3+7]
	}
	return 0
}

// IsICMPError reports whether p is an ICMP or ICMPv6 error quoting a packet.
func (p *Parsed) IsICMPError() bool { return p.Inner.L3 >= 0 }

// NDPTarget is the target address of an NDP neighbor solicitation or
// advertisement, nil for other packets.
func (p *Parsed) NDPTarget() []byte {
	if p.IPVersion != 6 || p.Proto != ProtoICMPv6 || p.L4 < 0 ||
		(p.ICMPType != ICMPv6NeighborSolicit && p.ICMPType != ICMPv6NeighborAdvert) {
		return nil
	}
	o := p.L4 + ICMPLen
	return p.Buf[o : o+16 : o+16]
}

// ARP is the ARP message of an ARP frame, nil for other frames.
func (p *Parsed) ARP() ARP {
	if p.EtherType != EtherTypeARP || p.L3 < 0 {
		return nil
	}
	return ARP(p.Buf[p.L3:p.end])
}

// Ethernet is the Ethernet header, nil for a frame decoded without one.
// With an 802.1Q tag its Type is 0x8100 and the tag follows it, up to L3.
func (p *Parsed) Ethernet() Ethernet {
	if p.L2 < 0 {
		return nil
	}
	return Ethernet(p.Buf[p.L2 : p.L2+EthernetLen])
}

// IncTTL adds one to the TTL or hop limit, updating the IPv4 header
// checksum; 255 is left alone. The director uses it to give back a hop
// that the kernel took from a packet it forwarded to or for the director
// (director.worker.kernelHops).
func (p *Parsed) IncTTL() {
	b := p.Buf
	if p.IPVersion == 6 {
		if b[p.L3+7] < 255 {
			b[p.L3+7]++
		}
		return
	}
	h := IPv4(b[p.L3:])
	t := h.TTL()
	if t == 255 {
		return
	}
	proto := uint16(h.Protocol())
	h.SetTTL(t + 1)
	h.SetChecksum(UpdateChecksum16(h.Checksum(), uint16(t)<<8|proto, uint16(t+1)<<8|proto))
}

// DecTTL decrements the TTL or hop limit of the IP packet, as a router
// forwarding it does, updating the IPv4 header checksum; a zero one is
// left alone (the caller drops packets whose TTL would run out).
func (p *Parsed) DecTTL() {
	b := p.Buf
	if p.IPVersion == 6 {
		if b[p.L3+7] > 0 {
			b[p.L3+7]--
		}
		return
	}
	h := IPv4(b[p.L3:])
	t := h.TTL()
	if t == 0 {
		return
	}
	proto := uint16(h.Protocol())
	h.SetTTL(t - 1)
	h.SetChecksum(UpdateChecksum16(h.Checksum(), uint16(t)<<8|proto, uint16(t-1)<<8|proto))
}
