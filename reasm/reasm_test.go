package reasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// datagram6 is an IPv6 packet from 2001:2::2 to 2001:2::1 with a UDP-like
// payload of n bytes (next header 17), optionally after a destination
// options header (8 bytes) that stays unfragmentable... here it is put
// before the fragment header by fragments().
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ seed
	}
	return b
}

// fragments cuts data (the fragmentable part, next header 17) into IPv6
// fragments of at most size bytes of data (a multiple of 8), each with the
// fixed header and, with opts, an 8-byte destination options header
// before the fragment header.
func fragments(data []byte, size int, id uint32, opts bool) [][]byte {
	var out [][]byte
	for off := 0; off < len(data) || off == 0; off += size {
		end := min(off+size, len(data))
		h := make([]byte, 40)
		h[0] = 0x60
		h[7] = 64
		copy(h[8:], []byte{0x20, 0x01, 0, 2, 14: 0, 15: 2})
		copy(h[24:], []byte{0x20, 0x01, 0, 2, 14: 0, 15: 1})
		h[6] = 44
		if opts {
			h[6] = 60
			h = append(h, 44, 0, 1, 4, 0, 0, 0, 0) // next: fragment; PadN
		}
		f := make([]byte, 8)
		f[0] = 17
		fo := uint16(off)
		if end < len(data) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(f[2:], fo)
		binary.BigEndian.PutUint32(f[4:], id)
		p := append(append(h, f...), data[off:end]...)
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		out = append(out, p)
		if end == len(data) {
			break
		}
	}
	return out
}

func fragAt(opts bool) (frag, nhAt int) {
	if opts {
		return 48, 40
	}
	return 40, 6
}

// add feeds fragments to t in order and returns what completed.
func add(t *testing.T, tb *Table, frags [][]byte, opts bool, now int64) ([]byte, int) {
	t.Helper()
	frag, nhAt := fragAt(opts)
	out := make([]byte, 70000)
	var got []byte
	var maxFrag int
	for i, f := range frags {
		n, m, err := tb.Add(f, frag, nhAt, now, out)
		if err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		if n > 0 {
			if got != nil {
				t.Fatalf("completed twice")
			}
			got, maxFrag = bytes.Clone(out[:n]), m
		}
	}
	return got, maxFrag
}

func checkWhole(t *testing.T, got, data []byte, opts bool) {
	t.Helper()
	hl := 40
	if opts {
		hl = 48
	}
	if got == nil {
		t.Fatal("not reassembled")
	}
	if len(got) != hl+len(data) || !bytes.Equal(got[hl:], data) {
		t.Fatalf("reassembled %d bytes, want %d (data equal: %v)", len(got), hl+len(data), len(got) >= hl && bytes.Equal(got[hl:], data))
	}
	if pl := int(binary.BigEndian.Uint16(got[4:])); pl != len(got)-40 {
		t.Errorf("payload length %d, want %d", pl, len(got)-40)
	}
	nh := got[6]
	if opts {
		if got[6] != 60 {
			t.Errorf("fixed header's next header %d, want 60", got[6])
		}
		nh = got[40]
	}
	if nh != 17 {
		t.Errorf("next header %d, want 17 (the fragment header is gone)", nh)
	}
}

func TestReassemblesInAnyOrder(t *testing.T) {
	for _, opts := range []bool{false, true} {
		data := payload(4000, 7)
		frags := fragments(data, 1448, 99, opts)
		for name, order := range map[string][]int{"in order": {0, 1, 2}, "reversed": {2, 1, 0}, "last first": {2, 0, 1}} {
			var fs [][]byte
			for _, i := range order {
				fs = append(fs, frags[i])
			}
			tb := NewTable(Config{})
			got, maxFrag := add(t, tb, fs, opts, 0)
			checkWhole(t, got, data, opts)
			if maxFrag != len(frags[0]) {
				t.Errorf("%s: longest fragment %d, want %d", name, maxFrag, len(frags[0]))
			}
			if tb.InProgress() != 0 || tb.bytes != 0 {
				t.Errorf("%s: %d in progress, %d bytes held after completion", name, tb.InProgress(), tb.bytes)
			}
		}
	}
}

