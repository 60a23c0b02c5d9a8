// Package udpflood sends small UDP datagrams as fast as a socket takes
// them, or at a set rate (sendmmsg, in batches), and counts them at the
// receiving end (recvmmsg), so the benchmark can report packets per second
// delivered and lost. Every send is bounded by a count and a time; the receiver counts
// only datagrams that carry the flood's marker.
package udpflood

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Marker starts every datagram the flood sends.
var Marker = [8]byte{'u', 'v', 's', 'b', 'e', 'n', 'c', 'h'}

// MinSize is the smallest payload: the marker and a sequence number.
const MinSize = 16

// Config bounds one flood.
type Config struct {
	Size     int           // payload bytes per datagram (>= MinSize)
	Count    int64         // datagrams to send at most, over all sockets
	Duration time.Duration // time to send at most
	Batch    int           // datagrams per sendmmsg call (default 64)
	// Rate, when positive, paces the flood to this many datagrams per
	// second over all sockets, each sending its share in batches on a
	// fixed schedule. A sender that falls behind sends at once rather
	// than sleeping; it never bursts to catch up beyond one batch.
	Rate float64
}

// Result is what a flood sent.
type Result struct {
	Sent    int64
	Elapsed time.Duration // from the first send to the last one's return
}

// Send floods through conns (connected UDP sockets, one per flow) in
// parallel, one goroutine each, until Count datagrams are sent, Duration
// has passed or ctx is done. A send refused because of an earlier ICMP
// error (ECONNREFUSED) is not counted and does not stop the flood: it is
// loss like any other.
func Send(ctx context.Context, conns []*net.UDPConn, c Config) (Result, error) {
	if c.Batch <= 0 {
		c.Batch = 64
	}
	if c.Size < MinSize || c.Size > 65507 {
		return Result{}, fmt.Errorf("udp flood: size %d outside %d..65507", c.Size, MinSize)
	}
	if c.Rate < 0 {
		return Result{}, fmt.Errorf("udp flood: negative rate %v", c.Rate)
	}
	if c.Count <= 0 || c.Duration <= 0 || len(conns) == 0 {
		return Result{}, fmt.Errorf("udp flood: need a count, a duration and a socket (got %d, %v, %d)", c.Count, c.Duration, len(conns))
	}
	ctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	var gap time.Duration // between one socket's batches, when paced
	if c.Rate > 0 {
		perFlow := c.Rate / float64(len(conns))
		gap = time.Duration(float64(c.Batch) / perFlow * float64(time.Second))
	}
	var sent atomic.Int64
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	start := time.Now()
	for i, conn := range conns {
		share := c.Count / int64(len(conns))
		if int64(i) < c.Count%int64(len(conns)) {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sendFlow(ctx, conn, c, share, gap, uint64(i)<<48, &sent)
		}()
	}
	wg.Wait()
	return Result{Sent: sent.Load(), Elapsed: time.Since(start)}, errors.Join(errs...)
}

// sendFlow sends up to n datagrams on conn with sendmmsg, a batch every
// gap when gap is positive.
func sendFlow(ctx context.Context, conn *net.UDPConn, c Config, n int64, gap time.Duration, seq uint64, sent *atomic.Int64) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("udp flood: %w", err)
	}
	bufs := make([][]byte, c.Batch)
	iovs := make([]unix.Iovec, c.Batch)
	hdrs := make([]mmsghdr, c.Batch)
	for i := range bufs {
		bufs[i] = make([]byte, c.Size)
		copy(bufs[i], Marker[:])
		iovs[i].Base = &bufs[i][0]
		iovs[i].SetLen(c.Size)
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
	}
	// With a rate, batch i of this flow is due at start + i*gap.
	due := time.Now()
	for n > 0 && ctx.Err() == nil {
		if gap > 0 {
			if wait := time.Until(due); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			} else if wait < -gap {
				due = time.Now() // fell behind: no burst to catch up
			}
			due = due.Add(gap)
		}
		k := min(int64(c.Batch), n)
		for i := range k {
			binary.BigEndian.PutUint64(bufs[i][8:], seq)
			seq++
		}
		var got int
		var serr error
		err := rc.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN {
				return false // wait until the socket takes more
			}
			got = int(r)
			if e != 0 {
				got, serr = 0, e
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("udp flood: send: %w", err)
		}
		switch {
		case serr == nil:
		case errors.Is(serr, syscall.ECONNREFUSED):
			continue
		default:
			return fmt.Errorf("udp flood: sendmmsg: %w", serr)
		}
		sent.Add(int64(got))
		n -= int64(got)
	}
	return nil
}

// mmsghdr is struct mmsghdr; x/sys/unix defines the type but exposes no
// sendmmsg or recvmmsg wrapper for it.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
	_   [4]byte
}

// Sink counts flood datagrams arriving on one socket.
type Sink struct {
	conn  *net.UDPConn
	count atomic.Int64
	other atomic.Int64
	done  chan error
}

// NewSink starts counting on conn (a bound UDP socket); Close stops.
func NewSink(conn *net.UDPConn) (*Sink, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udp sink: %w", err)
	}
	// A larger buffer keeps the sink's own scheduling delays out of the
	// loss; past rmem_max only root may have it (SO_RCVBUFFORCE).
	_ = conn.SetReadBuffer(4 << 20)
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	})
	s := &Sink{conn: conn, done: make(chan error, 1)}
	go func() { s.done <- s.loop(rc) }()
	return s, nil
}

func (s *Sink) loop(rc syscall.RawConn) error {
	const batch, size = 64, 2048
	bufs := make([]byte, batch*size)
	iovs := make([]unix.Iovec, batch)
	hdrs := make([]mmsghdr, batch)
	for i := range hdrs {
		iovs[i].Base = &bufs[i*size]
		iovs[i].SetLen(size)
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
	}
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), batch, unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN {
				return false
			}
			n = int(r)
			if e != 0 {
				n, rerr = 0, e
			}
			return true
		})
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("udp sink: %w", err)
		}
		if rerr != nil {
			if errors.Is(rerr, syscall.ECONNREFUSED) || errors.Is(rerr, syscall.EINTR) {
				continue // a queued ICMP error or a signal: the socket goes on
			}
			return fmt.Errorf("udp sink: recvmmsg: %w", rerr)
		}
		var mine int64
		for i := range n {
			b := bufs[i*size : i*size+int(min(hdrs[i].Len, size))]
			if len(b) >= MinSize && [8]byte(b[:8]) == Marker {
				mine++
			}
		}
		s.count.Add(mine)
		s.other.Add(int64(n) - mine)
	}
}

// Received is how many flood datagrams arrived so far.
func (s *Sink) Received() int64 { return s.count.Load() }

// Others is how many datagrams without the marker arrived.
func (s *Sink) Others() int64 { return s.other.Load() }

// Close stops the sink and closes its socket.
func (s *Sink) Close() error {
	err := s.conn.Close()
	if lerr := <-s.done; lerr != nil {
		return lerr
	}
	return err
}
