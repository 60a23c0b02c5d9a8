package director

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"uvs/conntrack"
	"uvs/forward/tun"
	"uvs/link"
	"uvs/packet"
	"uvs/packet/packettest"
	"uvs/service"
)

// These tests drive the worker's frame handling directly, with a port that
// records what would be written: the real pipeline without devices, for
// unit tests, benchmarks and fuzzing. The end-to-end tests cover devices.

// nopDevice is a port device that is never read and forgets writes.
type nopDevice struct{}

func (nopDevice) Read([][]byte, []int, int) (int, error) { select {} }
func (nopDevice) Write(b [][]byte, _ int) (int, error)   { return len(b), nil }
func (nopDevice) BatchSize() int                         { return 64 }
func (nopDevice) Close() error                           { return nil }

// fakeHost serves one raw-IP port (as TUN does) and changes no host state.
type fakeHost struct{ pt *port }

func (h fakeHost) ports() []*port        { return []*port{h.pt} }
func (h fakeHost) apply(*snapshot) error { return nil }
func (h fakeHost) close() error          { return nil }

var (
	vip    = netip.MustParseAddr("198.18.0.1")
	client = netip.MustParseAddr("198.18.0.2")
	rs1    = netip.MustParseAddr("198.18.1.2")
)

// testWorker returns a director with service vip:80 -> rs1:8080 (NAT) and
// a worker on its port.
func testWorker(tb testing.TB, capacity int) (*Director, *worker) {
	return testWorkerFwd(tb, capacity, service.FwdMasq)
}

// tunnelSrc is the director's address towards rs1 in the tests' tunnels.
var tunnelSrc = netip.MustParseAddr("198.18.0.9")

