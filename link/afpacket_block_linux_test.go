package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
)

// blockModes are the experimental wait strategies, each tested like the
// default one.
var blockModes = []struct {
	name string
	cfg  AFPacketConfig
}{
	{"blocking", AFPacketConfig{Blocking: true}},
	{"blocking+spin", AFPacketConfig{Blocking: true, SpinFor: 20 * time.Microsecond}},
	{"spin", AFPacketConfig{SpinFor: 20 * time.Microsecond}},
}

// readMode is a blocking mode as a reader of one queue, optionally
// through a Multi.
type readMode struct {
	name  string
	cfg   AFPacketConfig
	multi bool
}

// readModes are blockModes and a Multi over one blocking queue.
func readModes() []readMode {
	var modes []readMode
	for _, m := range blockModes {
		modes = append(modes, readMode{name: m.name, cfg: m.cfg})
	}
	return append(modes, readMode{name: "multi", cfg: AFPacketConfig{Blocking: true}, multi: true})
}

// reader returns d's Read, or that of a Multi over d.
func (m readMode) reader(tb testing.TB, d *AFPacket) func([][]byte, []int, int) (int, error) {
	if !m.multi {
		return d.Read
	}
	mq, err := NewMulti([]*AFPacket{d})
	if err != nil {
		tb.Fatal(err)
	}
	return func(bufs [][]byte, sizes []int, off int) (int, error) {
		n, _, err := mq.Read(bufs, sizes, off)
		return n, err
	}
}

// blkPair is pair() in uvsblk- namespaces.
func blkPair(tb testing.TB) (x, y *testNS) { return pairIn(tb, "uvsblk") }

func TestBlockingReadsUDPAndNotOwnOutput(t *testing.T) {
	needRoot(t)
	for _, m := range blockModes {
		t.Run(m.name, func(t *testing.T) {
			x, y := blkPair(t)
			testReadsUDP(t, x, y, &m.cfg)
		})
	}
}

func TestBlockingCloseUnblocksRead(t *testing.T) {
	needRoot(t)
	for _, m := range blockModes {
		t.Run(m.name, func(t *testing.T) {
			x, _ := blkPair(t)
			d := openAF(t, x, "x0", &m.cfg)
			testCloseUnblocks(t, d)
			// A Read after Close fails at once too.
			bufs, sizes := frameBufs(1, 0)
			if _, err := d.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read after Close returned %v, want os.ErrClosed", err)
			}
		})
	}
}

func TestBlockingRejectsRing(t *testing.T) {
	needRoot(t)
	x, _ := blkPair(t)
	x.do(t, func() error {
		d, err := OpenAFPacket("x0", &AFPacketConfig{Blocking: true, RXRing: true})
		if err == nil {
			d.Close()
			t.Error("OpenAFPacket accepted Blocking with RXRing")
		}
		return nil
	})
}

func TestBlockingFanoutKeepsFlowsTogether(t *testing.T) {
	needRoot(t)
	for _, m := range blockModes {
		t.Run(m.name, func(t *testing.T) {
			x, y := blkPair(t)
			x.neigh(t, "x0", ipY, macOf(t, y, "y0"))
			q0 := openAF(t, y, "y0", &m.cfg)
			q1, err := q0.OpenQueue()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { q1.Close() })
			if q1.blk.on != m.cfg.Blocking || q1.blk.spin != m.cfg.SpinFor {
				t.Fatal("the second queue does not wait like the first")
			}
			testFanout(t, x, q0, q1)
		})
	}
}

func TestBlockingBridgeBulkTCP(t *testing.T) {
	needRoot(t)
	for _, m := range blockModes {
		t.Run(m.name, func(t *testing.T) {
			a, c, br := relayWith(t, "uvsblk", &m.cfg)
			testBridgeBulk(t, a, c, br)
		})
	}
}

func TestBlockingReadWriteDoNotAllocate(t *testing.T) {
	needRoot(t)
	for _, m := range readModes() {
		t.Run(m.name, func(t *testing.T) {
			x, y := blkPair(t)
			dx := openAF(t, x, "x0", &m.cfg)
			dy := openAF(t, y, "y0", &m.cfg)
			read := m.reader(t, dy)
			frame := testFrame(headroom, macOf(t, y, "y0"), dx.MAC(), 64, 'a')
			out := [][]byte{frame}
			bufs, sizes := frameBufs(8, headroom)
			timer := time.AfterFunc(10*time.Second, func() { dy.Close() })
			defer timer.Stop()
			// Read once first: the thread lock is taken then, not per frame.
			done := make(chan float64, 1)
			go func() {
				done <- testing.AllocsPerRun(100, func() {
					if n, err := dx.Write(out, headroom); n != 1 || err != nil {
						t.Errorf("Write = %d, %v", n, err)
					}
					if _, err := read(bufs, sizes, headroom); err != nil {
						t.Errorf("Read: %v", err)
					}
				})
			}()
			if allocs := <-done; allocs != 0 {
				t.Errorf("Write+Read allocate %.1f times per frame, want 0", allocs)
			}
		})
	}
}

