package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// Result is the outcome of one attempt of a checker.
type Result struct {
	Up bool
	// Weight is the weight a MISC_CHECK with misc_dynamic asks for (its
	// exit status less 2, for 2-255); -1 otherwise: no dynamic weight.
	Weight int
	// Reason says why the attempt failed, or briefly what passed.
	Reason string
}

func pass(format string, a ...any) Result {
	return Result{Up: true, Weight: -1, Reason: fmt.Sprintf(format, a...)}
}

func fail(format string, a ...any) Result {
	return Result{Weight: -1, Reason: fmt.Sprintf(format, a...)}
}

// Check makes one attempt of checker s against its server and returns when
// the attempt has its answer, when s's own time is up (connect_timeout, per
// url for HTTP_GET; misc_timeout for MISC_CHECK) or when ctx is done. The
// sockets and processes are made in the caller's network namespace.
func Check(ctx context.Context, s Spec) Result {
	s = s.normal()
	return env{}.check(ctx, &s)
}

// env is where attempts make their sockets and start their programs. The
// zero env uses the calling thread's network namespace, which is the
// process's own in the director; tests set do to enter a test namespace
// (testbed's Host.Do).
type env struct {
	do func(func() error) error
}

// check runs one attempt of s, which is normal.
func (e env) check(ctx context.Context, s *Spec) Result {
	switch s.Kind {
	case TCPCheck:
		return e.checkTCP(ctx, s)
	case HTTPGet, SSLGet:
		return e.checkHTTP(ctx, s)
	case MiscCheck:
		return e.checkMisc(ctx, s)
	case DNSCheck:
		return e.checkDNS(ctx, s)
	}
	return fail("unknown checker %v", s.Kind)
}

func (e env) run(fn func() error) error {
	if e.do == nil {
		return fn()
	}
	return e.do(fn)
}

// dial connects to s.Addr over network ("tcp" or "udp") from s.BindTo, if
// set. The connection's deadline is ctx's, and it is cut short when ctx is
// cancelled: the caller calls the returned stop when done with it.
func (e env) dial(ctx context.Context, network string, s *Spec) (c net.Conn, stop func() bool, err error) {
	if !s.Addr.Addr().IsValid() || s.Addr.Port() == 0 {
		return nil, nil, errors.New("no address and port to check")
	}
	// No keep-alive: the connections are short, and turning it on costs
	// four setsockopt calls per attempt. DialTCP and DialUDP take the
	// addresses as they are: no formatting, parsing or resolver.
	d := net.Dialer{KeepAlive: -1}
	var laddr netip.AddrPort
	if s.BindTo.IsValid() {
		laddr = netip.AddrPortFrom(s.BindTo, 0)
	}
	err = e.run(func() error {
		if network == "udp" {
			uc, err := d.DialUDP(ctx, "udp", laddr, s.Addr)
			if err == nil {
				c = uc
			}
			return err
		}
		tc, err := d.DialTCP(ctx, "tcp", laddr, s.Addr)
		if err == nil {
			c = tc
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	return c, stop, nil
}

// why words a network error for a Reason: the timeout, not the address.
func why(err error, timeout time.Duration) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("no answer within %v", timeout)
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	return err.Error()
}

// checkTCP is TCP_CHECK: up when a TCP connection to s.Addr is established
// within connect_timeout; the connection is closed at once.
func (e env) checkTCP(ctx context.Context, s *Spec) Result {
	ctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancel()
	c, stop, err := e.dial(ctx, "tcp", s)
	if err != nil {
		return fail("TCP_CHECK connect %v: %s", s.Addr, why(err, s.ConnectTimeout))
	}
	stop()
	c.Close()
	return pass("TCP_CHECK connected to %v", s.Addr)
}
