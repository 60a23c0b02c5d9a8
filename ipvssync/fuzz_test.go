package ipvssync

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode: any datagram is read without panic, within its bounds, and
// every entry read encodes back to an entry that reads the same.
func FuzzDecode(f *testing.F) {
	for _, m := range kernelMessages(f) {
		f.Add(m)
	}
	for _, m := range encode(f, 200, sample()) {
		f.Add(m)
	}
	f.Add(AppendControl(nil, 1, ControlResync))
	f.Add([]byte{1, 0, 0, 28, 0, 6, 0, 80, 0, 80, 0, 80, 198, 18, 0, 2, 198, 18, 0, 1, 198, 18, 1, 2, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		var r Reader
		if err := r.Reset(b); err != nil {
			return
		}
		var c Conn
		w := NewWriter(r.Header().SyncID, MaxMessage)
		n := 0
		for r.Next(&c) {
			n++
			if c.V6 && !c.CAddr.Is6() || !c.V6 && !c.CAddr.Is4() {
				t.Fatalf("entry %d: family %v with address %s", n, c.V6, c.CAddr)
			}
			if len(c.PEData) > MaxPEData || len(c.PEName) > MaxPEName {
				t.Fatalf("entry %d: option too long", n)
			}
			if c.PEName != nil && c.PEData == nil {
				continue // Linux sends no name without data; not ours to encode
			}
			w.Reset()
			if err := w.Add(&c); err != nil {
				t.Fatalf("entry %d: re-encode: %v", n, err)
			}
			var r2 Reader
			if err := r2.Reset(w.Bytes()); err != nil {
				t.Fatalf("entry %d: re-read: %v", n, err)
			}
			var c2 Conn
			if !r2.Next(&c2) {
				t.Fatalf("entry %d: re-read: %v", n, r2.Err())
			}
			c.Flags &^= FlagHashed | FlagSync // never sent
			if !reflect.DeepEqual(norm(c), norm(c2)) {
				t.Fatalf("entry %d: re-read\n got %+v\nwant %+v", n, c2, c)
			}
		}
		if n+r.Skipped() > r.Header().Count {
			t.Fatalf("read %d and skipped %d of %d", n, r.Skipped(), r.Header().Count)
		}
		if r.Err() != nil && !errors.Is(r.Err(), ErrTruncated) && !errors.Is(r.Err(), ErrType) &&
			!errors.Is(r.Err(), ErrVersion) && !errors.Is(r.Err(), ErrOption) {
			t.Fatalf("unexpected error %v", r.Err())
		}
		if !bytes.Equal(b, orig) {
			t.Fatal("the reader changed the message")
		}
	})
}

// norm makes empty option data nil, as a reader returns it.
func norm(c Conn) Conn {
	if len(c.PEData) == 0 {
		c.PEData = nil
	}
	if len(c.PEName) == 0 {
		c.PEName = nil
	}
	return c
}
