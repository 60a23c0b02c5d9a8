package link

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// AFPacketConfig tunes OpenAFPacket. The zero value (or nil) means defaults.
type AFPacketConfig struct {
	// BatchSize is the most frames per recvmmsg/sendmmsg; default 64.
	BatchSize int
	// SocketBuffer is the forced SO_RCVBUF/SO_SNDBUF size in bytes;
	// default 16 MiB. A deep receive queue absorbs bursts while a worker is
	// busy; GSO frames are up to 64 KiB each.
	SocketBuffer int
	// NoVnetHdr turns the virtio-net header off. Only for diagnosis: without
	// it, GSO frames with partial checksums cannot be forwarded correctly.
	NoVnetHdr bool

	// RXRing receives through a TPACKET_V3 memory-mapped ring instead of
	// recvmmsg (see afpacket_ring_linux.go). Off by default: a block is
	// only handed over when full or after RingBlockTimeout, which adds
	// latency under light load.
	RXRing bool
	// RingBlockSize is the size of one ring block, rounded up to the
	// page size; default 128 KiB, at least one 64 KiB frame plus headers.
	RingBlockSize int
	// RingBlocks is the number of blocks; default SocketBuffer/RingBlockSize.
	RingBlocks int
	// RingBlockTimeout is how long the kernel keeps a block that is not
	// full before handing it over; default 1ms, the kernel's smallest.
	RingBlockTimeout time.Duration

	// Blocking reads with blocking recvmmsg on a goroutine locked to its
	// thread instead of through the runtime poller (see
	// afpacket_block_linux.go); the director's default. Not with RXRing.
	Blocking bool
	// SpinFor keeps retrying recvmmsg for up to this long when the socket
	// is empty before waiting (in the poller or, with Blocking, in the
	// kernel). Experimental: the spinning costs CPU the workload may need.
	SpinFor time.Duration
	// FanoutBPF puts the queues OpenQueue makes in a PACKET_FANOUT_CBPF
	// group rather than PACKET_FANOUT_HASH: a classic BPF program
	// (SetFanoutProgram) picks each frame's queue, numbered in the order
	// the queues were opened, the first one included. Until one is set,
	// frames are spread by the kernel's flow hash.
	FanoutBPF bool
	// Defrag has the kernel reassemble IPv4 fragments before they reach
	// the queues (PACKET_FANOUT_FLAG_DEFRAG): a fragmented datagram is
	// read as one frame, with its ports, and whole datagrams are what the
	// fanout spreads. The socket joins a fanout group of its own at once,
	// since the flag belongs to a group. The kernel's own copy of the
	// fragments is not affected.
	Defrag bool
	// SendOnly binds the socket to the interface for sending only: it
	// receives no frame (bound with protocol 0), and its receive buffer
	// stays small. For a host that reads elsewhere (a TUN device) and
	// writes whole frames here.
	SendOnly bool
}

const (
	defaultBatch        = 64
	defaultSocketBuffer = 16 << 20
	ethPAll             = 0x0003
)

// AFPacket is one AF_PACKET socket bound to one interface. It implements
// Device and Info.
type AFPacket struct {
	f     *os.File
	fd    int // f's descriptor, for Multi's ppoll
	rc    syscall.RawConn
	name  string
	index int
	mac   [6]byte
	mtu   int
	vnet  bool
	batch int
	cfg   AFPacketConfig
	ns    netns.NsHandle // where the socket was opened, for OpenQueue
	group *fanoutGroup
	closeFlag

	r     afRx
	w     afTx
	ring  *rxRing // nil unless RXRing
	blk   blockMode
	nowFn func(fd uintptr) bool // recvNow, built once

	kpkts, kdrops atomic.Uint64 // PACKET_STATISTICS totals (see Stats)
}

// fanoutGroup is shared by all queues of one interface.
type fanoutGroup struct {
	mu sync.Mutex
	id int // -1 until the first socket joins
	// ignoreOut: the group has PACKET_FANOUT_FLAG_IGNORE_OUTGOING (Linux
	// 6.2 on); every member joins with the flags the first one got.
	ignoreOut bool
}

