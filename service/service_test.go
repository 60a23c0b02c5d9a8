package service

import (
	"errors"
	"net/netip"
	"testing"
)

var (
	vip = netip.MustParseAddr("198.18.0.1")
	rs1 = netip.MustParseAddr("198.18.1.2")
	rs2 = netip.MustParseAddr("198.18.1.3")
	key = Key{Proto: TCP, Addr: vip, Port: 80}
)

func newTable(t *testing.T) *Config {
	t.Helper()
	c := NewConfig()
	if err := c.AddService(&Service{Key: key, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{rs1, rs2} {
		if err := c.AddDest(key, &Dest{Addr: a, Port: 80, Fwd: FwdMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// The kernel's answers for bad changes, and the list order IPVS keeps.
func TestConfigOps(t *testing.T) {
	c := newTable(t)
	if d := c.Services[0].Dests; d[0].Addr != rs2 || d[1].Addr != rs1 {
		t.Errorf("dests not newest first: %v, %v", d[0].Addr, d[1].Addr)
	}
	if s := c.Services[0].SortedDests(); s[0].Addr != rs1 {
		t.Errorf("listing order starts with %v", s[0].Addr)
	}
	for _, tc := range []struct {
		err  error
		want error
	}{
		{c.AddService(&Service{Key: key}), ErrServiceExists},
		{c.EditService(&Service{Key: Key{Proto: UDP, Addr: vip, Port: 80}}), ErrNoService},
		{c.DeleteService(Key{Proto: UDP, Addr: vip, Port: 80}), ErrNoService},
		{c.AddDest(Key{Proto: UDP, Addr: vip, Port: 80}, &Dest{Addr: rs1}), ErrNoServiceDef},
		{c.AddDest(key, &Dest{Addr: rs1, Port: 80}), ErrDestExists},
		{c.EditDest(key, &Dest{Addr: rs1, Port: 81}), ErrNoDest},
		{c.DeleteDest(key, rs1, 81), ErrNoDest},
		{c.AddDest(key, &Dest{Addr: rs1, Port: 82, UThresh: 10, LThresh: 20}), ErrRange},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("got %v, want %v", tc.err, tc.want)
		}
	}
	if len(c.Services) != 1 || len(c.Services[0].Dests) != 2 {
		t.Errorf("a refused change changed the table")
	}
}

// A clone shares live state but not structure; Removed names the servers
// a change deleted; an edit keeps the server's state and place.
func TestCloneRemovedEdit(t *testing.T) {
	old := newTable(t)
	next := old.Clone()
	st1 := old.Services[0].Dest(rs1, 80).DestState
	if next.Services[0].Dest(rs1, 80).DestState != st1 {
		t.Fatal("clone does not share the live state")
	}
	if err := next.EditDest(key, &Dest{Addr: rs1, Port: 80, Fwd: FwdMasq, Weight: 0}); err != nil {
		t.Fatal(err)
	}
	if old.Services[0].Dest(rs1, 80).Weight != 1 {
		t.Error("editing the clone changed the original")
	}
	if d := next.Services[0].Dest(rs1, 80); d.DestState != st1 || next.Services[0].Dests[1] != d {
		t.Error("edit lost the server's state or place")
	}
	if err := next.DeleteDest(key, rs2, 80); err != nil {
		t.Fatal(err)
	}
	gone := next.Removed(old)
	if len(gone) != 1 || gone[0] != old.Services[0].Dest(rs2, 80).DestState {
		t.Errorf("Removed = %v", gone)
	}
	if len(old.Services[0].Dests) != 2 {
		t.Error("deleting from the clone changed the original")
	}
}

// Carry keeps the live state of what stays when the whole table is
// replaced, and gives new things their own.
func TestCarry(t *testing.T) {
	cur := newTable(t)
	want := NewConfig()
	want.AddService(&Service{Key: key, Scheduler: "wrr"})
	want.AddDest(key, &Dest{Addr: rs1, Port: 80, Fwd: FwdMasq, Weight: 3})
	want.AddDest(key, &Dest{Addr: netip.MustParseAddr("198.18.1.4"), Port: 80, Fwd: FwdMasq, Weight: 1})
	next := Carry(cur, want)
	s := next.Services[0]
	if s.Stats != cur.Services[0].Stats || s.Scheduler != "wrr" {
		t.Error("service did not keep its counters or take the new options")
	}
	if s.Dest(rs1, 80).DestState != cur.Services[0].Dest(rs1, 80).DestState || s.Dest(rs1, 80).Weight != 3 {
		t.Error("a staying server lost its state or did not take its new weight")
	}
	if st := s.Dest(netip.MustParseAddr("198.18.1.4"), 80).DestState; st == nil || st == s.Dest(rs1, 80).DestState {
		t.Error("a new server has no state of its own")
	}
}

// IPVS's overload rule: set at active+inactive >= upper, cleared below
// lower, or below 3/4 of upper when lower is 0.
func TestThresholds(t *testing.T) {
	for _, tc := range []struct {
		upper, lower uint32
		clearAt      int32
	}{{4, 2, 1}, {4, 0, 2}} {
		st := newDestState()
		st.SetThresholds(tc.upper, tc.lower)
		st.AddConns(3, 0)
		if st.Overloaded() {
			t.Fatalf("%+v: overloaded below upper", tc)
		}
		st.AddConns(0, 1)
		if !st.Overloaded() {
			t.Fatalf("%+v: not overloaded at upper", tc)
		}
		for st.ActiveConns()+st.InactConns() > tc.clearAt {
			if st.ActiveConns() > 0 {
				st.AddConns(-1, 0)
			} else {
				st.AddConns(0, -1)
			}
			if n := st.ActiveConns() + st.InactConns(); n > tc.clearAt && !st.Overloaded() {
				t.Fatalf("%+v: cleared at %d", tc, n)
			}
		}
		if st.Overloaded() {
			t.Errorf("%+v: still overloaded at %d", tc, tc.clearAt)
		}
	}
}

func TestRegistryAndStats(t *testing.T) {
	var r Registry
	a, b := newDestState(), newDestState()
	ia, ib := r.Register(a), r.Register(b)
	if ia == 0 || ib == ia || r.Register(a) != ia || r.Get(ia) != a || r.Get(ib) != b || r.Get(99) != nil {
		t.Fatalf("registry ids %d %d", ia, ib)
	}
	var s Stats
	s.AddConn(0)
	s.AddIn(1, 2, 100)
	s.AddOut(9, 1, 60)
	if got := s.Sum(); got != (Counters{Conns: 1, InPkts: 2, OutPkts: 1, InBytes: 100, OutBytes: 60}) {
		t.Errorf("sum %+v", got)
	}
	s.Zero()
	s.AddIn(3, 1, 10)
	if got := s.Sum(); got != (Counters{InPkts: 1, InBytes: 10}) {
		t.Errorf("after zero %+v", got)
	}
}

func TestKeyOrder(t *testing.T) {
	keys := []Key{
		{Proto: TCP, Addr: vip, Port: 80},
		{Proto: TCP, Addr: vip, Port: 443},
		{Proto: UDP, Addr: vip, Port: 53},
		{Proto: TCP, Addr: netip.MustParseAddr("2001:2::1"), Port: 80},
		{FWMark: 20},
	}
	for i := range keys {
		for j := range keys {
			if got := keys[i].Less(keys[j]); got != (i < j) {
				t.Errorf("%v < %v = %v", keys[i], keys[j], got)
			}
		}
	}
}

// TestRegistryRelease: a released ID is found no more and is reused; the
// table grows past a chunk.
func TestRegistryRelease(t *testing.T) {
	var r Registry
	var sts []*DestState
	for range 3000 {
		st := newDestState()
		r.Register(st)
		sts = append(sts, st)
	}
	for i, st := range sts {
		if r.Get(st.ID()) != st || st.ID() != uint32(i+1) {
			t.Fatalf("state %d: ID %d, Get %p", i, st.ID(), r.Get(st.ID()))
		}
	}
	gone := sts[1500]
	r.Release(gone)
	if r.Get(gone.ID()) != nil {
		t.Error("a released ID is still found")
	}
	c := newDestState()
	if id := r.Register(c); id != gone.ID() || r.Get(id) != c {
		t.Errorf("new state got ID %d, want the released %d", id, gone.ID())
	}
	if n := r.Issued(); n != 3001 {
		t.Errorf("Issued %d, want 3001", n)
	}
}
