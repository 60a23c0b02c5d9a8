package conntrack

import (
	"errors"
	"testing"
	"time"
)

func TestTemplateLifecycle(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	k := TemplateKey{Proto: protoTCP, Client: addr("198.18.7.0"), VAddr: vip, VPort: 80}
	var tp Template
	if _, ok := tt.LookupTemplate(&k, &tp); ok {
		t.Fatal("template in an empty table")
	}
	ref, err := tt.InsertTemplate(&k, &Template{Svc: 1, Dest: 2, DAddr: rs[1], DPort: 8080, Timeout: 300 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if tt.counts.getPersist(2) != 1 || tt.Templates() != 1 {
		t.Fatalf("persist %d templates %d", tt.counts.getPersist(2), tt.Templates())
	}

	// A connection made through the template holds it.
	c := mkConn(1, true, protoTCP)
	c.DAddr, c.Dest, c.Tmpl = rs[1], 2, ref
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	o := c.Orig()
	var got Conn
	// Keep the connection alive well past the template's timeout.
	for range 40 {
		tt.clock.Advance(10 * time.Second)
		if _, ok := tt.Lookup(&o, ack, &got); !ok {
			t.Fatal("connection lost")
		}
		tt.Sweep(1000)
	}
	ref2, ok := tt.LookupTemplate(&k, &tp)
	if !ok || tp.Dest != 2 || tp.DAddr != rs[1] || tp.Timeout != 300*time.Second {
		t.Fatalf("template gone while its connection lives: %v %+v", ok, tp)
	}
	// Using the template pushed its expiry out to the full timeout.
	if left := templateExpiry(tt, k); left < 299*time.Second {
		t.Fatalf("template expires in %v after use", left)
	}
	// After the full timeout the template is re-armed for 60 s at a time
	// while the connection lives.
	tt.clock.Advance(301 * time.Second)
	if _, ok := tt.Lookup(&o, ack, &got); !ok {
		t.Fatal("connection lost")
	}
	tt.Sweep(1000)
	if left := templateExpiry(tt, k); left <= 0 || left > 60*time.Second+10*time.Millisecond {
		t.Fatalf("re-armed template expires in %v", left)
	}

	// The connection ends; then the template expires after its re-arm.
	if !tt.Remove(&o) {
		t.Fatal("remove")
	}
	tt.clock.Advance(61 * time.Second)
	if n := tt.Sweep(1000); n != 1 {
		t.Fatalf("sweep reaped %d", n)
	}
	if _, ok := tt.LookupTemplate(&k, &tp); ok {
		t.Fatal("template outlived its connections and timeout")
	}
	if tt.counts.getPersist(2) != 0 || tt.Templates() != 0 {
		t.Fatalf("persist %d templates %d", tt.counts.getPersist(2), tt.Templates())
	}
	// Its references are stale now: a connection given one is not linked.
	c2 := mkConn(2, true, protoTCP)
	c2.Tmpl = ref2
	if err := tt.Insert(&c2, syn); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, tt)
}

// templateExpiry returns the remaining time of template k from Walk.
func templateExpiry(tt *testTable, k TemplateKey) time.Duration {
	var left time.Duration
	tt.Walk(func(c *Conn, exp time.Duration) bool {
		if c.Template && c.Client == k.Client && c.VPort == k.VPort && c.FWMark == k.FWMark {
			left = exp
			return false
		}
		return true
	})
	return left
}

func TestTemplateExpiresWithoutConns(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	k := TemplateKey{Proto: protoUDP, Client: addr("198.18.7.1"), VAddr: vip, VPort: 53}
	if _, err := tt.InsertTemplate(&k, &Template{Dest: 1, Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	tt.clock.Advance(9 * time.Second)
	var tp Template
	if _, ok := tt.LookupTemplate(&k, &tp); !ok {
		t.Fatal("expired early")
	}
	tt.clock.Advance(11 * time.Second)
	if _, ok := tt.LookupTemplate(&k, &tp); ok {
		t.Fatal("expired template found")
	}
	if tt.counts.getPersist(1) != 0 {
		t.Fatal("persist count kept")
	}
	// The default timeout is 360 s.
	if _, err := tt.InsertTemplate(&k, &Template{Dest: 1}); err != nil {
		t.Fatal(err)
	}
	if left := templateExpiry(tt, k); left < 359*time.Second || left > 361*time.Second {
		t.Fatalf("default timeout gives %v", left)
	}
	checkInvariants(t, tt)
}

func TestTemplateReplaceAndRemove(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	k := TemplateKey{Client: addr("198.18.7.2"), FWMark: 20}
	ref, _ := tt.InsertTemplate(&k, &Template{Dest: 1, Timeout: time.Minute})
	c := mkConn(3, false, protoTCP)
	c.Tmpl = ref
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	// The real server went: the director makes a new template over it.
	if _, err := tt.InsertTemplate(&k, &Template{Dest: 2, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	var tp Template
	if _, ok := tt.LookupTemplate(&k, &tp); !ok || tp.Dest != 2 {
		t.Fatalf("replaced template: %v %+v", ok, tp)
	}
	if tt.counts.getPersist(1) != 0 || tt.counts.getPersist(2) != 1 || tt.Templates() != 1 {
		t.Fatal("persist counts after replace")
	}
	// The old template's slot is still held by the connection; a stale
	// ref to it is not honoured.
	c2 := mkConn(4, false, protoTCP)
	c2.Tmpl = ref
	if err := tt.Insert(&c2, syn); err != nil {
		t.Fatal(err)
	}
	co, c2o := c.Orig(), c2.Orig()
	tt.Remove(&co)
	tt.Remove(&c2o)
	// Other keys do not match: port, protocol, mark.
	for _, other := range []TemplateKey{
		{Client: k.Client, FWMark: 21},
		{Proto: protoTCP, Client: k.Client, VAddr: vip, VPort: 80},
	} {
		if _, ok := tt.LookupTemplate(&other, &tp); ok {
			t.Fatalf("%+v matched", other)
		}
	}
	if !tt.RemoveTemplate(&k) || tt.RemoveTemplate(&k) {
		t.Fatal("RemoveTemplate")
	}
	if tt.Templates() != 0 || tt.counts.getPersist(2) != 0 {
		t.Fatal("counts after remove")
	}
	// Walk shows fwmark templates by their mark.
	tt.InsertTemplate(&k, &Template{Dest: 3, DAddr: rs[2], Timeout: time.Minute})
	seen := false
	tt.Walk(func(c *Conn, _ time.Duration) bool {
		if c.Template {
			seen = c.FWMark == 20 && c.Proto == 0 && c.CPort == 0 && c.State == StateNone && c.DAddr == rs[2]
		}
		return true
	})
	if !seen {
		t.Fatal("fwmark template not listed")
	}
	checkInvariants(t, tt)
}

func TestTemplateCapacity(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 2, Shards: 1})
	for i := range 3 {
		k := TemplateKey{Proto: protoTCP, Client: addr("198.18.8.1"), VAddr: vip, VPort: uint16(i + 1)}
		_, err := tt.InsertTemplate(&k, &Template{Dest: 1})
		if i < 2 && err != nil || i == 2 && !errors.Is(err, ErrFull) {
			t.Fatalf("template %d: %v", i, err)
		}
	}
	checkInvariants(t, tt)
}
