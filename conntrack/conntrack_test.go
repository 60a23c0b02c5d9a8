package conntrack

import (
	"errors"
	"net/netip"
	"testing"
	"time"
	"unsafe"
)

const (
	syn    = FlagSYN
	synack = FlagSYN | FlagACK
	ack    = FlagACK
	psh    = FlagPSH | FlagACK
	fin    = FlagFIN | FlagACK
	rst    = FlagRST
	rstack = FlagRST | FlagACK
)

type step struct {
	dir   Dir
	flags uint8
	want  State
}

// expiresOf finds the remaining lifetime of the connection with orig
// tuple o through Walk, as ipvsadm -L -c would show it.
func expiresOf(tt *testTable, o Tuple) (time.Duration, bool) {
	var left time.Duration
	found := false
	tt.Walk(func(c *Conn, exp time.Duration) bool {
		if !c.Template && c.Orig() == o {
			left, found = exp, true
			return false
		}
		return true
	})
	return left, found
}

func TestStateTransitions(t *testing.T) {
	timeouts := map[State]time.Duration{
		StateNone: 2 * time.Second, StateEstablished: 900 * time.Second, StateSynSent: 120 * time.Second,
		StateSynRecv: 60 * time.Second, StateFinWait: 120 * time.Second, StateTimeWait: 120 * time.Second,
		StateClose: 10 * time.Second, StateCloseWait: 60 * time.Second, StateLastAck: 30 * time.Second,
		StateListen: 120 * time.Second, StateSynAck: 120 * time.Second, StateUDP: 300 * time.Second,
	}
	tests := []struct {
		name   string
		inOnly bool // DR, tunnel
		proto  uint8
		first  uint8 // flags of the inserting packet
		init   State
		steps  []step
	}{
		{"nat client closes", false, protoTCP, syn, StateSynRecv, []step{
			{Reply, synack, StateSynRecv}, {Orig, ack, StateEstablished}, {Orig, psh, StateEstablished},
			{Reply, psh, StateEstablished}, {Orig, fin, StateCloseWait}, {Reply, ack, StateCloseWait},
			{Reply, fin, StateTimeWait}, {Orig, ack, StateTimeWait},
		}},
		{"nat server closes", false, protoTCP, syn, StateSynRecv, []step{
			{Reply, synack, StateSynRecv}, {Orig, ack, StateEstablished}, {Reply, fin, StateFinWait},
			{Orig, ack, StateFinWait}, {Orig, fin, StateTimeWait}, {Reply, ack, StateTimeWait},
		}},
		{"nat server refuses", false, protoTCP, syn, StateSynRecv, []step{
			{Reply, rstack, StateClose},
		}},
		{"nat client rst during handshake is ignored", false, protoTCP, syn, StateSynRecv, []step{
			{Orig, rst, StateSynRecv}, {Reply, synack, StateSynRecv}, {Orig, rst, StateSynRecv},
		}},
		{"nat reset when established", false, protoTCP, syn, StateSynRecv, []step{
			{Reply, synack, StateSynRecv}, {Orig, ack, StateEstablished}, {Reply, rst, StateClose},
			{Orig, ack, StateClose},
		}},
		{"nat retransmitted syn", false, protoTCP, syn, StateSynRecv, []step{
			{Orig, syn, StateSynRecv}, {Reply, synack, StateSynRecv}, {Reply, synack, StateSynRecv},
		}},
		{"nat last ack", false, protoTCP, syn, StateSynRecv, []step{
			{Reply, synack, StateSynRecv}, {Orig, ack, StateEstablished}, {Orig, fin, StateCloseWait},
			{Reply, fin, StateTimeWait},
		}},
		{"dr lifecycle", true, protoTCP, syn, StateSynRecv, []step{
			{Orig, ack, StateEstablished}, {Orig, psh, StateEstablished}, {Orig, fin, StateFinWait},
			{Orig, ack, StateFinWait}, {Orig, fin, StateFinWait},
		}},
		{"dr client rst", true, protoTCP, syn, StateSynRecv, []step{
			{Orig, rst, StateSynRecv}, {Orig, ack, StateEstablished}, {Orig, rstack, StateClose},
		}},
		{"tunnel fin during handshake", true, protoTCP, syn, StateSynRecv, []step{
			{Orig, fin, StateTimeWait},
		}},
		{"midstream pickup", true, protoTCP, ack, StateEstablished, []step{
			{Orig, psh, StateEstablished},
		}},
		{"no flags keeps state", false, protoTCP, syn, StateSynRecv, []step{
			{Orig, 0, StateSynRecv}, {Reply, FlagPSH, StateSynRecv},
		}},
		{"udp", false, protoUDP, 0, StateUDP, []step{
			{Orig, 0, StateUDP}, {Reply, 0xff, StateUDP},
		}},
		{"udp dr", true, protoUDP, syn, StateUDP, []step{
			{Orig, fin, StateUDP},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTestTable(t, Config{Shards: 4})
			c := mkConn(7, tc.inOnly, tc.proto)
			if err := tt.Insert(&c, tc.first); err != nil {
				t.Fatal(err)
			}
			check := func(what string, want State) {
				t.Helper()
				a, i := tt.counts.get(c.Dest)
				if want.Active() && (a != 1 || i != 0) || !want.Active() && (a != 0 || i != 1) {
					t.Fatalf("%s: counts active %d inactive %d in %v", what, a, i, want)
				}
				left, ok := expiresOf(tt, c.Orig())
				if !ok || left < timeouts[want]-10*time.Millisecond || left > timeouts[want]+10*time.Millisecond {
					t.Fatalf("%s: expires in %v, want %v for %v", what, left, timeouts[want], want)
				}
			}
			check("insert", tc.init)
			for n, st := range tc.steps {
				tt.clock.Advance(time.Second)
				tp := c.Orig()
				if st.dir == Reply {
					tp = c.Reply()
				}
				var got Conn
				d, ok := tt.Lookup(&tp, st.flags, &got)
				if !ok || d != st.dir {
					t.Fatalf("step %d: lookup = %v, %v", n, d, ok)
				}
				if got.State != st.want {
					t.Fatalf("step %d (%v flags %#x): state %v, want %v", n, st.dir, st.flags, got.State, st.want)
				}
				if got.DAddr != c.DAddr || got.PeerMAC != peerM || got.PeerIf != 3 || got.Dest != c.Dest || got.Fwd != c.Fwd || got.InputOnly != c.InputOnly {
					t.Fatalf("step %d: copy %+v", n, got)
				}
				check("step", st.want)
			}
			checkInvariants(t, tt)
		})
	}
}

