package link

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// A TCPv4 GSO frame as veth hands it over (values of a real capture's
// header, written out by hand in little-endian host order).
func TestVnetHdrDecode(t *testing.T) {
	b, _ := hex.DecodeString("0101" + "4200" + "a805" + "2200" + "1000")
	var h VnetHdr
	h.Decode(b)
	want := VnetHdr{Flags: VnetHdrFNeedsCsum, GSOType: GSOTCPv4, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	if h != want {
		t.Errorf("Decode = %+v, want %+v", h, want)
	}
	out := make([]byte, VnetHdrLen)
	h.Encode(out)
	if !bytes.Equal(out, b) {
		t.Errorf("Encode = %x, want %x", out, b)
	}
}

func TestVnetHdrShortPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Decode of 9 bytes did not panic")
		}
	}()
	var h VnetHdr
	h.Decode(make([]byte, VnetHdrLen-1))
}

func TestVnetHdrNoAlloc(t *testing.T) {
	b := make([]byte, VnetHdrLen)
	var h VnetHdr
	if n := testing.AllocsPerRun(100, func() { h.Decode(b); h.Encode(b) }); n != 0 {
		t.Errorf("Decode+Encode allocate %.1f times", n)
	}
}

// FuzzVnetHdr: any 10 bytes decode, and encoding gives the same bytes back;
// bytes past the header are left alone.
func FuzzVnetHdr(f *testing.F) {
	f.Add([]byte{1, 1, 0x42, 0, 0xa8, 5, 0x22, 0, 0x10, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add([]byte{2, 0x84, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < VnetHdrLen {
			return
		}
		var h VnetHdr
		h.Decode(b)
		out := bytes.Repeat([]byte{0xa5}, len(b))
		h.Encode(out)
		if !bytes.Equal(out[:VnetHdrLen], b[:VnetHdrLen]) {
			t.Fatalf("round trip %x -> %+v -> %x", b[:VnetHdrLen], h, out[:VnetHdrLen])
		}
		for _, c := range out[VnetHdrLen:] {
			if c != 0xa5 {
				t.Fatalf("Encode wrote past the header: %x", out)
			}
		}
	})
}
