package conntrack

import (
	"sync"
	"testing"
	"time"
)

// TestConcurrent hammers one table from several goroutines with
// overlapping connections, templates, sweeps and walks; run it with -race.
// Afterwards the counts must still match the table exactly.
func TestConcurrent(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 8, Capacity: 3000})
	const workers, rounds, pool = 4, 3000, 2048
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got Conn
			var tp Template
			for i := range rounds {
				n := (i*7919 + w*104729) % pool
				c := mkConn(n, n%3 == 2, protoTCP)
				key := TemplateKey{Proto: protoTCP, Client: c.Client, VAddr: vip, VPort: 80}
				switch i % 8 {
				case 0, 1:
					if r, ok := tt.LookupTemplate(&key, &tp); ok {
						c.Tmpl = r
					} else if r, err := tt.InsertTemplate(&key, &Template{Dest: c.Dest, Timeout: time.Second}); err == nil {
						c.Tmpl = r
					}
					tt.Insert(&c, syn)
				case 2, 3, 4:
					o := c.Orig()
					tt.Lookup(&o, [...]uint8{ack, fin, psh, syn}[i%4], &got)
				case 5:
					r := c.Reply()
					tt.Lookup(&r, [...]uint8{synack, fin, rst}[i%3], &got)
				case 6:
					if i%64 == 6 {
						tt.RemoveTemplate(&key)
					} else {
						o := c.Orig()
						tt.Remove(&o)
					}
				case 7:
					switch {
					case w == 0 && i%32 == 7:
						tt.clock.Advance(3 * time.Second)
					case w == 1 && i%256 == 7:
						tt.Walk(func(*Conn, time.Duration) bool { return true })
					default:
						tt.Sweep(8)
					}
				}
			}
		}()
	}
	wg.Wait()
	if tt.Len() > 3000 {
		t.Fatalf("Len %d above capacity", tt.Len())
	}
	checkInvariants(t, tt)
	// Templates held by connections are re-armed for 60 s when they
	// expire; they go after their connections.
	for range 2 {
		tt.clock.Advance(2000 * time.Second)
		for range 4 {
			tt.Sweep(1 << 20)
		}
	}
	checkInvariants(t, tt)
	if tt.Len() != 0 || tt.Templates() != 0 {
		t.Fatalf("after everything expired: Len %d, templates %d", tt.Len(), tt.Templates())
	}
}

// TestNoAllocs: the packet path allocates nothing once the shards have
// grown to their working size.
func TestNoAllocs(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	conns := make([]Conn, 512)
	for i := range conns {
		conns[i] = mkConn(i, false, protoTCP)
		if err := tt.Insert(&conns[i], syn); err != nil {
			t.Fatal(err)
		}
	}
	key := TemplateKey{Proto: protoTCP, Client: conns[0].Client, VAddr: vip, VPort: 80}
	ref, _ := tt.InsertTemplate(&key, &Template{Dest: 1})
	var got Conn
	var tp Template
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		c := &conns[i%len(conns)]
		o, r := c.Orig(), c.Reply()
		tt.Lookup(&o, ack, &got)
		tt.Lookup(&r, psh, &got)
		i++
	}); a != 0 {
		t.Errorf("Lookup allocates %v", a)
	}
	extra := mkConn(10000, false, protoTCP)
	extra.Tmpl = ref
	eo := extra.Orig()
	if a := testing.AllocsPerRun(1000, func() {
		if err := tt.Insert(&extra, syn); err != nil {
			t.Fatal(err)
		}
		if !tt.Remove(&eo) {
			t.Fatal("remove")
		}
	}); a != 0 {
		t.Errorf("Insert+Remove allocates %v", a)
	}
	if a := testing.AllocsPerRun(1000, func() {
		tt.LookupTemplate(&key, &tp)
		tt.Sweep(16)
	}); a != 0 {
		t.Errorf("LookupTemplate+Sweep allocates %v", a)
	}
}
