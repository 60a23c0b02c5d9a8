package ipvssync

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// kernelMessages reads the datagrams a Linux master sent (testdata).
func kernelMessages(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open("testdata/kernel-6.1-master.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		_, h, ok := strings.Cut(line, " ")
		b, err := hex.DecodeString(h)
		if !ok || err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		msgs = append(msgs, b)
	}
	if len(msgs) == 0 {
		t.Fatal("no datagrams in testdata")
	}
	return msgs
}

// TestKernelGolden: every datagram a Linux master sent decodes, and
// encoding what was decoded gives the same bytes back.
func TestKernelGolden(t *testing.T) {
	var kinds = map[string]bool{}
	for i, m := range kernelMessages(t) {
		var r Reader
		if err := r.Reset(m); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		h := r.Header()
		if h.Version != 1 || h.SyncID != 7 {
			t.Fatalf("datagram %d: header %+v", i, h)
		}
		w := NewWriter(h.SyncID, 1472)
		var c Conn
		n := 0
		for r.Next(&c) {
			n++
			if err := w.Add(&c); err != nil {
				t.Fatalf("datagram %d entry %d: add: %v", i, n, err)
			}
			switch {
			case c.Flags&FlagTemplate != 0:
				kinds["template"] = true
				if c.CPort != 0 || c.Timeout != 300 || c.Flags != FlagTemplate|FlagInactive || c.State > 1 {
					t.Errorf("datagram %d entry %d: template %+v", i, n, c)
				}
			case c.V6:
				kinds["ipv6"] = true
				if c.CAddr != netip.MustParseAddr("2001:2::2") || c.DAddr != netip.MustParseAddr("2001:2:1::2") {
					t.Errorf("datagram %d entry %d: %+v", i, n, c)
				}
			case c.Proto == 17:
				kinds["udp"] = true
				if c.CPort != 40000 || c.State != 0 || c.Flags != FlagInactive || c.Timeout != 300 {
					t.Errorf("datagram %d entry %d: udp %+v", i, n, c)
				}
			case c.Flags&FwdMask == FwdRoute:
				kinds["dr"] = true
			case c.Flags&FwdMask == FwdTunnel:
				kinds["tun"] = true
			}
			// Established entries are active and carry the ESTABLISHED
			// timeout; the others are inactive.
			if c.Proto == 6 && c.Flags&FlagTemplate == 0 {
				if (c.State == 1) != (c.Flags&FlagInactive == 0) {
					t.Errorf("datagram %d entry %d: state %d with flags %#x", i, n, c.State, c.Flags)
				}
				if want := map[uint16]uint32{1: 900, 5: 120, 7: 60}[c.State]; c.Timeout != want {
					t.Errorf("datagram %d entry %d: state %d timeout %d", i, n, c.State, c.Timeout)
				}
			}
		}
		if r.Err() != nil || n != h.Count {
			t.Fatalf("datagram %d: read %d of %d: %v", i, n, h.Count, r.Err())
		}
		if !bytes.Equal(w.Bytes(), m) {
			t.Errorf("datagram %d re-encoded differs:\n got %x\nwant %x", i, w.Bytes(), m)
		}
	}
	for _, k := range []string{"template", "ipv6", "udp", "dr", "tun"} {
		if !kinds[k] {
			t.Errorf("no %s entry in the kernel's datagrams", k)
		}
	}
}
