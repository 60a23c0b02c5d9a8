package tun_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"uvs/forward/tun"
	"uvs/packet/packettest"
)

func isSentinel(err error) bool {
	for _, e := range []error{tun.ErrNotTunnel, tun.ErrMalformed, tun.ErrBadChecksum, tun.ErrUnsupported, tun.ErrFragment} {
		if err == e {
			return true
		}
	}
	return false
}

// encapSeeds are outer packets of every combination, from complete and
// from partial (remote checksum offload) inner packets.
func encapSeeds() [][]byte {
	var seeds [][]byte
	for _, c := range combos() {
		for _, part := range []bool{false, true} {
			in := inner(c.inner, packettest.TCP, 0xb8, true, 64)
			cs, co := 0, 0
			if part {
				cs, co = partial(in)
			}
			tn := tunnel(c.typ, c.outer, c.csum)
			buf := make([]byte, tun.MaxOverhead+len(in))
			copy(buf[tun.MaxOverhead:], in)
			var start int
			if part {
				start, _ = tn.EncapPartial(buf, tun.MaxOverhead, len(in), cs, co)
			} else {
				start, _ = tn.Encap(buf, tun.MaxOverhead, len(in))
			}
			seeds = append(seeds, buf[start:])
		}
	}
	return seeds
}

// FuzzDecap: Decap never panics, fails only with its sentinel errors, and
// what it accepts is an IP packet within the buffer, found at the same
// place by DecapPayload on the outer IPv4 payload.
func FuzzDecap(f *testing.F) {
	for _, s := range encapSeeds() {
		f.Add(s, uint16(guePort))
	}
	f.Fuzz(func(t *testing.T, pkt []byte, port uint16) {
		orig := append([]byte(nil), pkt...)
		b := append([]byte(nil), pkt...)
		d, err := tun.Decap(b, port)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v is not a sentinel", err)
			}
			return
		}
		if d.Inner < 0 || d.Len < 20 || d.Inner+d.Len > len(b) || d.Type > tun.GRE {
			t.Fatalf("Decap = %+v for %d bytes", d, len(b))
		}
		if v := b[d.Inner] >> 4; v != 4 && v != 6 {
			t.Fatalf("inner version %d", v)
		}
		if !d.OuterSrc.IsValid() || d.OuterSrc.Is4() != (b[0]>>4 == 4) {
			t.Fatalf("outer source %v", d.OuterSrc)
		}
		if b[0]>>4 != 4 {
			return
		}
		ihl, tot := int(b[0]&0xf)*4, int(binary.BigEndian.Uint16(b[2:]))
		pl, base, proto := orig[ihl:tot], ihl, orig[9]
		if proto == 17 {
			pl, base = pl[8:binary.BigEndian.Uint16(pl[4:])], ihl+8
		}
		off, n, err := tun.DecapPayload(proto, pl)
		if err != nil || base+off != d.Inner || n != d.Len {
			t.Fatalf("DecapPayload = %d, %d, %v; Decap = %+v", off, n, err, d)
		}
		if !bytes.Equal(pl[off:off+n], b[d.Inner:d.Inner+d.Len]) {
			t.Fatalf("DecapPayload and Decap disagree on the inner packet")
		}
	})
}

// FuzzDecapPayload: DecapPayload never panics and what it accepts lies
// within the payload.
func FuzzDecapPayload(f *testing.F) {
	for _, s := range encapSeeds() {
		ipl := 20
		if s[0]>>4 == 6 {
			ipl = 40
		}
		proto := s[9]
		if ipl == 40 {
			proto = s[6]
		}
		if proto == 17 {
			f.Add(proto, s[ipl+8:])
		} else {
			f.Add(proto, s[ipl:])
		}
	}
	f.Fuzz(func(t *testing.T, proto uint8, payload []byte) {
		off, n, err := tun.DecapPayload(proto, payload)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error %v is not a sentinel", err)
			}
			return
		}
		if off < 0 || n < 20 || off+n > len(payload) {
			t.Fatalf("inner %d+%d in %d bytes", off, n, len(payload))
		}
		if v := payload[off] >> 4; (v != 4 && v != 6) || (proto == 4 && v != 4) || (proto == 41 && v != 6) {
			t.Fatalf("inner version %d for protocol %d", v, proto)
		}
	})
}

