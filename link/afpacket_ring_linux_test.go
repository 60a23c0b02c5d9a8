package link

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// ringCfg turns the TPACKET_V3 ring on.
func ringCfg() *AFPacketConfig { return &AFPacketConfig{RXRing: true} }

// ringPair is pair() in uvsring- namespaces.
func ringPair(tb testing.TB) (x, y *testNS) { return pairIn(tb, "uvsring") }

func TestRingReadsUDPAndNotOwnOutput(t *testing.T) {
	needRoot(t)
	x, y := ringPair(t)
	f := testReadsUDP(t, x, y, ringCfg())
	var h VnetHdr
	h.Decode(f)
	if h.GSOType != GSONone {
		t.Errorf("small datagram has GSO type %d", h.GSOType)
	}
}

func TestRingCloseUnblocksRead(t *testing.T) {
	needRoot(t)
	x, _ := ringPair(t)
	d := openAF(t, x, "x0", ringCfg())
	testCloseUnblocks(t, d)
	// Close again, as the test cleanup does: no double unmap.
	if err := d.Close(); err == nil {
		t.Error("second Close succeeded")
	}
}

func TestRingRejectsSmallBlocks(t *testing.T) {
	needRoot(t)
	x, _ := ringPair(t)
	x.do(t, func() error {
		d, err := OpenAFPacket("x0", &AFPacketConfig{RXRing: true, RingBlockSize: 16 << 10})
		if err == nil {
			d.Close()
			t.Error("a 16 KiB ring block was accepted; 64 KiB frames would all be dropped")
		}
		return nil
	})
}

func TestRingFanoutKeepsFlowsTogether(t *testing.T) {
	needRoot(t)
	x, y := ringPair(t)
	x.neigh(t, "x0", ipY, macOf(t, y, "y0"))
	q0 := openAF(t, y, "y0", ringCfg())
	q1, err := q0.OpenQueue()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q1.Close() })
	if q1.ring == nil {
		t.Fatal("the second queue has no ring")
	}
	testFanout(t, x, q0, q1)
}

func TestRingBridgeBulkTCP(t *testing.T) {
	needRoot(t)
	a, c, br := relayWith(t, "uvsring", ringCfg())
	testBridgeBulk(t, a, c, br)
}

// TestRingMatchesRecvmmsg reads the same TCP stream on one interface through
// a ring socket and a recvmmsg socket at once (two sockets, no fanout: both
// get every frame) and requires the same frames, vnet headers included,
// matched by IP ID.
func TestRingMatchesRecvmmsg(t *testing.T) {
	needRoot(t)
	x, y := ringPair(t)
	x.neigh(t, "x0", ipY, macOf(t, y, "y0"))
	y.neigh(t, "y0", ipX, macOf(t, x, "x0"))
	ring := openAF(t, y, "y0", ringCfg())
	plain := openAF(t, y, "y0", nil)

	var ln *net.TCPListener
	y.do(t, func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: ipY})
		return err
	})
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		s, err := ln.AcceptTCP()
		if err == nil {
			io.Copy(io.Discard, s)
			s.Close()
		}
	}()

	// collect keeps the frames towards the listener's port, in order.
	const want = 300
	collect := func(d *AFPacket, out *[][]byte, wg *sync.WaitGroup) {
		defer wg.Done()
		bufs, sizes := frameBufs(d.BatchSize(), 0)
		for len(*out) < want {
			n, err := d.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			for i := 0; i < n && len(*out) < want; i++ {
				f := bufs[i][:sizes[i]]
				p := gopacket.NewPacket(f[VnetHdrLen:], layers.LayerTypeEthernet, gopacket.NoCopy)
				if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && uint16(tcp.DstPort) == port {
					*out = append(*out, bytes.Clone(f))
				}
			}
		}
	}
	var fromRing, fromPlain [][]byte
	var wg sync.WaitGroup
	wg.Add(2)
	go collect(ring, &fromRing, &wg)
	go collect(plain, &fromPlain, &wg)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	x.do(t, func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		// Send until both readers have their frames, at most 10 s.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		data := make([]byte, 1<<20)
		for {
			select {
			case <-done:
				return nil
			default:
			}
			if _, err := c.Write(data); err != nil {
				return err
			}
		}
	})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		ring.Close()
		plain.Close()
		<-done
	}
	if len(fromRing) != want || len(fromPlain) != want {
		t.Fatalf("got %d frames from the ring and %d from recvmmsg, want %d each", len(fromRing), len(fromPlain), want)
	}
	// Each socket has its own queue. The kernel may drop frames for one
	// and not the other (its queue was full), and two frames the sender
	// sent from two CPUs at once may reach the two queues in opposite
	// orders. So frames are matched by IP ID (unique among these): every
	// frame both got must be the same, and without drops both got all.
	rs, _ := ring.Stats()
	ps, _ := plain.Stats()
	dropped := rs.KernelDrops+ps.KernelDrops > 0
	ipID := func(f []byte) uint16 { return binary.BigEndian.Uint16(f[VnetHdrLen+14+4:]) }
	byID := make(map[uint16][]byte, len(fromPlain))
	for _, f := range fromPlain {
		byID[ipID(f)] = f
	}
	gso, both := 0, 0
	for i, f := range fromRing {
		g, ok := byID[ipID(f)]
		if !ok {
			if !dropped {
				t.Fatalf("frame %d (IP ID %d) came from the ring only, with no drops", i, ipID(f))
			}
			continue
		}
		if !bytes.Equal(f, g) {
			t.Fatalf("frame %d differs:\n ring %x\nplain %x", i, f[:min(80, len(f))], g[:min(80, len(g))])
		}
		both++
		var h VnetHdr
		h.Decode(f)
		if h.GSOType != GSONone {
			gso++
		}
	}
	if both < want/2 {
		t.Fatalf("only %d frames in both (kernel drops: ring %d, recvmmsg %d)", both, rs.KernelDrops, ps.KernelDrops)
	}
	if gso == 0 {
		t.Error("no GSO frame among them: the vnet header path was not exercised")
	}
	t.Logf("%d identical frames, %d of them GSO (kernel drops: ring %d, recvmmsg %d)", both, gso, rs.KernelDrops, ps.KernelDrops)
}