func TestInputOnlyHasNoReplyIndex(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	// DR, tunnel and local connections (the director's Fwd values 1, 2, 3)
	// are input-only; the table goes by InputOnly, never by Fwd.
	for n := 1; n <= 3; n++ {
		c := mkConn(n, true, protoTCP)
		c.Fwd = uint8(n)
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
		r := c.Reply()
		var got Conn
		if _, ok := tt.Lookup(&r, synack, &got); ok {
			t.Fatalf("fwd %d: reply tuple found", n)
		}
		o := c.Orig()
		if _, ok := tt.Lookup(&o, fin, &got); !ok || got.State != StateTimeWait {
			t.Fatalf("fwd %d: input-only FIN in SYN_RECV: %v %v", n, ok, got.State)
		}
		if !got.InputOnly || got.Fwd != uint8(n) {
			t.Fatalf("fwd %d: copy has InputOnly %v Fwd %d", n, got.InputOnly, got.Fwd)
		}
	}
	// The same Fwd on a connection that is not input-only: NAT.
	c := mkConn(4, false, protoTCP)
	c.Fwd = 1
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	r := c.Reply()
	var got Conn
	if d, ok := tt.Lookup(&r, synack, &got); !ok || d != Reply || got.InputOnly {
		t.Fatalf("NAT reply: %v %v InputOnly %v", d, ok, got.InputOnly)
	}
	checkInvariants(t, tt)
}

