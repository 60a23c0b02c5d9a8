package link

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Multi is one reader's share of several ports: one queue of each, read
// on one thread, run to completion. When the fanout programs send both
// directions of a connection to the same reader (AFPacketConfig.FanoutBPF),
// a frame the reader's own sendmmsg provokes (a real server's SYN-ACK,
// generated while the SYN is still being sent) is in one of the reader's
// queues when sendmmsg returns: it is read without a wake-up. A reader
// per port would need another thread woken for it.
//
// The queues must be opened Blocking (kept out of the runtime poller).
// Multi waits for them in a raw ppoll that keeps its P, like a blocking
// reader (see afpacket_block_linux.go), and adds one to GOMAXPROCS while
// it does; after idleAfter empty timeouts it waits through the runtime's
// syscall path, with the queues' eventfds, so that an idle director costs
// nothing and Close still ends the wait.
//
// A Multi made by NewMultiPrio has queues of two priorities (see Read):
// the director gives packets that open connections (TCP SYN) low-priority
// queues of their own, so that a SYN flood fills those and not the ones
// established connections use.
type Multi struct {
	src   multiSource
	ready []bool // may have frames: ppoll said so, or the last read filled the batch
	nhigh int    // queues [0, nhigh) are high priority, the rest low
	next  int    // where the next scan of the high queues starts, so that no queue starves the others
	nextL int    // the same for the low queues
	run   int    // high batches since the last low one
	init  bool
	procs bool // GOMAXPROCS was raised (see addProcs)
}

// lowEvery is how many batches a Multi reads from its high-priority queues
// before it looks at the low ones even though high ones still have frames:
// the low queues get at least one batch in lowEvery+1 (a fifth of the
// reader's batches, up to a fifth of its frames) while the high ones are
// never empty, and the high queues wait at most one batch (the caller's
// batch size, 64 in the director) for each low one. A fifth keeps a
// saturated reader serving new connections at a fraction of its rate
// that is still far above what legitimate clients open (a SYN costs about
// what a forwarded packet does), while four fifths stay with the
// established traffic.
const lowEvery = 4

// multiSource is what a Multi reads and waits on: the queues' sockets,
// or a test's fake.
type multiSource interface {
	// read reads what queue i holds without waiting; full reports that
	// the batch was filled, so more may be queued.
	read(i int, bufs [][]byte, sizes []int, offset int) (n int, full bool, err error)
	// wait sleeps until a queue may have frames and marks those that do
	// in ready (it leaves the others as they are). It returns at once
	// when one has frames already.
	wait(ready []bool) error
}

// NewMulti makes a reader of qs, each a Blocking queue of a different
// port.
func NewMulti(qs []*AFPacket) (*Multi, error) {
	return NewMultiPrio(qs, nil)
}

// NewMultiPrio makes a reader of the queues high and low, each a Blocking
// queue, that reads ready high-priority queues first (see Read). Read
// numbers the queues high first, then low.
func NewMultiPrio(high, low []*AFPacket) (*Multi, error) {
	if len(high) == 0 {
		return nil, errors.New("af_packet: a multi-queue reader needs a queue")
	}
	qs := append(slices.Clip(high), low...)
	src := &multiSockets{qs: qs}
	for _, q := range qs {
		if !q.blk.on || q.blk.wake == 0 {
			return nil, fmt.Errorf("af_packet %s: a multi-queue reader needs Blocking queues", q.name)
		}
		src.fds = append(src.fds, unix.PollFd{Fd: int32(q.fd), Events: unix.POLLIN})
	}
	for _, q := range qs {
		src.fds = append(src.fds, unix.PollFd{Fd: int32(q.blk.wake - 1), Events: unix.POLLIN})
	}
	return newMulti(src, len(high), len(low)), nil
}

func newMulti(src multiSource, nhigh, nlow int) *Multi {
	m := &Multi{src: src, ready: make([]bool, nhigh+nlow), nhigh: nhigh}
	for i := range m.ready {
		m.ready[i] = true
	}
	return m
}

// Read reads a batch from one queue that has frames, waiting if none has;
// from is that queue's position (NewMulti's slice, or NewMultiPrio's high
// then low). It returns an error matching os.ErrClosed once any queue is
// closed, and the reading goroutine must be the same on every call.
//
// With queues of two priorities, a low-priority queue is read only when
// no high one has frames, as a ppoll that found them all empty confirms,
// or after lowEvery high batches in a row; a low batch is one batch, so
// the high queues wait for no more. Within a priority the queues take
// turns.
func (m *Multi) Read(bufs [][]byte, sizes []int, offset int) (n, from int, err error) {
	if !m.init {
		m.start()
	}
	if m.nhigh == len(m.ready) {
		for {
			if n, from, err := m.scan(0, m.nhigh, &m.next, bufs, sizes, offset); n > 0 || err != nil {
				return n, from, err
			}
			if err := m.wait(); err != nil {
				return 0, 0, err
			}
		}
	}
	polled := false // the ready marks are fresh: a ppoll set them since this call began
	for {
		if m.run >= lowEvery {
			// The low queues' turn, whatever the high ones hold.
			m.run = 0
			if !polled {
				if err := m.wait(); err != nil {
					return 0, 0, err
				}
				polled = true
			}
			if n, from, err := m.scan(m.nhigh, len(m.ready), &m.nextL, bufs, sizes, offset); n > 0 || err != nil {
				return n, from, err
			}
		}
		if n, from, err := m.scan(0, m.nhigh, &m.next, bufs, sizes, offset); n > 0 || err != nil {
			if n > 0 {
				m.run++
			}
			return n, from, err
		}
		// No high queue was marked, or the marked ones were empty: a
		// ppoll says whether one has frames now (it returns at once
		// when any queue has), before a low queue is read.
		if !polled {
			if err := m.wait(); err != nil {
				return 0, 0, err
			}
			polled = true
			continue
		}
		if n, from, err := m.scan(m.nhigh, len(m.ready), &m.nextL, bufs, sizes, offset); n > 0 || err != nil {
			if n > 0 {
				m.run = 0
			}
			return n, from, err
		}
		if err := m.wait(); err != nil {
			return 0, 0, err
		}
	}
}