type afRx struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrLinklayer
	fn    func(fd uintptr) bool // built once so Read does not allocate a closure

	// per-call arguments and results of fn
	bufs   [][]byte
	sizes  []int
	offset int
	n      int
	err    error
	full   bool          // readNow: recvmmsg filled the batch
	drops  atomic.Uint64 // frames read but not returned: truncated, or our own output
	// downs counts receives that failed with ENETDOWN. A socket whose
	// interface goes down gets that from one receive, and the kernel takes
	// it out of its fanout group; when the interface comes back up, the
	// kernel puts it back and frames flow again. So a reader counts it and
	// waits on: a worker that stopped there would leave its share of the
	// traffic unserved for good.
	downs atomic.Uint64
}

type afTx struct {
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	fn   func(fd uintptr) bool

	bufs   [][]byte
	offset int
	i, n   int // next frame to send, frames sent
	err    error
	drops  atomic.Uint64
}

// OpenAFPacket opens a raw AF_PACKET socket on interface ifname in the
// calling thread's network namespace, with the virtio-net header on,
// outgoing frames ignored, and large forced socket buffers.
func OpenAFPacket(ifname string, cfg *AFPacketConfig) (*AFPacket, error) {
	var c AFPacketConfig
	if cfg != nil {
		c = *cfg
	}
	if c.BatchSize <= 0 {
		c.BatchSize = defaultBatch
	}
	if c.SocketBuffer <= 0 {
		c.SocketBuffer = defaultSocketBuffer
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("af_packet %s: get netns: %w", ifname, err)
	}
	d, err := openAFPacket(ifname, c, ns, &fanoutGroup{id: -1})
	if err != nil {
		ns.Close()
		return nil, err
	}
	if c.Defrag {
		d.group.mu.Lock()
		err := d.ensureGroup()
		d.group.mu.Unlock()
		if err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// OpenQueue opens another socket on the same interface and puts it and d in
// one PACKET_FANOUT_HASH group, so that the interface's traffic is split
// between them by flow hash. Open one queue per worker. Each queue is closed
// on its own.
func (d *AFPacket) OpenQueue() (*AFPacket, error) {
	g := d.group
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := d.ensureGroup(); err != nil {
		return nil, err
	}
	ns, err := unix.Dup(int(d.ns))
	if err != nil {
		return nil, fmt.Errorf("af_packet %s: dup netns: %w", d.name, err)
	}
	var q *AFPacket
	err = inNetns(d.ns, func() error {
		var err error
		q, err = openAFPacket(d.name, d.cfg, netns.NsHandle(ns), g)
		return err
	})
	if err != nil {
		unix.Close(ns)
		return nil, err
	}
	if _, err := joinFanout(q.rc, g.id, d.cfg.FanoutBPF, d.cfg.Defrag, g.ignoreOut); err != nil {
		q.Close()
		return nil, fmt.Errorf("af_packet %s: join fanout group %d: %w", d.name, g.id, err)
	}
	return q, nil
}

// ensureGroup puts d, the first queue, in a new fanout group unless it is
// in one. Called with d.group.mu held.
func (d *AFPacket) ensureGroup() error {
	g := d.group
	if g.id >= 0 {
		return nil
	}
	g.ignoreOut = true
	id, err := joinFanout(d.rc, -1, d.cfg.FanoutBPF, d.cfg.Defrag, true)
	if errors.Is(err, unix.EINVAL) {
		// A kernel before the flag: Read drops our own output itself.
		g.ignoreOut = false
		id, err = joinFanout(d.rc, -1, d.cfg.FanoutBPF, d.cfg.Defrag, false)
	}
	if err != nil {
		return fmt.Errorf("af_packet %s: create fanout group: %w", d.name, err)
	}
	g.id = id
	if d.cfg.FanoutBPF {
		if err := d.SetFanoutProgram(byFlowHash); err != nil {
			return err
		}
	}
	return nil
}

// joinFanout joins the socket to fanout group id, or creates a group with a
// kernel-chosen unique id when id < 0 (so we never join another program's
// group by accident). It returns the group id. Every member of a group
// has the same mode and flags.
//
// ignoreOut asks for PACKET_FANOUT_FLAG_IGNORE_OUTGOING: the group's hook
// replaces the sockets' own, so their PACKET_IGNORE_OUTGOING no longer
// applies, and without the flag every frame the host sends out of the
// interface is copied to the group (and, with DEFRAG, fragments the
// kernel cuts are reassembled for it) only for Read to drop it.
func joinFanout(rc syscall.RawConn, id int, byBPF, defrag, ignoreOut bool) (int, error) {
	mode := unix.PACKET_FANOUT_HASH
	if byBPF {
		mode = unix.PACKET_FANOUT_CBPF
	}
	if defrag {
		mode |= unix.PACKET_FANOUT_FLAG_DEFRAG
	}
	if ignoreOut {
		mode |= unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
	}
	var out int
	var serr error
	err := rc.Control(func(fd uintptr) {
		if id < 0 {
			arg := (mode | unix.PACKET_FANOUT_FLAG_UNIQUEID) << 16
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_FANOUT, arg); serr != nil {
				return
			}
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_FANOUT)
			out, serr = v&0xffff, err
			return
		}
		out = id
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_FANOUT, mode<<16|id)
	})
	if err != nil {
		return 0, err
	}
	return out, serr
}

