package link

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Two experimental ways to wait for frames (AFPacketConfig.Blocking and
// SpinFor), to measure against the default, where an empty socket parks the
// reading goroutine in the runtime poller and a frame wakes it through
// epoll, the scheduler and often a futex wake of another thread.
//
// Blocking: the socket is opened without O_NONBLOCK, so os.NewFile keeps it
// out of the poller, and Read sleeps in recvmmsg on a thread the reading
// goroutine is locked to; a frame wakes that thread straight into the
// worker. The kernel cannot interrupt a blocked recvmmsg when another
// thread closes the socket, so SO_RCVTIMEO wakes it every blockWake to
// look at the closed flag: Close takes effect within blockWake.
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
		got, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(n), flags, 0, 0)
		switch e {
		case 0:
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
			if flags&unix.MSG_DONTWAIT != 0 && !d.blk.spinning(&spinStart) {
				flags = unix.MSG_WAITFORONE
			}
		case unix.EINTR: // a runtime signal (preemption); wait again
		default:
			r.err = e
			return true
		}
	}
}