// testWorkerFwd is testWorker with rs1 forwarded by fwd: port 8080 with
// NAT, 80 (the service's) with DR and TUN, whose tunnel is IPIP from
// tunnelSrc with a 1500-byte MTU.
func testWorkerFwd(tb testing.TB, capacity int, fwd service.Fwd) (*Director, *worker) {
	tb.Helper()
	d := newDirector(Config{Capacity: capacity, Workers: 1})
	d.tunnelFor = func(ds *service.Dest, _ map[conntrack.Addr]bool) (*tunnelDest, error) {
		return &tunnelDest{t: tun.Tunnel{Src: tunnelSrc, Dst: ds.Addr}, mtu: 1500}, nil
	}
	rsPort := uint16(8080)
	if fwd != service.FwdMasq {
		rsPort = 80
	}
	pt := &port{dev: nopDevice{}, name: "fake0", index: 1, vnet: true}
	if err := d.start(fakeHost{pt}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	key := service.Key{Proto: service.TCP, Addr: vip, Port: 80}
	err := d.Update(func(c *service.Config) error {
		if err := c.AddService(&service.Service{Key: key, Scheduler: "rr"}); err != nil {
			return err
		}
		return c.AddDest(key, &service.Dest{Addr: rs1, Port: rsPort, Fwd: fwd, Weight: 1})
	})
	if err != nil {
		tb.Fatal(err)
	}
	w := &worker{d: d, in: pt, q: nopDevice{}}
	w.pend = [][][]byte{make([][]byte, 0, 64)}
	w.scr = [][]byte{make([]byte, bufSize)}
	return d, w
}

// frameBuf lays a frame out as a read leaves it: headroom, a zero virtio
// header, the packet.
func frameBuf(pkt []byte) []byte {
	b := make([]byte, headroom+link.VnetHdrLen+len(pkt))
	copy(b[headroom+link.VnetHdrLen:], pkt)
	return b
}

func tcpFrame(src netip.Addr, sport uint16, flags uint8, payload int) []byte {
	return packettest.Frame{Src: src, Dst: vip, TTL: 64, Proto: packettest.TCP,
		SrcPort: sport, DstPort: 80, TCPFlags: flags, Payload: make([]byte, payload)}.Bytes()
}

// handle runs one frame through the worker and returns what it would
// write (the packets, after the virtio header).
func handle(w *worker, buf []byte) [][]byte {
	w.pend[0] = w.pend[0][:0]
	w.nscr = 0
	w.frame(w.d.snap.Load(), buf)
	var out [][]byte
	for _, b := range w.pend[0] {
		out = append(out, b[link.VnetHdrLen:]) // frames start at their virtio header
	}
	return out
}

func TestPipelineNAT(t *testing.T) {
	d, w := testWorker(t, 0)
	out := handle(w, frameBuf(tcpFrame(client, 40000, packet.TCPSyn, 0)))
	if len(out) != 1 {
		t.Fatalf("SYN: %d packets out, want 1", len(out))
	}
	var p packet.Parsed
	if r := p.Decode(out[0], false); r != packet.OK {
		t.Fatalf("output does not parse: %v", r)
	}
	// Read from the TUN device and written back to it: the kernel took a
	// hop on the way in and takes one on the way out, so the director
	// gives one back (kernelHop): 64 in, 65 out, one less than the client
	// sent at the real server, as with IPVS.
	if got, _ := netip.AddrFromSlice(p.Dst()); got != rs1 || p.DstPort != 8080 || p.TTL() != 65 {
		t.Errorf("SYN went to %v:%d ttl %d, want %v:8080 ttl 65", got, p.DstPort, p.TTL(), rs1)
	}
	if err := packettest.Verify(out[0], false); err != nil {
		t.Errorf("checksums: %v", err)
	}
	// The server's SYN-ACK comes back from the VIP.
	reply := packettest.Frame{Src: rs1, Dst: client, TTL: 64, Proto: packettest.TCP,
		SrcPort: 8080, DstPort: 40000, TCPFlags: packet.TCPSyn | packet.TCPAck}.Bytes()
	out = handle(w, frameBuf(reply))
	if len(out) != 1 {
		t.Fatalf("SYN-ACK: %d packets out", len(out))
	}
	p.Decode(out[0], false)
	if got, _ := netip.AddrFromSlice(p.Src()); got != vip || p.SrcPort != 80 {
		t.Errorf("reply from %v:%d, want %v:80", got, p.SrcPort, vip)
	}
	if err := packettest.Verify(out[0], false); err != nil {
		t.Errorf("reply checksums: %v", err)
	}
	c := d.Config().Services[0]
	if a := c.Dests[0].ActiveConns(); a != 1 {
		t.Errorf("ActiveConn %d, want 1", a)
	}
	if s := c.Stats.Sum(); s.Conns != 1 || s.InPkts != 1 || s.OutPkts != 1 {
		t.Errorf("service counters %+v", s)
	}
	// A non-SYN for an unknown connection is dropped and counted.
	if out := handle(w, frameBuf(tcpFrame(client, 40001, packet.TCPAck, 10))); len(out) != 0 {
		t.Errorf("stray ACK forwarded")
	}
	if d.noConn.Load() != 1 {
		t.Errorf("noConn = %d", d.noConn.Load())
	}
}

// Malformed frames are counted by reason and dropped, never a panic.
func TestPipelineMalformed(t *testing.T) {
	d, w := testWorker(t, 0)
	good := tcpFrame(client, 40000, packet.TCPSyn, 0)
	bad := append([]byte(nil), good...)
	bad[10] ^= 0xff // IPv4 header checksum
	for _, pkt := range [][]byte{good[:10], good[:30], bad, {0x45}} {
		if out := handle(w, frameBuf(pkt)); len(out) != 0 {
			t.Errorf("malformed frame %x forwarded", pkt)
		}
	}
	c := d.Counters()
	var n uint64
	for _, v := range c.Malformed {
		n += v
	}
	if n != 4 {
		t.Errorf("counted %d malformed frames, want 4: %v", n, c.Malformed)
	}
	if c.Malformed[packet.BadIPChecksum.String()] != 1 {
		t.Errorf("bad checksum not counted by reason: %v", c.Malformed)
	}
}

// The established path allocates nothing.
func TestPipelineNoAllocs(t *testing.T) {
	_, w := testWorker(t, 0)
	handle(w, frameBuf(tcpFrame(client, 40000, packet.TCPSyn, 0)))
	pkt := tcpFrame(client, 40000, packet.TCPAck, 100)
	buf := frameBuf(pkt)
	n := testing.AllocsPerRun(1000, func() {
		copy(buf[headroom+link.VnetHdrLen:], pkt)
		w.pend[0] = w.pend[0][:0]
		w.frame(w.d.snap.Load(), buf)
	})
	if n != 0 {
		t.Errorf("established packet: %v allocs, want 0", n)
	}
}

// BenchmarkEstablished is the established-flow NAT path: parse, lookup,
// rewrite, queue. Each iteration also copies the 154-byte frame back in,
// since the rewrite works in place.
func BenchmarkEstablished(b *testing.B) {
	_, w := testWorker(b, 0)
	handle(w, frameBuf(tcpFrame(client, 40000, packet.TCPSyn, 0)))
	pkt := tcpFrame(client, 40000, packet.TCPAck, 100)
	buf := frameBuf(pkt)
	benchFrame(b, w, w.d.snap.Load(), pkt, buf)
}

// benchFrame runs the worker over pkt, laid out in buf, b.N times: the
// frame is copied back in each time, since the rewrite works in place.
func benchFrame(b *testing.B, w *worker, s *snapshot, pkt, buf []byte) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A read writes the whole frame, its virtio header too (a
		// tunnel's outer headers overwrite the old one in the headroom).
		clear(buf[headroom : headroom+link.VnetHdrLen])
		copy(buf[headroom+link.VnetHdrLen:], pkt)
		w.pend[0] = w.pend[0][:0]
		if i&63 == 0 {
			w.d.clock.Tick() // once per batch, as the read loop does
		}
		w.frame(s, buf)
	}
}

