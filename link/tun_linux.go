package link

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TUN is built on golang.org/x/sys/unix rather than songgao/water, the
// project's TUN library: water cannot set IFF_VNET_HDR or TUNSETOFFLOAD, and
// without them every packet through the TUN is at most one MTU with a full
// checksum computed by the kernel, which caps bulk TCP far below what the
// GSO path moves.

// TUNConfig tunes OpenTUN. The zero value (or nil) means defaults.
type TUNConfig struct {
	// MTU of the device; default 1500.
	MTU int
	// MultiQueue creates the device with IFF_MULTI_QUEUE so that OpenQueue
	// can add one queue per worker.
	MultiQueue bool
	// BatchSize is the most packets one Read returns; default 64.
	BatchSize int
	// NoOffload leaves TUNSETOFFLOAD off: the kernel then completes
	// checksums and segments before handing packets over. The vnet header
	// is still present.
	NoOffload bool
}

// TUN is one queue of a TUN device. It implements Device and Info. Frames
// are raw IP packets preceded by a VnetHdr.
type TUN struct {
	f       *os.File
	rc      syscall.RawConn
	name    string
	index   int
	mtu     int
	flags   uint16
	offload int // TUN_F_* flags the kernel accepted
	batch   int
	ns      netns.NsHandle
	closeFlag

	r tunRx
	w tunTx
}

type tunRx struct {
	fn     func(fd uintptr) bool
	bufs   [][]byte
	sizes  []int
	offset int
	n      int
	err    error
}

type tunTx struct {
	fn     func(fd uintptr) bool
	bufs   [][]byte
	offset int
	i, n   int
	err    error
}

// OpenTUN creates TUN device name (a "%d" in it lets the kernel number it)
// in the calling thread's network namespace, with IFF_TUN|IFF_NO_PI|
// IFF_VNET_HDR, enables checksum, TSO4/6 and (where the kernel has it) USO
// offload, sets the MTU and brings the device up. The device disappears
// when its last queue is closed.
func OpenTUN(name string, cfg *TUNConfig) (*TUN, error) {
	var c TUNConfig
	if cfg != nil {
		c = *cfg
	}
	if c.MTU <= 0 {
		c.MTU = 1500
	}
	if c.BatchSize <= 0 {
		c.BatchSize = defaultBatch
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if c.MultiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("tun %s: get netns: %w", name, err)
	}
	t, err := openTUNQueue(name, flags, c.BatchSize)
	if err != nil {
		ns.Close()
		return nil, err
	}
	t.ns = ns
	if !c.NoOffload {
		if err := t.setOffload(); err != nil {
			t.Close()
			return nil, err
		}
	}
	l, err := netlink.LinkByName(t.name)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("tun %s: find link: %w", t.name, err)
	}
	if err := netlink.LinkSetMTU(l, c.MTU); err != nil {
		t.Close()
		return nil, fmt.Errorf("tun %s: set mtu %d: %w", t.name, c.MTU, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Close()
		return nil, fmt.Errorf("tun %s: set up: %w", t.name, err)
	}
	t.index, t.mtu = l.Attrs().Index, c.MTU
	return t, nil
}

// OpenQueue attaches another queue to a device opened with MultiQueue. The
// kernel spreads the device's outgoing packets across queues by flow.
func (t *TUN) OpenQueue() (*TUN, error) {
	if t.flags&unix.IFF_MULTI_QUEUE == 0 {
		return nil, fmt.Errorf("tun %s: open queue: device was not opened with MultiQueue", t.name)
	}
	ns, err := unix.Dup(int(t.ns))
	if err != nil {
		return nil, fmt.Errorf("tun %s: dup netns: %w", t.name, err)
	}
	var q *TUN
	err = inNetns(t.ns, func() error {
		var err error
		q, err = openTUNQueue(t.name, t.flags, t.batch)
		return err
	})
	if err != nil {
		unix.Close(ns)
		return nil, err
	}
	q.ns = netns.NsHandle(ns)
	q.index, q.mtu = t.index, t.mtu
	if t.offload != 0 {
		// Offloads are per device, but setting them per queue keeps each
		// queue's view (and this one's record) the same.
		if err := q.ioctlOffload(t.offload); err != nil {
			q.Close()
			return nil, fmt.Errorf("tun %s: queue offload: %w", t.name, err)
		}
		q.offload = t.offload
	}
	return q, nil
}

