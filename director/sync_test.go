package director

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"uvs/conntrack"
	"uvs/link"
	"uvs/packet"
	"uvs/packet/packettest"
	"uvs/service"
)

// syncWorker is testWorker with a persistent service on port 443 too, and
// the director a sync master.
func syncWorker(tb testing.TB) (*Director, *worker) {
	tb.Helper()
	d, w := testWorker(tb, 0)
	key := service.Key{Proto: service.TCP, Addr: vip, Port: 443}
	if err := d.Update(func(c *service.Config) error {
		if err := c.AddService(&service.Service{Key: key, Scheduler: "rr", Persistent: true, Timeout: 300 * time.Second, Netmask: service.Netmask4(0xffffff00)}); err != nil {
			return err
		}
		return c.AddDest(key, &service.Dest{Addr: rs1, Port: 443, Fwd: service.FwdMasq, Weight: 1})
	}); err != nil {
		tb.Fatal(err)
	}
	d.nworkers = 1 // the test's worker; the fake host starts none
	if err := d.StartSyncMaster(nil); err != nil {
		tb.Fatal(err)
	}
	if err := d.StartSyncMaster(nil); !errors.Is(err, ErrSyncMaster) {
		tb.Fatalf("second start: %v", err)
	}
	return d, w
}

func tcpTo(port uint16, flags uint8, payload int) []byte {
	return packettest.Frame{Src: client, Dst: vip, TTL: 64, Proto: packettest.TCP,
		SrcPort: 40000, DstPort: port, TCPFlags: flags, Payload: make([]byte, payload)}.Bytes()
}

func drain(d *Director) []SyncConn {
	var out []SyncConn
	d.SyncDrain(func(c *SyncConn) { out = append(out, *c) })
	return out
}

