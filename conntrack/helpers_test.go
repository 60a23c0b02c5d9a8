package conntrack

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// fataler is what the checks need of *testing.T and *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// fakeClock is the tests' monotonic clock.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() int64              { return c.ns.Load() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// destCounts plays the director's real-server counters: it sums what the hooks report.
type destCounts struct {
	mu                        sync.Mutex
	active, inactive, persist map[uint32]int32
}

func newDestCounts() *destCounts {
	return &destCounts{active: map[uint32]int32{}, inactive: map[uint32]int32{}, persist: map[uint32]int32{}}
}

func (d *destCounts) add(dest uint32, a, i int32) {
	d.mu.Lock()
	d.active[dest] += a
	d.inactive[dest] += i
	d.mu.Unlock()
}

func (d *destCounts) addPersist(dest uint32, n int32) {
	d.mu.Lock()
	d.persist[dest] += n
	d.mu.Unlock()
}

func (d *destCounts) get(dest uint32) (active, inactive int32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active[dest], d.inactive[dest]
}

func (d *destCounts) getPersist(dest uint32) int32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.persist[dest]
}

type testTable struct {
	*Table
	clock  *fakeClock
	counts *destCounts
}

func newTestTable(t fataler, cfg Config) *testTable {
	t.Helper()
	tt := &testTable{clock: new(fakeClock), counts: newDestCounts()}
	tt.clock.ns.Store(int64(time.Hour)) // not zero, to catch epoch mistakes
	cfg.Now = tt.clock.Now
	cfg.Counts = tt.counts.add
	cfg.Persist = tt.counts.addPersist
	tt.Table = New(&cfg)
	return tt
}

func addr(s string) Addr { return AddrFrom(netip.MustParseAddr(s)) }

var (
	vip   = addr("198.18.0.100")
	rs    = [3]Addr{addr("198.18.1.2"), addr("198.18.1.3"), addr("198.18.1.4")}
	vip6  = addr("2001:2::100")
	rs6   = addr("2001:2:0:1::2")
	peerM = [6]byte{2, 0, 0, 0, 0, 1}
)

// protoUDP is UDP's IP protocol number (protoTCP is the table's).
const protoUDP = 17

// mkConn is connection number n of a client, to real server n%3 (dest
// ID n%3+1); NAT unless inputOnly (DR, tunnel). Its Fwd is an opaque
// value made from n, which the table must give back unchanged.
func mkConn(n int, inputOnly bool, proto uint8) Conn {
	client := addr(fmt.Sprintf("198.18.%d.%d", 2+n>>8&0xff, n&0xff))
	return Conn{
		Proto: proto, Client: client, CPort: uint16(10000 + n>>16), VAddr: vip, VPort: 80,
		DAddr: rs[n%3], DPort: 8080, Svc: 1, Dest: uint32(n%3 + 1), Fwd: uint8(n%5 + 1),
		InputOnly: inputOnly, PeerMAC: peerM, PeerIf: 3,
	}
}

// checkInvariants recounts the table from its slabs and compares with
// what the hooks reported, the live count and the index.
func checkInvariants(t fataler, tt *testTable) {
	t.Helper()
	tb := tt.Table
	active := map[uint32]int32{}
	inactive := map[uint32]int32{}
	total := 0
	links := map[uint32]uint32{}
	for si := range tb.shards {
		s := &tb.shards[si]
		s.mu.Lock()
		slots := 0
		for _, v := range s.index {
			if v != 0 {
				slots++
			}
		}
		want := 0
		for i := uint32(0); i < s.nent; i++ {
			e := s.ent(i)
			if e.flags&fUsed == 0 {
				continue
			}
			total++
			want++
			if e.link != 0 {
				links[e.link]++
			}
			if e.flags&fReply != 0 {
				want++
			}
			if e.state.Active() {
				active[e.dest]++
			} else {
				inactive[e.dest]++
			}
			var c Conn
			e.copyTo(&c)
			o := c.Orig()
			h := tb.hashEnd(o.Proto, &o.Src, o.SrcPort)
			if tb.shardOf(h) != s {
				t.Fatalf("entry %v in the wrong shard", o)
			}
			if _, j, ok := s.find(tb.hashFull(h, &o.Dst, o.DstPort, Orig), Orig, &o); !ok || j != i {
				t.Fatalf("entry %d not found by its orig tuple", i)
			}
			if e.flags&fReply != 0 {
				r := c.Reply()
				if _, j, ok := s.find(tb.hashFull(h, &r.Src, r.SrcPort, Reply), Reply, &r); !ok || j != i {
					t.Fatalf("entry %d not found by its reply tuple", i)
				}
			}
		}
		if slots != want || s.used != want {
			t.Fatalf("shard %d: %d slots used, counted %d, %d expected", si, slots, s.used, want)
		}
		s.mu.Unlock()
	}
	if total != tb.Len() {
		t.Fatalf("Len %d, %d entries in the slabs", tb.Len(), total)
	}
	for d := uint32(0); d < 8; d++ {
		a, i := tt.counts.get(d)
		if a != active[d] || i != inactive[d] {
			t.Fatalf("dest %d: hooks say active %d inactive %d, table holds %d/%d", d, a, i, active[d], inactive[d])
		}
	}
	// Templates: the persist hook matches the live templates.
	persist := map[uint32]int32{}
	ntmpl := 0
	for si := range tb.tshards {
		s := &tb.tshards[si]
		s.mu.Lock()
		for k, i := range s.m {
			e := &s.ents[i]
			if !e.used || e.dead || e.key != k {
				t.Fatalf("template map points at a bad slot")
			}
			persist[e.dest]++
			ntmpl++
		}
		s.mu.Unlock()
	}
	if ntmpl != tb.Templates() {
		t.Fatalf("Templates() %d, %d in the maps", tb.Templates(), ntmpl)
	}
	for si := range tb.tshards {
		s := &tb.tshards[si]
		s.mu.Lock()
		for i := range s.ents {
			e := &s.ents[i]
			if n := links[ref32(si, uint32(i))]; e.refs != n || n > 0 && !e.used {
				t.Fatalf("template %d/%d: %d refs, %d connections link to it", si, i, e.refs, n)
			}
		}
		s.mu.Unlock()
	}
	for d := uint32(0); d < 8; d++ {
		if got := tt.counts.getPersist(d); got != persist[d] {
			t.Fatalf("dest %d: persist hook says %d, %d templates", d, got, persist[d])
		}
	}
}