func openAFPacket(ifname string, c AFPacketConfig, ns netns.NsHandle, g *fanoutGroup) (*AFPacket, error) {
	// Protocol 0 receives nothing until bind names the interface, so no
	// frame of another interface slips in first.
	if c.Blocking && c.RXRing {
		return nil, fmt.Errorf("af_packet %s: Blocking and RXRing cannot be combined", ifname)
	}
	flags := unix.SOCK_RAW | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC
	if c.Blocking {
		flags &^= unix.SOCK_NONBLOCK // os.NewFile then keeps it out of the poller
	}
	fd, err := unix.Socket(unix.AF_PACKET, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("af_packet %s: socket: %w", ifname, err)
	}
	d, err := setupAFPacket(fd, ifname, c)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("af_packet %s: %w", ifname, err)
	}
	d.f = os.NewFile(uintptr(fd), "af_packet:"+ifname)
	d.fd = fd
	if d.rc, err = d.f.SyscallConn(); err != nil {
		d.f.Close()
		if d.ring != nil {
			d.ring.unmap()
		}
		return nil, fmt.Errorf("af_packet %s: %w", ifname, err)
	}
	d.ns = ns
	d.group = g
	d.blk.on, d.blk.spin = c.Blocking, c.SpinFor
	if c.Blocking {
		if err := d.blk.openWake(); err != nil {
			d.f.Close()
			return nil, fmt.Errorf("af_packet %s: %w", ifname, err)
		}
	}
	d.initBatch()
	return d, nil
}

func setupAFPacket(fd int, ifname string, c AFPacketConfig) (d *AFPacket, err error) {
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return nil, fmt.Errorf("interface index: %w", err)
	}
	index := int(ifr.Uint32())
	if !c.NoVnetHdr {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return nil, fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
	}
	// Older kernels lack it; Read then drops PACKET_OUTGOING frames itself.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if !c.SendOnly {
		if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, c.SocketBuffer); err != nil {
			return nil, fmt.Errorf("receive buffer: %w", err)
		}
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, c.SocketBuffer); err != nil {
		return nil, fmt.Errorf("send buffer: %w", err)
	}
	var ring *rxRing
	if c.Blocking {
		if err := setBlockingTimeouts(fd); err != nil {
			return nil, err
		}
	}
	if c.RXRing {
		if ring, err = setupRXRing(fd, c); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				ring.unmap()
			}
		}()
	}
	proto := htons(ethPAll)
	if c.SendOnly {
		proto = 0 // nothing is received
	}
	sa := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: index}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	d = &AFPacket{name: ifname, index: index, vnet: !c.NoVnetHdr, batch: c.BatchSize, cfg: c, ring: ring}
	// The bound address carries the interface's hardware address.
	got, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	if ll, ok := got.(*unix.SockaddrLinklayer); ok && ll.Halen == 6 {
		copy(d.mac[:], ll.Addr[:6])
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFMTU, ifr); err != nil {
		return nil, fmt.Errorf("interface mtu: %w", err)
	}
	d.mtu = int(ifr.Uint32())
	return d, nil
}

