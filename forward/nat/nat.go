// Package nat rewrites packets for IPVS NAT (masquerading) forwarding: the
// destination of client packets becomes a real server, the source of the
// server's replies becomes the virtual service again, and ICMP errors about
// a connection are rewritten both outside and in the packet they quote.
//
// Every checksum is updated incrementally (RFC 1624), so a packet that came
// with valid checksums leaves with valid checksums, and one that did not
// stays wrong rather than being silently repaired. Each function also
// decrements the TTL or hop limit, as a router forwarding the packet does:
// the caller checks p.TTL() > 1 first and answers with a time exceeded
// error otherwise. Addresses keep their family: a 4-byte address for an
// IPv4 packet, 16 bytes for IPv6; on a mismatch the packet is left as is.
package nat

import (
	"encoding/binary"

	"uvs/packet"
)

// DNAT rewrites a packet going client -> real server: the destination
// address and port become addr and port. partial says the L4 checksum field
// holds a partial (pseudo-header) sum because the packet came with the
// checksum offloaded (virtio-net NEEDS_CSUM): it is then updated as such a
// sum, for the address only, since ports are not in the pseudo-header.
func DNAT(p *packet.Parsed, addr []byte, port uint16, partial bool) {
	rewrite(p, p.Dst(), 2, addr, port, partial)
}

// SNAT rewrites a reply going real server -> client: the source address and
// port become the virtual address and port addr and port. partial is as for
// DNAT.
func SNAT(p *packet.Parsed, addr []byte, port uint16, partial bool) {
	rewrite(p, p.Src(), 0, addr, port, partial)
}

// ICMPToClient rewrites an ICMP error travelling to the client about a
// packet client -> real server that it quotes: the outer source becomes the
// virtual address vaddr (as IPVS does, whoever sent the error), and the
// quoted destination real server:port becomes vaddr:vport. Packets that
// are not ICMP errors are left as they are.
func ICMPToClient(p *packet.Parsed, vaddr []byte, vport uint16) {
	rewriteICMP(p, false, vaddr, vport)
}

// ICMPToServer rewrites an ICMP error from the client side about a packet
// virtual -> client that it quotes: the outer destination becomes the real
// server raddr, and the quoted source virtual:port becomes raddr:rport.
func ICMPToServer(p *packet.Parsed, raddr []byte, rport uint16) {
	rewriteICMP(p, true, raddr, rport)
}

func get16(b []byte, off int) uint16    { return binary.BigEndian.Uint16(b[off:]) }
func put16(b []byte, off int, v uint16) { binary.BigEndian.PutUint16(b[off:], v) }

// l4Checksum is the offset in b of the checksum field of the L4 header at
// l4 with protocol proto, whether the pseudo-header (and so the addresses)
// is in it, and whether the protocol has ports; ck is -1 when there is no
// such field within end.
func l4Checksum(v, proto uint8, l4, end int) (ck int, pseudo, ports bool) {
	if l4 < 0 {
		return -1, false, false
	}
	switch {
	case proto == packet.ProtoTCP:
		ck, pseudo, ports = l4+16, true, true
	case proto == packet.ProtoUDP:
		ck, pseudo, ports = l4+6, true, true
	case proto == packet.ProtoICMPv6 && v == 6:
		ck, pseudo = l4+2, true
	default:
		return -1, false, false
	}
	if ck+2 > end {
		ck = -1
	}
	return ck, pseudo, ports
}

