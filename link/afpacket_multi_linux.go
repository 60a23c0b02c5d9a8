package link

import (
	"errors"
	"fmt"
	"os"
	"runtime"
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
type Multi struct {
	qs    []*AFPacket
	fds   []unix.PollFd
	ready []bool // may have frames: ppoll said so, or the last read filled the batch
	next  int    // where the next scan starts, so that no queue starves the others
	quiet int
	init  bool
	procs bool // GOMAXPROCS was raised (see addProcs)
}

// NewMulti makes a reader of qs, each a Blocking queue of a different
// port.
func NewMulti(qs []*AFPacket) (*Multi, error) {
	if len(qs) == 0 {
		return nil, errors.New("af_packet: a multi-queue reader needs a queue")
	}
	m := &Multi{qs: qs, ready: make([]bool, len(qs))}
	for _, q := range qs {
		if !q.blk.on || q.blk.wake == 0 {
			return nil, fmt.Errorf("af_packet %s: a multi-queue reader needs Blocking queues", q.name)
		}
		m.fds = append(m.fds, unix.PollFd{Fd: int32(q.fd), Events: unix.POLLIN})
	}
	for _, q := range qs {
		m.fds = append(m.fds, unix.PollFd{Fd: int32(q.blk.wake - 1), Events: unix.POLLIN})
	}
	for i := range m.ready {
		m.ready[i] = true
	}
	return m, nil
}

// Read reads a batch from one queue that has frames, waiting if none has;
// from is that queue's position in the slice given to NewMulti. It returns
// an error matching os.ErrClosed once any queue is closed, and the reading
// goroutine must be the same on every call.
func (m *Multi) Read(bufs [][]byte, sizes []int, offset int) (n, from int, err error) {
	if !m.init {
		m.start()
	}
	for {
		for k := range m.qs {
			i := (m.next + k) % len(m.qs)
			if !m.ready[i] {
				continue
			}
			q := m.qs[i]
			n, full, err := q.readNow(bufs, sizes, offset)
			if err != nil {
				m.stop()
				return 0, i, err
			}
			m.ready[i] = full
			if n > 0 {
				m.next = i + 1
				m.quiet = 0
				return n, i, nil
			}
		}
		if err := m.wait(); err != nil {
			m.stop()
			return 0, 0, err
		}
	}
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

// wait sleeps until a queue may have frames and marks it ready.
func (m *Multi) wait() error {
	for {
		for _, q := range m.qs {
			if q.closed.Load() {
				return fmt.Errorf("af_packet %s: read: %w", q.name, os.ErrClosed)
			}
		}
		var got uintptr
		var e unix.Errno
		if m.quiet >= idleAfter {
			// Idle: wait without the P, for the eventfds too.
			ts := unix.NsecToTimespec(int64(idleTimeout))
			got, _, e = unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&m.fds[0])), uintptr(len(m.fds)), uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		} else {
			ts := unix.NsecToTimespec(int64(blockWake))
			got, _, e = unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&m.fds[0])), uintptr(len(m.qs)), uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		}
		switch {
		case e == unix.EINTR:
			runtime.Gosched()
			continue
		case e != 0:
			return fmt.Errorf("af_packet: ppoll: %w", e)
		case got == 0:
			m.quiet++
			runtime.Gosched()
			continue
		}
		any := false
		for i := range m.qs {
			if m.fds[i].Revents != 0 {
				m.ready[i], any = true, true
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
