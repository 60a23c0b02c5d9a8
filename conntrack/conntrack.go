// Package conntrack is the director's connection table: which real server
// each client connection was given to, in which TCP state it is, and when
// it expires.
//
// The table is split into shards, each with its own lock. Both directions
// of a connection (the client's packets, and for NAT the real server's
// replies) are indexed in the same shard, chosen by a seeded hash of the
// client's endpoint (protocol, address, port), which both directions
// carry. A shard is an open-addressing index of 8-byte slots into a slab
// of pointer-free entries, so the garbage collector never scans the
// table, and lookups, inserts and removals allocate nothing.
//
// There is no timer per entry. An entry carries its expiry time; expired
// entries are removed when a lookup, insert or walk meets them, and by
// Sweep, which the director calls periodically with a bounded budget.
//
// Real-server connection counts are kept exact through Config.Counts:
// every entry contributes to its server's active or inactive count from
// its insertion until it is removed, reaped or replaced.
//
// Persistence templates (IPVS.md "Persistence") live in a second, smaller
// table of the same object; connections hold a reference to the template
// they were scheduled through, which keeps it alive.
package conntrack

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Addr is an IP address in 16 bytes; IPv4 is stored IPv4-mapped
// (::ffff:a.b.c.d).
type Addr [16]byte

// AddrFrom converts a netip.Addr.
func AddrFrom(ip netip.Addr) Addr { return ip.As16() }

// Netip converts back; IPv4-mapped addresses come back as IPv4.
func (a Addr) Netip() netip.Addr { return netip.AddrFrom16(a).Unmap() }