func TestRingReadWriteDoNotAllocate(t *testing.T) {
	needRoot(t)
	x, y := ringPair(t)
	dx := openAF(t, x, "x0", nil)
	dy := openAF(t, y, "y0", ringCfg())
	frame := testFrame(headroom, macOf(t, y, "y0"), dx.MAC(), 64, 'a')
	out := [][]byte{frame}
	bufs, sizes := frameBufs(8, headroom)
	timer := time.AfterFunc(10*time.Second, func() { dy.Close() })
	defer timer.Stop()
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := dx.Write(out, headroom); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if _, err := dy.Read(bufs, sizes, headroom); err != nil {
			t.Fatalf("Read: %v", err)
		}
	})
	if allocs != 0 {
		t.Errorf("Write+Read allocate %.1f times per frame, want 0", allocs)
	}
}

func TestRingDropsFramesTooBigForTheBuffer(t *testing.T) {
	needRoot(t)
	x, y := ringPair(t)
	dx := openAF(t, x, "x0", nil)
	dy := openAF(t, y, "y0", ringCfg())
	dst, src := macOf(t, y, "y0"), dx.MAC()
	big, small := testFrame(0, dst, src, 1000, 'B'), testFrame(0, dst, src, 50, 's')
	if n, err := dx.Write([][]byte{big, small}, 0); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	timer := time.AfterFunc(5*time.Second, func() { dy.Close() })
	defer timer.Stop()
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 300)
	}
	sizes := make([]int, len(bufs))
	for {
		n, err := dy.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("Read before the small frame arrived: %v", err)
		}
		for i := 0; i < n; i++ {
			f := bufs[i][VnetHdrLen:sizes[i]]
			if binary.BigEndian.Uint16(f[12:]) != 0x88b5 {
				continue
			}
			if len(f) != 14+50 || f[14] != 's' {
				t.Fatalf("got frame of %d bytes starting %q, want the 64-byte small one", len(f), f[14])
			}
			st, err := dy.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.ReadDrops != 1 {
				t.Errorf("ReadDrops = %d, want 1 (the big frame)", st.ReadDrops)
			}
			return
		}
	}
}

// fakeRing lays out blocks the way the kernel does, for tests without root.
type fakeRing struct {
	g   *rxRing
	off []int // next free offset per block
	n   []int // frames per block
}

const fakeMac = 96 // where the kernel puts a 14-byte MAC header with vnet on

func newFakeRing(blocks, size int) *fakeRing {
	return &fakeRing{
		g:   &rxRing{mem: make([]byte, blocks*size), blockSize: size, blocks: blocks, vnet: true},
		off: make([]int, blocks),
		n:   make([]int, blocks),
	}
}

// add appends a frame (vnet header + frame bytes) to block b, with
// wire length wire (wire > len(frame)-VnetHdrLen means truncated).
func (f *fakeRing) add(b int, frame []byte, wire int, pkttype byte) {
	blk := f.g.mem[b*f.g.blockSize : (b+1)*f.g.blockSize]
	if f.off[b] == 0 {
		f.off[b] = blkHeaderSize
		binary.NativeEndian.PutUint32(blk[blkFirstPkt:], blkHeaderSize)
	}
	off := f.off[b]
	h := blk[off:]
	snap := len(frame) - VnetHdrLen
	binary.NativeEndian.PutUint32(h[pktSnaplen:], uint32(snap))
	binary.NativeEndian.PutUint32(h[pktLen:], uint32(wire))
	binary.NativeEndian.PutUint16(h[pktMac:], fakeMac)
	h[pktPkttype] = pkttype
	copy(h[fakeMac-VnetHdrLen:], frame)
	next := (fakeMac + snap + 15) &^ 15
	binary.NativeEndian.PutUint32(h[pktNextOffset:], uint32(next))
	f.off[b] = off + next
	f.n[b]++
	binary.NativeEndian.PutUint32(blk[blkNumPkts:], uint32(f.n[b]))
}