func TestNextMatchesTable(t *testing.T) {
	// Next is what the table applies; spot-check the rules that differ by
	// direction.
	cases := []struct {
		s         State
		flags     uint8
		d         Dir
		inputOnly bool
		want      State
	}{
		{StateEstablished, fin, Orig, false, StateCloseWait},
		{StateEstablished, fin, Reply, false, StateFinWait},
		{StateEstablished, fin, Orig, true, StateFinWait},
		{StateSynRecv, synack, Reply, false, StateSynRecv}, // the server's SYN-ACK changes nothing
		{StateSynAck, synack, Reply, false, StateSynRecv},
		{StateSynRecv, rst, Orig, false, StateSynRecv},
		{StateSynRecv, rst, Reply, false, StateClose},
		{StateSynAck, ack, Orig, false, StateEstablished},
		{StateCloseWait, fin, Reply, false, StateTimeWait},
		{StateTimeWait, syn, Orig, false, StateSynRecv},
		{StateLastAck, ack, Orig, false, StateClose},
		{StateListen, ack, Reply, false, StateEstablished},
		{StateFinWait, FlagFIN | FlagSYN | FlagRST, Orig, false, StateClose}, // RST wins
		{StateFinWait, FlagFIN | FlagSYN, Orig, false, StateSynRecv},         // then SYN
		{StateUDP, syn, Orig, false, StateUDP},
	}
	for _, c := range cases {
		if got := Next(c.s, c.flags, c.d, c.inputOnly); got != c.want {
			t.Errorf("Next(%v, %#x, %v, %v) = %v, want %v", c.s, c.flags, c.d, c.inputOnly, got, c.want)
		}
	}
}

func TestStateNames(t *testing.T) {
	want := map[State]string{
		StateNone: "NONE", StateEstablished: "ESTABLISHED", StateSynSent: "SYN_SENT", StateSynRecv: "SYN_RECV",
		StateFinWait: "FIN_WAIT", StateTimeWait: "TIME_WAIT", StateClose: "CLOSE", StateCloseWait: "CLOSE_WAIT",
		StateLastAck: "LAST_ACK", StateListen: "LISTEN", StateSynAck: "SYNACK", StateUDP: "UDP",
	}
	for s, n := range want {
		if s.String() != n {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), n)
		}
		act := s == StateEstablished || s == StateSynSent || s == StateSynRecv || s == StateSynAck
		if s.Active() != act {
			t.Errorf("%v.Active() = %v", s, s.Active())
		}
	}
}

func TestExpiry(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4, Timeouts: Timeouts{TCP: 30 * time.Second, UDP: 5 * time.Second}})
	c := mkConn(1, false, protoTCP)
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	o := c.Orig()
	var got Conn
	tt.clock.Advance(59 * time.Second) // SYN_RECV lives 60 s
	if _, ok := tt.Lookup(&o, ack, &got); !ok || got.State != StateEstablished {
		t.Fatalf("before SYN_RECV timeout: %v %v", ok, got.State)
	}
	tt.clock.Advance(29 * time.Second) // ESTABLISHED now lives 30 s (--set tcp)
	if _, ok := tt.Lookup(&o, ack, &got); !ok {
		t.Fatal("expired before the tcp timeout")
	}
	tt.clock.Advance(31 * time.Second)
	if _, ok := tt.Lookup(&o, ack, &got); ok {
		t.Fatal("expired entry returned")
	}
	if tt.Len() != 0 {
		t.Fatalf("Len %d after the expired entry was met", tt.Len())
	}
	if a, i := tt.counts.get(c.Dest); a != 0 || i != 0 {
		t.Fatalf("counts %d/%d after expiry", a, i)
	}
	if st := tt.Stats(); st.Expired != 1 || st.Inserted != 1 {
		t.Fatalf("stats %+v", st)
	}

	// SetTimeouts applies from the next packet; zero keeps a value.
	u := mkConn(2, false, protoUDP)
	if err := tt.Insert(&u, 0); err != nil {
		t.Fatal(err)
	}
	tt.SetTimeouts(Timeouts{UDP: 100 * time.Second})
	uo := u.Orig()
	tt.clock.Advance(4 * time.Second)
	if _, ok := tt.Lookup(&uo, 0, &got); !ok {
		t.Fatal("udp expired early")
	}
	tt.clock.Advance(99 * time.Second)
	if _, ok := tt.Lookup(&uo, 0, &got); !ok {
		t.Fatal("udp timeout not raised")
	}
	// An expired entry does not block its tuple.
	tt.clock.Advance(101 * time.Second)
	if err := tt.Insert(&u, 0); err != nil {
		t.Fatalf("insert over an expired entry: %v", err)
	}
	checkInvariants(t, tt)
}

