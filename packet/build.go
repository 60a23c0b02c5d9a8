package packet

import "encoding/binary"

// Builders for the packets the director answers with itself. Each writes a
// whole frame into dst and returns its length, or 0 when dst is too small
// or the rules say not to answer. They allocate nothing.

// Limits on the size of an ICMP error (RFC 1812 4.3.2.3, RFC 4443 2.4).
const (
	maxICMPv4Error = 576
	maxICMPv6Error = 1280
)

// BuildUnreachable writes into dst the ICMP port unreachable (IPv4 type 3
// code 3, IPv6 type 1 code 4) that answers p from the address p was sent
// to, as IPVS does when a virtual service has no server to take it.
func BuildUnreachable(dst []byte, p *Parsed) int {
	if p.IPVersion == 6 {
		return BuildICMPError(dst, p, ICMPv6Unreachable, ICMPv6CodePortUnreach, 0)
	}
	return BuildICMPError(dst, p, ICMPUnreachable, ICMPCodePortUnreach, 0)
}

// BuildFragNeeded writes into dst the ICMP "fragmentation needed" (IPv4
// type 3 code 4) or ICMPv6 "packet too big" (type 2) telling the sender of
// p that the path takes at most mtu bytes.
func BuildFragNeeded(dst []byte, p *Parsed, mtu int) int {
	if p.IPVersion == 6 {
		return BuildICMPError(dst, p, ICMPv6PacketTooBig, 0, uint32(mtu))
	}
	return BuildICMPError(dst, p, ICMPUnreachable, ICMPCodeFragNeeded, uint32(mtu)&0xffff)
}

// BuildTimeExceeded writes into dst the ICMP time exceeded in transit
// (IPv4 type 11, IPv6 type 3, code 0) for a packet whose TTL ran out.
func BuildTimeExceeded(dst []byte, p *Parsed) int {
	if p.IPVersion == 6 {
		return BuildICMPError(dst, p, ICMPv6TimeExceeded, 0, 0)
	}
	return BuildICMPError(dst, p, ICMPTimeExceeded, 0, 0)
}

// BuildICMPError writes into dst an ICMP (IPv4) or ICMPv6 error of type
// typ and code about p, with info as the 4 bytes after the checksum, sent
// from p's destination address to its source. It quotes as much of p as
// fits in 576 bytes (IPv4) or 1280 bytes (IPv6). When p has an Ethernet
// header the answer has one too, with the MACs swapped and any VLAN tag
// kept. dst may be p.Buf itself: the answer can be built in place.
//
// It returns 0, and writes nothing, for packets that must not be answered
// with an error (RFC 1122 3.2.2, RFC 4443 2.4): ICMP errors, non-first
// fragments, multicast or broadcast destinations (except for "packet too
// big"), and unspecified or multicast sources.
func BuildICMPError(dst []byte, p *Parsed, typ, code uint8, info uint32) int {
	if !mayAnswer(p, typ) {
		return 0
	}
	l2 := 0
	if p.L2 >= 0 {
		l2 = p.L3 - p.L2
	}
	hl, limit := IPv4MinLen, maxICMPv4Error
	if p.IPVersion == 6 {
		hl, limit = IPv6Len, maxICMPv6Error
	}
	q := min(p.IPLen(), limit-hl-ICMPLen)
	n := l2 + hl + ICMPLen + q
	if len(dst) < n {
		return 0
	}
	// Save what the headers need before the quote moves: dst may be Buf.
	var src, to [16]byte
	al := copy(src[:], p.Dst())
	copy(to[:], p.Src())
	var l2hdr [EthernetLen + VLANTagLen]byte
	if l2 > 0 {
		copy(l2hdr[:], p.Buf[p.L2:p.L3])
	}
	copy(dst[l2+hl+ICMPLen:n], p.Buf[p.L3:p.L3+q])

	if l2 > 0 {
		copy(dst[:l2], l2hdr[:l2])
		copy(dst[0:6], l2hdr[6:12])
		copy(dst[6:12], l2hdr[0:6])
	}
	ip := dst[l2 : l2+hl]
	c := ICMP(dst[l2+hl : n])
	c[0], c[1] = typ, code
	binary.BigEndian.PutUint32(c[4:], info)
	c.SetChecksum(0)
	if p.IPVersion == 6 {
		writeIPv6(ip, ICMPLen+q, ProtoICMPv6, 64, src[:al], to[:al])
		c.SetChecksum(Checksum(c, PseudoHeaderSum(src[:al], to[:al], ProtoICMPv6, len(c))))
	} else {
		writeIPv4(ip, hl+ICMPLen+q, ProtoICMP, src[:al], to[:al])
		c.SetChecksum(Checksum(c, 0))
	}
	return n
}

