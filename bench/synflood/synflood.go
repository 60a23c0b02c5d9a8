// Package synflood sends a bounded flood of TCP SYNs with forged source
// addresses, the attack of issue 13, so that the benchmark can measure
// what a balancer still serves under it. Each SYN is a whole Ethernet frame
// written to an AF_PACKET socket bound to one interface and addressed to
// one next hop's MAC address (the director's), so the sending host's own
// routing, conntrack and TCP stack never see it: the forged sources need no
// route back and no local state. Frames go out in batches (sendmmsg),
// optionally paced, every flood bounded by a count and a duration, with no
// allocation per packet and valid IPv4 / IPv6 and TCP checksums.
//
// Addresses are confined to the benchmarking ranges: IPv4 sources and
// destinations inside 198.18.0.0/15 (RFC 2544), IPv6 inside 2001:2::/48
// (RFC 5180). Anything else is refused.
package synflood

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The benchmarking ranges the flood is confined to.
var (
	Bench4 = netip.MustParsePrefix("198.18.0.0/15")
	Bench6 = netip.MustParsePrefix("2001:2::/48")
)

// Frame sizes: Ethernet, IP, and a TCP header with one option (MSS 1460),
// as a real SYN carries.
const (
	ethLen  = 14
	tcpLen  = 24
	Frame4  = ethLen + 20 + tcpLen // 58 bytes
	Frame6  = ethLen + 40 + tcpLen // 78 bytes
	mss     = 1460
	window  = 64240
	hopLim  = 64
	minPort = 1024
)

// Config is one flood.
type Config struct {
	// Dst is the attacked service, VIP:port.
	Dst netip.AddrPort
	// Sources are the forged source addresses: each SYN's source is drawn
	// uniformly from this prefix (of Dst's family), skipping Exclude.
	Sources netip.Prefix
	// Exclude are addresses never used as a source (the real client's).
	Exclude []netip.Addr
	// Count and Duration bound the flood; both are required.
	Count    int64
	Duration time.Duration
	// Rate, when positive, paces the flood to this many SYNs per second
	// over all sockets, in batches on a fixed schedule (a sender that
	// falls behind sends at once, never bursting more than a batch to
	// catch up). Zero sends as fast as the sockets take frames.
	Rate float64
	// Batch is frames per sendmmsg call (default 64).
	Batch int
	// Seed seeds the source addresses, ports and sequence numbers (0: a
	// random seed).
	Seed uint64
}

// Result is what a flood sent.
type Result struct {
	Sent    int64         // frames the sockets took
	Refused int64         // frames a send refused (ENOBUFS, a send timeout)
	Elapsed time.Duration // from the start to the last send's return
}

// Rate is frames sent per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// Check validates c.
func (c *Config) Check() error {
	switch {
	case c.Count <= 0 || c.Duration <= 0:
		return fmt.Errorf("syn flood: need a count and a duration (got %d, %v)", c.Count, c.Duration)
	case c.Rate < 0:
		return fmt.Errorf("syn flood: negative rate %v", c.Rate)
	case c.Batch < 0 || c.Batch > 1024:
		return fmt.Errorf("syn flood: batch %d outside 0..1024", c.Batch)
	case !c.Dst.IsValid() || c.Dst.Port() == 0:
		return fmt.Errorf("syn flood: destination %v: want ADDR:PORT", c.Dst)
	case !c.Sources.IsValid():
		return errors.New("syn flood: no source prefix")
	}
	dst := c.Dst.Addr().Unmap()
	bench := Bench4
	if dst.Is6() {
		bench = Bench6
	}
	if !bench.Contains(dst) {
		return fmt.Errorf("syn flood: destination %v is outside %v", dst, bench)
	}
	src := c.Sources.Masked()
	if src.Addr().Is6() != dst.Is6() {
		return fmt.Errorf("syn flood: sources %v and destination %v are of different families", src, dst)
	}
	if src.Bits() < bench.Bits() {
		return fmt.Errorf("syn flood: sources %v are not inside %v", src, bench)
	}
	if !bench.Contains(src.Addr()) {
		return fmt.Errorf("syn flood: sources %v are outside %v", src, bench)
	}
	hostBits := src.Addr().BitLen() - src.Bits()
	if hostBits < 64 && uint64(len(c.Exclude)) >= uint64(1)<<hostBits {
		return fmt.Errorf("syn flood: sources %v leave no address after %d excluded", src, len(c.Exclude))
	}
	return nil
}