// BenchmarkEstablishedEthernet is BenchmarkEstablished on an Ethernet
// port, as AF_PACKET gives it: with the next hop's lookup, the new
// Ethernet header and the MTU check, which a raw-IP port skips.
func BenchmarkEstablishedEthernet(b *testing.B) {
	d, w := testWorker(b, 0)
	pt := w.in
	pt.ether, pt.mac = true, [6]byte{2, 0, 0, 0, 0, 1}
	pt.mtu.Store(1500)
	frame := func(flags uint8, payload int) []byte {
		return packettest.Frame{Ether: true, Src: client, Dst: vip, TTL: 64, Proto: packettest.TCP,
			SrcPort: 40000, DstPort: 80, TCPFlags: flags, Payload: make([]byte, payload)}.Bytes()
	}
	s := d.snap.Load()
	handle(w, frameBuf(frame(packet.TCPSyn, 0))) // inserted; no next hop yet
	var c conntrack.Conn
	tp := conntrack.Tuple{Src: conntrack.AddrFrom(client), Dst: conntrack.AddrFrom(vip), SrcPort: 40000, DstPort: 80, Proto: service.TCP}
	if _, ok := d.ct.Peek(&tp, &c); !ok {
		b.Fatal("the SYN made no connection")
	}
	nh := &nexthop{port: pt, ip: rs1}
	nh.set([]byte{2, 0, 0, 0, 0, 2})
	s.nh = make([]*nexthop, c.Dest+1)
	s.nh[c.Dest] = nh
	pkt := frame(packet.TCPAck, 100)
	buf := frameBuf(pkt)
	if out := handle(w, buf); len(out) != 1 {
		b.Fatalf("%d frames out, want 1", len(out))
	}
	benchFrame(b, w, s, pkt, buf)
}

// BenchmarkNewConn is the new-connection path: parse, lookup miss, service
// lookup, schedule, insert, rewrite, in a table at steady size: 1<<16
// connections, each new one taking the place of an old one. The old ones
// are removed 4096 at a time with the timer stopped: in a director that is
// the sweeper's work, not the packet's (BenchmarkNewConnAndRemove counts
// both).
func BenchmarkNewConn(b *testing.B) { benchNewConn(b, false) }