// TestSyncMasterPipeline: the workers queue what IPVS would send, when it
// would send it, with the template.
func TestSyncMasterPipeline(t *testing.T) {
	d, w := syncWorker(t)
	var got []SyncConn
	for _, port := range []uint16{80, 443} {
		handle(w, frameBuf(tcpTo(port, packet.TCPSyn, 0)))
		handle(w, frameBuf(tcpTo(port, packet.TCPAck, 0)))
		if got := drain(d); len(got) != 0 {
			t.Fatalf("port %d: sent before the third packet: %+v", port, got)
		}
		handle(w, frameBuf(tcpTo(port, packet.TCPAck|packet.TCPPsh, 10)))
		got = append(got, drain(d)...)
	}
	want := []SyncConn{
		{Proto: service.TCP, Client: client, CPort: 40000, Virtual: vip, VPort: 80, Dest: rs1, DPort: 8080,
			State: conntrack.StateEstablished, Timeout: 900 * time.Second},
		{Proto: service.TCP, Client: client, CPort: 40000, Virtual: vip, VPort: 443, Dest: rs1, DPort: 443,
			State: conntrack.StateEstablished, Timeout: 900 * time.Second},
		{Proto: service.TCP, Template: true, Client: netip.MustParseAddr("198.18.0.0"), Virtual: vip, VPort: 443, Dest: rs1, DPort: 443,
			State: conntrack.StateAssured, Timeout: 300 * time.Second},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	// A client FIN: a change of state, sent at once.
	handle(w, frameBuf(tcpTo(80, packet.TCPFin|packet.TCPAck, 0)))
	if got := drain(d); len(got) != 1 || got[0].State != conntrack.StateCloseWait || got[0].Timeout != 60*time.Second {
		t.Errorf("after FIN: %+v", got)
	}
	// The full dump: both connections and the template, time left.
	var walked []SyncConn
	d.SyncWalk(func(c *SyncConn) bool { walked = append(walked, *c); return true })
	if len(walked) != 3 || !walked[0].Resync || walked[0].Timeout <= 0 || walked[0].Timeout > 900*time.Second {
		t.Errorf("walk: %+v", walked)
	}
	d.StopSyncMaster()
	handle(w, frameBuf(tcpTo(443, packet.TCPFin|packet.TCPAck, 0)))
	if got := drain(d); len(got) != 0 {
		t.Errorf("stopped master: %+v", got)
	}
}

// TestSyncRingFull: a full ring drops and counts; the packet path goes on.
func TestSyncRingFull(t *testing.T) {
	d, _ := syncWorker(t)
	rec := syncRecord{proto: service.TCP}
	r := (*d.syncRings.Load())[0]
	for range syncRingSize + 10 {
		r.push(&rec)
	}
	if n := d.SyncDropped(); n != 10 {
		t.Errorf("%d dropped, want 10", n)
	}
	if n := d.SyncDrain(func(*SyncConn) {}); n != syncRingSize {
		t.Errorf("drained %d", n)
	}
	d.StopSyncMaster()
	if n := d.SyncDropped(); n != 10 {
		t.Errorf("after stop: %d dropped, want 10", n)
	}
}

// TestSyncLearnPipeline: a connection a master sent is forwarded both
// ways, with this director's server and method; one it cannot place is
// refused.
func TestSyncLearnPipeline(t *testing.T) {
	d, w := testWorker(t, 0)
	c := SyncConn{Proto: service.TCP, Client: client, CPort: 40000, Virtual: vip, VPort: 80, Dest: rs1, DPort: 8080,
		Fwd:   service.FwdRoute, // the master's method; this director's server says NAT
		State: conntrack.StateEstablished, Timeout: 900 * time.Second}
	if res, err := d.SyncLearn(&c); err != nil || res != conntrack.LearnCreated {
		t.Fatalf("learn: %v %v", res, err)
	}
	out := handle(w, frameBuf(tcpTo(80, packet.TCPAck, 10)))
	if len(out) != 1 {
		t.Fatalf("client packet: %d out", len(out))
	}
	var p packet.Parsed
	if r := p.Decode(out[0], false); r != packet.OK || netip.AddrFrom4([4]byte(p.Dst())) != rs1 || p.DstPort != 8080 {
		t.Fatalf("client packet not NATed to rs1:8080: %v %v:%d", r, p.Dst(), p.DstPort)
	}
	reply := packettest.Frame{Src: rs1, Dst: client, TTL: 64, Proto: packettest.TCP, SrcPort: 8080, DstPort: 40000,
		TCPFlags: packet.TCPAck, Payload: make([]byte, 5)}.Bytes()
	out = handle(w, frameBuf(reply))
	if len(out) != 1 {
		t.Fatalf("reply: %d out", len(out))
	}
	if r := p.Decode(out[0], false); r != packet.OK || netip.AddrFrom4([4]byte(p.Src())) != vip || p.SrcPort != 80 {
		t.Fatalf("reply not translated back: %v %v:%d", r, p.Src(), p.SrcPort)
	}
	for _, bad := range []struct {
		c   SyncConn
		err error
	}{
		{SyncConn{Proto: service.TCP, Client: client, CPort: 1, Virtual: vip, VPort: 81, Dest: rs1, DPort: 8080, State: conntrack.StateEstablished}, ErrSyncNoService},
		{SyncConn{Proto: service.UDP, Client: client, CPort: 1, Virtual: vip, VPort: 80, Dest: rs1, DPort: 8080, State: conntrack.StateUDP}, ErrSyncNoService},
		{SyncConn{Proto: service.TCP, Client: client, CPort: 1, Virtual: vip, VPort: 80, Dest: rs1, DPort: 9999, State: conntrack.StateEstablished}, ErrSyncNoDest},
		{SyncConn{Proto: 0, Template: true, FWMark: 20, Client: client, Virtual: markAddr(20, false), Dest: rs1}, ErrSyncNoService},
	} {
		if _, err := d.SyncLearn(&bad.c); !errors.Is(err, bad.err) {
			t.Errorf("%+v: %v, want %v", bad.c, err, bad.err)
		}
	}
	// No timeout (a version 0 message): the state's own.
	c.CPort, c.Timeout, c.State = 40001, 0, conntrack.StateFinWait
	d.SyncLearn(&c)
	var cn conntrack.Conn
	tp := conntrack.Tuple{Src: conntrack.AddrFrom(client), Dst: conntrack.AddrFrom(vip), SrcPort: 40001, DstPort: 80, Proto: service.TCP}
	if _, ok := d.ct.Peek(&tp, &cn); !ok || !cn.Learned || cn.State != conntrack.StateFinWait {
		t.Errorf("learned without a timeout: %v %+v", ok, cn)
	}
}

// TestSyncNoAllocs: with the master on, an established packet (every
// fiftieth queued) allocates nothing.
func TestSyncNoAllocs(t *testing.T) {
	d, w := syncWorker(t)
	handle(w, frameBuf(tcpTo(80, packet.TCPSyn, 0)))
	pkt := tcpTo(80, packet.TCPAck, 100)
	buf := frameBuf(pkt)
	n := testing.AllocsPerRun(1000, func() {
		copy(buf[headroom+link.VnetHdrLen:], pkt)
		w.pend[0] = w.pend[0][:0]
		w.frame(w.d.snap.Load(), buf)
	})
	if n != 0 {
		t.Errorf("%v allocs per packet with the sync master on", n)
	}
	if q := d.SyncDrain(func(*SyncConn) {}); q < 1000/50 {
		t.Errorf("%d queued in 1000 packets", q)
	}
}

// BenchmarkEstablishedSyncMaster is BenchmarkEstablished with the director
// a sync master: a connection queued every fifty packets.
func BenchmarkEstablishedSyncMaster(b *testing.B) {
	d, w := syncWorker(b)
	handle(w, frameBuf(tcpTo(80, packet.TCPSyn, 0)))
	pkt := tcpTo(80, packet.TCPAck, 100)
	buf := frameBuf(pkt)
	go func() { // the daemon's drain
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if d.syncRings.Load() == nil {
				return
			}
			d.SyncDrain(func(*SyncConn) {})
		}
	}()
	defer d.StopSyncMaster()
	benchFrame(b, w, w.d.snap.Load(), pkt, buf)
}