// Sender is one AF_PACKET socket bound to an interface, writing frames
// addressed to one next hop.
type Sender struct {
	fd      int
	srcMAC  net.HardwareAddr
	dstMAC  net.HardwareAddr
	ifname  string
	closeMu sync.Mutex
	closed  bool
}

// Open opens a sending packet socket on ifname, in the network namespace
// of the calling thread (call it inside testbed.Host.Do to flood from a
// namespace; the socket stays in that namespace for its life). Frames go
// to dstMAC, the next hop: the director.
func Open(ifname string, dstMAC net.HardwareAddr) (*Sender, error) {
	if len(dstMAC) != 6 {
		return nil, fmt.Errorf("syn flood: next hop MAC %v: want 6 bytes", dstMAC)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("syn flood: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("syn flood: %s is not an Ethernet interface", ifname)
	}
	// Protocol 0: the socket receives nothing, it only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("syn flood: packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("syn flood: bind to %s: %w", ifname, err)
	}
	// A send that cannot get buffer space gives up after a while instead
	// of blocking the flood past its duration.
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("syn flood: SO_SNDTIMEO: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	return &Sender{fd: fd, srcMAC: ifi.HardwareAddr, dstMAC: dstMAC, ifname: ifname}, nil
}

// Close closes the socket.
func (s *Sender) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return unix.Close(s.fd)
}

// Neighbour finds the link-layer address of ip on ifname in the calling
// thread's namespace (call it inside testbed.Host.Do): from the kernel's
// neighbour table, after prompting resolution (ARP or NDP) with a UDP
// datagram to ip's discard port if the table has no usable entry.
func Neighbour(ifname string, ip netip.Addr, limit time.Duration) (net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("neighbour: %w", err)
	}
	family := netlink.FAMILY_V4
	if ip.Unmap().Is6() {
		family = netlink.FAMILY_V6
	}
	const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT
	prompted := false
	for deadline := time.Now().Add(limit); ; {
		ns, err := netlink.NeighList(ifi.Index, family)
		if err != nil {
			return nil, fmt.Errorf("neighbour: %w", err)
		}
		for _, n := range ns {
			a, ok := netip.AddrFromSlice(n.IP)
			if ok && a.Unmap() == ip.Unmap() && n.State&usable != 0 && len(n.HardwareAddr) == 6 {
				return n.HardwareAddr, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("neighbour: %v on %s not resolved within %v", ip, ifname, limit)
		}
		if !prompted {
			// Any datagram makes the kernel resolve the next hop; the
			// discard port's answer (if any) does not matter.
			if c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9))); err == nil {
				_, _ = c.Write([]byte{0})
				c.Close()
			}
			prompted = true
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Flood sends c's SYNs through senders in parallel, one goroutine each,
// each its share of the count and the rate, until c.Count frames are
// sent, c.Duration has passed or ctx is done.
func Flood(ctx context.Context, senders []*Sender, c Config) (Result, error) {
	if err := c.Check(); err != nil {
		return Result{}, err
	}
	if len(senders) == 0 {
		return Result{}, errors.New("syn flood: no sender")
	}
	seed := c.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	ctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	var sent, refused atomic.Int64
	errs := make([]error, len(senders))
	var wg sync.WaitGroup
	start := time.Now()
	for i, s := range senders {
		sc := c
		sc.Count = c.Count / int64(len(senders))
		if int64(i) < c.Count%int64(len(senders)) {
			sc.Count++
		}
		sc.Rate = c.Rate / float64(len(senders))
		sc.Seed = seed + uint64(i)*0x9e3779b97f4a7c15
		if sc.Count == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.send(ctx, sc, &sent, &refused)
		}()
	}
	wg.Wait()
	return Result{Sent: sent.Load(), Refused: refused.Load(), Elapsed: time.Since(start)}, errors.Join(errs...)
}