// BenchmarkNewConnAndRemove is BenchmarkNewConn with each old connection
// removed, by its tuple, just before the new one arrives, and counted.
func BenchmarkNewConnAndRemove(b *testing.B) { benchNewConn(b, true) }

func benchNewConn(b *testing.B, removeEach bool) {
	_, w := testWorker(b, 1<<20)
	const flows, sweep = 1 << 16, 1 << 12
	frames := make([][]byte, flows)
	tuples := make([]conntrack.Tuple, flows)
	for i := range frames {
		src := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		frames[i] = tcpFrame(src, 40000, packet.TCPSyn, 0)
		tuples[i] = conntrack.Tuple{Src: conntrack.AddrFrom(src), Dst: conntrack.AddrFrom(vip), SrcPort: 40000, DstPort: 80, Proto: service.TCP}
	}
	buf := frameBuf(frames[0])
	const srcPortOff = headroom + link.VnetHdrLen + 20 // a bare IPv4 header without options
	s := w.d.snap.Load()
	for i := range frames {
		copy(buf[headroom+link.VnetHdrLen:], frames[i])
		w.pend[0] = w.pend[0][:0]
		w.frame(s, buf)
	}
	if n := w.d.ct.Len(); n != flows {
		b.Fatalf("%d connections after warm-up, want %d", n, flows)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % flows
		if !removeEach {
			if k%sweep == 0 {
				b.StopTimer()
				for j := k; j < k+sweep; j++ {
					if !w.d.ct.Remove(&tuples[j]) {
						b.Fatal("connection to replace is missing")
					}
				}
				b.StartTimer()
			}
		} else if !w.d.ct.Remove(&tuples[k]) {
			b.Fatal("connection to replace is missing")
		}
		copy(buf[headroom+link.VnetHdrLen:], frames[k])
		// Each round over the flows uses another client port, so that a
		// new connection does not find its index slots where the one it
		// replaces left them, still in cache. (The TCP checksum goes
		// stale; the director does not check it.)
		port := uint16(40000 + (i/flows)%1024)
		binary.BigEndian.PutUint16(buf[srcPortOff:], port)
		tuples[k].SrcPort = port
		w.pend[0] = w.pend[0][:0]
		if i&63 == 0 {
			w.d.clock.Tick()
		}
		w.frame(s, buf)
	}
	want := flows
	if !removeEach {
		// The last batch removed was refilled only up to b.N.
		want -= sweep - (b.N - (b.N-1)/sweep*sweep)
	}
	if n := w.d.ct.Len(); n != want {
		b.Fatalf("%d connections at the end, want %d", n, want)
	}
}

// FuzzPipeline feeds arbitrary frames through the whole worker path: it
// must never panic, and whatever it forwards must parse.
func FuzzPipeline(f *testing.F) {
	f.Add(tcpFrame(client, 40000, packet.TCPSyn, 0))
	f.Add(tcpFrame(client, 40000, packet.TCPAck, 20))
	f.Add(packettest.Frame{Src: rs1, Dst: client, TTL: 64, Proto: packettest.TCP, SrcPort: 8080, DstPort: 40000, TCPFlags: packet.TCPAck}.Bytes())
	f.Add(packettest.Frame{Src: client, Dst: vip, TTL: 1, Proto: packettest.UDP, SrcPort: 1, DstPort: 80}.Bytes())
	_, w := testWorker(f, 1<<10)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > 65535 {
			return
		}
		for _, out := range handle(w, frameBuf(pkt)) {
			var p packet.Parsed
			if r := p.Decode(out, false); r != packet.OK {
				t.Fatalf("forwarded a frame that does not parse (%v): %x", r, out)
			}
		}
	})
}

