package packet_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"uvs/packet"
	"uvs/packet/packettest"
)

func TestSumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(4) == 0 {
			for i := range b {
				b[i] = 0xff // the carries pile up
			}
		}
		want := packettest.Fold(packettest.Sum(b))
		if got := packet.Fold(packet.Sum(b, 0)); got != want {
			t.Fatalf("Sum of % x folds to %#04x, want %#04x", b, got, want)
		}
		k := rng.IntN(len(b)+1) &^ 1 // split at an even offset
		if got := packet.Fold(packet.Sum(b[k:], packet.Sum(b[:k], 0))); got != want {
			t.Fatalf("Sum split at %d of % x folds to %#04x, want %#04x", k, b, got, want)
		}
	}
}

// sameOnesComplement reports whether a and b are the same one's
// complement number: 0x0000 and 0xffff are both zero.
func sameOnesComplement(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

func fill(dst, src []byte) {
	if len(src) == 0 {
		src = []byte{0x5a}
	}
	for i := range dst {
		dst[i] = src[i%len(src)] + byte(i/len(src))
	}
}

// FuzzChecksumUpdate rewrites the destination address and port of a
// UDP-like segment (ports at 0, checksum at 6) and checks the incremental
// update against a recomputation with the reference sum, for a full
// checksum and for a partial one that is completed afterwards.
func FuzzChecksumUpdate(f *testing.F) {
	f.Add([]byte("segment with some payload"), []byte{198, 18, 0, 1, 198, 18, 1, 1, 198, 18, 2, 2}, false, uint16(8080))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff}, []byte{0x20, 1, 0, 2}, true, uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 8, 0, 0}, []byte{0xff}, false, uint16(0xffff))
	f.Fuzz(func(t *testing.T, seg, addrs []byte, v6 bool, port uint16) {
		al := 4
		if v6 {
			al = 16
		}
		a := make([]byte, 3*al)
		fill(a, addrs)
		src, dst, nu := a[:al], a[al:2*al], a[2*al:]
		if len(seg) < 8 {
			seg = append(seg, make([]byte, 8-len(seg))...)
		}
		if len(seg) > 2000 {
			seg = seg[:2000]
		}
		pseudoSum := func(d []byte) uint32 { return packettest.Sum(packettest.PseudoHeader(src, d, 17, len(seg))) }
		if got, want := packet.Fold(packet.PseudoHeaderSum(src, dst, 17, len(seg))), packettest.Fold(pseudoSum(dst)); !sameOnesComplement(got, want) {
			t.Fatalf("PseudoHeaderSum folds to %#04x, want %#04x", got, want)
		}
		oldPort := binary.BigEndian.Uint16(seg[2:])

		// Full checksum.
		full := append([]byte(nil), seg...)
		binary.BigEndian.PutUint16(full[6:], 0)
		ck := ^packettest.Fold(pseudoSum(dst) + packettest.Sum(full))
		ck = packet.UpdateChecksumAddr(ck, dst, nu)
		ck = packet.UpdateChecksum16(ck, oldPort, port)
		binary.BigEndian.PutUint16(full[2:], port)
		want := ^packettest.Fold(pseudoSum(nu) + packettest.Sum(full))
		if !sameOnesComplement(ck, want) {
			t.Fatalf("incremental checksum %#04x, recomputed %#04x", ck, want)
		}
		binary.BigEndian.PutUint16(full[6:], ck)
		if packettest.Fold(pseudoSum(nu)+packettest.Sum(full)) != 0xffff {
			t.Fatalf("updated checksum %#04x does not verify", ck)
		}

		// Partial checksum: the field holds the pseudo-header sum, and the
		// port change must leave it alone.
		part := append([]byte(nil), seg...)
		binary.BigEndian.PutUint16(part[6:], packet.PartialChecksum(src, dst, 17, len(seg)))
		ps := packet.UpdatePartialAddr(binary.BigEndian.Uint16(part[6:]), dst, nu)
		binary.BigEndian.PutUint16(part[6:], ps)
		binary.BigEndian.PutUint16(part[2:], port)
		if !sameOnesComplement(ps, packettest.Fold(pseudoSum(nu))) {
			t.Fatalf("updated partial %#04x, pseudo-header sum %#04x", ps, packettest.Fold(pseudoSum(nu)))
		}
		// What the kernel then does: sum from the L4 header on, complement.
		binary.BigEndian.PutUint16(part[6:], ^packettest.Fold(packettest.Sum(part)))
		if packettest.Fold(pseudoSum(nu)+packettest.Sum(part)) != 0xffff {
			t.Fatalf("completed partial checksum does not verify")
		}
	})
}

func TestUpdatePartial16(t *testing.T) {
	src, dst := client6.AsSlice(), vip6.AsSlice()
	ps := packet.PartialChecksum(src, dst, 6, 1000)
	got := packet.UpdatePartial16(ps, 1000, 1480)
	if want := packet.PartialChecksum(src, dst, 6, 1480); !sameOnesComplement(got, want) {
		t.Errorf("length change: partial %#04x, want %#04x", got, want)
	}
}

func TestIPv4ComputeChecksum(t *testing.T) {
	for _, opts := range []bool{false, true} {
		b := packettest.Frame{Src: client4, Dst: vip4, Proto: packettest.UDP, IPv4Options: opts}.Bytes()
		h := packet.IPv4(b)
		if got, want := h.ComputeChecksum(), h.Checksum(); got != want {
			t.Errorf("options %v: ComputeChecksum %#04x, gopacket wrote %#04x", opts, got, want)
		}
	}
}