func TestCapacity(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 8, Shards: 2})
	conns := make([]Conn, 10)
	for i := range conns {
		conns[i] = mkConn(i, false, protoTCP)
	}
	for i := range 8 {
		if err := tt.Insert(&conns[i], syn); err != nil {
			t.Fatal(err)
		}
		// Established: never shed for a new connection.
		o := conns[i].Orig()
		var got Conn
		tt.Lookup(&o, ack, &got)
	}
	if err := tt.Insert(&conns[8], syn); !errors.Is(err, ErrFull) {
		t.Fatalf("insert past capacity: %v", err)
	}
	if err := tt.Insert(&conns[9], syn); !errors.Is(err, ErrFull) {
		t.Fatalf("insert past capacity: %v", err)
	}
	if st := tt.Stats(); st.DroppedFull != 2 || st.Inserted != 8 {
		t.Fatalf("stats %+v", st)
	}
	// The existing connections are untouched and go on.
	for i := range 8 {
		o := conns[i].Orig()
		var got Conn
		if _, ok := tt.Lookup(&o, ack, &got); !ok || got.State != StateEstablished {
			t.Fatalf("conn %d after drops: %v %v", i, ok, got.State)
		}
	}
	// A duplicate is refused as such, not as full.
	if err := tt.Insert(&conns[0], syn); !errors.Is(err, ErrExists) && !errors.Is(err, ErrFull) {
		t.Fatalf("duplicate: %v", err)
	}
	// Once entries expire there is room again: Insert reaps expired
	// entries of its own shard, and Sweep (which the director runs every
	// 100 ms) those of the others.
	tt.clock.Advance(901 * time.Second)
	if err := tt.Insert(&conns[8], syn); errors.Is(err, ErrFull) {
		tt.Sweep(64)
		err = tt.Insert(&conns[8], syn)
		if err != nil {
			t.Fatalf("insert after expiry and a sweep: %v", err)
		}
	} else if err != nil {
		t.Fatalf("insert after expiry: %v", err)
	}
	if tt.Len() > 8 {
		t.Fatalf("Len %d above capacity", tt.Len())
	}
	checkInvariants(t, tt)
}

func TestExists(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	c := mkConn(3, false, protoTCP)
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	if err := tt.Insert(&c, syn); !errors.Is(err, ErrExists) {
		t.Fatalf("second insert: %v", err)
	}
	// Same reply tuple through another virtual address while the first
	// is live: ambiguous for the replies, so refused
	// (TestReuseReplyTuple: unless the first is over).
	c2 := c
	c2.VAddr = addr("198.18.0.101")
	if err := tt.Insert(&c2, syn); !errors.Is(err, ErrExists) {
		t.Fatalf("clashing reply tuple: %v", err)
	}
	// As DR it has no reply tuple and is fine.
	c2.InputOnly = true
	if err := tt.Insert(&c2, syn); err != nil {
		t.Fatalf("dr conn: %v", err)
	}
	if tt.Len() != 2 {
		t.Fatalf("Len %d", tt.Len())
	}
	checkInvariants(t, tt)
}