// scan reads the first marked queue in [lo, hi) that has frames, starting
// at *next and moving it past that queue.
func (m *Multi) scan(lo, hi int, next *int, bufs [][]byte, sizes []int, offset int) (n, from int, err error) {
	for k := range hi - lo {
		i := lo + (*next+k)%(hi-lo)
		if !m.ready[i] {
			continue
		}
		n, full, err := m.src.read(i, bufs, sizes, offset)
		if err != nil {
			m.stop()
			return 0, i, err
		}
		m.ready[i] = full
		if n > 0 {
			*next = i - lo + 1
			return n, i, nil
		}
	}
	return 0, 0, nil
}

// wait sleeps until a queue may have frames and marks it ready.
func (m *Multi) wait() error {
	if err := m.src.wait(m.ready); err != nil {
		m.stop()
		return err
	}
	return nil
}

// start locks the reader to its thread and raises GOMAXPROCS: it waits
// holding its P.
func (m *Multi) start() {
	m.init = true
	runtime.LockOSThread()
	addProcs(1)
	m.procs = true
}

func (m *Multi) stop() {
	if m.procs {
		m.procs = false
		addProcs(-1)
	}
}

// multiSockets is a Multi's queues: their sockets, and what ppoll waits on
// (the sockets, then their eventfds).
type multiSockets struct {
	qs    []*AFPacket
	fds   []unix.PollFd
	quiet int // empty timeouts in a row
}

func (s *multiSockets) read(i int, bufs [][]byte, sizes []int, offset int) (int, bool, error) {
	n, full, err := s.qs[i].readNow(bufs, sizes, offset)
	if n > 0 {
		s.quiet = 0
	}
	return n, full, err
}

func (s *multiSockets) wait(ready []bool) error {
	for {
		for _, q := range s.qs {
			if q.closed.Load() {
				return fmt.Errorf("af_packet %s: read: %w", q.name, os.ErrClosed)
			}
		}
		var got uintptr
		var e unix.Errno
		if s.quiet >= idleAfter {
			// Idle: wait without the P, for the eventfds too.
			ts := unix.NsecToTimespec(int64(idleTimeout))
			got, _, e = unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&s.fds[0])), uintptr(len(s.fds)), uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		} else {
			ts := unix.NsecToTimespec(int64(blockWake))
			got, _, e = unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&s.fds[0])), uintptr(len(s.qs)), uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		}
		switch {
		case e == unix.EINTR:
			runtime.Gosched()
			continue
		case e != 0:
			return fmt.Errorf("af_packet: ppoll: %w", e)
		case got == 0:
			s.quiet++
			runtime.Gosched()
			continue
		}
		any := false
		for i := range s.qs {
			if s.fds[i].Revents != 0 {
				ready[i], any = true, true
			}
		}
		if any {
			return nil
		}
		// Only an eventfd: a queue is being closed; the loop sees it.
	}
}

// readNow reads what q holds without waiting. full reports that the batch
// was filled, so more may be queued.
func (q *AFPacket) readNow(bufs [][]byte, sizes []int, offset int) (n int, full bool, err error) {
	r := &q.r
	r.bufs, r.sizes, r.offset, r.n, r.err = bufs, sizes, offset, 0, nil
	r.full = false
	rerr := q.rc.Read(q.nowFn)
	r.bufs, r.sizes = nil, nil
	if rerr != nil {
		return 0, false, fmt.Errorf("af_packet %s: read: %w", q.name, q.closedErr(rerr))
	}
	if r.err != nil {
		return 0, false, fmt.Errorf("af_packet %s: recvmmsg: %w", q.name, q.closedErr(r.err))
	}
	return r.n, r.full, nil
}

// recvNow is readNow's RawConn callback: one recvmmsg that does not wait.
func (q *AFPacket) recvNow(fd uintptr) bool {
	r := &q.r
	n := min(len(r.bufs), len(r.sizes), len(r.msgs))
	if n == 0 {
		return true
	}
	r.prepare(n)
	for {
		got, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.full = int(got) == n
			r.n = r.keep(int(got))
			if r.n == 0 && r.full {
				continue // all dropped; there is more
			}
			return true
		case unix.EAGAIN:
			return true
		case unix.ENETDOWN:
			r.downs.Add(1) // see afRx.downs: nothing to read
			return true
		case unix.EINTR:
			continue
		default:
			r.err = e
			return true
		}
	}
}
