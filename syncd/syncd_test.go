package syncd

import (
	"bytes"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"uvs/conntrack"
	"uvs/director"
	"uvs/ipvssync"
	"uvs/service"
)

// fakeTable plays the director.
type fakeTable struct {
	mu       sync.Mutex
	master   bool
	queue    []director.SyncConn // handed out by SyncDrain
	table    []director.SyncConn // walked by SyncWalk
	learned  []director.SyncConn
	learnErr error
	result   conntrack.LearnResult
}

func (f *fakeTable) StartSyncMaster(*conntrack.SyncPolicy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.master {
		return director.ErrSyncMaster
	}
	f.master = true
	return nil
}

func (f *fakeTable) StopSyncMaster() {
	f.mu.Lock()
	f.master = false
	f.mu.Unlock()
}

func (f *fakeTable) SyncDrain(fn func(c *director.SyncConn)) int {
	f.mu.Lock()
	q := f.queue
	f.queue = nil
	f.mu.Unlock()
	for i := range q {
		fn(&q[i])
	}
	return len(q)
}

func (f *fakeTable) SyncWalk(fn func(c *director.SyncConn) bool) {
	f.mu.Lock()
	t := append([]director.SyncConn(nil), f.table...)
	f.mu.Unlock()
	for i := range t {
		t[i].Resync = true
		if !fn(&t[i]) {
			return
		}
	}
}

func (f *fakeTable) SyncLearn(c *director.SyncConn) (conntrack.LearnResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.learnErr != nil {
		return 0, f.learnErr
	}
	f.learned = append(f.learned, *c)
	return f.result, nil
}

func (f *fakeTable) SyncDropped() uint64 { return 0 }

func (f *fakeTable) push(cs ...director.SyncConn) {
	f.mu.Lock()
	f.queue = append(f.queue, cs...)
	f.mu.Unlock()
}

func (f *fakeTable) got() []director.SyncConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]director.SyncConn(nil), f.learned...)
}

var (
	client = netip.MustParseAddr("198.18.0.2")
	vip    = netip.MustParseAddr("198.18.0.1")
	rs1    = netip.MustParseAddr("198.18.1.2")
)

// conns are one of each kind the director sends.
func conns() []director.SyncConn {
	return []director.SyncConn{
		{Proto: service.TCP, Client: client, CPort: 40000, Virtual: vip, VPort: 80, Dest: rs1, DPort: 80,
			State: conntrack.StateEstablished, Timeout: 900 * time.Second},
		{Proto: service.TCP, Client: client, CPort: 40001, Virtual: vip, VPort: 80, Dest: rs1, DPort: 80,
			Fwd: service.FwdRoute, State: conntrack.StateFinWait, Timeout: 120 * time.Second},
		{Proto: service.UDP, Client: client, CPort: 5353, Virtual: vip, VPort: 53, Dest: rs1, DPort: 53,
			Fwd: service.FwdTunnel, State: conntrack.StateUDP, Timeout: 300 * time.Second},
		{Proto: service.TCP, Template: true, Client: client, Virtual: vip, VPort: 443, Dest: rs1, DPort: 443,
			State: conntrack.StateAssured, Timeout: 360 * time.Second},
		{Proto: 0, Template: true, Client: client, Virtual: netip.AddrFrom4([4]byte{0, 0, 0, 20}), Dest: rs1,
			FWMark: 20, State: conntrack.StateNone, Timeout: 1200 * time.Second},
		{Proto: service.TCP, Client: netip.MustParseAddr("2001:2::2"), CPort: 40000, Virtual: netip.MustParseAddr("2001:2::1"),
			VPort: 80, Dest: netip.MustParseAddr("2001:2:0:1::2"), DPort: 80, State: conntrack.StateTimeWait, Timeout: 120 * time.Second},
	}
}

// TestConvert: what the director gives goes on the wire as IPVS writes
// it, and comes back the same.
func TestConvert(t *testing.T) {
	want := []ipvssync.Conn{
		{Proto: 6, Flags: 0, State: 1, CPort: 40000, VPort: 80, DPort: 80, Timeout: 900},
		{Proto: 6, Flags: ipvssync.FwdRoute | ipvssync.FlagInactive, State: 4, CPort: 40001, VPort: 80, DPort: 80, Timeout: 120},
		{Proto: 17, Flags: ipvssync.FwdTunnel | ipvssync.FlagInactive, State: 0, CPort: 5353, VPort: 53, DPort: 53, Timeout: 300},
		{Proto: 6, Flags: ipvssync.FlagTemplate | ipvssync.FlagInactive, State: 1, VPort: 443, DPort: 443, Timeout: 360},
		{Proto: 0, Flags: ipvssync.FlagTemplate | ipvssync.FlagInactive, State: 0, FWMark: 20, Timeout: 1200},
		{V6: true, Proto: 6, Flags: ipvssync.FlagInactive, State: 5, CPort: 40000, VPort: 80, DPort: 80, Timeout: 120},
	}
	for i, c := range conns() {
		var w ipvssync.Conn
		toWire(&c, &w)
		want[i].CAddr, want[i].VAddr, want[i].DAddr = c.Client, c.Virtual, c.Dest
		if !reflect.DeepEqual(w, want[i]) {
			t.Errorf("%d:\n got %+v\nwant %+v", i, w, want[i])
		}
		var back director.SyncConn
		if why := fromWire(&w, &back); why != "" || !reflect.DeepEqual(back, c) {
			t.Errorf("%d back (%s):\n got %+v\nwant %+v", i, why, back, c)
		}
	}
	// A dump's time left rounds to whole seconds, never to 0 ("your own").
	c := conns()[0]
	c.Timeout = 300 * time.Millisecond
	var w ipvssync.Conn
	if toWire(&c, &w); w.Timeout != 1 {
		t.Errorf("timeout %d", w.Timeout)
	}
	for name, w := range map[string]ipvssync.Conn{
		DropProtocol + " sctp":          {Proto: 132, CAddr: client, VAddr: vip, DAddr: rs1},
		DropProtocol + " ip no mark":    {Proto: 0, Flags: ipvssync.FlagTemplate, CAddr: client, VAddr: vip, DAddr: rs1},
		DropProtocol + " ip connection": {Proto: 0, FWMark: 1, CAddr: client, VAddr: vip, DAddr: rs1},
		DropState + " tcp":              {Proto: 6, State: 11, CAddr: client, VAddr: vip, DAddr: rs1},
		DropState + " udp":              {Proto: 17, State: 1, CAddr: client, VAddr: vip, DAddr: rs1},
		DropPE:                          {Proto: 17, Flags: ipvssync.FlagTemplate, PEData: []byte("x"), PEName: []byte("sip"), CAddr: client, VAddr: vip, DAddr: rs1},
	} {
		var c director.SyncConn
		if why := fromWire(&w, &c); why == "" || why != name[:len(why)] {
			t.Errorf("%s: %q", name, why)
		}
	}
}

