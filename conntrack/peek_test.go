package conntrack

import (
	"net/netip"
	"testing"
	"time"
)

// Peek finds a connection from either side without touching its state or
// expiry.
func TestPeek(t *testing.T) {
	var now int64
	tb := New(&Config{Now: func() int64 { return now }})
	c := Conn{Proto: protoTCP,
		Client: AddrFrom(netip.MustParseAddr("198.18.0.2")), CPort: 40000,
		VAddr: AddrFrom(netip.MustParseAddr("198.18.0.1")), VPort: 80,
		DAddr: AddrFrom(netip.MustParseAddr("198.18.1.2")), DPort: 80, Dest: 1}
	if err := tb.Insert(&c, FlagSYN); err != nil {
		t.Fatal(err)
	}
	var before time.Duration
	tb.Walk(func(_ *Conn, exp time.Duration) bool { before = exp; return true })
	now += int64(10 * time.Second)
	var got Conn
	orig, reply := c.Orig(), c.Reply()
	if d, ok := tb.Peek(&reply, &got); !ok || d != Reply || got.State != StateSynRecv && got.State != StateSynSent {
		t.Fatalf("Peek reply: dir %v ok %v state %v", d, ok, got.State)
	}
	first := got.State
	if d, ok := tb.Peek(&orig, &got); !ok || d != Orig || got.State != first {
		t.Fatalf("Peek orig: dir %v ok %v state %v", d, ok, got.State)
	}
	var after time.Duration
	tb.Walk(func(_ *Conn, exp time.Duration) bool { after = exp; return true })
	if before-after < 9*time.Second {
		t.Errorf("Peek refreshed the expiry: %v then %v", before, after)
	}
	now += int64(200 * time.Second)
	if _, ok := tb.Peek(&orig, &got); ok {
		t.Error("Peek found an expired connection")
	}
}