// TestReuseReplyTuple: the client reuses a port towards another virtual
// address while its connection from that port to the first one, on the
// same real server, is in TIME_WAIT or CLOSE (the kernel picks ephemeral
// ports per destination). Both share the real server's four-tuple: the
// new SYN replaces the old entry, as a SYN on its own Orig tuple does.
func TestReuseReplyTuple(t *testing.T) {
	for _, old := range []State{StateTimeWait, StateClose} {
		tt, c := closedConn(t, old)
		o, r := c.Orig(), c.Reply()
		var got Conn
		c2 := c
		c2.VAddr, c2.VPort = addr("198.18.0.101"), c.VPort+1
		// Only a SYN opens a new connection over it.
		if err := tt.Insert(&c2, ack); !errors.Is(err, ErrExists) {
			t.Fatalf("ACK over %v: %v", old, err)
		}
		if err := tt.Insert(&c2, syn); err != nil {
			t.Fatalf("SYN over %v: %v", old, err)
		}
		if _, ok := tt.Lookup(&o, ack, &got); ok {
			t.Fatalf("old entry still found by its Orig tuple")
		}
		if d, ok := tt.Lookup(&r, synack, &got); !ok || d != Reply || got.VAddr != c2.VAddr || got.VPort != c2.VPort {
			t.Fatalf("reply tuple: %v %v, %+v", d, ok, got)
		}
		if st := tt.Stats(); st.Reused != 1 || tt.Len() != 1 {
			t.Fatalf("stats %+v, Len %d", st, tt.Len())
		}
		if a, i := tt.counts.get(c.Dest); a != 1 || i != 0 {
			t.Fatalf("counts %d/%d, want the new connection's only", a, i)
		}
		checkInvariants(t, tt)
	}

	// A live connection in any other state keeps its reply tuple, unless
	// its real server is gone; then it holds it against nothing, of any
	// protocol.
	gone := map[uint32]bool{}
	tt, c := connIn(t, Config{Shards: 4, Gone: func(dest uint32) bool { return gone[dest] }}, 6, StateEstablished)
	var got Conn
	c2 := c
	c2.VAddr = addr("198.18.0.101")
	if err := tt.Insert(&c2, syn); !errors.Is(err, ErrExists) {
		t.Fatalf("SYN over a live ESTABLISHED entry: %v", err)
	}
	gone[c.Dest] = true
	c2.Dest = c.Dest + 1 // the server re-added: a new ID
	if err := tt.Insert(&c2, syn); err != nil {
		t.Fatalf("SYN over a gone server's entry: %v", err)
	}
	if tt.Len() != 1 {
		t.Fatalf("Len %d", tt.Len())
	}
	if a, i := tt.counts.get(c.Dest); a != 0 || i != 0 {
		t.Fatalf("gone server's counts %d/%d", a, i)
	}
	checkInvariants(t, tt)

	u := mkConn(7, false, protoUDP)
	if err := tt.Insert(&u, 0); err != nil {
		t.Fatal(err)
	}
	u2 := u
	u2.VAddr = addr("198.18.0.101")
	if err := tt.Insert(&u2, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("UDP over a live UDP entry: %v", err)
	}
	gone[u.Dest] = true
	u2.Dest = u.Dest + 10
	if err := tt.Insert(&u2, 0); err != nil {
		t.Fatalf("UDP over a gone server's UDP entry: %v", err)
	}
	r2 := u2.Reply()
	if d, ok := tt.Lookup(&r2, 0, &got); !ok || d != Reply || got.VAddr != u2.VAddr {
		t.Fatalf("reply tuple: %v %v, %+v", d, ok, got)
	}
	if tt.Len() != 2 {
		t.Fatalf("Len %d", tt.Len())
	}
	checkInvariants(t, tt)
}

// closedConn returns a table holding one NAT TCP connection, taken
// through its handshake to old: TIME_WAIT (FINs both ways) or CLOSE (RST).
func closedConn(t *testing.T, old State) (*testTable, Conn) {
	t.Helper()
	return connIn(t, Config{Shards: 4}, 5, old)
}

// connIn returns a table with cfg holding NAT TCP connection n, taken
// through its handshake to st: ESTABLISHED, then TIME_WAIT (FINs both
// ways) or CLOSE (RST).
func connIn(t *testing.T, cfg Config, n int, st State) (*testTable, Conn) {
	t.Helper()
	tt := newTestTable(t, cfg)
	c := mkConn(n, false, protoTCP)
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	o, r := c.Orig(), c.Reply()
	var got Conn
	tt.Lookup(&r, synack, &got)
	tt.Lookup(&o, ack, &got)
	switch st {
	case StateTimeWait:
		tt.Lookup(&o, fin, &got)
		tt.Lookup(&r, fin, &got)
	case StateClose:
		tt.Lookup(&o, rst, &got)
	}
	if got.State != st {
		t.Fatalf("setup: %v, want %v", got.State, st)
	}
	return tt, c
}

