package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/bpf"
)

// fakeQueues is a multiSource with frames counted per queue: wait marks
// the queues that hold some, as ppoll would, and refill, if set, adds
// frames after every read (traffic that keeps coming).
type fakeQueues struct {
	left   []int
	refill func(f *fakeQueues)
	reads  []int // queue of every batch read, in order (capacity set by the test)
	waits  int
}

var errWouldBlock = errors.New("fake: no queue has frames")

func (f *fakeQueues) read(i int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
	n := min(len(bufs), f.left[i])
	f.left[i] -= n
	if n > 0 {
		f.reads = append(f.reads, i)
	}
	if f.refill != nil {
		f.refill(f)
	}
	return n, n == len(bufs), nil
}

func (f *fakeQueues) wait(ready []bool) error {
	f.waits++
	any := false
	for i, n := range f.left {
		if n > 0 {
			ready[i], any = true, true
		}
	}
	if !any {
		return errWouldBlock
	}
	return nil
}

// readFake reads batches of 4 until the fake has nothing (or max
// batches), then undoes what Read's first call did to the thread.
func readFake(t *testing.T, m *Multi, max int) {
	t.Helper()
	defer runtime.UnlockOSThread()
	defer m.stop()
	bufs, sizes := make([][]byte, 4), make([]int, 4)
	for range max {
		if _, _, err := m.Read(bufs, sizes, 0); err != nil {
			if !errors.Is(err, errWouldBlock) {
				t.Fatal(err)
			}
			return
		}
	}
}

func pattern(reads []int, nhigh int) string {
	b := make([]byte, len(reads))
	for i, q := range reads {
		b[i] = 'H'
		if q >= nhigh {
			b[i] = 'L'
		}
	}
	return string(b)
}

// With queues of two priorities: the high ones first; the low ones one
// batch in lowEvery+1 while the high ones never run dry, and every batch
// once they do; the queues of a priority in turn.
func TestMultiPrioOrder(t *testing.T) {
	// Two high queues, two low; all full from the start.
	f := &fakeQueues{left: []int{40, 40, 40, 40}, reads: make([]int, 0, 100)}
	m := newMulti(f, 2, 2)
	readFake(t, m, 100)
	// 80 high frames are 20 batches; the low ones get one after every
	// four of them, then the rest.
	want := "HHHHL" + "HHHHL" + "HHHHL" + "HHHHL" + "HHHHL" + "LLLLLLLLLLLLLLL"
	if got := pattern(f.reads, 2); got != want {
		t.Errorf("batches %s\nwant    %s", got, want)
	}
	// Each priority's queues alternate.
	var last [2]int
	last[0], last[1] = -1, -1
	for k, q := range f.reads {
		if q == last[q/2] {
			t.Errorf("batch %d: queue %d twice in a row of its priority (%v)", k, q, f.reads)
		}
		last[q/2] = q
	}
	var per [4]int
	for _, q := range f.reads {
		per[q]++
	}
	if per != [4]int{10, 10, 10, 10} {
		t.Errorf("batches per queue %v, want 10 each", per)
	}
}

// Steady high traffic does not starve the low queue, and a flooded low
// queue does not delay high frames that arrive: the next batch is theirs,
// even though no read had marked their queue.
func TestMultiPrioNoStarvation(t *testing.T) {
	// High traffic that never stops; the low queue holds a flood.
	f := &fakeQueues{left: []int{4, 1000}, reads: make([]int, 0, 100)}
	f.refill = func(f *fakeQueues) { f.left[0] = 4 }
	m := newMulti(f, 1, 1)
	readFake(t, m, 100)
	if low := len(f.reads) - countOf(f.reads, 0); low != 100/(lowEvery+1) {
		t.Errorf("steady high traffic: %d low batches of 100, want %d (%s)", low, 100/(lowEvery+1), pattern(f.reads, 1))
	}

	// The flood alone, then a high frame: the reader had marked the high
	// queue empty (its last read was short).
	f = &fakeQueues{left: []int{1, 1000}, reads: make([]int, 0, 100)}
	m = newMulti(f, 1, 1)
	arrive := map[int]bool{10: true, 11: true, 30: true}
	f.refill = func(f *fakeQueues) {
		if arrive[len(f.reads)] {
			delete(arrive, len(f.reads))
			f.left[0]++
		}
	}
	readFake(t, m, 60)
	got := pattern(f.reads, 1)
	// Batch 0 (the first high frame), then the flood; a frame that
	// arrives after batch k-1 is read in batch k.
	for _, k := range []int{0, 10, 11, 30} {
		if got[k] != 'H' {
			t.Errorf("batch %d is %c, want the high frame: %s", k, got[k], got)
		}
	}
	if n := countOf(f.reads, 0); n != 4 {
		t.Errorf("%d high batches, want 4: %s", n, got)
	}
}