// Send is Flood through one sender.
func (s *Sender) Send(ctx context.Context, c Config) (Result, error) {
	return Flood(ctx, []*Sender{s}, c)
}

// send floods c.Count frames at most through s until ctx is done.
func (s *Sender) send(ctx context.Context, c Config, sent, refused *atomic.Int64) error {
	b, err := newBatch(s.srcMAC, s.dstMAC, c)
	if err != nil {
		return err
	}
	var gap time.Duration // between batches, when paced
	if c.Rate > 0 {
		gap = time.Duration(float64(b.size) / c.Rate * float64(time.Second))
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	due := time.Now()
	for n := c.Count; n > 0 && ctx.Err() == nil; {
		if gap > 0 {
			if wait := time.Until(due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
			} else if wait < -gap {
				due = time.Now() // fell behind: no burst to catch up
			}
			due = due.Add(gap)
		}
		k := int(min(int64(b.size), n))
		b.fill(k)
		got, err := s.sendmmsg(b.hdrs[:k])
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			// The device or the socket's buffer is full: the frames
			// are lost, like a congested uplink's.
		default:
			return fmt.Errorf("syn flood: sendmmsg on %s: %w", s.ifname, err)
		}
		sent.Add(int64(got))
		refused.Add(int64(k - got))
		n -= int64(k) // refused frames count against the bound too
	}
	return nil
}

// sendmmsg sends hdrs' frames; got is how many the socket took.
func (s *Sender) sendmmsg(hdrs []mmsghdr) (got int, err error) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// mmsghdr is struct mmsghdr (x/sys/unix has no sendmmsg wrapper for it).
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
	_   [4]byte
}

// batch is a batch's frames and the state that varies them.
type batch struct {
	size     int
	frameLen int
	v6       bool
	buf      []byte
	iovs     []unix.Iovec
	hdrs     []mmsghdr
	rng      randv2.PCG
	// The source prefix: its base address (16 bytes for IPv6, 4 for
	// IPv4, in the low part of a [16]byte) and the host part's width.
	base     [16]byte
	hostBits int
	exclude  []netip.Addr
	// fixed is the one's-complement sum of the TCP checksum's parts that
	// do not change (the pseudo-header's destination, protocol and length;
	// the TCP header's constant fields).
	fixed uint32
}

// newBatch builds c.Batch copies of the SYN template from src to dst MAC.
func newBatch(srcMAC, dstMAC net.HardwareAddr, c Config) (*batch, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	size := c.Batch
	if size == 0 {
		size = 64
	}
	dst := c.Dst.Addr().Unmap()
	b := &batch{size: size, v6: dst.Is6(), exclude: c.Exclude}
	b.frameLen = Frame4
	if b.v6 {
		b.frameLen = Frame6
	}
	b.rng.Seed(c.Seed, c.Seed^0xda3e39cb94b95bdb)
	src := c.Sources.Masked()
	b.hostBits = src.Addr().BitLen() - src.Bits()
	if b.v6 {
		b.base = src.Addr().As16()
	} else {
		a := src.Addr().As4()
		copy(b.base[:4], a[:])
	}
	tmpl := make([]byte, b.frameLen)
	copy(tmpl[0:6], dstMAC)
	copy(tmpl[6:12], srcMAC)
	var ip, tcp []byte
	if b.v6 {
		binary.BigEndian.PutUint16(tmpl[12:], unix.ETH_P_IPV6)
		ip = tmpl[ethLen : ethLen+40]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], tcpLen)
		ip[6] = unix.IPPROTO_TCP
		ip[7] = hopLim
		d := dst.As16()
		copy(ip[24:40], d[:])
		tcp = tmpl[ethLen+40:]
	} else {
		binary.BigEndian.PutUint16(tmpl[12:], unix.ETH_P_IP)
		ip = tmpl[ethLen : ethLen+20]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 20+tcpLen)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = hopLim
		ip[9] = unix.IPPROTO_TCP
		d := dst.As4()
		copy(ip[16:20], d[:])
		tcp = tmpl[ethLen+20:]
	}
	binary.BigEndian.PutUint16(tcp[2:], c.Dst.Port())
	tcp[12] = tcpLen / 4 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], window)
	tcp[20], tcp[21] = 2, 4 // MSS
	binary.BigEndian.PutUint16(tcp[22:], mss)
	// The constant part of the TCP checksum: the pseudo-header's
	// destination, protocol and length, and the header as it stands
	// (source port, sequence number and checksum are still zero).
	var sum uint32
	if b.v6 {
		sum = sum16(ip[24:40], 0)
	} else {
		sum = sum16(ip[16:20], 0)
	}
	sum += unix.IPPROTO_TCP + tcpLen
	b.fixed = sum16(tcp, sum)

	b.buf = make([]byte, size*b.frameLen)
	b.iovs = make([]unix.Iovec, size)
	b.hdrs = make([]mmsghdr, size)
	for i := range size {
		f := b.buf[i*b.frameLen : (i+1)*b.frameLen]
		copy(f, tmpl)
		b.iovs[i].Base = &f[0]
		b.iovs[i].SetLen(b.frameLen)
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b, nil
}