func TestAtomicFragment(t *testing.T) {
	data := payload(100, 1)
	frags := fragments(data, 1448, 5, false)
	if len(frags) != 1 {
		t.Fatal(len(frags))
	}
	got, _ := add(t, NewTable(Config{}), frags, false, 0)
	checkWhole(t, got, data, false)
}

func TestInterleavedDatagrams(t *testing.T) {
	a, b := payload(3000, 1), payload(5000, 2)
	fa, fb := fragments(a, 1024, 1, false), fragments(b, 1024, 2, false)
	tb := NewTable(Config{})
	out := make([]byte, 70000)
	var done [][]byte
	for i := 0; i < max(len(fa), len(fb)); i++ {
		for _, fs := range [][][]byte{fa, fb} {
			if i < len(fs) {
				n, _, err := tb.Add(fs[i], 40, 6, 0, out)
				if err != nil {
					t.Fatal(err)
				}
				if n > 0 {
					done = append(done, bytes.Clone(out[:n]))
				}
			}
		}
	}
	if len(done) != 2 {
		t.Fatalf("%d datagrams completed, want 2", len(done))
	}
	checkWhole(t, done[0], a, false)
	checkWhole(t, done[1], b, false)
}

func TestOverlapDropsDatagram(t *testing.T) {
	data := payload(4000, 3)
	frags := fragments(data, 1448, 7, false)
	tb := NewTable(Config{})
	out := make([]byte, 70000)
	if _, _, err := tb.Add(frags[0], 40, 6, 0, out); err != nil {
		t.Fatal(err)
	}
	// A fragment at offset 8: overlaps the first.
	bad := bytes.Clone(frags[1])
	binary.BigEndian.PutUint16(bad[42:], 8|1)
	if _, _, err := tb.Add(bad, 40, 6, 0, out); !errors.Is(err, ErrOverlap) {
		t.Fatalf("overlap: %v", err)
	}
	if tb.InProgress() != 0 || tb.bytes != 0 {
		t.Fatalf("overlapped datagram kept: %d, %d bytes", tb.InProgress(), tb.bytes)
	}
	// An exact repeat is not an overlap, the last fragment's too (its
	// length is no multiple of 8; found in review).
	data = payload(4001, 3)
	frags = fragments(data, 1448, 7, false)
	tb = NewTable(Config{})
	for _, f := range [][]byte{frags[0], frags[2], frags[2], frags[0], frags[1]} {
		n, _, err := tb.Add(f, 40, 6, 0, out)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			checkWhole(t, out[:n], data, false)
		}
	}
}

func TestMalformed(t *testing.T) {
	frags := fragments(payload(4000, 4), 1448, 8, false)
	out := make([]byte, 70000)
	odd := bytes.Clone(frags[0][:len(frags[0])-3]) // not a multiple of 8, more to come
	if _, _, err := NewTable(Config{}).Add(odd, 40, 6, 0, out); !errors.Is(err, ErrMalformed) {
		t.Errorf("odd length: %v", err)
	}
	past := bytes.Clone(frags[1])
	binary.BigEndian.PutUint16(past[42:], 65528|1)
	if _, _, err := NewTable(Config{}).Add(past, 40, 6, 0, out); !errors.Is(err, ErrMalformed) {
		t.Errorf("past 65535: %v", err)
	}
	for _, c := range []struct{ frag, nh int }{{0, 6}, {40, 40}, {len(frags[0]), 6}, {40, 3}} {
		if _, _, err := NewTable(Config{}).Add(frags[0], c.frag, c.nh, 0, out); !errors.Is(err, ErrMalformed) {
			t.Errorf("offsets %v: %v", c, err)
		}
	}
	// Two different last fragments.
	tb := NewTable(Config{})
	tb.Add(frags[2], 40, 6, 0, out)
	short := bytes.Clone(frags[2][:len(frags[2])-8])
	if _, _, err := tb.Add(short, 40, 6, 0, out); !errors.Is(err, ErrMalformed) {
		t.Errorf("second, shorter last fragment: %v", err)
	}
	// Too small an out.
	tb = NewTable(Config{})
	for i, f := range frags {
		_, _, err := tb.Add(f, 40, 6, 0, out[:100])
		if i == len(frags)-1 && !errors.Is(err, ErrTooLarge) {
			t.Errorf("small out: %v", err)
		}
	}
}

