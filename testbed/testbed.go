// Package testbed builds small networks out of Linux network namespaces:
// hosts joined by veth pairs and bridges, with helpers to run code, sockets
// and commands inside a host. The end-to-end tests and `director lab` use it.
//
// Every namespace a Bed makes is named prefix-suffix-name, with a random
// suffix per Bed, and is a named namespace under /run/netns, so
// `ip netns exec NAME ...` works on it too. All links live inside the bed's
// namespaces; the namespace of the calling process is never changed.
// Close kills the processes running in the bed's namespaces and deletes the
// namespaces, which takes every link in them along. Cleanup removes what a
// killed process left behind.
//
// It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) on Linux.
package testbed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsDir is where named namespaces are bind-mounted (the iproute2 convention
// that netns.NewNamed follows).
const nsDir = "/run/netns"

// Bed owns a set of namespaces and everything inside them.
type Bed struct {
	base string // prefix-suffix, the start of every name the bed makes

	mu     sync.Mutex
	hosts  []*Host
	closed bool
}

// Available reports why beds cannot be built here, or nil if they can. Tests
// call it to skip instead of failing on machines without root.
func Available() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("testbed: network namespaces need linux, not %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("testbed: network namespaces need root")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("testbed: no network namespace support: %w", err)
	}
	return nil
}

// New starts an empty bed. prefix identifies the owner (a test package, the
// lab) so that Cleanup(prefix) can find leftovers; a random suffix keeps
// beds with the same prefix apart.
func New(prefix string) (*Bed, error) {
	if err := checkName(prefix); err != nil {
		return nil, fmt.Errorf("testbed prefix: %w", err)
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("testbed suffix: %w", err)
	}
	return &Bed{base: prefix + "-" + hex.EncodeToString(r[:])}, nil
}

// Prefix returns the start shared by every namespace name of this bed
// ("prefix-suffix"); Cleanup(b.Prefix()) removes exactly this bed's leftovers.
func (b *Bed) Prefix() string { return b.base }

// checkName keeps names usable as a single path element and readable in
// `ip netns list`.
func checkName(s string) error {
	if s == "" || len(s) > 32 || strings.ContainsAny(s, "/ \t\n\x00") || s == "." || s == ".." {
		return fmt.Errorf("bad name %q (1-32 characters, no slash or space)", s)
	}
	return nil
}

// Host makes a new namespace named prefix-suffix-name with its loopback up.
func (b *Bed) Host(name string) (*Host, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("host %s: %w", name, ErrClosed)
	}
	full := b.base + "-" + name
	for _, h := range b.hosts {
		if h.Name == full {
			return nil, fmt.Errorf("host %s: already exists", name)
		}
	}
	ns, err := newNamed(full)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	h := &Host{Name: full, Short: name, bed: b, ns: ns}
	// Registered before anything else can fail, so Close deletes it.
	b.hosts = append(b.hosts, h)

	// h is not yet returned and b.mu keeps Close out: no locking needed.
	if err := h.do(func() error {
		var err error
		h.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		return nil, fmt.Errorf("host %s: netlink: %w", name, err)
	}
	// Duplicate address detection off for every interface made from now
	// on, link-local addresses included: until a router's link-local
	// address leaves DAD it cannot resolve neighbours for forwarded IPv6
	// packets, which would stall the first exchange for a second or two.
	for _, k := range []string{"net.ipv6.conf.default.accept_dad", "net.ipv6.conf.all.accept_dad"} {
		if err := h.sysctl(k, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	lo, err := h.nl.LinkByName("lo")
	if err == nil {
		err = h.nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("host %s: loopback up: %w", name, err)
	}
	return h, nil
}

// newNamed creates a named namespace without leaving any thread in it:
// netns.NewNamed moves the calling thread into the new namespace, so it
// runs on a locked thread that is moved back, or thrown away if it cannot be.
func newNamed(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), fmt.Errorf("current namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if rerr := netns.Set(orig); rerr != nil {
			// The thread stays locked and dies with this goroutine rather
			// than carry a foreign namespace back into the pool.
			if err == nil {
				ns.Close()
				_ = netns.DeleteNamed(name)
			}
			done <- result{netns.None(), fmt.Errorf("restore namespace: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			// NewNamed may fail after creating the file; leave nothing.
			_ = removeNamed(name)
			done <- result{netns.None(), fmt.Errorf("create namespace %s: %w", name, err)}
			return
		}
		done <- result{ns, nil}
	}()
	r := <-done
	return r.ns, r.err
}

// Close kills every process running in the bed's namespaces and deletes the
// namespaces with all their links. It is safe to call more than once, from
// another goroutine while the bed is being built (calls then fail with
// ErrClosed), and after a partly failed build. Sockets made in a host and
// still open keep its namespace, nameless, alive until they are closed.
func (b *Bed) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for _, h := range b.hosts {
		if err := h.close(); err != nil {
			errs = append(errs, err)
		}
	}
	b.hosts = nil
	return errors.Join(errs...)
}

// Cleanup removes every named namespace whose name starts with prefix + "-",
// after killing the processes in it: what a bed left behind when its process
// was killed without running Close. Pass the prefix given to New, or
// Bed.Prefix() for one bed only.
func Cleanup(prefix string) error {
	if err := checkName(prefix); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	entries, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		if id, err := nsIDByPath(nsDir + "/" + name); err == nil {
			if err := killIn(id); err != nil {
				errs = append(errs, fmt.Errorf("cleanup %s: %w", name, err))
			}
		}
		if err := removeNamed(name); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// removeNamed unmounts and removes /run/netns/name. A file that is not a
// mount (left by a failed create) is removed all the same.
func removeNamed(name string) error {
	p := nsDir + "/" + name
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}
