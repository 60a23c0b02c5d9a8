package packet

import "encoding/binary"

// The internet checksum (RFC 1071) and its incremental update (RFC 1624).
//
// Three forms of the same number appear here:
//   - a sum: a 32-bit accumulator of 16-bit big-endian words, not yet folded;
//   - a folded sum: the sum with carries folded back into 16 bits;
//   - a checksum: the complement of a folded sum, as stored in headers.
//
// An offloaded (partial) L4 checksum, as the kernel hands it over with
// virtio-net NEEDS_CSUM, holds a folded sum of the pseudo-header only; the
// sender completes it by summing from the L4 header on and complementing.

// Sum adds b as big-endian 16-bit words to the running sum initial. An odd
// trailing byte is padded with zero, so only the last piece of a split
// buffer may have an odd length.
func Sum(b []byte, initial uint32) uint32 {
	s := uint64(initial)
	for len(b) >= 32 {
		s += uint64(binary.BigEndian.Uint32(b[0:]))
		s += uint64(binary.BigEndian.Uint32(b[4:]))
		s += uint64(binary.BigEndian.Uint32(b[8:]))
		s += uint64(binary.BigEndian.Uint32(b[12:]))
		s += uint64(binary.BigEndian.Uint32(b[16:]))
		s += uint64(binary.BigEndian.Uint32(b[20:]))
		s += uint64(binary.BigEndian.Uint32(b[24:]))
		s += uint64(binary.BigEndian.Uint32(b[28:]))
		b = b[32:]
	}
	for len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	// Adding 32-bit words is the same as adding their two 16-bit halves
	// once the end-around carries are folded; reduce to 32 bits here.
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	return uint32(s)
}

// Fold folds the carries of sum into 16 bits (the folded sum).
func Fold(sum uint32) uint16 {
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	return uint16(sum)
}

// Checksum is the internet checksum of b, starting from the running sum
// initial (for example a pseudo-header sum).
func Checksum(b []byte, initial uint32) uint16 {
	return ^Fold(Sum(b, initial))
}

// PseudoHeaderSum is the sum of the TCP/UDP/ICMPv6 pseudo-header for
// addresses src and dst (both 4 or both 16 bytes), protocol proto and
// upper-layer length n. The IPv4 and IPv6 layouts differ only in field
// widths, which do not change a sum of words.
func PseudoHeaderSum(src, dst []byte, proto uint8, n int) uint32 {
	s := Sum(src, 0)
	s = Sum(dst, s)
	return addCarry(addCarry(s, uint32(proto)), uint32(n>>16)+uint32(n&0xffff))
}

// PartialChecksum is the value a sender that offloads the L4 checksum puts
// in the checksum field: the folded pseudo-header sum, not complemented.
func PartialChecksum(src, dst []byte, proto uint8, n int) uint16 {
	return Fold(PseudoHeaderSum(src, dst, proto, n))
}

func addCarry(a, b uint32) uint32 {
	s := a + b
	if s < a {
		s++ // end-around carry
	}
	return s
}

// UpdateChecksum16 returns checksum ck after one 16-bit word covered by it
// changed from old to new (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
func UpdateChecksum16(ck, old, new uint16) uint16 {
	return ^Fold(uint32(^ck) + uint32(^old) + uint32(new))
}

// UpdateChecksumAddr returns checksum ck after an address covered by it
// (directly or through a pseudo-header) changed from old to new. old and
// new have the same length, 4 or 16 bytes.
func UpdateChecksumAddr(ck uint16, old, new []byte) uint16 {
	return ^Fold(addrDelta(uint32(^ck), old, new))
}

// UpdatePartialAddr returns the partial (pseudo-header) checksum field ps
// after an address of the pseudo-header changed from old to new. The field
// holds a folded sum, not its complement, so the change is added to it
// directly. Ports are not in the pseudo-header: a port rewrite leaves a
// partial checksum alone.
func UpdatePartialAddr(ps uint16, old, new []byte) uint16 {
	return Fold(addrDelta(uint32(ps), old, new))
}

// UpdatePartial16 is UpdatePartialAddr for one 16-bit word of the
// pseudo-header (for example the upper-layer length).
func UpdatePartial16(ps, old, new uint16) uint16 {
	return Fold(uint32(ps) + uint32(^old) + uint32(new))
}

// AddrDelta is the one's complement difference new - old of two addresses
// of the same length (4 or 16 bytes), folded to 16 bits, for a caller that
// applies one address change to several checksums: add it to ^ck (full
// checksum) or ps (partial) and fold, as UpdateChecksumAddr does.
func AddrDelta(old, new []byte) uint32 {
	if len(old) == 4 && len(new) == 4 {
		// 32-bit words fold to the same sum as their 16-bit halves.
		d := uint64(^binary.BigEndian.Uint32(old)) + uint64(binary.BigEndian.Uint32(new))
		return uint32(Fold(uint32(d) + uint32(d>>32)))
	}
	return uint32(Fold(addrDelta(0, old, new)))
}

// addrDelta adds (new - old) to s, word by word; -x is ^x in one's
// complement arithmetic.
func addrDelta(s uint32, old, new []byte) uint32 {
	var d uint64 = uint64(s)
	for i := 0; i+1 < len(old) && i+1 < len(new); i += 2 {
		d += uint64(^binary.BigEndian.Uint16(old[i:]))
		d += uint64(binary.BigEndian.Uint16(new[i:]))
	}
	d = (d >> 32) + (d & 0xffffffff)
	d = (d >> 32) + (d & 0xffffffff)
	return uint32(d)
}

// headerSum is the folded one's complement sum of an IPv4 header, 0xffff
// when its checksum verifies. The common 20-byte header is summed in five
// loads rather than through Sum's loops.
func headerSum(h []byte) uint16 {
	if len(h) != IPv4MinLen {
		return Fold(Sum(h, 0))
	}
	s := uint64(binary.BigEndian.Uint32(h[0:])) + uint64(binary.BigEndian.Uint32(h[4:])) +
		uint64(binary.BigEndian.Uint32(h[8:])) + uint64(binary.BigEndian.Uint32(h[12:])) +
		uint64(binary.BigEndian.Uint32(h[16:]))
	s = (s >> 32) + (s & 0xffffffff)
	return Fold(uint32(s) + uint32(s>>32))
}