// "Port unreachable" answers are limited to the workers' share of
// icmpPerSecond after a burst, and to about one a second per destination
// after a burst of 6: a flood of SYNs with forged sources to a service
// without servers is not reflected at full rate, at anyone. The drops are
// counted.
func TestICMPRateLimit(t *testing.T) {
	setup := func(t *testing.T) (*Director, *worker, func(n int, src func(int) netip.Addr) int) {
		d, w := testWorker(t, 0)
		key := service.Key{Proto: service.TCP, Addr: vip, Port: 81}
		if err := d.Update(func(c *service.Config) error {
			return c.AddService(&service.Service{Key: key, Scheduler: "rr"})
		}); err != nil {
			t.Fatal(err)
		}
		w.setICMPShare(2) // 500/s, burst 25
		answers := func(n int, src func(int) netip.Addr) int {
			got := 0
			for i := range n {
				f := packettest.Frame{Src: src(i), Dst: vip, TTL: 64, Proto: packettest.TCP,
					SrcPort: uint16(20000 + i), DstPort: 81, TCPFlags: packet.TCPSyn}.Bytes()
				got += len(handle(w, frameBuf(f)))
			}
			return got
		}
		d.clock.Tick()
		return d, w, answers
	}
	t.Run("all destinations", func(t *testing.T) {
		d, _, answers := setup(t)
		round := 0
		many := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(10 + round), byte(i)}) }
		if got := answers(200, many); got != 25 {
			t.Fatalf("%d answers to 200 SYNs at once, want the burst of 25", got)
		}
		round++
		time.Sleep(40 * time.Millisecond) // 20 more tokens at 500/s
		d.clock.Tick()
		if got := answers(200, many); got < 15 || got > 25 {
			t.Errorf("%d answers after 40 ms, want about 20", got)
		}
		if n := d.Counters().ICMPLimited; n < 350 {
			t.Errorf("%d answers counted as rate limited, want about 355", n)
		}
	})
	t.Run("one destination", func(t *testing.T) {
		d, _, answers := setup(t)
		one := func(int) netip.Addr { return client }
		if got := answers(20, one); got != icmpPeerBurst {
			t.Fatalf("%d answers to 20 SYNs from one client, want its burst of %d", got, icmpPeerBurst)
		}
		time.Sleep(1100 * time.Millisecond)
		d.clock.Tick()
		if got := answers(5, one); got != 1 {
			t.Errorf("%d answers a second later, want 1", got)
		}
	})
}

var (
	vip6    = netip.MustParseAddr("2001:2::1")
	client6 = netip.MustParseAddr("2001:2::2")
	rs6     = netip.MustParseAddr("2001:2:0:1::2")
)

// frag6 cuts an Ethernet and IPv6 frame without extension headers into
// fragments carrying at most size bytes of its payload each.
func frag6(frame []byte, size int, id uint32) [][]byte {
	eth, ip, data := frame[:14], frame[14:54], frame[54:]
	var out [][]byte
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		f := append(append([]byte{}, eth...), ip...)
		fh := make([]byte, 8)
		fh[0], f[14+6] = f[14+6], packet.ProtoFragment
		fo := uint16(off)
		if end < len(data) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		f = append(append(f, fh...), data[off:end]...)
		binary.BigEndian.PutUint16(f[14+4:], uint16(len(f)-54))
		out = append(out, f)
	}
	return out
}