func TestReuseTimeWait(t *testing.T) {
	for _, old := range []State{StateTimeWait, StateClose} {
		tt, c := closedConn(t, old)
		o := c.Orig()
		var got Conn
		// A plain ACK does not reuse it.
		if _, ok := tt.Lookup(&o, ack, &got); !ok || got.State != old {
			t.Fatalf("ACK on %v: %v %v", old, ok, got.State)
		}
		if _, ok := tt.Lookup(&o, syn, &got); ok {
			t.Fatalf("SYN on %v returned the old entry", old)
		}
		if tt.Len() != 0 {
			t.Fatal("old entry still there")
		}
		if a, i := tt.counts.get(c.Dest); a != 0 || i != 0 {
			t.Fatalf("counts %d/%d", a, i)
		}
		c.DAddr, c.Dest = rs[2], 3 // scheduled afresh
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
		if st := tt.Stats(); st.Reused != 1 {
			t.Fatalf("stats %+v", st)
		}
		checkInvariants(t, tt)
	}

	// A SYN on a live ESTABLISHED entry does not reuse it.
	tt := newTestTable(t, Config{Shards: 4})
	c := mkConn(6, true, protoTCP)
	if err := tt.Insert(&c, ack); err != nil {
		t.Fatal(err)
	}
	o := c.Orig()
	var got Conn
	if _, ok := tt.Lookup(&o, syn, &got); !ok || got.State != StateEstablished {
		t.Fatalf("SYN on ESTABLISHED: %v %v", ok, got.State)
	}
}

func TestRemove(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	a := mkConn(1, false, protoTCP)
	b := mkConn(2, false, protoUDP)
	for _, c := range []*Conn{&a, &b} {
		if err := tt.Insert(c, syn); err != nil {
			t.Fatal(err)
		}
	}
	ar, bo := a.Reply(), b.Orig()
	if !tt.Remove(&ar) || !tt.Remove(&bo) {
		t.Fatal("remove failed")
	}
	if tt.Remove(&ar) || tt.Remove(&bo) {
		t.Fatal("removed twice")
	}
	var got Conn
	ao := a.Orig()
	if _, ok := tt.Lookup(&ao, ack, &got); ok {
		t.Fatal("removed connection found")
	}
	if tt.Len() != 0 || tt.Stats().Removed != 2 {
		t.Fatalf("Len %d stats %+v", tt.Len(), tt.Stats())
	}
	checkInvariants(t, tt)
}

func TestRemoveDest(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 4})
	for i := range 30 {
		c := mkConn(i, i%2 == 1, protoTCP) // odd ones tunnelled
		if i%3 == 1 {                      // dest 2: link them to a template
			k := TemplateKey{Proto: protoTCP, Client: c.Client, VAddr: vip, VPort: 80}
			c.Tmpl, _ = tt.InsertTemplate(&k, &Template{Dest: c.Dest})
		}
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
	}
	if n := tt.RemoveDest(2); n != 10 {
		t.Fatalf("RemoveDest removed %d", n)
	}
	if a, i := tt.counts.get(2); a != 0 || i != 0 || tt.counts.getPersist(2) != 0 {
		t.Fatalf("dest 2 counts %d/%d persist %d", a, i, tt.counts.getPersist(2))
	}
	if a, _ := tt.counts.get(1); a != 10 || tt.Len() != 20 || tt.Templates() != 0 {
		t.Fatalf("others: active %d Len %d templates %d", a, tt.Len(), tt.Templates())
	}
	c := mkConn(1, true, protoTCP)
	o := c.Orig()
	var got Conn
	if _, ok := tt.Lookup(&o, ack, &got); ok {
		t.Fatal("connection of a removed server found")
	}
	checkInvariants(t, tt)
}