// frame is the i-th frame of the batch.
func (b *batch) frame(i int) []byte { return b.buf[i*b.frameLen : (i+1)*b.frameLen] }

// fill gives the first k frames fresh sources, ports, sequence numbers
// (and IPv4 identifications) and their checksums.
func (b *batch) fill(k int) {
	for i := range k {
		f := b.frame(i)
		var tcp []byte
		var sum uint32
		r := b.rng.Uint64()
		if b.v6 {
			ip := f[ethLen : ethLen+40]
			b.source6((*[16]byte)(ip[8:24]))
			sum = sum16(ip[8:24], b.fixed)
			tcp = f[ethLen+40:]
		} else {
			ip := f[ethLen : ethLen+20]
			b.source4((*[4]byte)(ip[12:16]))
			binary.BigEndian.PutUint16(ip[4:], uint16(r>>48))
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip, 0)))
			sum = sum16(ip[12:16], b.fixed)
			tcp = f[ethLen+20:]
		}
		sport := uint16(minPort + r%(65536-minPort))
		seq := uint32(r >> 16)
		binary.BigEndian.PutUint16(tcp[0:], sport)
		binary.BigEndian.PutUint32(tcp[4:], seq)
		sum += uint32(sport) + seq>>16 + seq&0xffff
		binary.BigEndian.PutUint16(tcp[16:], ^fold(sum))
	}
}

// source4 draws an IPv4 source from the prefix, skipping exclusions.
func (b *batch) source4(out *[4]byte) {
	base := binary.BigEndian.Uint32(b.base[:4])
	var mask uint32
	if b.hostBits > 0 {
		mask = uint32(1)<<b.hostBits - 1
	}
	for {
		a := base | uint32(b.rng.Uint64())&mask
		binary.BigEndian.PutUint32(out[:], a)
		if !b.excluded(netip.AddrFrom4(*out)) {
			return
		}
	}
}

// source6 draws an IPv6 source from the prefix, skipping exclusions.
func (b *batch) source6(out *[16]byte) {
	for {
		*out = b.base
		hi, lo := b.rng.Uint64(), b.rng.Uint64()
		var mhi, mlo uint64
		switch {
		case b.hostBits >= 128:
			mhi, mlo = ^uint64(0), ^uint64(0)
		case b.hostBits > 64:
			mhi, mlo = uint64(1)<<(b.hostBits-64)-1, ^uint64(0)
		case b.hostBits == 64:
			mlo = ^uint64(0)
		case b.hostBits > 0:
			mlo = uint64(1)<<b.hostBits - 1
		}
		binary.BigEndian.PutUint64(out[0:], binary.BigEndian.Uint64(out[0:])|hi&mhi)
		binary.BigEndian.PutUint64(out[8:], binary.BigEndian.Uint64(out[8:])|lo&mlo)
		if !b.excluded(netip.AddrFrom16(*out)) {
			return
		}
	}
}

func (b *batch) excluded(a netip.Addr) bool {
	for _, x := range b.exclude {
		if x.Unmap() == a {
			return true
		}
	}
	return false
}

// sum16 adds b's big-endian 16-bit words (b has an even length) to sum.
func sum16(b []byte, sum uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return sum
}

// fold folds a 32-bit one's-complement sum to 16 bits.
func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