func TestTimeoutAndLimits(t *testing.T) {
	out := make([]byte, 70000)
	frags := fragments(payload(4000, 5), 1448, 9, false)
	tb := NewTable(Config{Timeout: time.Second})
	tb.Add(frags[0], 40, 6, 0, out)
	tb.Add(frags[1], 40, 6, 0, out)
	// The rest comes too late: a new datagram starts from it.
	if n, _, err := tb.Add(frags[2], 40, 6, int64(2*time.Second), out); n != 0 || err != nil {
		t.Fatalf("after the timeout: %d, %v", n, err)
	}
	if tb.bytes != len(frags[2])-48 {
		t.Errorf("%d bytes held, want only the late fragment's", tb.bytes)
	}

	// More datagrams than slots: the oldest goes.
	tb = NewTable(Config{MaxDatagrams: 2})
	for id := uint32(1); id <= 3; id++ {
		tb.Add(fragments(payload(4000, 6), 1448, id, false)[0], 40, 6, int64(id), out)
	}
	if tb.InProgress() != 2 {
		t.Fatalf("%d in progress, want 2", tb.InProgress())
	}
	rest := fragments(payload(4000, 6), 1448, 1, false)[1:]
	for _, f := range rest {
		if n, _, _ := tb.Add(f, 40, 6, 10, out); n != 0 {
			t.Fatal("the evicted datagram completed")
		}
	}

	// More bytes than allowed: the oldest goes.
	tb = NewTable(Config{MaxBytes: 3000})
	tb.Add(fragments(payload(4000, 6), 1448, 1, false)[0], 40, 6, 1, out)
	tb.Add(fragments(payload(4000, 6), 1448, 2, false)[0], 40, 6, 2, out)
	tb.Add(fragments(payload(4000, 6), 1448, 3, false)[0], 40, 6, 3, out)
	if tb.bytes > 3000 || tb.InProgress() != 2 {
		t.Errorf("%d bytes in %d datagrams, want at most 3000 in 2", tb.bytes, tb.InProgress())
	}
}