// A TCP segment that came in fragments of at most 1280 bytes and is larger
// than them goes on whole through a port whose MTU takes it (only UDP is
// cut again); no "packet too big" with an MTU above what the sender's
// fragments already respect (found in review).
func TestFragmentedTCPForwardedWhole(t *testing.T) {
	d, w := testWorker(t, 0)
	pt := w.in
	pt.ether, pt.mac = true, [6]byte{2, 0, 0, 0, 0, 1}
	pt.mtu.Store(9000)
	key := service.Key{Proto: service.TCP, Addr: vip6, Port: 53}
	if err := d.Update(func(c *service.Config) error {
		if err := c.AddService(&service.Service{Key: key, Scheduler: "rr"}); err != nil {
			return err
		}
		return c.AddDest(key, &service.Dest{Addr: rs6, Port: 53, Fwd: service.FwdMasq, Weight: 1})
	}); err != nil {
		t.Fatal(err)
	}
	mk := func(flags uint8, n int) []byte {
		return packettest.Frame{Ether: true, Src: client6, Dst: vip6, TTL: 64, Proto: packettest.TCP,
			SrcPort: 40001, DstPort: 53, TCPFlags: flags, Payload: make([]byte, n)}.Bytes()
	}
	handle(w, frameBuf(mk(packet.TCPSyn, 0))) // the connection; no next hop yet
	var c conntrack.Conn
	tp := conntrack.Tuple{Src: conntrack.AddrFrom(client6), Dst: conntrack.AddrFrom(vip6), SrcPort: 40001, DstPort: 53, Proto: service.TCP}
	if _, ok := d.ct.Peek(&tp, &c); !ok {
		t.Fatal("the SYN made no connection")
	}
	s := d.snap.Load()
	nh := &nexthop{port: pt, ip: rs6}
	nh.set([]byte{2, 0, 0, 0, 0, 2})
	s.nh = make([]*nexthop, c.Dest+1)
	s.nh[c.Dest] = nh
	var outs [][]byte
	for _, f := range frag6(mk(packet.TCPAck, 2000), 1232, 7) {
		outs = append(outs, handle(w, frameBuf(f))...)
	}
	var p packet.Parsed
	if len(outs) != 1 || p.Decode(outs[0], true) != packet.OK || p.Proto != packet.ProtoTCP || p.IPLen() != 40+20+2000 {
		t.Fatalf("%d packets out (the first %d bytes), want the whole segment", len(outs), len(outs[0]))
	}
	if got, _ := netip.AddrFromSlice(p.Dst()); got != rs6 {
		t.Errorf("sent to %v, want %v", got, rs6)
	}
	if n := d.Counters().TooBig; n != 0 {
		t.Errorf("too_big %d, want 0", n)
	}
}

// etherWorker makes the worker's port an Ethernet one, as AF_PACKET gives
// it, and rs1's next hop known, after the connection from client port
// 40000 was made by a SYN.
func etherWorker(tb testing.TB, d *Director, w *worker) *snapshot {
	tb.Helper()
	pt := w.in
	pt.ether, pt.mac = true, [6]byte{2, 0, 0, 0, 0, 1}
	pt.mtu.Store(1500)
	s := d.snap.Load()
	handle(w, frameBuf(etherFrame(packet.TCPSyn, 0))) // inserted; no next hop yet
	var c conntrack.Conn
	tp := conntrack.Tuple{Src: conntrack.AddrFrom(client), Dst: conntrack.AddrFrom(vip), SrcPort: 40000, DstPort: 80, Proto: service.TCP}
	if _, ok := d.ct.Peek(&tp, &c); !ok {
		tb.Fatal("the SYN made no connection")
	}
	nh := &nexthop{port: pt, ip: rs1}
	nh.set(rsMAC[:])
	s.nh = make([]*nexthop, c.Dest+1)
	s.nh[c.Dest] = nh
	return s
}

var rsMAC = [6]byte{2, 0, 0, 0, 0, 2}

// etherWorkerFwd is testWorkerFwd on an Ethernet port with the connection
// from client port 40000 made and rs1's next hop known (etherWorker).
func etherWorkerFwd(tb testing.TB, fwd service.Fwd) (*Director, *worker, *snapshot) {
	tb.Helper()
	d, w := testWorkerFwd(tb, 0, fwd)
	return d, w, etherWorker(tb, d, w)
}

// handleOne runs frame pkt through the worker and returns the one frame
// it writes.
func handleOne(tb testing.TB, w *worker, pkt []byte) []byte {
	tb.Helper()
	out := handle(w, frameBuf(pkt))
	if len(out) != 1 {
		tb.Fatalf("%d frames out, want 1", len(out))
	}
	return out[0]
}

func etherFrame(flags uint8, payload int) []byte {
	return packettest.Frame{Ether: true, Src: client, Dst: vip, TTL: 64, Proto: packettest.TCP,
		SrcPort: 40000, DstPort: 80, TCPFlags: flags, Payload: make([]byte, payload)}.Bytes()
}

