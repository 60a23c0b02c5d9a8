package tun

import (
	"encoding/binary"

	"uvs/packet"
)

// Encap writes the outer header(s) immediately before the inner IP packet
// buf[off:off+n], in place, and returns start = off - t.Overhead(); the
// outer packet is buf[start:off+n]. The inner packet is not modified; its
// transport checksums must be complete (see EncapPartial otherwise), and
// its own length field must say n.
//
// ok is false, and nothing is written, if off < t.Overhead(), buf[off:off+n]
// is not one whole IPv4 or IPv6 packet, the outer packet would exceed 65535
// bytes (IPv4 total length, IPv6 payload length), or t has no valid
// addresses of one family or an unknown type.
//
// RemCsum with a complete inner checksum has nothing to offload: like IPVS
// (which adds the option only for CHECKSUM_PARTIAL packets), Encap then
// sends the GUE packet as WithCsum does.
func (t *Tunnel) Encap(buf []byte, off, n int) (start int, ok bool) {
	return t.encap(buf, off, n, -1, 0)
}

// EncapPartial is Encap for an inner packet whose transport checksum was
// offloaded (virtio-net NEEDS_CSUM): the checksum field, at csumOffset
// from csumStart (both as in the virtio-net header; csumStart counts from
// the inner IP header, and cannot point into it), holds the pseudo-header
// sum only.
//
// For a GUE tunnel with RemCsum the field is left so and the GUE header
// gets the remote checksum offload option (RemCsumOptionLen more bytes),
// so the receiver completes it (draft-herbert-remotecsumoffload); for any
// other tunnel EncapPartial completes the checksum in the inner packet
// first, as the kernel does in software when nothing offloads it.
func (t *Tunnel) EncapPartial(buf []byte, off, n, csumStart, csumOffset int) (start int, ok bool) {
	if csumStart < 0 || csumOffset < 0 || csumOffset%2 != 0 || csumStart+csumOffset+2 > n {
		return 0, false
	}
	return t.encap(buf, off, n, csumStart, csumStart+csumOffset)
}

// encap is Encap and EncapPartial: csStart is -1 for a complete packet,
// csField the offset of the partial checksum field in the inner packet.
func (t *Tunnel) encap(buf []byte, off, n, csStart, csField int) (int, bool) {
	if off < 0 || n < 0 || off > len(buf) || n > len(buf)-off || t.Type > GRE {
		return 0, false
	}
	v4 := t.Dst.Is4()
	if !t.Src.IsValid() || !t.Dst.IsValid() || t.Src.Is4() != v4 {
		return 0, false
	}
	inner := buf[off : off+n]
	innerV4 := n > 0 && inner[0]>>4 == 4
	if l, err := ipLength(inner, innerV4); err != nil || l != n {
		return 0, false
	}
	if csStart >= 0 && csStart < ipHeaderLen(inner, innerV4) {
		return 0, false // the transport header starts after the IP header
	}
	remcsum := csStart >= 0 && t.Type == GUE && t.Csum == RemCsum
	ipl, tl := t.ipLen(), t.tunLen(remcsum)
	start := off - ipl - tl
	total := ipl + tl + n
	if start < 0 || (v4 && total > 0xffff) || (!v4 && total-ipv6Len > 0xffff) {
		return 0, false
	}

	var tos, ttl, next uint8
	var df bool
	if innerV4 {
		tos, ttl, next = inner[1], inner[8], protoIPIP
		df = inner[6]&0x40 != 0
	} else {
		tos, ttl, next = inner[0]<<4|inner[1]>>4, inner[7], protoIPv6
	}
	if tos&3 == 3 { // CE is not copied out; ECT(0) is (RFC 6040)
		tos = tos&^3 | 2
	}
	if t.TTL != 0 {
		ttl = t.TTL
	}
	if csStart >= 0 && !remcsum {
		completeChecksum(inner, csStart, csField)
	}

	h := buf[start:off]
	if v4 {
		h[0] = 0x45
		h[1] = tos
		binary.BigEndian.PutUint16(h[2:], uint16(total))
		binary.BigEndian.PutUint16(h[4:], uint16(t.id.Add(1)))
		h[6], h[7] = 0, 0
		if df {
			h[6] = 0x40
		}
		h[8] = ttl
		h[10], h[11] = 0, 0
		s, d := t.Src.As4(), t.Dst.As4()
		copy(h[12:16], s[:])
		copy(h[16:20], d[:])
	} else {
		h[0] = 0x60 | tos>>4
		h[1] = tos << 4 // and a flow label of 0, as IPVS sends
		h[2], h[3] = 0, 0
		binary.BigEndian.PutUint16(h[4:], uint16(total-ipv6Len))
		h[7] = ttl
		s, d := t.Src.As16(), t.Dst.As16()
		copy(h[8:24], s[:])
		copy(h[24:40], d[:])
	}

	th := h[ipl:]
	switch t.Type {
	case GRE:
		binary.BigEndian.PutUint16(th[2:], greProto(next))
		if t.Csum == WithCsum {
			binary.BigEndian.PutUint32(th[0:], 0x8000<<16|uint32(greProto(next)))
			binary.BigEndian.PutUint32(th[4:], 0)
			binary.BigEndian.PutUint16(th[4:], packet.Checksum(inner, packet.Sum(th[:8], 0)))
		} else {
			binary.BigEndian.PutUint16(th[0:], 0)
		}
		next = protoGRE
	case GUE:
		ulen := tl + n
		binary.BigEndian.PutUint16(th[0:], srcPort(FlowHash(inner)))
		binary.BigEndian.PutUint16(th[2:], t.Port)
		binary.BigEndian.PutUint16(th[4:], uint16(ulen))
		th[6], th[7] = 0, 0
		g := th[udpLen:]
		// Variant 0, no control bit, proto/ctype = the inner protocol.
		g[0], g[1], g[2], g[3] = 0, next, 0, 0
		if remcsum {
			g[0] = RemCsumOptionLen / 4
			g[3] = guePrivFlag
			binary.BigEndian.PutUint32(g[4:], gueRemCsumFlag)
			binary.BigEndian.PutUint16(g[8:], uint16(csStart))
			binary.BigEndian.PutUint16(g[10:], uint16(csField))
		}
		next = protoUDP
		if t.Csum != NoCsum {
			// Over the whole datagram, as udp_set_csum / udp6_set_csum
			// do; with NoCsum IPVS sends 0 in both families (RFC 6935
			// allows it for tunnels over IPv6).
			var ps uint32
			if v4 {
				ps = packet.PseudoHeaderSum(h[12:16], h[16:20], protoUDP, ulen)
			} else {
				ps = packet.PseudoHeaderSum(h[8:24], h[24:40], protoUDP, ulen)
			}
			ck := packet.Checksum(inner, packet.Sum(th[:tl], ps))
			if ck == 0 {
				ck = 0xffff
			}
			binary.BigEndian.PutUint16(th[6:], ck)
		}
	}
	if v4 {
		h[9] = next
		binary.BigEndian.PutUint16(h[10:], packet.IPv4(h).ComputeChecksum())
	} else {
		h[6] = next
	}
	return start, true
}