// FuzzEncap encapsulates a fuzzed inner packet with a fuzzed tunnel: Encap
// never panics, writes nothing when it fails, and what it produces
// decapsulates to the inner packet (its checksum completed when it was
// partial).
func FuzzEncap(f *testing.F) {
	for _, c := range combos() {
		for _, proto := range []uint8{packettest.TCP, packettest.UDP} {
			in := inner(c.inner, proto, 0x3, c.inner == 4, 9)
			f.Add(in, uint8(c.typ), uint8(c.csum), c.outer == 6, false, uint8(0), uint16(guePort), uint8(tun.MaxOverhead), false, uint16(0), uint16(0))
			p := append([]byte(nil), in...)
			cs, co := partial(p)
			f.Add(p, uint8(c.typ), uint8(c.csum), c.outer == 6, true, uint8(7), uint16(guePort), uint8(tun.MaxOverhead), true, uint16(cs), uint16(co))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, typ, csum uint8, outer6, fixLen bool, ttl uint8, port uint16, off uint8, part bool, cs, co uint16) {
		in = append([]byte(nil), in...)
		if fixLen {
			fixLength(in)
		}
		tn := &tun.Tunnel{Type: tun.Type(typ % 4), Csum: tun.Csum(csum % 4), TTL: ttl, Port: port, Src: dir4, Dst: rs4}
		if outer6 {
			tn.Src, tn.Dst = dir6, rs6
		}
		o := int(off) % (tun.MaxOverhead + 1)
		buf := make([]byte, o+len(in))
		copy(buf[o:], in)
		before := append([]byte(nil), buf...)
		var start int
		var ok bool
		if part {
			start, ok = tn.EncapPartial(buf, o, len(in), int(cs), int(co))
		} else {
			start, ok = tn.Encap(buf, o, len(in))
		}
		if !ok {
			if !bytes.Equal(buf, before) {
				t.Fatalf("Encap failed and wrote")
			}
			return
		}
		rem := part && tn.Type == tun.GUE && tn.Csum == tun.RemCsum
		over := tn.Overhead()
		if rem {
			over += tun.RemCsumOptionLen
		}
		if start != o-over {
			t.Fatalf("start %d, want %d", start, o-over)
		}
		want := in
		if part {
			// The inner checksum, completed by a reference sum.
			want = append([]byte(nil), in...)
			ps := packettest.Sum(in[cs:]) // the field held the pseudo-header sum
			ck := ^packettest.Fold(ps)
			if ck == 0 {
				ck = 0xffff
			}
			binary.BigEndian.PutUint16(want[cs+co:], ck)
		}
		if !rem && !bytes.Equal(buf[o:], want) || rem && !bytes.Equal(buf[o:], in) {
			t.Fatalf("inner packet not as expected after Encap")
		}
		if tn.Type == tun.GUE && port == 0 {
			return // not decapsulable: 0 means no GUE
		}
		out := buf[start:]
		if !outer6 && packettest.Fold(packettest.Sum(out[:20])) != 0xffff {
			t.Fatalf("IPv4 header checksum")
		}
		d, err := tun.Decap(out, port)
		if err != nil {
			t.Fatalf("Decap: %v", err)
		}
		if d.Type != tn.Type || d.Inner != over || d.Len != len(in) || d.OuterSrc != tn.Src || d.OuterDst != tn.Dst {
			t.Fatalf("Decap = %+v, want type %v inner %d len %d", d, tn.Type, over, len(in))
		}
		if !bytes.Equal(out[d.Inner:], want) {
			t.Fatalf("Decap: inner packet differs")
		}
	})
}

// fixLength makes the length field of the IP packet b say len(b).
func fixLength(b []byte) {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		if b[0]&0xf < 5 {
			b[0] = 0x45
		}
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	case len(b) >= 40 && b[0]>>4 == 6:
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	}
}
