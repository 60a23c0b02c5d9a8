package gso

import (
	"math/rand/v2"
	"testing"

	"uvs/packet"
)

// sum agrees with packet.Sum (the reference) on every length
// and alignment, and on data that makes the carries ripple.
func TestSumMatchesPacketSum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2100)
	for _, fill := range []string{"random", "ones", "zeros"} {
		for i := range buf {
			switch fill {
			case "random":
				buf[i] = byte(r.Uint32())
			case "ones":
				buf[i] = 0xff
			case "zeros":
				buf[i] = 0
			}
		}
		for start := 0; start < 9; start++ {
			for n := 0; start+n <= len(buf); n += 1 + n/16 {
				b := buf[start : start+n]
				for _, init := range []uint32{0, 1, 0xffff, 0x2fffd} {
					want := packet.Fold(packet.Sum(b, init))
					if got := fold(sum(b, init)); !sameOnes(got, want) {
						t.Fatalf("%s start %d len %d init %#x: sum %#04x, packet.Sum %#04x", fill, start, n, init, got, want)
					}
				}
			}
		}
	}
}

// sameOnes: 0 and 0xffff are the same number in one's complement.
func sameOnes(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

func BenchmarkSum1448(b *testing.B) {
	buf := make([]byte, 1448)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		sum(buf, 0)
	}
}

func BenchmarkPacketSum1448(b *testing.B) {
	buf := make([]byte, 1448)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		packet.Sum(buf, 0)
	}
}

func BenchmarkCopyThenSum1448(b *testing.B) {
	buf := make([]byte, 1448)
	dst := make([]byte, 1448)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		copy(dst, buf)
		sum(dst, 0)
	}
}