func ipHeaderLen(b []byte, v4 bool) int {
	if v4 {
		return int(b[0]&0xf) * 4
	}
	return ipv6Len
}

func greProto(next uint8) uint16 {
	if next == protoIPIP {
		return packet.EtherTypeIPv4
	}
	return packet.EtherTypeIPv6
}

// completeChecksum turns the partial checksum at csField, summed from
// csStart to the end of b, into a complete one.
func completeChecksum(b []byte, csStart, csField int) {
	ck := packet.Checksum(b[csStart:], 0)
	if ck == 0 {
		ck = 0xffff // the same in one's complement, and UDP's "computed zero"
	}
	binary.BigEndian.PutUint16(b[csField:], ck)
}

// srcPort maps a flow hash into the ephemeral port range 32768-60998 the
// way the kernel's udp_flow_src_port does with the default
// ip_local_port_range, so routers' ECMP and receivers' RSS spread flows.
func srcPort(h uint32) uint16 {
	const lo, hi = 32768, 60999
	h ^= h << 16
	return uint16(uint64(h)*(hi-lo)>>32) + lo
}

// FlowHash hashes the flow of the IP packet inner: its addresses, its
// protocol and, unless it is a fragment, the ports of TCP, UDP, UDP-Lite,
// SCTP and DCCP. All packets of a flow, fragments included, hash alike.
// It does not walk IPv6 extension headers (their flows hash by addresses
// and the first next header). The hash is not keyed and not symmetric.
func FlowHash(inner []byte) uint32 {
	h := uint64(0x9e3779b97f4a7c15)
	if len(inner) == 0 {
		return fmix(h)
	}
	var proto uint8
	var ports uint32
	switch inner[0] >> 4 {
	case 4:
		if len(inner) < ipv4Len {
			break
		}
		proto = inner[9]
		h = mix(h, uint64(binary.BigEndian.Uint32(inner[12:]))<<32|uint64(binary.BigEndian.Uint32(inner[16:])))
		ihl := int(inner[0]&0xf) * 4
		frag := binary.BigEndian.Uint16(inner[6:])&0x3fff != 0
		if !frag && hasPorts(proto) && ihl >= ipv4Len && ihl+4 <= len(inner) {
			ports = binary.BigEndian.Uint32(inner[ihl:])
		}
	case 6:
		if len(inner) < ipv6Len {
			break
		}
		proto = inner[6]
		h = mix(h, binary.BigEndian.Uint64(inner[8:]))
		h = mix(h, binary.BigEndian.Uint64(inner[16:]))
		h = mix(h, binary.BigEndian.Uint64(inner[24:]))
		h = mix(h, binary.BigEndian.Uint64(inner[32:]))
		if hasPorts(proto) && ipv6Len+4 <= len(inner) {
			ports = binary.BigEndian.Uint32(inner[ipv6Len:])
		}
	}
	return fmix(mix(h, uint64(proto)<<32|uint64(ports)))
}

func hasPorts(proto uint8) bool {
	switch proto {
	case packet.ProtoTCP, packet.ProtoUDP, 33, 132, 136: // DCCP, SCTP, UDP-Lite
		return true
	}
	return false
}

func mix(h, x uint64) uint64 {
	h ^= x
	h *= 0xff51afd7ed558ccd
	return h ^ h>>29
}

// fmix is murmur3's 64-bit finalizer, folded to 32 bits.
func fmix(h uint64) uint32 {
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint32(h) ^ uint32(h>>32)
}