// setBuffer sets a socket buffer past the sysctl limit when allowed
// (CAP_NET_ADMIN), else as large as the limit lets it.
func setBuffer(fd, force, plain, size int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); err == nil {
		return nil
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (d *AFPacket) initBatch() {
	n := d.batch
	d.r.msgs = make([]unix.Mmsghdr, n)
	d.r.iovs = make([]unix.Iovec, n)
	d.r.names = make([]unix.RawSockaddrLinklayer, n)
	for i := range d.r.msgs {
		h := &d.r.msgs[i].Hdr
		h.Iov = &d.r.iovs[i]
		h.Iovlen = 1
		h.Name = (*byte)(unsafe.Pointer(&d.r.names[i]))
	}
	d.r.fn = d.recv
	d.nowFn = d.recvNow
	if d.ring != nil {
		d.r.fn = d.ringRecv
	}
	if d.blk.on {
		d.r.fn = d.blockingRecv
	}
	d.w.msgs = make([]unix.Mmsghdr, n)
	d.w.iovs = make([]unix.Iovec, n)
	for i := range d.w.msgs {
		d.w.msgs[i].Hdr.Iov = &d.w.iovs[i]
		d.w.msgs[i].Hdr.Iovlen = 1
	}
	d.w.fn = d.send
}

// Read implements Device. Frames that are dropped (truncated because the
// buffer was too small, or our own output on kernels without
// PACKET_IGNORE_OUTGOING) are not returned; their buffers are swapped
// towards the end of bufs, so Read may reorder the slices in bufs.
func (d *AFPacket) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	r := &d.r
	r.bufs, r.sizes, r.offset, r.n, r.err = bufs, sizes, offset, 0, nil
	if d.blk.on {
		d.lockReader()
	}
	err := d.rc.Read(r.fn)
	r.bufs, r.sizes = nil, nil
	if err != nil {
		return 0, fmt.Errorf("af_packet %s: read: %w", d.name, d.closedErr(err))
	}
	if r.err != nil {
		return 0, fmt.Errorf("af_packet %s: recvmmsg: %w", d.name, r.err) // never on the ring path
	}
	return r.n, nil
}

// recv is the RawConn read callback: it returns false only when the socket
// had nothing (EAGAIN), so that the runtime poller waits for the next edge.
func (d *AFPacket) recv(fd uintptr) bool {
	r := &d.r
	n := min(len(r.bufs), len(r.sizes), len(r.msgs))
	if n == 0 {
		return true
	}
	r.prepare(n)
	var spinStart int64
	for {
		got, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(n), 0, 0, 0)
		if e == unix.EAGAIN {
			if d.blk.spin > 0 && d.blk.spinning(&spinStart) {
				continue
			}
			return false
		}
		if e == unix.EINTR {
			continue
		}
		if e == unix.ENETDOWN {
			// The interface went down (see afRx.downs); wait for frames.
			r.downs.Add(1)
			return false
		}
		if e != 0 {
			r.err = e
			return true
		}
		if r.n = r.keep(int(got)); r.n > 0 {
			return true
		}
		// Every frame was dropped; the socket may hold more, so try again
		// before waiting (the poller is edge-triggered).
	}
}

// prepare points the first n messages at the caller's buffers.
func (r *afRx) prepare(n int) {
	for i := 0; i < n; i++ {
		b := r.bufs[i][r.offset:]
		r.iovs[i].Base = unsafe.SliceData(b)
		r.iovs[i].SetLen(len(b))
		r.msgs[i].Hdr.Namelen = unix.SizeofSockaddrLinklayer
		r.msgs[i].Hdr.Flags = 0
	}
}

// keep sorts the got frames recvmmsg returned: the ones to return go to
// the front of bufs with their sizes set, dropped ones' buffers behind
// them. It returns how many are kept.
func (r *afRx) keep(got int) int {
	k := 0
	for i := 0; i < got; i++ {
		m := &r.msgs[i]
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 || r.names[i].Pkttype == unix.PACKET_OUTGOING {
			r.drops.Add(1)
			continue
		}
		if k != i {
			r.bufs[k], r.bufs[i] = r.bufs[i], r.bufs[k]
		}
		r.sizes[k] = int(m.Len)
		k++
	}
	return k
}

// Write implements Device.
func (d *AFPacket) Write(bufs [][]byte, offset int) (int, error) {
	w := &d.w
	w.bufs, w.offset, w.i, w.n, w.err = bufs, offset, 0, 0, nil
	err := d.rc.Write(w.fn)
	w.bufs = nil
	if err != nil {
		return w.n, fmt.Errorf("af_packet %s: write: %w", d.name, d.closedErr(err))
	}
	if w.err != nil {
		return w.n, fmt.Errorf("af_packet %s: sendmmsg: %w", d.name, w.err)
	}
	return w.n, nil
}