// close hands block b to the reader (the last frame's next offset is 0).
func (f *fakeRing) close(b int) {
	blk := f.g.mem[b*f.g.blockSize : (b+1)*f.g.blockSize]
	// zero the next offset of the last frame, as the kernel does
	off := blkHeaderSize
	for i := 1; i < f.n[b]; i++ {
		off += int(binary.NativeEndian.Uint32(blk[off+pktNextOffset:]))
	}
	if f.n[b] > 0 {
		binary.NativeEndian.PutUint32(blk[off+pktNextOffset:], 0)
	}
	atomic.StoreUint32(blockStatus(blk), unix.TP_STATUS_USER)
}

func (f *fakeRing) status(b int) uint32 {
	return atomic.LoadUint32(blockStatus(f.g.mem[b*f.g.blockSize:]))
}

func fakeFrame(size int, mark byte) []byte {
	b := make([]byte, VnetHdrLen+size)
	b[1] = GSOTCPv4 // a recognisable vnet header
	for i := range b[VnetHdrLen:] {
		b[VnetHdrLen+i] = mark
	}
	return b
}

// TestRingReadWalksBlocks checks the reader's bookkeeping on a fake ring:
// frames come out in order with their vnet headers, a batch may end in the
// middle of a block, a block goes back to the kernel only once all its
// frames are copied, truncated, own and oversized frames are dropped and
// counted, and the reader wraps around.
func TestRingReadWalksBlocks(t *testing.T) {
	fr := newFakeRing(2, 8192)
	var drops atomic.Uint64
	bufs := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = make([]byte, 8+VnetHdrLen+500)
	}
	sizes := make([]int, len(bufs))

	if n := fr.g.read(bufs, sizes, 8, &drops); n != 0 {
		t.Fatalf("read %d frames from a ring the kernel still owns", n)
	}
	fr.add(0, fakeFrame(100, 'a'), 100, unix.PACKET_HOST)
	fr.add(0, fakeFrame(60, 'b'), 1500, unix.PACKET_HOST) // truncated
	fr.add(0, fakeFrame(70, 'c'), 70, unix.PACKET_OUTGOING)
	fr.add(0, fakeFrame(600, 'd'), 600, unix.PACKET_HOST) // too big for bufs
	fr.add(0, fakeFrame(80, 'e'), 80, unix.PACKET_HOST)
	fr.add(0, fakeFrame(90, 'f'), 90, unix.PACKET_HOST)
	fr.add(0, fakeFrame(95, 'g'), 95, unix.PACKET_HOST)
	fr.close(0)

	var got []string
	check := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			f := bufs[i][8 : 8+sizes[i]]
			if f[1] != GSOTCPv4 {
				t.Fatalf("frame %d lost its vnet header: %x", i, f[:VnetHdrLen])
			}
			body := f[VnetHdrLen:]
			if bytes.Count(body, body[:1]) != len(body) {
				t.Fatalf("frame %d is not all %q", i, body[0])
			}
			got = append(got, fmt.Sprintf("%c:%d", body[0], len(body)))
		}
	}
	n := fr.g.read(bufs, sizes, 8, &drops)
	check(n)
	if n != 3 || fr.status(0) != unix.TP_STATUS_USER {
		t.Fatalf("first read: %d frames, block status %d; want 3 and the block still ours", n, fr.status(0))
	}
	n = fr.g.read(bufs, sizes, 8, &drops)
	check(n)
	if n != 1 || fr.status(0) != unix.TP_STATUS_KERNEL {
		t.Fatalf("second read: %d frames, block status %d; want 1 and the block given back", n, fr.status(0))
	}
	want := "[a:100 e:80 f:90 g:95]"
	if s := fmt.Sprint(got); s != want {
		t.Errorf("frames %s, want %s", s, want)
	}
	if drops.Load() != 3 {
		t.Errorf("drops = %d, want 3 (truncated, own, too big)", drops.Load())
	}

	// Block 1, then block 0 again: the reader wraps.
	fr.add(1, fakeFrame(10, 'h'), 10, unix.PACKET_HOST)
	fr.close(1)
	fr.off[0], fr.n[0] = 0, 0
	fr.add(0, fakeFrame(20, 'i'), 20, unix.PACKET_HOST)
	fr.close(0)
	got = nil
	n = fr.g.read(bufs, sizes, 8, &drops)
	check(n)
	if s := fmt.Sprint(got); n != 2 || s != "[h:10 i:20]" {
		t.Errorf("after wrapping: %s, want [h:10 i:20]", s)
	}
	if fr.status(0) != unix.TP_STATUS_KERNEL || fr.status(1) != unix.TP_STATUS_KERNEL {
		t.Error("blocks not given back")
	}
	if allocs := testing.AllocsPerRun(100, func() { fr.g.read(bufs, sizes, 8, &drops) }); allocs != 0 {
		t.Errorf("read allocates %.1f times", allocs)
	}
}

