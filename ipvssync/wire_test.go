package ipvssync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

var (
	client4 = netip.MustParseAddr("198.18.0.2")
	vip4    = netip.MustParseAddr("198.18.0.1")
	rs4     = netip.MustParseAddr("198.18.1.2")
	client6 = netip.MustParseAddr("2001:2::2")
	vip6    = netip.MustParseAddr("2001:2::1")
	rs6     = netip.MustParseAddr("2001:2:1::2")
)

// sample is one of every kind of entry.
func sample() []Conn {
	return []Conn{
		{Proto: 6, Flags: FwdMasq, State: 1, CPort: 41686, VPort: 443, DPort: 443, Timeout: 900,
			CAddr: client4, VAddr: vip4, DAddr: rs4},
		{Proto: 6, Flags: FlagTemplate | FlagInactive, State: 1, VPort: 443, DPort: 443, Timeout: 300,
			CAddr: client4, VAddr: vip4, DAddr: rs4},
		{Proto: 17, Flags: FlagInactive, CPort: 40000, VPort: 53, DPort: 53, Timeout: 300,
			CAddr: client4, VAddr: vip4, DAddr: rs4},
		{V6: true, Proto: 6, Flags: FwdRoute, State: 1, CPort: 50000, VPort: 80, DPort: 80, Timeout: 900,
			CAddr: client6, VAddr: vip6, DAddr: rs6},
		{Proto: 0, Flags: FlagTemplate | FlagInactive | FwdTunnel, FWMark: 20, Timeout: 1200,
			CAddr: client4, VAddr: netip.AddrFrom4([4]byte{0, 0, 0, 20}), DAddr: rs4},
		{Proto: 6, Flags: FlagInSeq | FlagOutSeq, State: 1, CPort: 21021, VPort: 21, DPort: 21, Timeout: 900,
			CAddr: client4, VAddr: vip4, DAddr: rs4, HasSeq: true,
			InSeq: Seq{1, 2, 3}, OutSeq: Seq{0xfffffff0, 0x80000000, 7}},
		{Proto: 17, Flags: FlagTemplate | FlagInactive, VPort: 5060, DPort: 5060, Timeout: 30,
			CAddr: client4, VAddr: vip4, DAddr: rs4, PEData: []byte("call-id-1234567"), PEName: []byte("sip")},
		{V6: true, Proto: 17, Flags: FlagInactive, CPort: 5353, VPort: 53, DPort: 53, Timeout: 300,
			CAddr: client6, VAddr: vip6, DAddr: rs6, Resync: true},
	}
}

