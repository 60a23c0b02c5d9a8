package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host is one network namespace of a bed. Its methods may be called from
// any goroutine, also while the bed is being closed: once closed they fail.
//
// For settings without a helper here, call the netlink package's functions
// inside Do; they open their sockets in the namespace of the calling thread.
type Host struct {
	Name  string // namespace name, for `ip netns exec Name ...`
	Short string // the name given to Bed.Host

	bed *Bed

	// mu is held for reading while the namespace or the netlink handle is
	// in use and for writing by close. A closed netlink.Handle would fall
	// back to a socket in the caller's namespace: the lock is what keeps
	// a late call from changing the machine's own interfaces.
	mu     sync.RWMutex
	closed bool
	ns     netns.NsHandle
	nl     *netlink.Handle
	ports  atomic.Int32 // bridge ports made so far, for their names
}

// ErrClosed is wrapped in the errors of calls on a closed bed or its hosts,
// so a lab interrupted while building can tell that from a real failure.
var ErrClosed = errors.New("bed closed")

// use takes the read lock if the host is still open.
func (h *Host) use() error {
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return fmt.Errorf("host %s: %w", h.Short, ErrClosed)
	}
	return nil
}

// close kills the host's processes and deletes its namespace.
func (h *Host) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	var errs []error
	if h.ns.IsOpen() {
		if id, err := nsIDByFd(int(h.ns)); err == nil {
			if err := killIn(id); err != nil {
				errs = append(errs, fmt.Errorf("host %s: %w", h.Short, err))
			}
		}
	}
	if h.nl != nil {
		h.nl.Close()
		h.nl = nil
	}
	if h.ns.IsOpen() {
		h.ns.Close()
		h.ns = netns.None()
	}
	if err := removeNamed(h.Name); err != nil {
		errs = append(errs, fmt.Errorf("host %s: %w", h.Short, err))
	}
	return errors.Join(errs...)
}

// Do runs fn on an OS thread switched into the host's namespace and switches
// back afterwards. Sockets fn opens belong to the namespace for their whole
// life; goroutines fn starts do not run in it. A panic in fn is re-raised in
// the caller. Bed.Close waits for running Do calls, so fn should be short
// and must not call Do on the same host.
func (h *Host) Do(fn func() error) error {
	if err := h.use(); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	return h.do(fn)
}

// do is Do for callers that hold h.mu or own h alone.
func (h *Host) do(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	// A fresh goroutine: if the thread cannot be switched back it stays
	// locked and dies with it, and the caller's own locking is untouched.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("host %s: current namespace: %w", h.Short, err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(h.ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("host %s: enter namespace: %w", h.Short, err)}
			return
		}
		var r result
		func() {
			defer func() { r.panic = recover() }()
			r.err = fn()
		}()
		if err := netns.Set(orig); err != nil {
			if r.err == nil && r.panic == nil {
				r.err = fmt.Errorf("host %s: leave namespace: %w", h.Short, err)
			}
			done <- r
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// link looks an interface up by name inside the host; h.mu is held.
func (h *Host) link(ifname string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("host %s: interface %s: %w", h.Short, ifname, err)
	}
	return l, nil
}

// Addr adds an address in CIDR form ("198.18.0.1/24", "2001:2::1/64") to
// ifname. IPv6 addresses skip duplicate address detection, so they can be
// used at once.
func (h *Host) Addr(ifname, cidr string) error {
	if err := h.use(); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	l, err := h.link(ifname)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("host %s: address %q: %w", h.Short, cidr, err)
	}
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := h.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("host %s: add %s to %s: %w", h.Short, cidr, ifname, err)
	}
	return nil
}

// Route adds a route to dst (a CIDR, or "default" / "default6" for the
// IPv4 / IPv6 default) via a gateway address, or directly out of an
// interface when via is an interface name. "default" with an IPv6 gateway
// means the IPv6 default.
func (h *Host) Route(dst, via string) error {
	if err := h.use(); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	r := &netlink.Route{}
	gw := net.ParseIP(via)
	if gw != nil {
		r.Gw = gw
	} else {
		l, err := h.link(via)
		if err != nil {
			return err
		}
		r.LinkIndex = l.Attrs().Index
		r.Scope = netlink.SCOPE_LINK
	}
	switch {
	case dst == "default6" || dst == "default" && gw != nil && gw.To4() == nil:
		_, r.Dst, _ = net.ParseCIDR("::/0")
	case dst == "default":
		_, r.Dst, _ = net.ParseCIDR("0.0.0.0/0")
	default:
		_, n, err := net.ParseCIDR(dst)
		if err != nil {
			return fmt.Errorf("host %s: route destination %q: %w", h.Short, dst, err)
		}
		r.Dst = n
	}
	if err := h.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("host %s: route %s via %s: %w", h.Short, dst, via, err)
	}
	return nil
}

// Sysctl sets a sysctl inside the host, e.g. Sysctl("net.ipv4.ip_forward",
// "1"). Keys may use dots or slashes.
func (h *Host) Sysctl(key, value string) error {
	if err := h.use(); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	return h.sysctl(key, value)
}

func (h *Host) sysctl(key, value string) error {
	if strings.Contains(key, "..") || strings.HasPrefix(key, "/") {
		return fmt.Errorf("host %s: bad sysctl key %q", h.Short, key)
	}
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	// /proc/sys/net answers for the namespace of the thread that opens it.
	err := h.do(func() error { return os.WriteFile(p, []byte(value), 0) })
	if err != nil {
		return fmt.Errorf("host %s: sysctl %s=%s: %w", h.Short, key, value, err)
	}
	return nil
}

// Forward turns on IPv4 and IPv6 forwarding in the host, making it a router.
func (h *Host) Forward() error {
	if err := h.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	return h.Sysctl("net.ipv6.conf.all.forwarding", "1")
}

// Listen opens a listener inside the host.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket (UDP, IP) inside the host.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from inside the host. addr should hold a literal address:
// the dial runs in one goroutine on the switched thread only then.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns a client whose connections are made inside the host,
// one new connection per request (keep-alives off), ignoring proxy settings.
func (h *Host) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DialContext:       h.Dial,
		DisableKeepAlives: true,
	}}
}

// Command prepares a command that runs inside the host (through
// `ip netns exec`). Whatever it runs is killed by Bed.Close, and by SIGKILL
// if the thread that starts it goes away.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Exec runs a command inside the host and returns its combined output.
func (h *Host) Exec(name string, args ...string) (string, error) {
	out, err := h.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("host %s: %s %s: %w: %s", h.Short, name,
			strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MAC returns the hardware address of ifname, or nil if there is no such
// interface.
func (h *Host) MAC(ifname string) net.HardwareAddr {
	if h.use() != nil {
		return nil
	}
	defer h.mu.RUnlock()
	l, err := h.link(ifname)
	if err != nil {
		return nil
	}
	return l.Attrs().HardwareAddr
}
