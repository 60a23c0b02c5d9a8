package link

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Two ways to wait for frames other than the runtime poller
// (AFPacketConfig.Blocking, the director's default, and the experimental
// SpinFor). In the poller an empty socket parks the reading goroutine and
// a frame wakes it through epoll, the scheduler and often a futex wake of
// another thread.
//
// Blocking: the socket is opened without O_NONBLOCK, so os.NewFile keeps it
// out of the poller, and Read sleeps in recvmmsg on a thread the reading
// goroutine is locked to; a frame wakes that thread straight into the
// worker. The kernel cannot interrupt a blocked recvmmsg when another
// thread closes the socket, so SO_RCVTIMEO wakes it every blockWake to
// look at the closed flag: Close takes effect within blockWake.
//
// The wait is a raw system call: the runtime is not told, so the thread
// keeps its P (scheduler slot) while it sleeps and needs none handed back
// when a frame wakes it. (Through the runtime's own syscall path, sysmon
// took the P away after 20 µs and every wake-up waited to get one back.
// Measured against the poller: HTTP keep-alive requests/s +26 %, small-UDP
// throughput +45 %, new connections about -6 %; see the README.) The price
// is kept in check two ways. Each such reader adds one to
// GOMAXPROCS for as long as its socket is open, so that the P it holds is
// not taken from the rest of the program. And the runtime's signals reach
// it: with SO_RCVTIMEO set, a signal ends recvmmsg with EINTR rather than
// restarting it, and the reader then yields (runtime.Gosched), so that a
// stop-the-world (GC) or a preemption waits no longer than a signal's
// delivery; an expired timeout yields too.
//
// SpinFor: on an empty socket, retry recvmmsg for up to SpinFor before
// waiting; frames that arrive meanwhile cost no wake-up at all, at the
// price of a busy CPU.

// blockWake bounds how long a blocked Read or Write takes to notice Close.
const blockWake = 5 * time.Millisecond

// blockMode is the wait strategy of one socket.
type blockMode struct {
	on     bool          // Blocking
	spin   time.Duration // SpinFor
	locked atomic.Bool   // a reader goroutine has been locked to its thread
	procs  atomic.Bool   // GOMAXPROCS was raised for that reader (see addProcs)
	quiet  int           // the reader's blockWake timeouts in a row without a frame
	wake   int           // an eventfd + 1 that Close writes to end an idle wait; 0 for none; set at open
	woken  atomic.Bool   // Close has written and closed it
}

// idleAfter is how many empty blockWake timeouts in a row (100 ms) make a
// reader idle. An idle reader waits in ppoll on its socket and an eventfd
// that Close writes, through the runtime's own syscall path and with no
// short timeout, so the P goes and nothing wakes it for nothing: a reader
// that holds its P looks busy to the runtime, which then preempts it every
// 10 ms (an idle director used 1.7 % of a core, against 0.2 % with the
// poller). The first frame after idleness pays the runtime's wake-up; the
// waits after it are raw again.
const idleAfter = 20

// idleTimeout bounds an idle wait all the same: should Close's write be
// missed, the reader still notices within it. A variable for tests.
var idleTimeout = time.Second

// openWake makes the eventfd Close writes to end an idle wait.
func (b *blockMode) openWake() error {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	b.wake = fd + 1
	return nil
}

// closeWake ends an idle wait in progress and releases the eventfd; Close
// calls it after setting the closed flag. A reader about to wait on the
// closed descriptors gets POLLNVAL at once.
func (b *blockMode) closeWake() {
	if b.wake == 0 || !b.woken.CompareAndSwap(false, true) {
		return
	}
	var one [8]byte
	one[0] = 1 // a little-endian 1 on the machines this runs on; any nonzero count wakes
	unix.Write(b.wake-1, one[:])
	unix.Close(b.wake - 1)
}