func openTUNQueue(name string, flags uint16, batch int) (*TUN, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun %s: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: TUNSETIFF: %w", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: TUNSETVNETHDRSZ: %w", name, err)
	}
	t := &TUN{name: ifr.Name(), flags: flags, batch: batch}
	t.f = os.NewFile(uintptr(fd), "tun:"+t.name)
	if t.rc, err = t.f.SyscallConn(); err != nil {
		t.f.Close()
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	t.r.fn = t.recv
	t.w.fn = t.send
	return t, nil
}

// setOffload asks for checksum offload, TSO and USO, dropping USO on kernels
// older than 6.2 that reject it.
func (t *TUN) setOffload() error {
	base := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	for _, f := range []int{base | unix.TUN_F_USO4 | unix.TUN_F_USO6, base} {
		err := t.ioctlOffload(f)
		if err == nil {
			t.offload = f
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("tun %s: TUNSETOFFLOAD: %w", t.name, err)
		}
	}
	return fmt.Errorf("tun %s: TUNSETOFFLOAD: kernel accepts neither TSO nor USO", t.name)
}

func (t *TUN) ioctlOffload(flags int) error {
	var serr error
	err := t.rc.Control(func(fd uintptr) { serr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) })
	return errors.Join(err, serr)
}

// Offload returns the TUN_F_* offload flags in effect (unix.TUN_F_CSUM etc.).
func (t *TUN) Offload() int { return t.offload }

// Read implements Device. A TUN returns one packet per read(2), so Read
// drains up to BatchSize packets without waiting and blocks only when none
// is queued.
func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	r := &t.r
	r.bufs, r.sizes, r.offset, r.n, r.err = bufs, sizes, offset, 0, nil
	err := t.rc.Read(r.fn)
	r.bufs, r.sizes = nil, nil
	if err != nil {
		return 0, fmt.Errorf("tun %s: read: %w", t.name, t.closedErr(err))
	}
	if r.err != nil && r.n == 0 {
		return 0, fmt.Errorf("tun %s: read: %w", t.name, r.err)
	}
	return r.n, nil
}

func (t *TUN) recv(fd uintptr) bool {
	r := &t.r
	n := min(len(r.bufs), len(r.sizes), t.batch)
	for r.n < n {
		m, err := unix.Read(int(fd), r.bufs[r.n][r.offset:])
		switch {
		case err == nil:
			r.sizes[r.n] = m
			r.n++
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return r.n > 0
		default:
			r.err = err
			return true
		}
	}
	return true
}

// Write implements Device: one write(2) per packet.
func (t *TUN) Write(bufs [][]byte, offset int) (int, error) {
	w := &t.w
	w.bufs, w.offset, w.i, w.n, w.err = bufs, offset, 0, 0, nil
	err := t.rc.Write(w.fn)
	w.bufs = nil
	if err != nil {
		return w.n, fmt.Errorf("tun %s: write: %w", t.name, t.closedErr(err))
	}
	if w.err != nil {
		return w.n, fmt.Errorf("tun %s: write: %w", t.name, w.err)
	}
	return w.n, nil
}

func (t *TUN) send(fd uintptr) bool {
	w := &t.w
	for w.i < len(w.bufs) {
		_, err := unix.Write(int(fd), w.bufs[w.i][w.offset:])
		switch err {
		case nil:
			w.n++
			w.i++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			// A malformed packet or bad vnet header: drop it, send the rest.
			if w.err == nil {
				w.err = err
			}
			w.i++
		}
	}
	return true
}

// BatchSize implements Device.
func (t *TUN) BatchSize() int { return t.batch }

// Close implements Device: it closes this queue and unblocks its Read.
func (t *TUN) Close() error {
	t.closed.Store(true)
	err := t.f.Close()
	if t.ns.IsOpen() {
		t.ns.Close()
		t.ns = netns.None()
	}
	if err != nil {
		return fmt.Errorf("tun %s: close: %w", t.name, err)
	}
	return nil
}

// Ethernet implements Info: TUN packets are raw IP.
func (t *TUN) Ethernet() bool { return false }

// Index implements Info.
func (t *TUN) Index() int { return t.index }

// Name implements Info.
func (t *TUN) Name() string { return t.name }

// MAC implements Info: a TUN has no hardware address.
func (t *TUN) MAC() [6]byte { return [6]byte{} }

// MTU implements Info: the MTU set at open.
func (t *TUN) MTU() int { return t.mtu }

// VnetHdr implements Info: always on for TUN.
func (t *TUN) VnetHdr() bool { return true }

var (
	_ Device = (*TUN)(nil)
	_ Info   = (*TUN)(nil)
)