// TestPipelineDR: a DR packet leaves with the real server's MAC, the IP
// packet as it came but for the TTL, and is counted in, never out.
func TestPipelineDR(t *testing.T) {
	d, w, _ := etherWorkerFwd(t, service.FwdRoute)
	in := etherFrame(packet.TCPAck, 100)
	f := handleOne(t, w, in)
	if [6]byte(f[0:6]) != rsMAC || [6]byte(f[6:12]) != w.in.mac {
		t.Errorf("MACs %x -> %x, want %x -> %x", f[6:12], f[0:6], w.in.mac, rsMAC)
	}
	var p packet.Parsed
	if r := p.Decode(f, true); r != packet.OK {
		t.Fatalf("output does not parse: %v", r)
	}
	if got, _ := netip.AddrFromSlice(p.Dst()); got != vip || p.DstPort != 80 || p.TTL() != 63 {
		t.Errorf("to %v:%d ttl %d, want %v:80 ttl 63", got, p.DstPort, p.TTL(), vip)
	}
	if err := packettest.Verify(f, true); err != nil {
		t.Errorf("checksums: %v", err)
	}
	// Only the TTL and the IPv4 checksum differ from what came in.
	for i := 14; i < len(in); i++ {
		if i != 14+8 && i != 14+10 && i != 14+11 && f[i] != in[i] {
			t.Errorf("byte %d of the frame changed: %#x -> %#x", i, in[i], f[i])
		}
	}
	if s := d.Config().Services[0].Stats.Sum(); s.InPkts != 2 || s.OutPkts != 0 {
		t.Errorf("counters %+v, want 2 in, 0 out", s)
	}
}

// TestPipelineTunnel: a tunnelled packet leaves wrapped in IPIP to the
// real server, the client's packet inside it whole (TTL decremented).
func TestPipelineTunnel(t *testing.T) {
	_, w, _ := etherWorkerFwd(t, service.FwdTunnel)
	in := etherFrame(packet.TCPAck, 100)
	f := handleOne(t, w, in)
	if [6]byte(f[0:6]) != rsMAC || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		t.Fatalf("Ethernet header %x", f[:14])
	}
	var p packet.Parsed
	if r := p.Decode(f, true); r != packet.OK || p.Proto != packet.ProtoIPIP {
		t.Fatalf("output: %v, protocol %d, want IPIP", r, p.Proto)
	}
	if src, _ := netip.AddrFromSlice(p.Src()); src != tunnelSrc {
		t.Errorf("outer source %v, want %v", src, tunnelSrc)
	}
	if dst, _ := netip.AddrFromSlice(p.Dst()); dst != rs1 {
		t.Errorf("outer destination %v, want %v", dst, rs1)
	}
	inner := f[14+20:]
	var q packet.Parsed
	if r := q.Decode(inner, false); r != packet.OK {
		t.Fatalf("inner packet: %v", r)
	}
	if dst, _ := netip.AddrFromSlice(q.Dst()); dst != vip || q.TTL() != 63 || p.TTL() != 63 {
		t.Errorf("inner to %v ttl %d, outer ttl %d; want %v, 63, 63", dst, q.TTL(), p.TTL(), vip)
	}
	if err := packettest.Verify(inner, false); err != nil {
		t.Errorf("inner checksums: %v", err)
	}
	// Too big once wrapped: "fragmentation needed" with 1480, to the client.
	icmp := handleOne(t, w, packettest.Frame{Ether: true, Src: client, Dst: vip, TTL: 64, Proto: packettest.TCP,
		SrcPort: 40000, DstPort: 80, TCPFlags: packet.TCPAck, DontFragment: true, Payload: make([]byte, 1500-40)}.Bytes())
	p.Decode(icmp, true)
	if dst, _ := netip.AddrFromSlice(p.Dst()); p.Proto != packet.ProtoICMP || dst != client ||
		p.ICMPType != packet.ICMPUnreachable || p.ICMPCode != packet.ICMPCodeFragNeeded ||
		binary.BigEndian.Uint16(icmp[p.L4+6:]) != 1480 {
		t.Errorf("too big: answered %x", icmp)
	}
	// It quotes the packet as it came, TTL included (as a router does).
	if ttl := icmp[p.L4+8+8]; ttl != 64 {
		t.Errorf("too big: the quoted packet has TTL %d, want 64 as sent", ttl)
	}
}

