package syncd

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"uvs/director"
	"uvs/testbed"
)

// pair is two hosts on one link, sy0 on each: a master's and a backup's.
type pair struct {
	m, b *testbed.Host
}

func newPair(t *testing.T) *pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	bed, err := testbed.New("uvssyncd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bed.Close() })
	p := &pair{}
	if p.m, err = bed.Host("m"); err == nil {
		p.b, err = bed.Host("b")
	}
	if err == nil {
		err = bed.Link(p.m, "sy0", p.b, "sy0")
	}
	if err == nil {
		err = p.m.Addr("sy0", "198.18.9.1/24")
	}
	if err == nil {
		err = p.b.Addr("sy0", "198.18.9.2/24")
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start starts a daemon in h (its sockets belong to h's namespace).
func start(t *testing.T, h *testbed.Host, m *Manager, c Config) {
	t.Helper()
	if err := h.Do(func() error { return m.Start(c) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
}

// waitFor polls cond every 10 ms for up to limit.
func waitFor(limit time.Duration, cond func() bool) bool {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestMasterToBackup(t *testing.T) {
	p := newPair(t)
	mt, bt := &fakeTable{}, &fakeTable{}
	mm, bm := newTestManager(t, mt), newTestManager(t, bt)
	start(t, p.b, bm, Config{Interface: "sy0", SyncID: 7})
	start(t, p.m, mm, Config{Master: true, Interface: "sy0", SyncID: 7})
	if !mt.master {
		t.Fatal("the director was not made a sync master")
	}
	// One of each kind, then enough to fill messages.
	mt.push(conns()...)
	var many []director.SyncConn
	for i := range 100 {
		c := conns()[0]
		c.CPort = uint16(20000 + i)
		many = append(many, c)
	}
	mt.push(many...)
	want := append(conns(), many...)
	if !waitFor(10*time.Second, func() bool { return len(bt.got()) >= len(want) }) {
		t.Fatalf("backup learned %d of %d", len(bt.got()), len(want))
	}
	if got := bt.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("learned\n%+v\nwant\n%+v", got[:6], want[:6])
	}
	// 106 entries: 40 to a message.
	if st := mm.Stats(); st.SentConns != 106 || st.SentMessages != 3 || st.SendErrors != 0 {
		t.Errorf("master stats %+v", st)
	}
	if st := bm.Stats(); st.ReceivedMessages != 3 || st.Learned != 106 || len(st.Dropped) != 0 {
		t.Errorf("backup stats %+v", st)
	}

	// A partial message waits for the flush delay (50 ms here), not
	// longer than a few drains after it.
	before := len(bt.got())
	t0 := time.Now()
	mt.push(conns()[0])
	if !waitFor(5*time.Second, func() bool { return len(bt.got()) > before }) {
		t.Fatal("a lone connection was never sent")
	}
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Errorf("sent after %v, before the flush delay", d)
	}

	// The listing, defaults filled in, master first.
	d := mm.Daemons()
	if len(d) != 1 || d[0] != (Config{Master: true, Interface: "sy0", SyncID: 7, MaxLen: 1472, Group: netip.MustParseAddr("224.0.0.81"), Port: 8848, TTL: 1}) {
		t.Errorf("daemons %+v", d)
	}
}

func TestSyncIDFilter(t *testing.T) {
	p := newPair(t)
	mt, bt := &fakeTable{}, &fakeTable{}
	mm, bm := newTestManager(t, mt), newTestManager(t, bt)
	start(t, p.b, bm, Config{Interface: "sy0", SyncID: 9})
	start(t, p.m, mm, Config{Master: true, Interface: "sy0", SyncID: 7})
	mt.push(conns()...)
	if !waitFor(10*time.Second, func() bool { return bm.Stats().Dropped[DropSyncID] > 0 }) {
		t.Fatal("the other sync ID's message was not seen")
	}
	if n := len(bt.got()); n != 0 {
		t.Errorf("%d learned from another sync ID", n)
	}
}

// TestResync: a backup that starts gets the master's whole table, its
// entries marked as a dump's.
func TestResync(t *testing.T) {
	p := newPair(t)
	mt, bt := &fakeTable{}, &fakeTable{}
	for i := range 300 {
		c := conns()[i%len(conns())]
		c.CPort = uint16(30000 + i)
		mt.table = append(mt.table, c)
	}
	mm, bm := newTestManager(t, mt), newTestManager(t, bt)
	start(t, p.m, mm, Config{Master: true, Interface: "sy0"})
	start(t, p.b, bm, Config{Interface: "sy0"})
	if !waitFor(10*time.Second, func() bool { return len(bt.got()) >= 300 }) {
		t.Fatalf("backup learned %d of the master's 300", len(bt.got()))
	}
	for i, c := range bt.got() {
		w := mt.table[i]
		w.Resync = true
		if !reflect.DeepEqual(c, w) {
			t.Fatalf("entry %d: %+v, want %+v", i, c, w)
		}
	}
	if st := mm.Stats(); st.Resyncs != 1 {
		t.Errorf("%d dumps", st.Resyncs)
	}
	if st := bm.Stats(); st.ResyncRequests != 1 {
		t.Errorf("%d requests", st.ResyncRequests)
	}
}

// TestBothWays: each side a master and a backup on one group, as two
// directors that take each other's connections.
func TestBothWays(t *testing.T) {
	p := newPair(t)
	at, bt := &fakeTable{}, &fakeTable{}
	am, bm := newTestManager(t, at), newTestManager(t, bt)
	for _, x := range []struct {
		h *testbed.Host
		m *Manager
	}{{p.m, am}, {p.b, bm}} {
		start(t, x.h, x.m, Config{Master: true, Interface: "sy0", SyncID: 3})
		start(t, x.h, x.m, Config{Interface: "sy0", SyncID: 3})
	}
	ca, cb := conns()[0], conns()[2]
	at.push(ca)
	bt.push(cb)
	if !waitFor(10*time.Second, func() bool { return len(at.got()) > 0 && len(bt.got()) > 0 }) {
		t.Fatalf("a learned %d, b learned %d", len(at.got()), len(bt.got()))
	}
	time.Sleep(200 * time.Millisecond) // anything more would be an echo
	if got := at.got(); len(got) != 1 || got[0] != cb {
		t.Errorf("a learned %+v, want b's %+v", got, cb)
	}
	if got := bt.got(); len(got) != 1 || got[0] != ca {
		t.Errorf("b learned %+v, want a's %+v", got, ca)
	}
	if d := am.Daemons(); len(d) != 2 || !d[0].Master || d[1].Master {
		t.Errorf("daemons %+v", d)
	}
}

func TestStartStop(t *testing.T) {
	p := newPair(t)
	f := &fakeTable{}
	m := newTestManager(t, f)
	do := func(fn func() error) error { return p.m.Do(fn) }
	if err := do(func() error { return m.Start(Config{Master: true, Interface: "nosuch0"}) }); !errors.Is(err, ErrNoDevice) {
		t.Errorf("unknown interface: %v", err)
	}
	start(t, p.m, m, Config{Master: true, Interface: "sy0"})
	if err := do(func() error { return m.Start(Config{Master: true, Interface: "sy0"}) }); !errors.Is(err, ErrRunning) {
		t.Errorf("second master: %v", err)
	}
	if err := do(func() error { return m.Start(Config{Master: true, Interface: "nosuch0"}) }); !errors.Is(err, ErrNoDevice) {
		t.Errorf("second master on an unknown interface: %v (IPVS checks the interface first)", err)
	}
	if err := m.Stop(false); !errors.Is(err, ErrNotRunning) {
		t.Errorf("stop backup: %v", err)
	}
	if err := m.Stop(true); err != nil || f.master {
		t.Errorf("stop master: %v (director still master: %v)", err, f.master)
	}
	if err := m.Stop(true); !errors.Is(err, ErrNotRunning) {
		t.Errorf("stop master twice: %v", err)
	}
	// Started again, with another configuration.
	start(t, p.m, m, Config{Master: true, Interface: "sy0", SyncID: 9, MaxLen: 900, Port: 9000, TTL: 3})
	if d := m.Daemons(); len(d) != 1 || d[0].MaxLen != 900 || d[0].Port != 9000 || d[0].TTL != 3 || d[0].SyncID != 9 {
		t.Errorf("daemons %+v", d)
	}
}

// TestDumpPacing: a dump of 2000 entries (50 messages) at 100 messages a
// second takes about half a second, not none.
func TestDumpPacing(t *testing.T) {
	p := newPair(t)
	mt, bt := &fakeTable{}, &fakeTable{}
	for i := range 2000 {
		c := conns()[0]
		c.CPort = uint16(i)
		c.Client = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		mt.table = append(mt.table, c)
	}
	mm := New(mt, slog.New(slog.DiscardHandler), &Options{ResyncRate: 100, ResyncRepeat: -1})
	bm := newTestManager(t, bt)
	start(t, p.m, mm, Config{Master: true, Interface: "sy0"})
	t0 := time.Now()
	start(t, p.b, bm, Config{Interface: "sy0"})
	if !waitFor(20*time.Second, func() bool { return len(bt.got()) >= 2000 }) {
		t.Fatalf("learned %d of 2000", len(bt.got()))
	}
	if d := time.Since(t0); d < 400*time.Millisecond {
		t.Errorf("2000 entries at 100 messages/s took %v", d)
	}
}

// TestUnicast: with peers, no multicast at all: a master sends to its
// peer, a backup asks its peer for the table, and a director that is both
// takes each on the one port; a peer list naming the director itself is
// harmless.
func TestUnicast(t *testing.T) {
	p := newPair(t)
	at, bt := &fakeTable{}, &fakeTable{}
	for i := range 50 {
		c := conns()[i%len(conns())]
		c.CPort = uint16(40000 + i)
		at.table = append(at.table, c)
	}
	uni := func(f *fakeTable, peers ...string) *Manager {
		o := &Options{FlushDelay: 50 * time.Millisecond, DrainEvery: 5 * time.Millisecond,
			ResyncHoldoff: 10 * time.Millisecond, ResyncRepeat: -1}
		for _, a := range peers {
			o.Peers = append(o.Peers, netip.MustParseAddr(a))
		}
		return New(f, slog.New(slog.DiscardHandler), o)
	}
	// No multicast delivered, as in most clouds.
	for _, h := range []*testbed.Host{p.m, p.b} {
		for _, args := range [][]string{
			{"add", "table", "ip", "nomcast"},
			{"add", "chain", "ip", "nomcast", "in", "{ type filter hook input priority 0; }"},
			{"add", "rule", "ip", "nomcast", "in", "ip", "daddr", "224.0.0.0/4", "drop"},
		} {
			if out, err := h.Exec("nft", args...); err != nil {
				t.Fatalf("nft %v: %v: %s", args, err, out)
			}
		}
	}
	am := uni(at, "198.18.9.2", "198.18.9.1") // itself too
	bm := uni(bt, "198.18.9.1")
	// Both daemons on each side, a group nobody joins: unicast only.
	for _, x := range []struct {
		h *testbed.Host
		m *Manager
	}{{p.m, am}, {p.b, bm}} {
		start(t, x.h, x.m, Config{Master: true, Interface: "sy0", SyncID: 4})
		start(t, x.h, x.m, Config{Interface: "sy0", SyncID: 4})
	}
	// b's backup asked a's master for its table.
	if !waitFor(10*time.Second, func() bool { return len(bt.got()) >= 50 }) {
		t.Fatalf("b learned %d of a's 50 by resync", len(bt.got()))
	}
	ca, cb := conns()[1], conns()[2]
	ca.CPort, cb.CPort = 50001, 50002
	at.push(ca)
	bt.push(cb)
	if !waitFor(10*time.Second, func() bool { return len(bt.got()) > 50 && len(at.got()) > 0 }) {
		t.Fatalf("a learned %d, b learned %d", len(at.got()), len(bt.got()))
	}
	time.Sleep(200 * time.Millisecond) // an echo of a's own would show now
	if got := bt.got(); got[len(got)-1] != ca {
		t.Errorf("b's last learned %+v, want a's %+v", got[len(got)-1], ca)
	}
	if got := at.got(); len(got) != 1 || got[0] != cb {
		t.Errorf("a learned %+v, want only b's %+v", got, cb)
	}
	if st := am.Stats(); st.SendErrors != 0 {
		t.Errorf("a's send errors: %d", st.SendErrors)
	}
	// The metrics say the same.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(bm.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := mf.GetName()
			for _, l := range m.GetLabel() {
				k += "," + l.GetName() + "=" + l.GetValue()
			}
			got[k] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	st := bm.Stats()
	for k, want := range map[string]float64{
		"uvs_sync_connections_total,dir=in,result=learned": float64(st.Learned),
		"uvs_sync_messages_total,dir=in":                   float64(st.ReceivedMessages),
		"uvs_sync_resyncs_total,role=backup":               float64(st.ResyncRequests),
		"uvs_sync_daemon_running,role=master":              1,
		"uvs_sync_daemon_running,role=backup":              1,
	} {
		if got[k] != want || want == 0 {
			t.Errorf("%s = %v, want %v (and not 0)", k, got[k], want)
		}
	}
}