// TestDefaults: the sizes and defaults Linux 6.1 reported for the same
// ipvsadm commands (ipvsadm/testdata/daemon.out).
func TestDefaults(t *testing.T) {
	g6 := netip.MustParseAddr("ff02::8:81")
	for _, tc := range []struct {
		in      Config
		mtu     int
		maxLen  int
		group   netip.Addr
		port    uint16
		ttl     uint8
		comment string
	}{
		{Config{Master: true}, 1500, 1472, ipvssync.DefaultGroup, 8848, 1, "master"},
		{Config{}, 1500, 1472, ipvssync.DefaultGroup, 8848, 1, "backup"},
		{Config{Master: true}, 9000, 1472, ipvssync.DefaultGroup, 8848, 1, "master, jumbo MTU"},
		{Config{}, 9000, 8972, ipvssync.DefaultGroup, 8848, 1, "backup, jumbo MTU"},
		{Config{}, 1280, 1472, ipvssync.DefaultGroup, 8848, 1, "backup, small MTU"},
		{Config{Group: g6}, 1500, 1452, g6, 8848, 1, "IPv6 group"},
		{Config{Master: true, MaxLen: 900, Group: netip.MustParseAddr("239.1.2.3"), Port: 9000, TTL: 3}, 1500, 900, netip.MustParseAddr("239.1.2.3"), 9000, 3, "given"},
		{Config{MaxLen: 100}, 1500, 1024, ipvssync.DefaultGroup, 8848, 1, "backup's least"},
		{Config{Master: true, MaxLen: 1}, 1500, 1, ipvssync.DefaultGroup, 8848, 1, "master's least"},
		{Config{MaxLen: 65507}, 1500, 65507, ipvssync.DefaultGroup, 8848, 1, "largest"},
		{Config{MaxLen: 65507, Group: g6}, 1500, 65487, g6, 8848, 1, "largest, IPv6"},
	} {
		c := withDefaults(tc.in, tc.mtu)
		if c.MaxLen != tc.maxLen || c.Group != tc.group || c.Port != tc.port || c.TTL != tc.ttl {
			t.Errorf("%s: %+v", tc.comment, c)
		}
	}
}

func newTestManager(t *testing.T, f *fakeTable) *Manager {
	return New(f, slog.New(slog.DiscardHandler), &Options{FlushDelay: 50 * time.Millisecond, DrainEvery: 5 * time.Millisecond,
		ResyncHoldoff: 10 * time.Millisecond, ResyncRepeat: -1})
}

// TestProcessor: a backup's handling of datagrams, socket aside.
func TestProcessor(t *testing.T) {
	f := &fakeTable{}
	m := newTestManager(t, f)
	p := &processor{m: m, syncID: 7, maxLen: 1472}
	w := ipvssync.NewWriter(7, 1472)
	var wc ipvssync.Conn
	for _, c := range conns() {
		toWire(&c, &wc)
		if err := w.Add(&wc); err != nil {
			t.Fatal(err)
		}
	}
	good := bytes.Clone(w.Bytes())
	p.message(good)
	if got := f.got(); !reflect.DeepEqual(got, conns()) {
		t.Fatalf("learned\n%+v\nwant\n%+v", got, conns())
	}
	other := bytes.Clone(good)
	other[1] = 8
	p.message(other) // another sync ID
	p.message(good[:len(good)-1])
	p.message(ipvssync.AppendControl(nil, 7, ipvssync.ControlResync)) // for masters
	p0 := &processor{m: m, syncID: 0, maxLen: 100}
	p0.message(good) // longer than its maxlen
	bad := bytes.Clone(good)
	bad[ipvssync.HeaderLen+ipvssync.ConnLenV4] = 2 // second entry of an unknown type
	p.message(bad)
	// The first message's entries, and the one before the bad entry.
	if got := len(f.got()); got != len(conns())+1 {
		t.Errorf("%d learned, want %d", got, len(conns())+1)
	}
	f.learnErr = director.ErrSyncNoService
	p.message(good)
	f.learnErr = conntrack.ErrFull
	p0.maxLen = 1472
	p0.message(good) // sync ID 0 takes any
	st := m.Stats()
	want := map[string]uint64{DropSyncID: 1, DropMalformed: 2, DropTooLong: 1,
		DropNoService: uint64(len(conns())), DropTableFull: uint64(len(conns()))}
	if !reflect.DeepEqual(st.Dropped, want) || st.ReceivedMessages != 4 || st.Learned != uint64(len(conns())+1) || st.Updated != 0 {
		t.Errorf("stats %+v", st)
	}
}