// rewrite sets the address old (Src or Dst of p) to addr and the port at
// portOff within the L4 header to port, then decrements the TTL. The
// address change is summed once and applied to every checksum that covers
// it; for IPv4 the TTL change goes into the same header checksum update.
func rewrite(p *packet.Parsed, old []byte, portOff int, addr []byte, port uint16, partial bool) {
	if len(old) != len(addr) || (p.IPVersion != 4 && p.IPVersion != 6) {
		return
	}
	b := p.Buf
	d := packet.AddrDelta(old, addr)
	ckOff, _, ports := l4Checksum(p.IPVersion, p.Proto, p.L4, p.End())
	if ckOff >= 0 {
		ck := get16(b, ckOff)
		// A zero UDP checksum means none was sent (IPv4); keep it so.
		noCk := p.Proto == packet.ProtoUDP && ck == 0 && !partial
		if !noCk {
			switch {
			case partial:
				// Ports are not in the pseudo-header.
				ck = packet.Fold(uint32(ck) + d)
			case ports:
				oldPort := get16(b, p.L4+portOff)
				ck = ^packet.Fold(uint32(^ck) + d + uint32(^oldPort) + uint32(port))
			default:
				ck = ^packet.Fold(uint32(^ck) + d)
			}
			if p.Proto == packet.ProtoUDP && ck == 0 && !partial {
				ck = 0xffff // a computed zero is sent as all ones (RFC 768)
			}
			put16(b, ckOff, ck)
		}
	}
	if ports && p.L4 >= 0 {
		put16(b, p.L4+portOff, port)
	}
	copy(old, addr)
	if p.IPVersion == 6 {
		if b[p.L3+7] > 0 {
			b[p.L3+7]--
		}
		return
	}
	h := packet.IPv4(b[p.L3:])
	sum := uint32(^h.Checksum()) + d
	if t := h.TTL(); t > 0 {
		// TTL and protocol share a word; only the TTL byte changes.
		sum += uint32(^(uint16(t) << 8)) + uint32(uint16(t-1)<<8)
		h.SetTTL(t - 1)
	}
	h.SetChecksum(^packet.Fold(sum))
}

// rewriteICMP sets the outer destination (toServer) or source, and the
// quoted source (toServer) or destination address and port, to addr and
// port. Every field it changes inside the ICMP message also changes the
// ICMP checksum, so each change is folded into it as it is made; the
// quoted fields lie at even offsets from the ICMP header, as the update
// needs.
func rewriteICMP(p *packet.Parsed, toServer bool, addr []byte, port uint16) {
	if !p.IsICMPError() || len(addr) != len(p.Src()) {
		return
	}
	b, end, v6 := p.Buf, p.End(), p.IPVersion == 6
	q := &p.Inner
	outer, inner, portOff := p.Src(), p.InnerDst(), 2
	if toServer {
		outer, inner, portOff = p.Dst(), p.InnerSrc(), 0
	}
	icmpCk := get16(b, p.L4+2)

	// The outer address: in the IPv4 header checksum, or in the ICMPv6
	// pseudo-header.
	if v6 {
		icmpCk = packet.UpdateChecksumAddr(icmpCk, outer, addr)
	} else {
		h := packet.IPv4(b[p.L3:])
		h.SetChecksum(packet.UpdateChecksumAddr(h.Checksum(), outer, addr))
	}
	copy(outer, addr)

	// The quoted address: in the ICMP checksum directly, in the quoted
	// IPv4 header checksum and in the quoted L4 checksum's pseudo-header.
	icmpCk = packet.UpdateChecksumAddr(icmpCk, inner, addr)
	if !v6 {
		old := get16(b, q.L3+10)
		ck := packet.UpdateChecksumAddr(old, inner, addr)
		icmpCk = packet.UpdateChecksum16(icmpCk, old, ck)
		put16(b, q.L3+10, ck)
	}
	ckOff, pseudo, ports := l4Checksum(p.IPVersion, q.Proto, q.L4, end)
	var oldL4, l4Ck uint16
	noCk := true
	if ckOff >= 0 {
		oldL4 = get16(b, ckOff)
		l4Ck = oldL4
		noCk = q.Proto == packet.ProtoUDP && oldL4 == 0
		if pseudo && !noCk {
			l4Ck = packet.UpdateChecksumAddr(l4Ck, inner, addr)
		}
	}
	copy(inner, addr)

	// The quoted port: Decode made sure the ports are there.
	if ports && q.L4 >= 0 {
		old := get16(b, q.L4+portOff)
		icmpCk = packet.UpdateChecksum16(icmpCk, old, port)
		if !noCk {
			l4Ck = packet.UpdateChecksum16(l4Ck, old, port)
		}
		put16(b, q.L4+portOff, port)
	}
	if ckOff >= 0 && !noCk {
		if q.Proto == packet.ProtoUDP && l4Ck == 0 {
			l4Ck = 0xffff
		}
		icmpCk = packet.UpdateChecksum16(icmpCk, oldL4, l4Ck)
		put16(b, ckOff, l4Ck)
	}
	put16(b, p.L4+2, icmpCk)
	p.DecTTL()
}
