package link

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"
)

// A Multi over two queues returns the frames of both, says which queue
// each batch came from, holds one extra P while it runs, and ends with
// os.ErrClosed when a queue is closed, giving the P back.
func TestMultiReadsEveryQueue(t *testing.T) {
	needRoot(t)
	x, y := pairIn(t, "uvsmul")
	dx := openAF(t, x, "x0", nil)
	cfg := &AFPacketConfig{Blocking: true}
	// Two sockets on one interface: each gets its own copy of every frame.
	q0, q1 := openAF(t, y, "y0", cfg), openAF(t, y, "y0", cfg)
	m, err := NewMulti([]*AFPacket{q0, q1})
	if err != nil {
		t.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	const frames = 20
	type batch struct {
		from, marked int
		err          error
	}
	got := make(chan batch, 64)
	go func() {
		bufs, sizes := frameBufs(4, 0)
		for {
			n, from, err := m.Read(bufs, sizes, 0)
			b := batch{from: from, err: err}
			for i := range n {
				f := bufs[i][VnetHdrLen:sizes[i]]
				if binary.BigEndian.Uint16(f[12:]) == 0x88b5 && f[14] == 'M' {
					b.marked++
				}
			}
			got <- b
			if err != nil {
				return
			}
		}
	}()
	dst := macOf(t, y, "y0")
	for range frames {
		if n, err := dx.Write([][]byte{testFrame(0, dst, dx.MAC(), 60, 'M')}, 0); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	var per [2]int
	deadline := time.After(5 * time.Second)
	for per[0] < frames || per[1] < frames {
		select {
		case b := <-got:
			if b.err != nil {
				t.Fatalf("Read: %v", b.err)
			}
			if b.from < 0 || b.from > 1 {
				t.Fatalf("batch from queue %d", b.from)
			}
			per[b.from] += b.marked
		case <-deadline:
			t.Fatalf("frames read per queue %v, want %d each", per, frames)
		}
	}
	if per != [2]int{frames, frames} {
		t.Errorf("frames read per queue %v, want %d each", per, frames)
	}
	if n := runtime.GOMAXPROCS(0); n != procs+1 {
		t.Errorf("GOMAXPROCS %d while reading, want %d", n, procs+1)
	}
	q1.Close()
	for {
		select {
		case b := <-got:
			if b.err == nil {
				continue // a late frame
			}
			if !errors.Is(b.err, os.ErrClosed) {
				t.Errorf("Read after Close: %v, want os.ErrClosed", b.err)
			}
			if n := runtime.GOMAXPROCS(0); n != procs {
				t.Errorf("GOMAXPROCS %d after the reader ended, want %d", n, procs)
			}
			return
		case <-time.After(2 * time.Second):
			t.Fatal("Read still blocked 2s after a queue was closed")
		}
	}
}

// An idle Multi waits without its P and still sees Close at once.
func TestMultiIdleClose(t *testing.T) {
	needRoot(t)
	defer func(d time.Duration) { idleTimeout = d }(idleTimeout)
	idleTimeout = time.Hour
	x, _ := pairIn(t, "uvsmul")
	x.do(t, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
	})
	cfg := &AFPacketConfig{Blocking: true}
	q := openAF(t, x, "x0", cfg)
	m, err := NewMulti([]*AFPacket{q})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		bufs, sizes := frameBufs(1, 0)
		for {
			if _, _, err := m.Read(bufs, sizes, 0); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(3 * idleAfter * blockWake)
	q.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read ended with %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the idle wait")
	}
}

func TestMultiNeedsBlockingQueues(t *testing.T) {
	needRoot(t)
	x, _ := pairIn(t, "uvsmul")
	if _, err := NewMulti([]*AFPacket{openAF(t, x, "x0", nil)}); err == nil {
		t.Error("NewMulti took a queue that waits in the poller")
	}
	if _, err := NewMulti(nil); err == nil {
		t.Error("NewMulti took no queue")
	}
}

// Only a FanoutBPF group takes a program.
func TestSetFanoutProgramNeedsFanoutBPF(t *testing.T) {
	needRoot(t)
	x, _ := pairIn(t, "uvsmul")
	d := openAF(t, x, "x0", nil)
	if err := d.SetFanoutProgram(byFlowHash); err == nil {
		t.Error("a PACKET_FANOUT_HASH queue took a fanout program")
	}
}