func countOf(s []int, v int) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// Read with two priorities does not allocate.
func TestMultiPrioAllocs(t *testing.T) {
	f := &fakeQueues{left: []int{1 << 30, 1 << 30}, reads: make([]int, 0, 4096)}
	f.refill = func(f *fakeQueues) {
		if len(f.reads) == cap(f.reads) {
			f.reads = f.reads[:0]
		}
	}
	m := newMulti(f, 1, 1)
	defer runtime.UnlockOSThread()
	defer m.stop()
	bufs, sizes := make([][]byte, 4), make([]int, 4)
	if a := testing.AllocsPerRun(1000, func() {
		if _, _, err := m.Read(bufs, sizes, 0); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("%v allocations per Read", a)
	}
}

// Real sockets: a fanout group of two queues, frames marked 0 steered to
// the first (high priority) and frames marked 1 to the second (low).
// With both full, the reader takes the high frames first, a low batch
// after every lowEvery high ones, and then the rest of the low ones.
func TestMultiPrioSockets(t *testing.T) {
	needRoot(t)
	x, y := pairIn(t, "uvsmup")
	// No frames but the test's (IPv6 would send some).
	for _, ns := range []*testNS{x, y} {
		ns.do(t, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
		})
	}
	dx := openAF(t, x, "x0", nil)
	hi := openAF(t, y, "y0", &AFPacketConfig{Blocking: true, FanoutBPF: true})
	lo, err := hi.OpenQueue()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lo.Close() })
	// The byte after the EtherType picks the queue; other frames (none
	// expected) by its low bit too.
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 14, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 1},
		bpf.RetA{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := hi.SetFanoutProgram(prog); err != nil {
		t.Fatal(err)
	}
	m, err := NewMultiPrio([]*AFPacket{hi}, []*AFPacket{lo})
	if err != nil {
		t.Fatal(err)
	}
	const batch, frames = 8, 160 // 20 batches each
	dst := macOf(t, y, "y0")
	for i := range 2 * frames {
		mark := byte(i % 2)
		if n, err := dx.Write([][]byte{testFrame(0, dst, dx.MAC(), 60, mark)}, 0); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	time.Sleep(100 * time.Millisecond) // all queued before the reader starts

	type result struct {
		seq string
		err error
	}
	done := make(chan result, 1)
	go func() {
		bufs, sizes := frameBufs(batch, 0)
		var seq []byte
		var got [2]int
		for got[0] < frames || got[1] < frames {
			n, from, err := m.Read(bufs, sizes, 0)
			if err != nil {
				done <- result{string(seq), err}
				return
			}
			for i := range n {
				f := bufs[i][VnetHdrLen:sizes[i]]
				if binary.BigEndian.Uint16(f[12:]) != 0x88b5 {
					continue
				}
				if int(f[14]) != from {
					done <- result{string(seq), fmt.Errorf("a frame marked %d read from queue %d", f[14], from)}
					return
				}
				got[from]++
			}
			seq = append(seq, "HL"[from])
		}
		done <- result{string(seq), nil}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		hi.Close()
		r = <-done
	}
	if r.err != nil {
		t.Fatalf("after batches %s: %v", r.seq, r.err)
	}
	want := "HHHHL" + "HHHHL" + "HHHHL" + "HHHHL" + "HHHHL" + "LLLLLLLLLLLLLLL"
	if r.seq != want {
		t.Errorf("batches %s\nwant    %s", r.seq, want)
	}
	hi.Close()
}
