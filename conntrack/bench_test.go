package conntrack

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// benchConn is connection n of a large population: clients spread over
// 198.18.0.0/15, then over source ports.
func benchConn(n int) Conn {
	var client Addr
	client[10], client[11] = 0xff, 0xff
	client[12], client[13] = 198, 18+byte(n>>16&1)
	client[14], client[15] = byte(n>>8), byte(n)
	return Conn{
		Proto: protoTCP, Client: client, CPort: uint16(1024 + n>>17), VAddr: vip, VPort: 80,
		DAddr: rs[n%3], DPort: 8080, Svc: 1, Dest: uint32(n%3 + 1),
		PeerMAC: peerM, PeerIf: 3,
	}
}

func fillTable(b *testing.B, tb *Table, n int) {
	for i := range n {
		c := benchConn(i)
		if err := tb.Insert(&c, syn); err != nil {
			b.Fatalf("insert %d: %v", i, err)
		}
		o := c.Orig()
		var got Conn
		tb.Lookup(&o, ack, &got) // ESTABLISHED, the common case
	}
}

func BenchmarkLookupHit(b *testing.B) { benchLookup(b, false, nil) }

// BenchmarkLookupHitClock is LookupHit with a Clock refreshed every 64
// lookups, as a batching packet loop would.
func BenchmarkLookupHitClock(b *testing.B) { benchLookup(b, false, NewClock()) }

func BenchmarkLookupReply(b *testing.B) { benchLookup(b, true, nil) }

// benchLookup looks up 1024 established connections in turn, by their
// Orig or Reply tuple, reading the time from clk (ticked every 64
// lookups) when it is not nil.
func benchLookup(b *testing.B, reply bool, clk *Clock) {
	cfg := &Config{Counts: func(uint32, int32, int32) {}}
	if clk != nil {
		cfg.Now = clk.Now
	}
	tb := New(cfg)
	const n = 1024
	fillTable(b, tb, n)
	tuples := make([]Tuple, n)
	for i := range tuples {
		c := benchConn(i)
		if reply {
			tuples[i] = c.Reply()
		} else {
			tuples[i] = c.Orig()
		}
	}
	var got Conn
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if clk != nil && i&63 == 0 {
			clk.Tick()
		}
		if _, ok := tb.Lookup(&tuples[i&(n-1)], ack, &got); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkInsertRemove(b *testing.B) {
	tb := New(&Config{Counts: func(uint32, int32, int32) {}})
	fillTable(b, tb, 1024)
	c := benchConn(5000)
	o := c.Orig()
	b.ReportAllocs()
	for b.Loop() {
		if err := tb.Insert(&c, syn); err != nil {
			b.Fatal(err)
		}
		if !tb.Remove(&o) {
			b.Fatal("remove")
		}
	}
}

// big is a table of 1M (or 10M) established NAT connections, built once
// per size, with the heap it took.
var big = map[int]*struct {
	once      sync.Once
	tb        *Table
	bytesConn float64
}{1 << 20: {}, 10 << 20: {}}

func bigTable(b *testing.B, n int) (*Table, float64) {
	bt := big[n]
	bt.once.Do(func() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var active, inactive atomic.Int64
		tb := New(&Config{Capacity: n + n/8, Counts: func(_ uint32, a, i int32) {
			active.Add(int64(a))
			inactive.Add(int64(i))
		}})
		fillTable(b, tb, n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		bt.tb = tb
		bt.bytesConn = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
		if active.Load() != int64(n) || inactive.Load() != 0 {
			b.Fatalf("counts %d/%d", active.Load(), inactive.Load())
		}
	})
	return bt.tb, bt.bytesConn
}

// scramble spreads consecutive i over the population, so that lookups
// miss the caches as real traffic would.
func scramble(i, n int) int { return int(uint64(i) * 0x9E3779B97F4A7C15 >> 20 % uint64(n)) }

func benchBig(b *testing.B, n int) {
	tb, per := bigTable(b, n)
	b.ReportAllocs()
	var seed atomic.Int64
	b.ResetTimer()
	defer b.ReportMetric(per, "bytes/conn") // after ResetTimer, which clears metrics
	b.RunParallel(func(pb *testing.PB) {
		var got Conn
		i := int(seed.Add(1) << 40)
		for pb.Next() {
			c := benchConn(scramble(i, n))
			o := c.Orig()
			if _, ok := tb.Lookup(&o, ack, &got); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkLookup1M: lookups spread over 1M connections from all cores;
// also reports the table's heap per connection.
func BenchmarkLookup1M(b *testing.B) { benchBig(b, 1<<20) }

// BenchmarkLookup10M is the same at 10M connections (about 1 GB, and
// tens of seconds to build): run it by name.
func BenchmarkLookup10M(b *testing.B) {
	if testing.Short() {
		b.Skip("10M connections")
	}
	benchBig(b, 10<<20)
}

// BenchmarkSweep1M: one Sweep(256) pass over a 1M table where nothing
// has expired: the price of the background reaper.
func BenchmarkSweep1M(b *testing.B) {
	tb, _ := bigTable(b, 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		tb.Sweep(256)
	}
}