// idleWait sleeps until fd has a frame, Close is called or idleTimeout
// passes. It reports false once the socket is closed.
func (d *AFPacket) idleWait(fd uintptr) bool {
	if d.closed.Load() || d.blk.wake == 0 {
		return !d.closed.Load()
	}
	fds := [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(d.blk.wake - 1), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(int64(idleTimeout))
	unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return !d.closed.Load()
}

// procsMu serialises GOMAXPROCS changes: each is a read and a write.
var procsMu sync.Mutex

// addProcs changes GOMAXPROCS by delta, never below 1.
func addProcs(delta int) {
	procsMu.Lock()
	defer procsMu.Unlock()
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)+delta))
}

// spinEpoch is the origin of spinning's clock (monotonic, no allocation).
var spinEpoch = time.Now()

// spinning reports whether a reader that first found the socket empty at
// *start (0: just now, which it records) should try again.
func (b *blockMode) spinning(start *int64) bool {
	now := int64(time.Since(spinEpoch))
	if *start == 0 {
		*start = now
		return true
	}
	return now-*start < int64(b.spin)
}

// setBlockingTimeouts makes blocked receives and sends return EAGAIN every
// blockWake so that they can see Close.
func setBlockingTimeouts(fd int) error {
	tv := unix.NsecToTimeval(int64(blockWake))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_SNDTIMEO: %w", err)
	}
	return nil
}

// lockReader locks the first goroutine that reads d to its thread, for the
// rest of its life (a worker reads one queue until it ends): while it
// waits in the kernel no other goroutine is scheduled onto that thread,
// and the wake-up needs no hand-off. Later readers are left alone.
func (d *AFPacket) lockReader() {
	if !d.blk.locked.Load() && d.blk.locked.CompareAndSwap(false, true) {
		runtime.LockOSThread()
		// It will wait holding its P (blockingRecv).
		addProcs(1)
		d.blk.procs.Store(true)
	}
}

// releaseProcs gives back the P a blocking reader added; Close calls it.
func (d *AFPacket) releaseProcs() {
	if d.blk.procs.CompareAndSwap(true, false) {
		addProcs(-1)
	}
}

// blockingRecv is the RawConn read callback of a blocking socket. It always
// returns true: the runtime has no poller to wait on for this file.
func (d *AFPacket) blockingRecv(fd uintptr) bool {
	r := &d.r
	n := min(len(r.bufs), len(r.sizes), len(r.msgs))
	if n == 0 {
		return true
	}
	r.prepare(n)
	// MSG_WAITFORONE: block for the first frame only, then take what is
	// queued. While spinning, do not block at all.
	flags := uintptr(unix.MSG_WAITFORONE)
	if d.blk.spin > 0 {
		flags = unix.MSG_DONTWAIT
	}
	var spinStart int64
	for {
		if flags&unix.MSG_DONTWAIT == 0 && d.blk.quiet >= idleAfter && !d.idleWait(fd) {
			r.err = os.ErrClosed
			return true
		}
		var got uintptr
		var e unix.Errno
		if flags&unix.MSG_DONTWAIT != 0 {
			got, _, e = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(n), flags, 0, 0)
		} else {
			// Raw: the thread keeps its P while it sleeps (see the top
			// of this file).
			got, _, e = unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(n), flags, 0, 0)
		}
		switch e {
		case 0:
			d.blk.quiet = 0
			if r.n = r.keep(int(got)); r.n > 0 {
				return true
			}
			// Every frame was dropped: wait for more.
		case unix.EAGAIN:
			// Empty while spinning, or SO_RCVTIMEO expired.
			if d.closed.Load() {
				r.err = os.ErrClosed
				return true
			}
			if flags&unix.MSG_DONTWAIT != 0 {
				if !d.blk.spinning(&spinStart) {
					flags = unix.MSG_WAITFORONE
				}
				continue
			}
			// The raw wait timed out: let the runtime have the P.
			d.blk.quiet++
			runtime.Gosched()
		case unix.EINTR:
			// A runtime signal: a stop-the-world or a preemption may be
			// waiting for this P.
			runtime.Gosched()
		case unix.ENETDOWN:
			r.downs.Add(1) // see afRx.downs; wait on
		default:
			r.err = e
			return true
		}
	}
}