// send is the RawConn write callback; it returns false when the socket
// buffer is full, to wait until it drains.
func (d *AFPacket) send(fd uintptr) bool {
	w := &d.w
	for w.i < len(w.bufs) {
		n := min(len(w.bufs)-w.i, len(w.msgs))
		for j := 0; j < n; j++ {
			b := w.bufs[w.i+j][w.offset:]
			w.iovs[j].Base = unsafe.SliceData(b)
			w.iovs[j].SetLen(len(b))
		}
		sent, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.msgs[0])), uintptr(n), 0, 0, 0)
		switch e {
		case 0:
			w.i += int(sent)
			w.n += int(sent)
		case unix.EINTR:
		case unix.EAGAIN:
			if d.blk.on {
				// SO_SNDTIMEO expired on the blocking socket: wait
				// again unless it was closed meanwhile.
				if d.closed.Load() {
					w.err = os.ErrClosed
					return true
				}
				continue
			}
			// The socket's send buffer is full; the poller wakes us
			// when it drains.
			return false
		default:
			// This frame is bad (too long, bad vnet header) or the
			// device refused it (link down, ENOBUFS from a full queue):
			// drop it and go on with the rest.
			if w.err == nil {
				w.err = e
			}
			w.drops.Add(1)
			w.i++
		}
	}
	return true
}

// BatchSize implements Device.
func (d *AFPacket) BatchSize() int { return d.batch }

// Close implements Device: it closes the socket, which unblocks a Read.
func (d *AFPacket) Close() error {
	d.closed.Store(true)
	d.blk.closeWake()
	err := d.f.Close()
	d.releaseProcs()
	// The file's Close waited for a Read inside the RawConn callback to
	// leave it, so nothing reads the ring now.
	if d.ring != nil && err == nil {
		err = d.ring.unmap()
	}
	if d.ns.IsOpen() {
		d.ns.Close()
		d.ns = netns.None()
	}
	if err != nil {
		return fmt.Errorf("af_packet %s: close: %w", d.name, err)
	}
	return nil
}

// Ethernet implements Info: AF_PACKET frames start with an Ethernet header.
func (d *AFPacket) Ethernet() bool { return true }

// Index implements Info.
func (d *AFPacket) Index() int { return d.index }

// Name implements Info.
func (d *AFPacket) Name() string { return d.name }

// MAC implements Info: the interface's address when the socket was opened.
func (d *AFPacket) MAC() [6]byte { return d.mac }

// MTU implements Info: the interface's MTU when the socket was opened.
func (d *AFPacket) MTU() int { return d.mtu }

// VnetHdr implements Info.
func (d *AFPacket) VnetHdr() bool { return d.vnet }

// Stats are counters of one AF_PACKET socket since it was opened.
type Stats struct {
	ReadDrops  uint64 // frames read and dropped here (truncated, or own output)
	WriteDrops uint64 // frames the kernel refused on send
	// KernelPackets and KernelDrops come from PACKET_STATISTICS: frames the
	// kernel queued for the socket, and frames it dropped because the
	// receive queue (or ring) was full.
	KernelPackets uint64
	KernelDrops   uint64
	// LinkDowns counts the times a receive found the interface gone down.
	LinkDowns uint64
}

// Stats returns the socket's counters; safe to call at any time, from any
// goroutine. The kernel resets PACKET_STATISTICS on every read, so each
// read is added to running totals here.
func (d *AFPacket) Stats() (Stats, error) {
	var serr error
	err := d.rc.Control(func(fd uintptr) {
		var ts *unix.TpacketStats
		ts, serr = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if serr == nil {
			d.kpkts.Add(uint64(ts.Packets))
			d.kdrops.Add(uint64(ts.Drops))
		}
	})
	s := Stats{ReadDrops: d.r.drops.Load(), WriteDrops: d.w.drops.Load(),
		KernelPackets: d.kpkts.Load(), KernelDrops: d.kdrops.Load(), LinkDowns: d.r.downs.Load()}
	if err = errors.Join(err, serr); err != nil {
		return s, fmt.Errorf("af_packet %s: stats: %w", d.name, err)
	}
	return s, nil
}

var (
	_ Device = (*AFPacket)(nil)
	_ Info   = (*AFPacket)(nil)
)