func TestIPv6AndAddr(t *testing.T) {
	v4 := netip.MustParseAddr("198.18.0.1")
	if a := AddrFrom(v4); a.Netip() != v4 || a[10] != 0xff || a[11] != 0xff {
		t.Fatalf("v4 round trip: %v", a)
	}
	tt := newTestTable(t, Config{Shards: 4})
	c := Conn{
		Proto: protoTCP, Client: addr("2001:2::7"), CPort: 40000, VAddr: vip6, VPort: 443,
		DAddr: rs6, DPort: 443, Dest: 1,
	}
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	r := c.Reply()
	var got Conn
	if d, ok := tt.Lookup(&r, synack, &got); !ok || d != Reply || got.Client.Netip().String() != "2001:2::7" {
		t.Fatalf("v6 reply: %v %v %v", d, ok, got.Client.Netip())
	}
}

func TestWalk(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 2})
	for i := range 200 {
		c := mkConn(i, true, protoTCP)
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
	}
	tt.clock.Advance(30 * time.Second)
	c := mkConn(1000, true, protoUDP)
	if err := tt.Insert(&c, 0); err != nil {
		t.Fatal(err)
	}
	tt.clock.Advance(31 * time.Second) // the 200 SYN_RECV entries expire
	n := 0
	tt.Walk(func(c *Conn, exp time.Duration) bool {
		n++
		if c.State != StateUDP || exp < 268*time.Second || exp > 270*time.Second {
			t.Errorf("walk: %v %v", c.State, exp)
		}
		return true
	})
	if n != 1 || tt.Len() != 1 {
		t.Fatalf("walk saw %d, Len %d", n, tt.Len())
	}
	// Stopping early stops.
	for i := range 100 {
		c := mkConn(i, true, protoTCP)
		tt.Insert(&c, syn)
	}
	n = 0
	tt.Walk(func(*Conn, time.Duration) bool { n++; return n < 5 })
	if n != 5 {
		t.Fatalf("walk did not stop: %d", n)
	}
	checkInvariants(t, tt)
}

func TestSweepBounded(t *testing.T) {
	tt := newTestTable(t, Config{Shards: 8})
	const n = 5000
	for i := range n {
		c := mkConn(i, false, protoTCP)
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
	}
	keep := mkConn(n+1, false, protoUDP)
	tt.clock.Advance(50 * time.Second)
	if err := tt.Insert(&keep, 0); err != nil {
		t.Fatal(err)
	}
	if got := tt.Sweep(100); got != 0 {
		t.Fatalf("swept %d before anything expired", got)
	}
	tt.clock.Advance(11 * time.Second)
	total := 0
	for range 1000 {
		got := tt.Sweep(100)
		if got > 100 {
			t.Fatalf("Sweep(100) reaped %d", got)
		}
		total += got
		checkInvariantsCheap(t, tt)
		if total == n {
			break
		}
	}
	if total != n || tt.Len() != 1 {
		t.Fatalf("reaped %d of %d, Len %d", total, n, tt.Len())
	}
	if st := tt.Stats(); st.Expired != n {
		t.Fatalf("stats %+v", st)
	}
	checkInvariants(t, tt)
}

// checkInvariantsCheap compares only the hooks' totals with Len.
func checkInvariantsCheap(t fataler, tt *testTable) {
	t.Helper()
	var sum int32
	for d := uint32(0); d < 8; d++ {
		a, i := tt.counts.get(d)
		sum += a + i
	}
	if int(sum) != tt.Len() {
		t.Fatalf("hooks count %d connections, Len %d", sum, tt.Len())
	}
}

func TestEntrySize(t *testing.T) {
	// The memory budget rests on this; a new field must be paid for.
	if s := unsafe.Sizeof(entry{}); s != 88 {
		t.Fatalf("entry is %d bytes", s)
	}
}