func encode(t testing.TB, maxLen int, cs []Conn) [][]byte {
	t.Helper()
	w := NewWriter(7, maxLen)
	var msgs [][]byte
	for i := range cs {
		err := w.Add(&cs[i])
		if errors.Is(err, ErrFull) {
			msgs = append(msgs, bytes.Clone(w.Bytes()))
			w.Reset()
			err = w.Add(&cs[i])
		}
		if err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if w.Count() > 0 {
		msgs = append(msgs, bytes.Clone(w.Bytes()))
	}
	return msgs
}

func decode(t testing.TB, msgs [][]byte) []Conn {
	t.Helper()
	var out []Conn
	var r Reader
	for _, m := range msgs {
		if err := r.Reset(m); err != nil {
			t.Fatalf("reset: %v", err)
		}
		if h := r.Header(); h.Version != 1 || h.SyncID != 7 || h.Size != len(m) {
			t.Fatalf("header %+v of a %d-byte message", h, len(m))
		}
		var c Conn
		for r.Next(&c) {
			c.PEData, c.PEName = bytes.Clone(c.PEData), bytes.Clone(c.PEName)
			out = append(out, c)
		}
		if r.Err() != nil || r.Skipped() != 0 {
			t.Fatalf("read: %v, %d skipped", r.Err(), r.Skipped())
		}
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	want := sample()
	for _, maxLen := range []int{1, 100, 200, 1472, 65507} {
		msgs := encode(t, maxLen, want)
		for _, m := range msgs {
			if len(m) > maxLen && !(len(m) > 0 && m[4] == 1) {
				t.Errorf("maxlen %d: message of %d bytes with %d entries", maxLen, len(m), m[4])
			}
		}
		got := decode(t, msgs)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("maxlen %d:\n got %+v\nwant %+v", maxLen, got, want)
		}
	}
}

// TestPadding: entries start on 4-byte boundaries; the size counts the
// padding between entries, not after the last.
func TestPadding(t *testing.T) {
	cs := sample()
	c := cs[6] // 36 + 2+15 + 2+3 = 58 bytes
	msgs := encode(t, 1472, []Conn{c, c})
	m := msgs[0]
	if want := HeaderLen + 58 + 2 + 58; len(m) != want {
		t.Fatalf("size %d, want %d", len(m), want)
	}
	if got := binary.BigEndian.Uint16(m[HeaderLen+2:]); got != 58 {
		t.Errorf("first entry's size %d, want 58", got)
	}
	if m[HeaderLen+58] != 0 || m[HeaderLen+59] != 0 {
		t.Errorf("padding not zero: % x", m[HeaderLen+58:HeaderLen+60])
	}
}

// TestMaxConns: the count is a byte; the 256th entry starts a new message.
func TestMaxConns(t *testing.T) {
	c := sample()[0]
	cs := make([]Conn, 300)
	for i := range cs {
		cs[i] = c
		cs[i].CPort = uint16(i)
	}
	msgs := encode(t, MaxMessage, cs)
	if len(msgs) != 2 || msgs[0][4] != 255 || msgs[1][4] != 45 {
		t.Fatalf("%d messages", len(msgs))
	}
	if got := decode(t, msgs); !reflect.DeepEqual(got, cs) {
		t.Error("round trip differs")
	}
}

// TestFill: a message of the default size takes 40 IPv4 entries
// (8 + 40×36 = 1448 ≤ 1472), as Linux's.
func TestFill(t *testing.T) {
	c := sample()[0]
	cs := make([]Conn, 41)
	for i := range cs {
		cs[i] = c
	}
	msgs := encode(t, 1472, cs)
	if len(msgs) != 2 || msgs[0][4] != 40 || len(msgs[0]) != 1448 {
		t.Fatalf("%d messages, first with %d entries, %d bytes", len(msgs), msgs[0][4], len(msgs[0]))
	}
}

func TestAddRefuses(t *testing.T) {
	w := NewWriter(0, 1472)
	for name, c := range map[string]Conn{
		"v4 entry, v6 address": {CAddr: client6, VAddr: vip4, DAddr: rs4},
		"v6 entry, v4 address": {V6: true, CAddr: client6, VAddr: vip6, DAddr: rs4},
		"v6 entry, mapped":     {V6: true, CAddr: client6, VAddr: netip.AddrFrom16(vip4.As16()), DAddr: rs6},
		"no address":           {},
		"pe name alone":        {CAddr: client4, VAddr: vip4, DAddr: rs4, PEName: []byte("sip")},
		"pe data too long":     {CAddr: client4, VAddr: vip4, DAddr: rs4, PEData: make([]byte, 256)},
		"pe name too long":     {CAddr: client4, VAddr: vip4, DAddr: rs4, PEData: []byte{1}, PEName: make([]byte, 17)},
	} {
		if err := w.Add(&c); err == nil || errors.Is(err, ErrFull) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if w.Count() != 0 {
		t.Errorf("refused entries were added")
	}
}

// entry builds a message of one raw version 1 entry.
func rawMessage(entries ...[]byte) []byte {
	m := []byte{0, 7, 0, 0, byte(len(entries)), 1, 0, 0}
	for _, e := range entries {
		for len(m)%4 != 0 {
			m = append(m, 0)
		}
		m = append(m, e...)
	}
	binary.BigEndian.PutUint16(m[2:], uint16(len(m)))
	return m
}

func rawEntry(opts ...byte) []byte {
	e := make([]byte, ConnLenV4, ConnLenV4+len(opts))
	e[1] = 6
	e = append(e, opts...)
	binary.BigEndian.PutUint16(e[2:], uint16(len(e)))
	return e
}

func TestReaderRefuses(t *testing.T) {
	good := rawEntry()
	seq := append([]byte{OptSeq, SeqLen}, make([]byte, SeqLen)...)
	withVersion := rawEntry()
	withVersion[2] |= 0x10
	badType := rawEntry()
	badType[0] = 2
	shortV6 := rawEntry()
	shortV6[0] = 1
	tooLong := rawEntry()
	binary.BigEndian.PutUint16(tooLong[2:], 200)
	for _, tc := range []struct {
		name    string
		msg     []byte
		err     error // from Reset
		read    int   // entries read before the error
		readErr error
		skipped int
	}{
		{name: "empty", msg: nil, err: ErrShort},
		{name: "three bytes", msg: []byte{0, 0, 0}, err: ErrShort},
		{name: "size mismatch", msg: append(rawMessage(good), 0), err: ErrSize},
		{name: "count past the end", msg: func() []byte { m := rawMessage(good); m[4] = 2; return m }(), read: 1, readErr: ErrTruncated},
		{name: "entry size past the end", msg: rawMessage(tooLong), readErr: ErrTruncated},
		{name: "entry version", msg: rawMessage(good, withVersion, good), read: 1, readErr: ErrVersion},
		{name: "entry type", msg: rawMessage(badType), readErr: ErrType},
		{name: "ipv6 entry too short", msg: rawMessage(shortV6), readErr: ErrTruncated},
		{name: "option header cut", msg: rawMessage(rawEntry(OptSeq)), readErr: ErrOption},
		{name: "option of length 0", msg: rawMessage(rawEntry(OptSeq, 0)), readErr: ErrOption},
		{name: "option past the entry", msg: rawMessage(rawEntry(OptPEData, 5, 1, 2)), readErr: ErrOption},
		{name: "short seq", msg: rawMessage(rawEntry(OptSeq, 4, 0, 0, 0, 0)), readErr: ErrOption},
		{name: "seq twice", msg: rawMessage(rawEntry(append(seq, seq...)...)), readErr: ErrOption},
		{name: "long pe name", msg: rawMessage(rawEntry(append([]byte{OptPEName, 17}, make([]byte, 17)...)...)), readErr: ErrOption},
		{name: "unknown mandatory option", msg: rawMessage(good, rawEntry(9, 1, 0), good), read: 2, skipped: 1},
		{name: "unknown optional option", msg: rawMessage(rawEntry(OptOptional|9, 1, 0)), read: 1},
		{name: "optional option aliasing seq", msg: rawMessage(rawEntry(append([]byte{OptOptional | OptSeq, SeqLen}, make([]byte, SeqLen)...)...)), read: 1},
	} {
		var r Reader
		err := r.Reset(tc.msg)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: reset: %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err != nil {
			if r.Next(&Conn{}) {
				t.Errorf("%s: Next after a failed Reset", tc.name)
			}
			continue
		}
		n := 0
		var c Conn
		for r.Next(&c) {
			n++
		}
		if n != tc.read || !errors.Is(r.Err(), tc.readErr) || r.Skipped() != tc.skipped {
			t.Errorf("%s: read %d (err %v, %d skipped), want %d (err %v, %d skipped)", tc.name, n, r.Err(), r.Skipped(), tc.read, tc.readErr, tc.skipped)
		}
	}
}

// TestOddTypeIsV6: Linux takes any odd type as IPv6.
func TestOddTypeIsV6(t *testing.T) {
	m := encode(t, 1472, sample()[3:4])[0]
	m[HeaderLen] = 3
	got := decode(t, [][]byte{m})
	if len(got) != 1 || !got[0].V6 || got[0].CAddr != client6 {
		t.Fatalf("%+v", got)
	}
}

func TestVersion0(t *testing.T) {
	// Two entries, the second with sequence data (in the sender's memory
	// order, little-endian).
	e1 := []byte{0, 6, 0xa2, 0xd6, 0x01, 0xbb, 0x01, 0xbb, 198, 18, 0, 2, 198, 18, 0, 1, 198, 18, 1, 2, 0x00, 0x40, 0, 1}
	e2 := []byte{0, 17, 0x9c, 0x40, 0, 53, 0, 53, 198, 18, 0, 2, 198, 18, 0, 1, 198, 18, 1, 2, 0x06, 0x00, 0, 0}
	seq := []byte{1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0}
	m := append([]byte{2, 9, 0, 0}, e1...)
	m = append(m, e2...)
	m = append(m, seq...)
	binary.BigEndian.PutUint16(m[2:], uint16(len(m)))
	var r Reader
	if err := r.Reset(m); err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h != (Header{Version: 0, SyncID: 9, Size: len(m), Count: 2}) {
		t.Fatalf("header %+v", h)
	}
	var got []Conn
	var c Conn
	for r.Next(&c) {
		got = append(got, c)
	}
	want := []Conn{
		{Proto: 6, Flags: FlagHashed, State: 1, CPort: 41686, VPort: 443, DPort: 443, CAddr: client4, VAddr: vip4, DAddr: rs4},
		{Proto: 17, Flags: SeqMask, CPort: 40000, VPort: 53, DPort: 53, CAddr: client4, VAddr: vip4, DAddr: rs4,
			HasSeq: true, InSeq: Seq{1, 2, 3}, OutSeq: Seq{4, 5, 6}},
	}
	if r.Err() != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("err %v\n got %+v\nwant %+v", r.Err(), got, want)
	}
	// Cut inside the sequence data: the second entry is refused.
	m = m[:len(m)-1]
	binary.BigEndian.PutUint16(m[2:], uint16(len(m)))
	r.Reset(m)
	n := 0
	for r.Next(&c) {
		n++
	}
	if n != 1 || !errors.Is(r.Err(), ErrTruncated) {
		t.Errorf("cut message: %d entries, err %v", n, r.Err())
	}
}

func TestControl(t *testing.T) {
	m := AppendControl(nil, 7, ControlResync)
	id, typ, ok := ParseControl(m)
	if !ok || id != 7 || typ != ControlResync || len(m) != ControlLen {
		t.Fatalf("% x: %d %d %v", m, id, typ, ok)
	}
	// What a Linux backup does with it: a valid version 1 message of no
	// entries.
	var r Reader
	if err := r.Reset(m); err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.Version != 1 || h.Count != 0 || r.Next(&Conn{}) || r.Err() != nil {
		t.Fatalf("header %+v, err %v", h, r.Err())
	}
	for i := range m {
		b := bytes.Clone(m)
		b[i] ^= 0x80
		if _, _, ok := ParseControl(b); ok && i != 1 && i != 12 {
			t.Errorf("byte %d changed, still a control message", i)
		}
	}
	if _, _, ok := ParseControl(encode(t, 1472, sample()[:1])[0]); ok {
		t.Error("an ordinary message parsed as a control message")
	}
}

func TestAllocs(t *testing.T) {
	cs := sample()
	w := NewWriter(7, 1472)
	var r Reader
	var c Conn
	n := testing.AllocsPerRun(100, func() {
		w.Reset()
		for i := range cs {
			if err := w.Add(&cs[i]); err != nil {
				panic(err)
			}
		}
		if err := r.Reset(w.Bytes()); err != nil {
			panic(err)
		}
		for r.Next(&c) {
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per encode and decode", n)
	}
}

func BenchmarkEncode(b *testing.B) {
	c := sample()[0]
	w := NewWriter(7, 1472)
	b.ReportAllocs()
	for b.Loop() {
		if err := w.Add(&c); errors.Is(err, ErrFull) {
			w.Bytes()
			w.Reset()
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	c := sample()[0]
	cs := make([]Conn, 40)
	for i := range cs {
		cs[i] = c
	}
	m := encode(b, 1472, cs)[0]
	var r Reader
	var d Conn
	b.ReportAllocs()
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		r.Reset(m)
		for r.Next(&d) {
		}
	}
}