// Tuple is one direction of a flow, as read from a packet's headers.
type Tuple struct {
	Src, Dst         Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

// Dir is the direction of a packet relative to its connection.
type Dir uint8

const (
	Orig  Dir = iota // client -> virtual service
	Reply            // real server -> client (NAT only)
)

// Conn is the caller's copy of a table entry.
type Conn struct {
	Proto     uint8
	Client    Addr   // client address (unchanged by NAT)
	CPort     uint16 // client port
	VAddr     Addr   // virtual service address
	VPort     uint16
	DAddr     Addr // real server address
	DPort     uint16
	Svc, Dest uint32 // the director's service and real-server IDs
	Fwd       uint8  // the caller's forwarding method; the table does not interpret it
	// InputOnly: the director sees only the client's packets (LVS-DR,
	// LVS-TUN): the connection has no Reply index and its TCP state
	// follows IPVS's input-only transitions.
	InputOnly bool
	State     State
	PeerMAC   [6]byte     // where client-bound frames go (AF_PACKET mode), learned at insert
	PeerIf    int32       // interface index for client-bound frames
	Tmpl      TemplateRef // Insert: the template the connection was scheduled through, 0 for none; not filled in by Lookup or Walk
	Template  bool        // Walk: this is a persistence template (state NONE, client port 0)
	FWMark    uint32      // Walk: a template's firewall mark, for fwmark services
	// Sync is set by Lookup and Insert when a sync master should send the
	// connection now (SetSync); Tmpl then names its template, if any, for
	// TemplateConn.
	Sync bool
	// Learned: Lookup, Walk: the entry was learned from a sync master
	// (Learn), not scheduled here.
	Learned bool
}

// Orig is the connection's client -> virtual service tuple.
func (c *Conn) Orig() Tuple {
	return Tuple{Src: c.Client, Dst: c.VAddr, SrcPort: c.CPort, DstPort: c.VPort, Proto: c.Proto}
}

// Reply is the tuple of the real server's replies.
func (c *Conn) Reply() Tuple {
	return Tuple{Src: c.DAddr, Dst: c.Client, SrcPort: c.DPort, DstPort: c.CPort, Proto: c.Proto}
}

// Config configures a Table. The zero value, or nil, means the defaults.
type Config struct {
	Capacity int          // max connections (and, separately, templates); default 1<<20
	Shards   int          // lock shards, rounded up to a power of two; default 256
	Now      func() int64 // monotonic nanoseconds; default from package time
	Timeouts Timeouts
	// Counts is called whenever a connection enters the table, moves
	// between an active and an inactive state, or leaves the table, with
	// the deltas for its real server. It is called with a shard lock held:
	// it must be quick and must not call the Table.
	Counts func(dest uint32, dActive, dInactive int32)
	// Persist is called with +1 when a template pointing at dest is
	// created and -1 when it goes (expired, replaced or removed); same
	// rules as Counts.
	Persist func(dest uint32, delta int32)
	// Gone reports that real server dest was deleted. Its connections
	// are dead (the director drops their packets) and no longer hold
	// their tuples against a new connection. Same rules as Counts; nil
	// means none is ever gone.
	Gone func(dest uint32) bool
}

// Timeouts are the ipvsadm --set values: TCP is the ESTABLISHED timeout,
// TCPFin the FIN_WAIT one, UDP the UDP one. A zero value keeps the
// current setting.
type Timeouts struct {
	TCP, TCPFin, UDP time.Duration
}

// halfOpenUnderPressure is the longest a half-open connection lives while
// the table is over three quarters full (Table.timeout).
const halfOpenUnderPressure = 5 * time.Second

// Errors from Insert and InsertTemplate.
var (
	ErrFull   = errors.New("connection table full")
	ErrExists = errors.New("connection already tracked")
)

// Stats are the table's counters since New.
type Stats struct {
	Inserted    uint64 // connections added
	Removed     uint64 // connections taken out by Remove
	Expired     uint64 // connections reaped after their timeout
	Reused      uint64 // entries a new connection replaced: TIME_WAIT/CLOSE ones by a SYN, a deleted real server's by any
	DroppedFull uint64 // Inserts refused at capacity
	Evicted     uint64 // half-open entries shed to make room at capacity
	Templates   uint64 // templates created
	Learned     uint64 // connections created by Learn
}

// Table is the connection table. All methods are safe for concurrent use.
type Table struct {
	shards    []shard
	shardBits uint
	tshards   []tmplShard
	tshardMsk uint64
	seed      [4]uint64
	capacity  int64
	// pressure is the entry count past which half-open entries live
	// halfOpenShort ticks at most (timeout).
	pressure      int64
	pressured     atomic.Bool // UnderPressure's state
	halfOpenShort uint32
	compactions   atomic.Uint64 // shards whose slab was given back (shard.compact)
	count         atomic.Int64  // live connections
	tcount        atomic.Int64  // live templates
	now           func() int64
	epoch         int64
	timeouts      atomic.Pointer[[numStates]uint32] // in ticks
	counts        func(dest uint32, dActive, dInactive int32)
	persist       func(dest uint32, delta int32)
	gone          func(dest uint32) bool
	// syncPol is the sync master's policy (sync.go), 0 when no master runs.
	syncPol atomic.Uint32

	sweepMu  sync.Mutex
	sweepPos int // shard Sweep continues with: conn shards, then template shards
}

const (
	defaultCapacity = 1 << 20
	defaultShards   = 256
	maxShards       = 1 << 16
	maxTmplShards   = 64
)

// New returns an empty table.
func New(cfg *Config) *Table {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Capacity <= 0 {
		c.Capacity = defaultCapacity
	}
	if c.Shards <= 0 {
		c.Shards = defaultShards
	}
	// Every shard must be able to hold its share of the capacity with
	// room to spare for an uneven spread.
	for c.Shards < maxShards && c.Capacity/c.Shards > maxEntries/4 {
		c.Shards *= 2
	}
	bits := uint(0)
	for 1<<bits < c.Shards && 1<<bits < maxShards {
		bits++
	}
	if c.Now == nil {
		base := time.Now()
		c.Now = func() int64 { return int64(time.Since(base)) }
	}
	t := &Table{
		shards:    make([]shard, 1<<bits),
		shardBits: bits,
		capacity:  int64(c.Capacity),
		pressure:  int64(c.Capacity) * 3 / 4,
		now:       c.Now,
		counts:    c.Counts,
		persist:   c.Persist,
		gone:      c.Gone,
	}
	nt := min(1<<bits, maxTmplShards)
	t.tshards = make([]tmplShard, nt)
	t.tshardMsk = uint64(nt - 1)
	for i := range t.tshards {
		t.tshards[i].m = make(map[tmplKey]uint32)
	}
	t.seed = newSeed()
	t.epoch = t.now()
	t.halfOpenShort = durTicks(halfOpenUnderPressure)
	var tt [numStates]uint32
	for s, d := range defaultTimeouts {
		tt[s] = durTicks(d)
	}
	t.timeouts.Store(&tt)
	t.SetTimeouts(c.Timeouts)
	return t
}

// SetTimeouts applies ipvsadm --set values: TCP is the ESTABLISHED
// timeout, TCPFin the FIN_WAIT one, UDP the UDP one. A zero value keeps
// the current setting. Entries pick up the new value at their next packet.
func (t *Table) SetTimeouts(to Timeouts) {
	tt := *t.timeouts.Load()
	if to.TCP > 0 {
		tt[StateEstablished] = durTicks(to.TCP)
	}
	if to.TCPFin > 0 {
		tt[StateFinWait] = durTicks(to.TCPFin)
	}
	if to.UDP > 0 {
		tt[StateUDP] = durTicks(to.UDP)
	}
	t.timeouts.Store(&tt)
}

// Time is kept in ticks of 2^22 ns (about 4.2 ms) in 32 bits, compared
// with serial-number arithmetic: good for timeouts up to about 100 days
// (persistence allows 31), and an entry needs only 4 bytes for it.
const tickShift = 22

func durTicks(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	t := (int64(d) + 1<<tickShift - 1) >> tickShift
	return uint32(min(t, 1<<30))
}

func (t *Table) tick() uint32 { return uint32((t.now() - t.epoch) >> tickShift) }

// alive reports whether expiry exp is still in the future at now.
func alive(exp, now uint32) bool { return int32(exp-now) > 0 }

func ticksDur(n uint32) time.Duration { return time.Duration(int64(n) << tickShift) }

// Len is the number of connections in the table, including expired ones
// not yet reaped.
func (t *Table) Len() int { return int(t.count.Load()) }

// Templates is the number of persistence templates in the table.
func (t *Table) Templates() int { return int(t.tcount.Load()) }

// UnderPressure reports the table over three quarters full: half-open
// entries then live halfOpenUnderPressure at most, and a caller should
// sweep harder, so that those made before the pressure are cut short soon.
func (t *Table) UnderPressure() bool {
	// With hysteresis: entered past three quarters of the capacity, left
	// below a quarter, so that a flood that keeps the table around the
	// threshold does not win back the full timeout for its entries each
	// time the sweep takes the count below it.
	n := t.count.Load()
	switch on := t.pressured.Load(); {
	case !on && n > t.pressure:
		t.pressured.Store(true)
		return true
	case on && n < t.pressure/3:
		t.pressured.Store(false)
		return false
	default:
		return on
	}
}

// Compactions counts the shards whose slab a sweep gave back after a flood
// of entries was gone; a caller may then return the memory to the system.
func (t *Table) Compactions() uint64 { return t.compactions.Load() }

// Stats sums the shards' counters.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Inserted += s.st.inserted
		st.Removed += s.st.removed
		st.Expired += s.st.expired
		st.Reused += s.st.reused
		st.DroppedFull += s.st.full
		st.Evicted += s.st.evicted
		st.Learned += s.st.learned
		s.mu.Unlock()
	}
	for i := range t.tshards {
		s := &t.tshards[i]
		s.mu.Lock()
		st.Templates += s.created
		s.mu.Unlock()
	}
	return st
}
