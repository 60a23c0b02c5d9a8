package realserver

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"uvs/link"
)

// A reader is one receiving socket with its own TUN queue; its goroutine
// runs the whole way for the datagrams it receives:
//
//  1. recvmmsg up to batch datagrams, each at headroom in its buffer, with
//     the sender's address (readBatch);
//  2. per datagram, filter.decap: the outer source against --from, the
//     tunnel headers, the inner destination against the VIPs;
//  3. a zero virtio-net header written just before each accepted inner
//     packet, in the space the outer headers (or the headroom) leave;
//  4. a write of each inner packet into the TUN queue (one write(2) a
//     packet is all a TUN takes), which hands it to the local stack as if
//     it had arrived on the TUN device;
//  5. the counters, added once per batch.
//
// Buffers, headers and slices are made once: the loop allocates nothing.
type reader struct {
	kind  sockKind
	proto uint8 // raw sockets: the IP protocol
	name  string
	f     *os.File
	rc    syscall.RawConn
	q     *link.TUN
	flt   *filter

	bufs   [][]byte
	names  []unix.RawSockaddrInet6 // big enough for sockaddr_in too
	iovs   []unix.Iovec
	hdrs   []mmsghdr
	out    [][]byte // one packet for the TUN, a slice of bufs
	recv   func(fd uintptr) bool
	got    int   // datagrams the last recv returned
	err    error // its error
	closed atomic.Bool
	stats  stats
}

// mmsghdr is struct mmsghdr; Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// headroom is left before each datagram, so that a virtio-net header fits
// before an inner packet that starts the datagram (IPv6 raw IPIP).
const headroom = 16

// maxDatagram is the largest datagram a reader takes: an IPv4 packet
// (raw sockets get them reassembled, or merged by GRO) or a UDP payload.
const maxDatagram = 65535

// stats are one reader's counters; readers add once per batch, the
// collector sums them.
type stats struct {
	packets [3]atomic.Uint64 // by tun.Type
	bytes   [3]atomic.Uint64
	drops   [numReasons]atomic.Uint64
}

// openReader opens the socket: family AF_INET or AF_INET6; for kindRaw*,
// a raw socket of protocol proto; for kindUDP, a UDP socket bound to port.
func openReader(kind sockKind, family int, proto uint8, port uint16, batch int) (*reader, error) {
	r := &reader{kind: kind, proto: proto}
	fam := "ip4"
	if family == unix.AF_INET6 {
		fam = "ip6"
	}
	var fd int
	var err error
	if kind == kindUDP {
		r.name = fmt.Sprintf("udp-%s:%d", fam, port)
		fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	} else {
		r.name = fmt.Sprintf("raw-%s-proto%d", fam, proto)
		fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: socket: %w", r.name, err)
	}
	if err := setupSocket(fd, kind, family, port); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", r.name, err)
	}
	r.f = os.NewFile(uintptr(fd), r.name)
	if r.rc, err = r.f.SyscallConn(); err != nil {
		r.f.Close()
		return nil, fmt.Errorf("%s: %w", r.name, err)
	}
	r.bufs = make([][]byte, batch)
	r.names = make([]unix.RawSockaddrInet6, batch)
	r.iovs = make([]unix.Iovec, batch)
	r.hdrs = make([]mmsghdr, batch)
	r.out = make([][]byte, 1)
	for i := range batch {
		r.bufs[i] = make([]byte, headroom+maxDatagram)
		r.iovs[i].Base = &r.bufs[i][headroom]
		r.iovs[i].SetLen(maxDatagram)
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.recv = r.recvmmsg
	return r, nil
}

func setupSocket(fd int, kind sockKind, family int, port uint16) error {
	// A large receive queue absorbs bursts; as root the limit is ours.
	const rcvbuf = 4 << 20
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if kind != kindUDP {
		return nil
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
		// IPVS sends GUE without a UDP checksum when asked to
		// (--tun-nocsum), over IPv6 too; Linux drops those unless told.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_RX, 1); err != nil {
			return fmt.Errorf("UDP_NO_CHECK6_RX: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Port: int(port)}); err != nil {
			return fmt.Errorf("bind [::]:%d: %w", port, err)
		}
		return nil
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port)}); err != nil {
		return fmt.Errorf("bind 0.0.0.0:%d: %w", port, err)
	}
	return nil
}

// readBatch waits for datagrams and receives up to len(r.bufs) of them.
func (r *reader) readBatch() (int, error) {
	r.got, r.err = 0, nil
	if err := r.rc.Read(r.recv); err != nil {
		return 0, err
	}
	return r.got, r.err
}

func (r *reader) recvmmsg(fd uintptr) bool {
	for i := range r.hdrs {
		r.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].hdr.Flags = 0
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)),
			unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.got = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.err = e
		return true
	}
}

// source is the sender of datagram i.
func (r *reader) source(i int) netip.Addr {
	sa := &r.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrFrom4(sa4.Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

// run reads until the socket is closed.
func (r *reader) run() error {
	for {
		n, err := r.readBatch()
		if err != nil {
			if r.closed.Load() || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("%s: recvmmsg: %w", r.name, err)
		}
		r.handle(n)
	}
}

// handle decapsulates the n datagrams received and writes the accepted
// inner packets into the TUN queue.
func (r *reader) handle(n int) {
	var pkts, bytes [3]uint64
	var drops [numReasons]uint64
	for i := range n {
		h := &r.hdrs[i]
		size := int(h.len)
		if h.hdr.Flags&unix.MSG_TRUNC != 0 || size > maxDatagram {
			drops[dropMalformed]++
			continue
		}
		buf := r.bufs[i]
		pkt := buf[headroom : headroom+size]
		inner, ilen, typ, why := r.flt.decap(r.kind, r.proto, pkt, r.source(i))
		if why != accepted {
			drops[why]++
			continue
		}
		start := headroom + inner
		clear(buf[start-link.VnetHdrLen : start])
		r.out[0] = buf[start-link.VnetHdrLen : start+ilen]
		if w, _ := r.q.Write(r.out, 0); w != 1 {
			drops[dropWriteFailed]++
			continue
		}
		pkts[typ]++
		bytes[typ] += uint64(ilen)
	}
	r.out[0] = nil
	for t := range pkts {
		if pkts[t] > 0 {
			r.stats.packets[t].Add(pkts[t])
			r.stats.bytes[t].Add(bytes[t])
		}
	}
	for i, d := range drops {
		if d > 0 {
			r.stats.drops[i].Add(d)
		}
	}
}

func (r *reader) close() error {
	r.closed.Store(true)
	return r.f.Close()
}