// BenchmarkBlockingPingPong measures one frame's round trip through a
// reflector: the benchmark writes a small frame on x0; a goroutine reading
// y0 with the mode under test writes it back; the benchmark reads it on
// x0 (default mode). ns/op is the round trip, including the reflector's
// wake-up, which is what the modes change.
func BenchmarkBlockingPingPong(b *testing.B) {
	modes := append([]readMode{{name: "poller"}}, readModes()...)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			needRoot(b)
			x, y := blkPair(b)
			dx := openAF(b, x, "x0", nil)
			dy := openAF(b, y, "y0", &m.cfg)
			read := m.reader(b, dy)
			ymac, xmac := macOf(b, y, "y0"), dx.MAC()
			// The reflector has ended, and a Multi given its P back,
			// before the benchmark does.
			reflected := make(chan struct{})
			b.Cleanup(func() { dy.Close(); <-reflected })
			go func() { // reflector: swap the addresses, send back
				defer close(reflected)
				bufs, sizes := frameBufs(dy.BatchSize(), headroom)
				out := make([][]byte, len(bufs))
				for {
					n, err := read(bufs, sizes, headroom)
					if err != nil {
						return
					}
					k := 0
					for i := 0; i < n; i++ {
						f := bufs[i][headroom+VnetHdrLen : headroom+sizes[i]]
						if binary.BigEndian.Uint16(f[12:]) != 0x88b5 {
							continue
						}
						copy(f[0:6], xmac[:])
						copy(f[6:12], ymac[:])
						out[k] = bufs[i][:headroom+sizes[i]]
						k++
					}
					if k > 0 {
						dy.Write(out[:k], headroom)
					}
				}
			}()
			out := [][]byte{testFrame(headroom, ymac, xmac, 50, 'p')}
			bufs, sizes := frameBufs(dx.BatchSize(), headroom)
			timer := time.AfterFunc(5*time.Minute, func() { dx.Close() })
			defer timer.Stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := dx.Write(out, headroom); err != nil {
					b.Fatal(err)
				}
				for got := false; !got; {
					n, err := dx.Read(bufs, sizes, headroom)
					if err != nil {
						b.Fatal(err)
					}
					for j := 0; j < n; j++ {
						f := bufs[j][headroom+VnetHdrLen:]
						got = got || binary.BigEndian.Uint16(f[12:]) == 0x88b5 && bytes.Equal(f[0:6], xmac[:])
					}
				}
			}
		})
	}
}

// A reader asleep in the raw wait holds its P, so it adds one to
// GOMAXPROCS while its socket is open, and it must still let the runtime
// stop the world: a GC completes while it waits on an idle socket, and
// other goroutines keep running even when the program had a single P.
func TestBlockingWaitLetsRuntimeRun(t *testing.T) {
	needRoot(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	x, _ := blkPair(t)
	d := openAF(t, x, "x0", &AFPacketConfig{Blocking: true})
	bufs, sizes := frameBufs(1, 0)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(started)
		for {
			// Stray frames (IPv6 router solicitations) may come; read on.
			if _, err := d.Read(bufs, sizes, 0); err != nil {
				done <- err
				return
			}
		}
	}()
	<-started
	// The reader is parked in the kernel once GOMAXPROCS shows its P.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.GOMAXPROCS(0) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS %d with a blocked reader, want 2", runtime.GOMAXPROCS(0))
		}
		time.Sleep(time.Millisecond)
	}
	gc := make(chan struct{})
	go func() { runtime.GC(); close(gc) }()
	select {
	case <-gc:
	case <-time.After(5 * time.Second):
		t.Fatal("a GC did not complete while a reader waited")
	}
	tick := time.NewTicker(time.Millisecond)
	for range 10 {
		<-tick.C
	}
	tick.Stop()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read ended with %v, want os.ErrClosed", err)
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS %d after Close, want 1 again", n)
	}
}

// A blocking reader that has gone idle (no frame for longer than
// idleAfter wakes) still gets the next frame, and Close ends its idle wait
// through the eventfd, not its timeout (made an hour here, so that a
// missed wake-up would hang the test).
func TestBlockingIdleReader(t *testing.T) {
	needRoot(t)
	defer func(d time.Duration) { idleTimeout = d }(idleTimeout)
	idleTimeout = time.Hour
	x, y := blkPair(t)
	// No IPv6 chatter (router solicitations, MLD) to end an idle wait
	// before Close does.
	for _, ns := range []*testNS{x, y} {
		ns.do(t, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
		})
	}
	dx := openAF(t, x, "x0", nil)
	dy := openAF(t, y, "y0", &AFPacketConfig{Blocking: true})
	dst, src := macOf(t, y, "y0"), dx.MAC()
	bufs, sizes := frameBufs(4, 0)
	got := make(chan bool, 16)
	done := make(chan error, 1)
	go func() {
		for {
			n, err := dy.Read(bufs, sizes, 0)
			if err != nil {
				done <- err
				return
			}
			for i := range n {
				f := bufs[i][VnetHdrLen:sizes[i]]
				if binary.BigEndian.Uint16(f[12:]) == 0x88b5 && f[14] == 'I' {
					got <- true
				}
			}
		}
	}()
	idle := 3 * idleAfter * blockWake
	time.Sleep(idle)
	if n, err := dx.Write([][]byte{testFrame(0, dst, src, 50, 'I')}, 0); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the frame sent to an idle reader did not arrive")
	}
	time.Sleep(idle)
	if err := dy.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read ended with %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the idle reader's wait")
	}
}