// FuzzRingFrame feeds arbitrary block contents to the frame parser: it must
// never read outside the block, and a frame it accepts is exactly
// tp_snaplen bytes plus the vnet header, inside the block.
func FuzzRingFrame(f *testing.F) {
	fr := newFakeRing(1, 4096)
	fr.add(0, fakeFrame(100, 'a'), 100, unix.PACKET_HOST)
	fr.add(0, fakeFrame(60, 'b'), 1500, unix.PACKET_HOST)
	fr.close(0)
	f.Add(fr.g.mem, blkHeaderSize, true)
	f.Add(fr.g.mem, blkHeaderSize+fakeMac+112, false)
	f.Add(make([]byte, 200), 60, true)
	f.Fuzz(func(t *testing.T, blk []byte, off int, vnet bool) {
		frame, next, v := ringFrame(blk, off, vnet)
		if next >= 0 && (next <= off || next > len(blk)-pktHeaderSize) {
			t.Fatalf("next offset %d out of the block (off %d, len %d)", next, off, len(blk))
		}
		if v != frameOK {
			if frame != nil {
				t.Fatal("a dropped frame came with bytes")
			}
			return
		}
		snap := int(binary.NativeEndian.Uint32(blk[off+pktSnaplen:]))
		want := snap
		if vnet {
			want += VnetHdrLen
		}
		if len(frame) != want {
			t.Fatalf("frame of %d bytes, snaplen %d vnet %v", len(frame), snap, vnet)
		}
	})
}

// BenchmarkRingBridgeTCP is BenchmarkBridgeTCP with each read path: one op
// is 1 MiB through the bridge.
func BenchmarkRingBridgeTCP(b *testing.B) {
	for _, m := range []struct {
		name string
		cfg  *AFPacketConfig
	}{{"recvmmsg", nil}, {"ring", ringCfg()}} {
		b.Run(m.name, func(b *testing.B) {
			needRoot(b)
			a, c, br := relayWith(b, "uvsring", m.cfg)
			client, server := tcpPair(b, a, c)
			const chunk = 1 << 20
			data := make([]byte, chunk)
			rand.Read(data)
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 256<<10)
				var total int64
				want := int64(b.N) * chunk
				for total < want {
					n, err := server.Read(buf)
					total += int64(n)
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			client.SetDeadline(time.Now().Add(5 * time.Minute))
			reads0, frames0 := br.reads.Load(), br.frames.Load()
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := client.Write(data); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			reads, frames := br.reads.Load()-reads0, br.frames.Load()-frames0
			b.ReportMetric(float64(b.N)*chunk*8/b.Elapsed().Seconds()/1e9, "Gbit/s")
			if reads > 0 {
				b.ReportMetric(float64(frames)/float64(reads), "frames/read")
			}
		})
	}
}

// BenchmarkRingRoundTrip measures the latency of one frame through each
// read path: write one small frame on x0, read it on y0. With the ring the
// frame waits in a block that is not full until the block times out.
func BenchmarkRingRoundTrip(b *testing.B) {
	for _, m := range []struct {
		name string
		cfg  *AFPacketConfig
	}{{"recvmmsg", nil}, {"ring", ringCfg()}} {
		b.Run(m.name, func(b *testing.B) {
			needRoot(b)
			x, y := ringPair(b)
			dx := openAF(b, x, "x0", nil)
			dy := openAF(b, y, "y0", m.cfg)
			out := [][]byte{testFrame(headroom, macOf(b, y, "y0"), dx.MAC(), 50, 'r')}
			bufs, sizes := frameBufs(dy.BatchSize(), headroom)
			timer := time.AfterFunc(5*time.Minute, func() { dy.Close() })
			defer timer.Stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := dx.Write(out, headroom); err != nil {
					b.Fatal(err)
				}
				for got := false; !got; {
					n, err := dy.Read(bufs, sizes, headroom)
					if err != nil {
						b.Fatal(err)
					}
					for j := 0; j < n; j++ {
						got = got || binary.BigEndian.Uint16(bufs[j][headroom+VnetHdrLen+12:]) == 0x88b5
					}
				}
			}
		})
	}
}