// BenchmarkEstablishedDR is BenchmarkEstablishedEthernet for a direct
// routing server: the MAC rewrite.
func BenchmarkEstablishedDR(b *testing.B) { benchEstablishedFwd(b, service.FwdRoute) }

// BenchmarkEstablishedTunnel is BenchmarkEstablishedEthernet for a
// tunnelling server: IPIP encapsulation in the headroom.
func BenchmarkEstablishedTunnel(b *testing.B) { benchEstablishedFwd(b, service.FwdTunnel) }

func benchEstablishedFwd(b *testing.B, fwd service.Fwd) {
	_, w, s := etherWorkerFwd(b, fwd)
	pkt := etherFrame(packet.TCPAck, 100)
	handleOne(b, w, pkt)
	benchFrame(b, w, s, pkt, frameBuf(pkt))
}

// countingHost is fakeHost counting its closes, and checking that no rule
// change is applying to it meanwhile.
type countingHost struct {
	fakeHost
	closes   *atomic.Int32
	applying *atomic.Bool
}

func (h countingHost) apply(*snapshot) error {
	h.applying.Store(true)
	time.Sleep(time.Millisecond)
	h.applying.Store(false)
	return nil
}

func (h countingHost) close() error {
	if h.applying.Load() {
		panic("host closed while a rule change applies to it")
	}
	h.closes.Add(1)
	return nil
}

// TestRestoreHostOnce: two panicking workers and Close, racing with rule
// changes, restore the host once, never in the middle of a change.
func TestRestoreHostOnce(t *testing.T) {
	d := newDirector(Config{Workers: 1})
	h := countingHost{fakeHost{&port{dev: nopDevice{}, name: "fake0", index: 1}}, new(atomic.Int32), new(atomic.Bool)}
	if err := d.start(h); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := service.Key{Proto: service.TCP, Addr: vip, Port: uint16(1000 + i)}
			d.Update(func(c *service.Config) error { return c.AddService(&service.Service{Key: key, Scheduler: "rr"}) })
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); d.restoreHost() }()
	}
	wg.Wait()
	d.Close()
	if n := h.closes.Load(); n != 1 {
		t.Errorf("host closed %d times, want once", n)
	}
}

// TestManyServersComeAndGo adds and deletes 100 000 real servers, one at a
// time, with connections to some of them: the registry, the snapshot's
// tables indexed by ID and the heap come back to the size of what exists.
func TestManyServersComeAndGo(t *testing.T) {
	d, w := testWorker(t, 0)
	d.releaseAfter = 0
	key := service.Key{Proto: service.TCP, Addr: vip, Port: 80}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const n = 100_000
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		if err := d.Update(func(c *service.Config) error {
			return c.AddDest(key, &service.Dest{Addr: a, Port: 8080, Fwd: service.FwdMasq, Weight: 1})
		}); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			// A connection to it, which keeps its ID until it is gone.
			handle(w, frameBuf(tcpFrame(client, uint16(20000+i/1000), packet.TCPSyn, 0)))
		}
		if err := d.Update(func(c *service.Config) error { return c.DeleteDest(key, a, 8080) }); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			d.releaseGone() // housekeeping does, every 2 s
		}
	}
	d.releaseGone()
	if issued := d.reg.Issued(); issued > 1000 {
		t.Errorf("the registry issued %d IDs for at most ~100 servers alive at once", issued)
	}
	if s := d.snap.Load(); len(s.nh) > 1000 || len(s.byID) > 10 {
		t.Errorf("snapshot tables: %d next hops, %d services", len(s.nh), len(s.byID))
	}
	if grew := int64(heap()) - int64(before); grew > 4<<20 {
		t.Errorf("the heap grew by %d bytes after 100 000 servers came and went", grew)
	}
}