// TestCapacityShedsHalfOpen: a table full of half-open connections (a SYN
// flood with forged sources) sheds one of them for a new connection, as
// IPVS's drop_entry does; established ones stay.
func TestCapacityShedsHalfOpen(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 64, Shards: 1})
	conns := make([]Conn, 200)
	for i := range conns {
		conns[i] = mkConn(i, false, protoTCP)
	}
	for i := range 32 { // established
		if err := tt.Insert(&conns[i], syn); err != nil {
			t.Fatal(err)
		}
		o := conns[i].Orig()
		var got Conn
		tt.Lookup(&o, ack, &got)
	}
	for i := 32; i < 64; i++ { // half-open
		if err := tt.Insert(&conns[i], syn); err != nil {
			t.Fatal(err)
		}
	}
	for i := 64; i < 200; i++ {
		if err := tt.Insert(&conns[i], syn); err != nil {
			t.Fatalf("new connection %d into a table full of half-open ones: %v", i, err)
		}
	}
	if n := tt.Len(); n != 64 {
		t.Errorf("%d entries, want the capacity, 64", n)
	}
	for i := range 32 {
		o := conns[i].Orig()
		var got Conn
		if _, ok := tt.Peek(&o, &got); !ok || got.State != StateEstablished {
			t.Fatalf("established connection %d was shed", i)
		}
	}
	if st := tt.Stats(); st.Evicted != 200-64 || st.DroppedFull != 0 {
		t.Errorf("stats %+v, want %d evicted, none refused", st, 200-64)
	}
	checkInvariants(t, tt)
}

// TestHalfOpenShortUnderPressure: past three quarters of the capacity, a
// half-open connection lives halfOpenUnderPressure, not SYN_RECV's 60 s,
// and a server's retransmitted SYN-ACK does not stretch it.
func TestHalfOpenShortUnderPressure(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 100, Shards: 1})
	for i := range 80 {
		c := mkConn(i, false, protoTCP)
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
	}
	c := mkConn(1000, false, protoTCP)
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	r := c.Reply()
	var got Conn
	tt.Lookup(&r, syn|ack, &got) // the server's SYN-ACK
	tt.clock.Advance(halfOpenUnderPressure + time.Second)
	o := c.Orig()
	if _, ok := tt.Peek(&o, &got); ok {
		t.Errorf("a half-open connection outlived %v under pressure", halfOpenUnderPressure)
	}
}

// TestCompactAfterFlood: once a flood's entries are gone, a full walk of
// the sweep gives their memory back, and the entries that stay are found
// as before.
func TestCompactAfterFlood(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 1 << 16, Shards: 1})
	conns := make([]Conn, 20000)
	for i := range conns {
		conns[i] = mkConn(i, i%2 == 0, protoTCP)
		if err := tt.Insert(&conns[i], syn); err != nil {
			t.Fatal(err)
		}
	}
	keep := 0
	for i := range conns {
		o := conns[i].Orig()
		var got Conn
		if i%100 == 0 {
			tt.Lookup(&o, ack, &got) // established: stays
			keep++
			continue
		}
		tt.Remove(&o)
	}
	before := len(tt.shards[0].chunks)
	for range 100 {
		tt.Sweep(4096)
	}
	after := len(tt.shards[0].chunks)
	if after*10 > before {
		t.Errorf("slab of %d chunks after the flood, %d before: not given back", after, before)
	}
	for i := 0; i < len(conns); i += 100 {
		o := conns[i].Orig()
		var got Conn
		if _, ok := tt.Peek(&o, &got); !ok || got.DAddr != conns[i].DAddr {
			t.Fatalf("connection %d lost by the compaction", i)
		}
		if !conns[i].InputOnly {
			r := conns[i].Reply()
			if d, ok := tt.Peek(&r, &got); !ok || d != Reply {
				t.Fatalf("connection %d's reply lost by the compaction", i)
			}
		}
	}
	if n := tt.Len(); n != keep {
		t.Errorf("%d entries, want %d", n, keep)
	}
	checkInvariants(t, tt)
}

// TestSweepShortensHalfOpenUnderPressure: half-open entries made before the
// table came under pressure (with SYN_RECV's full timeout) are cut short
// as the sweep passes, so a flood's first second does not hold the table
// for a minute.
func TestSweepShortensHalfOpenUnderPressure(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 100, Shards: 1})
	for i := range 80 { // the first 75 without pressure: 60 s
		c := mkConn(i, false, protoTCP)
		if err := tt.Insert(&c, syn); err != nil {
			t.Fatal(err)
		}
	}
	tt.Sweep(4096)
	tt.clock.Advance(halfOpenUnderPressure + time.Second)
	tt.Sweep(4096)
	if n := tt.Len(); n != 0 {
		t.Errorf("%d half-open entries left %v after the sweep under pressure", n, halfOpenUnderPressure+time.Second)
	}
}