func TestNoAllocsOnceWarm(t *testing.T) {
	tb := NewTable(Config{})
	data := payload(4000, 8)
	out := make([]byte, 70000)
	frags := fragments(data, 1448, 10, false)
	add(t, tb, frags, false, 0)
	n := testing.AllocsPerRun(100, func() {
		for _, f := range frags {
			tb.Add(f, 40, 6, 0, out)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per datagram", n)
	}
}

// FuzzAdd feeds random fragments (from a few datagrams, cut and shuffled,
// with random bytes changed) and checks Add never panics, never writes a
// datagram longer than out or with a wrong payload length, and keeps its
// byte count in step with what it holds.
func FuzzAdd(f *testing.F) {
	f.Add(uint64(1), []byte{0, 1, 2})
	f.Add(uint64(2), []byte{})
	f.Fuzz(func(t *testing.T, seed uint64, edits []byte) {
		r := rand.New(rand.NewPCG(seed, seed>>1))
		tb := NewTable(Config{MaxDatagrams: 4, MaxBytes: 30000})
		var all [][]byte
		want := map[uint32][]byte{} // the fragmentable part of each datagram
		done := map[uint32]bool{}
		for id := uint32(0); id < 3; id++ {
			opts := r.IntN(2) == 0
			frag, nhAt := fragAt(opts)
			data := payload(r.IntN(9000), byte(id))
			want[id] = data
			for _, p := range fragments(data, 8*(1+r.IntN(200)), id, opts) {
				all = append(all, append([]byte{byte(frag), byte(nhAt)}, p...))
				if r.IntN(8) == 0 { // an exact repeat
					all = append(all, append([]byte{byte(frag), byte(nhAt)}, p...))
				}
			}
		}
		r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		edited := len(edits) >= 2
		for i := 0; i+1 < len(edits); i += 2 {
			if len(all) == 0 {
				break
			}
			p := all[int(edits[i])%len(all)]
			p[int(edits[i+1])%len(p)] ^= edits[i]
		}
		out := make([]byte, 9100)
		for i, p := range all {
			n, _, err := tb.Add(p[2:], int(p[0]), int(p[1]), int64(i), out)
			if n > 0 && (err != nil || n > len(out) || int(binary.BigEndian.Uint16(out[4:])) != n-40) {
				t.Fatalf("wrote %d bytes, payload length %d, err %v", n, binary.BigEndian.Uint16(out[4:]), err)
			}
			// Unedited, every datagram comes out whole and right.
			if !edited && n > 0 {
				hl := int(p[0]) // the unfragmentable part's length: the fragment header's offset
				id := binary.BigEndian.Uint32(p[2+hl+4:])
				if !bytes.Equal(out[hl:n], want[id]) {
					t.Fatalf("datagram %d reassembled wrong: %d bytes, want %d", id, n-hl, len(want[id]))
				}
				// (Repeats arriving after completion may complete it
				// again, as a repeated packet arrives twice.)
				done[id] = true
			}
			if !edited && err != nil {
				t.Fatalf("unedited fragment refused: %v", err)
			}
			held := 0
			for j := range tb.dgs {
				if tb.dgs[j].used {
					held += tb.dgs[j].got
				}
			}
			if held != tb.bytes || tb.bytes < 0 {
				t.Fatalf("holds %d bytes, counts %d", held, tb.bytes)
			}
		}
		if !edited && len(done) != len(want) {
			t.Fatalf("%d of %d datagrams completed", len(done), len(want))
		}
	})
}

// frags4 cuts an IPv4 datagram (a 20-byte header, then data) into
// fragments carrying size bytes of data each.
func frags4(data []byte, size int, id uint16) [][]byte {
	var out [][]byte
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		f := make([]byte, 20+end-off)
		f[0], f[9] = 0x45, 17
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		binary.BigEndian.PutUint16(f[4:], id)
		fo := uint16(off / 8)
		if end < len(data) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		copy(f[12:], []byte{198, 18, 0, 2, 198, 18, 0, 1})
		copy(f[20:], data[off:end])
		out = append(out, f)
	}
	return out
}

func TestAdd4(t *testing.T) {
	data := payload(4000, 7)
	fr := frags4(data, 1480, 99)
	other := frags4(payload(3000, 9), 1480, 100)
	tb := NewTable(Config{})
	out := make([]byte, 70000)
	for i, f := range [][]byte{fr[2], other[0], fr[0], other[1], fr[1]} {
		n, maxFrag, err := tb.Add4(f, 1, out)
		if err != nil {
			t.Fatal(err)
		}
		if i < 4 {
			if n != 0 {
				t.Fatalf("fragment %d completed a datagram", i)
			}
			continue
		}
		if n != 20+len(data) || maxFrag != 1500 {
			t.Fatalf("n %d maxFrag %d", n, maxFrag)
		}
		got := out[:n]
		if binary.BigEndian.Uint16(got[2:]) != uint16(n) || binary.BigEndian.Uint16(got[6:]) != 0 || !bytes.Equal(got[20:], data) {
			t.Fatalf("bad datagram: header % x", got[:20])
		}
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(binary.BigEndian.Uint16(got[j:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		if sum != 0xffff {
			t.Fatalf("header checksum wrong: % x", got[:20])
		}
	}
	if tb.InProgress() != 1 {
		t.Fatalf("%d in progress, want the other datagram", tb.InProgress())
	}
	// Same ID and addresses, another protocol: another datagram.
	f := frags4(data, 1480, 99)
	f[0][9] = 6
	tb.Add4(f[0], 1, out)
	if n, _, _ := tb.Add4(fr[1], 1, out); n != 0 || tb.InProgress() != 3 {
		t.Fatalf("protocols mixed: n %d, %d in progress", n, tb.InProgress())
	}
}