func mayAnswer(p *Parsed, typ uint8) bool {
	if p.IPVersion != 4 && p.IPVersion != 6 {
		return false
	}
	if p.IsICMPError() || (p.Fragment && p.L4 < 0) {
		return false
	}
	// An error that Decode could not parse is still an error.
	if p.L4 >= 0 && ((p.IPVersion == 4 && p.Proto == ProtoICMP) || (p.IPVersion == 6 && p.Proto == ProtoICMPv6)) &&
		isError(p.IPVersion, p.ICMPType) {
		return false
	}
	s, d := p.Src(), p.Dst()
	if p.IPVersion == 4 {
		return !isZero(s) && s[0] < 224 && d[0] < 224 && !(d[0] == 255 && d[1] == 255 && d[2] == 255 && d[3] == 255)
	}
	return !isZero(s) && s[0] != 0xff && (d[0] != 0xff || typ == ICMPv6PacketTooBig)
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func writeIPv4(h []byte, total int, proto uint8, src, dst []byte) {
	h[0], h[1] = 0x45, 0xc0 // precedence "internetwork control", as for ICMP
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint32(h[4:], 0x4000) // ID 0, don't fragment
	h[8], h[9] = 64, proto
	copy(h[12:16], src)
	copy(h[16:20], dst)
	IPv4(h).SetChecksum(0)
	IPv4(h).SetChecksum(IPv4(h).ComputeChecksum())
}

func writeIPv6(h []byte, payload int, proto, hops uint8, src, dst []byte) {
	binary.BigEndian.PutUint32(h[0:], 6<<28)
	binary.BigEndian.PutUint16(h[4:], uint16(payload))
	h[6], h[7] = proto, hops
	copy(h[8:24], src)
	copy(h[24:40], dst)
}

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// BuildARPReply writes into dst the ARP reply saying that the address req
// asks for is at mac. It returns 0 when req is not an ARP request. The
// caller decides whether the address is one it answers for.
func BuildARPReply(dst []byte, req *Parsed, mac [6]byte) int {
	a := req.ARP()
	if a == nil || a.Op() != ARPRequest || req.L2 < 0 {
		return 0
	}
	l2 := req.L3 - req.L2
	n := l2 + ARPLen
	if len(dst) < n {
		return 0
	}
	var l2hdr [EthernetLen + VLANTagLen]byte
	var arp [ARPLen]byte
	copy(l2hdr[:], req.Buf[req.L2:req.L3])
	copy(arp[:], a)
	copy(dst, l2hdr[:l2])
	copy(dst[0:6], arp[8:14]) // to the asker's hardware address
	copy(dst[6:12], mac[:])
	r := dst[l2:n]
	copy(r[0:8], arp[0:8])
	binary.BigEndian.PutUint16(r[6:], ARPReply)
	copy(r[8:14], mac[:])
	copy(r[14:18], arp[24:28])
	copy(r[18:24], arp[8:14])
	copy(r[24:28], arp[14:18])
	return n
}

// BuildARPRequest writes into dst a broadcast ARP request from srcMAC and
// srcIP asking for the hardware address of targetIP (both 4 bytes).
func BuildARPRequest(dst []byte, srcMAC [6]byte, srcIP, targetIP []byte) int {
	n := EthernetLen + ARPLen
	if len(dst) < n || len(srcIP) != 4 || len(targetIP) != 4 {
		return 0
	}
	e := Ethernet(dst)
	e.SetDst(broadcastMAC)
	e.SetSrc(srcMAC)
	e.SetType(EtherTypeARP)
	r := dst[EthernetLen:n]
	binary.BigEndian.PutUint16(r[0:], 1)
	binary.BigEndian.PutUint16(r[2:], EtherTypeIPv4)
	r[4], r[5] = 6, 4
	binary.BigEndian.PutUint16(r[6:], ARPRequest)
	copy(r[8:14], srcMAC[:])
	copy(r[14:18], srcIP)
	clear(r[18:24])
	copy(r[24:28], targetIP)
	return n
}

// NDP option types (RFC 4861 4.6.1).
const (
	ndpOptSourceLL = 1
	ndpOptTargetLL = 2
)

// Length of a neighbor solicitation or advertisement with one link-layer
// address option: header, target, option.
const ndpLen = ICMPLen + 16 + 8

// BuildNeighborAdvert writes into dst the neighbor advertisement saying
// that the target address of solicitation sol is at mac. It returns 0 when
// sol is not a valid solicitation (RFC 4861 7.1.1: hop limit 255, code 0)
// or came without an Ethernet header. The caller decides whether the
// target is one it answers for.
func BuildNeighborAdvert(dst []byte, sol *Parsed, mac [6]byte) int {
	if sol.L2 < 0 || sol.IPVersion != 6 || sol.Proto != ProtoICMPv6 || sol.ICMPType != ICMPv6NeighborSolicit ||
		sol.ICMPCode != 0 || sol.TTL() != 255 || sol.Fragment || sol.L4 < 0 {
		return 0
	}
	l2 := sol.L3 - sol.L2
	n := l2 + IPv6Len + ndpLen
	if len(dst) < n {
		return 0
	}
	var l2hdr [EthernetLen + VLANTagLen]byte
	var target, to [16]byte
	copy(l2hdr[:], sol.Buf[sol.L2:sol.L3])
	copy(target[:], sol.NDPTarget())
	copy(to[:], sol.Src())
	// A solicitation from the unspecified address is duplicate address
	// detection: answer all nodes, unsolicited (RFC 4861 7.2.4).
	flags := byte(0x60) // solicited, override
	if isZero(to[:]) {
		to = [16]byte{0: 0xff, 1: 0x02, 15: 1}
		flags = 0x20
		copy(l2hdr[0:6], []byte{0x33, 0x33, 0, 0, 0, 1})
	} else {
		copy(l2hdr[0:6], l2hdr[6:12])
	}
	copy(dst, l2hdr[:l2])
	copy(dst[6:12], mac[:])
	writeNDP(dst[l2:n], ICMPv6NeighborAdvert, flags, target[:], to[:], target[:], ndpOptTargetLL, mac)
	return n
}

// BuildNeighborSolicit writes into dst a neighbor solicitation from srcMAC
// and srcIP asking for the link-layer address of targetIP (16 bytes each),
// sent to the target's solicited-node multicast address.
func BuildNeighborSolicit(dst []byte, srcMAC [6]byte, srcIP, targetIP []byte) int {
	n := EthernetLen + IPv6Len + ndpLen
	if len(dst) < n || len(srcIP) != 16 || len(targetIP) != 16 {
		return 0
	}
	var to [16]byte
	to[0], to[1], to[11], to[12] = 0xff, 0x02, 0x01, 0xff
	copy(to[13:], targetIP[13:16])
	e := Ethernet(dst)
	copy(e[0:6], []byte{0x33, 0x33, to[12], to[13], to[14], to[15]})
	e.SetSrc(srcMAC)
	e.SetType(EtherTypeIPv6)
	writeNDP(dst[EthernetLen:n], ICMPv6NeighborSolicit, 0, srcIP, to[:], targetIP, ndpOptSourceLL, srcMAC)
	return n
}

func writeNDP(b []byte, typ, flags byte, src, dst, target []byte, opt byte, mac [6]byte) {
	writeIPv6(b, ndpLen, ProtoICMPv6, 255, src, dst)
	c := b[IPv6Len:]
	c[0], c[1] = typ, 0
	binary.BigEndian.PutUint32(c[4:], uint32(flags)<<24)
	copy(c[8:24], target)
	c[24], c[25] = opt, 1
	copy(c[26:32], mac[:])
	ICMP(c).SetChecksum(0)
	ICMP(c).SetChecksum(Checksum(c[:ndpLen], PseudoHeaderSum(src, dst, ProtoICMPv6, ndpLen)))
}

// BuildQuoteError writes into dst an ICMP (IPv4) or ICMPv6 (v6) error of
// type typ and code, with info as the 4 bytes after the checksum, from
// address from to address to, quoting quote (cut to 576 or 1280 bytes in
// all). Unlike BuildICMPError it answers a packet the director only has a
// quote of: a relayed error (the caller adds any link-layer header). It
// returns 0 when dst is too small or the addresses are not of the family.
func BuildQuoteError(dst []byte, v6 bool, from, to []byte, typ, code uint8, info uint32, quote []byte) int {
	hl, limit, al := IPv4MinLen, maxICMPv4Error, 4
	if v6 {
		hl, limit, al = IPv6Len, maxICMPv6Error, 16
	}
	if len(from) != al || len(to) != al {
		return 0
	}
	q := min(len(quote), limit-hl-ICMPLen)
	n := hl + ICMPLen + q
	if len(dst) < n {
		return 0
	}
	copy(dst[hl+ICMPLen:n], quote[:q])
	c := ICMP(dst[hl:n])
	c[0], c[1] = typ, code
	binary.BigEndian.PutUint32(c[4:], info)
	c.SetChecksum(0)
	if v6 {
		writeIPv6(dst[:hl], ICMPLen+q, ProtoICMPv6, 64, from, to)
		c.SetChecksum(Checksum(c, PseudoHeaderSum(from, to, ProtoICMPv6, len(c))))
	} else {
		writeIPv4(dst[:hl], hl+ICMPLen+q, ProtoICMP, from, to)
		c.SetChecksum(Checksum(c, 0))
	}
	return n
}
