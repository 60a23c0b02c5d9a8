package link

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The TPACKET_V3 receive ring (AFPacketConfig.RXRing). The kernel writes
// frames into blocks of a memory-mapped ring and hands a whole block to us
// when it is full or when its retire timeout expires; Read copies frames out
// of the block into the caller's buffers (so the Device interface and the
// headroom stay as they are) and gives the block back once every frame in it
// has been copied. One system call per block instead of one per batch,
// and no socket buffer accounting per frame.
//
// The cost: a block that is not full is only handed over when its timeout
// expires, so a lightly loaded socket adds up to that timeout of latency
// to every frame. This is why the ring is opt-in.

const (
	// defaultRingBlockSize holds one 64 KiB GSO frame with its headers
	// (block descriptor, tpacket3_hdr, sockaddr_ll, vnet header).
	defaultRingBlockSize = 128 << 10
	// minRingFrame is the room a 64 KiB frame needs in a block: Read
	// refuses a block size below it, since such frames would all be
	// truncated.
	minRingFrame         = 65535 + 14 + 256
	defaultRingBlockTime = time.Millisecond
)

// Offsets in the ring, from the tpacket v3 ABI (linux/if_packet.h).
const (
	// struct tpacket_block_desc: version, offset_to_priv, then
	// struct tpacket_hdr_v1.
	blkStatus     = 8
	blkNumPkts    = 12
	blkFirstPkt   = 16
	blkHeaderSize = 48 // the block descriptor, TPACKET_ALIGNed

	// struct tpacket3_hdr.
	pktNextOffset = 0
	pktSnaplen    = 12
	pktLen        = 16
	pktMac        = 24
	// struct sockaddr_ll follows the header at TPACKET_ALIGN(48).
	pktSll        = unix.SizeofTpacket3Hdr
	pktPkttype    = pktSll + 10
	pktHeaderSize = pktSll + unix.SizeofSockaddrLinklayer
)

// rxRing is the mapped ring and the reader's place in it.
type rxRing struct {
	// mu orders read and unmap for the race detector: the file's Close
	// already waits for a read in the RawConn callback to leave it (the
	// descriptor's reference count), but through runtime semaphores it
	// does not see. Uncontended, once per batch.
	mu        sync.Mutex
	mem       []byte
	blockSize int
	blocks    int
	vnet      bool

	cur  int // the block being read
	left int // frames in cur not yet read; 0 when cur is not open yet
	off  int // offset in cur of the next frame
}

// setupRXRing switches socket fd to TPACKET_V3 and maps an RX ring on it.
// It must run after PACKET_VNET_HDR (the kernel refuses that option once a
// ring exists) and before bind, so that no frame is queued outside the ring.
func setupRXRing(fd int, c AFPacketConfig) (*rxRing, error) {
	bs, nb, tov := c.RingBlockSize, c.RingBlocks, c.RingBlockTimeout
	if bs <= 0 {
		bs = defaultRingBlockSize
	}
	page := os.Getpagesize()
	bs = (bs + page - 1) / page * page
	if bs < minRingFrame {
		return nil, fmt.Errorf("ring block size %d cannot hold a 64 KiB frame (want at least %d)", bs, minRingFrame)
	}
	if nb <= 0 {
		// As much memory as the socket buffer the recvmmsg path uses.
		nb = max(c.SocketBuffer/bs, 2)
	}
	if tov <= 0 {
		tov = defaultRingBlockTime
	}
	ms := max(tov.Milliseconds(), 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION v3: %w", err)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(bs),
		Block_nr:       uint32(nb),
		Frame_size:     uint32(bs), // v3 frames are variable; the kernel only checks block = n × frame
		Frame_nr:       uint32(nb),
		Retire_blk_tov: uint32(ms),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("PACKET_RX_RING (%d blocks of %d bytes): %w", nb, bs, err)
	}
	mem, err := unix.Mmap(fd, 0, bs*nb, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap rx ring: %w", err)
	}
	return &rxRing{mem: mem, blockSize: bs, blocks: nb, vnet: !c.NoVnetHdr}, nil
}

// unmap releases the ring. Only after the socket's file is closed: Close
// waits for a Read in progress to leave the RawConn callback, so nothing
// reads the memory any more.
func (g *rxRing) unmap() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mem == nil {
		return nil
	}
	err := unix.Munmap(g.mem)
	g.mem = nil
	return err
}

func blockStatus(blk []byte) *uint32 { return (*uint32)(unsafe.Pointer(&blk[blkStatus])) }

// read copies up to len(bufs) frames from the ring into bufs[i][offset:],
// sets sizes[i], and returns how many. It returns 0 when the current block
// is still the kernel's. Dropped frames (truncated by the kernel or too big
// for the caller's buffer, or our own output) are counted in drops.
func (g *rxRing) read(bufs [][]byte, sizes []int, offset int, drops *atomic.Uint64) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mem == nil {
		return 0
	}
	k := 0
	for k < len(bufs) {
		blk := g.mem[g.cur*g.blockSize : (g.cur+1)*g.blockSize]
		if g.left == 0 {
			// The kernel publishes the block's contents before its
			// status; the atomic load orders our reads after it.
			if atomic.LoadUint32(blockStatus(blk))&unix.TP_STATUS_USER == 0 {
				break
			}
			g.left = int(binary.NativeEndian.Uint32(blk[blkNumPkts:]))
			g.off = int(binary.NativeEndian.Uint32(blk[blkFirstPkt:]))
			if g.left == 0 {
				g.release(blk)
				continue
			}
		}
		frame, next, st := ringFrame(blk, g.off, g.vnet)
		switch {
		case st != frameOK:
			drops.Add(1)
		case len(bufs[k])-offset < len(frame):
			drops.Add(1) // like MSG_TRUNC on the recvmmsg path
		default:
			sizes[k] = copy(bufs[k][offset:], frame)
			k++
		}
		g.left--
		g.off = next
		if g.left == 0 || next < 0 {
			// Copied out: the kernel may refill it.
			g.release(blk)
		}
	}
	return k
}

// release gives block blk back to the kernel and moves to the next one.
func (g *rxRing) release(blk []byte) {
	atomic.StoreUint32(blockStatus(blk), unix.TP_STATUS_KERNEL)
	g.left = 0
	g.cur++
	if g.cur == g.blocks {
		g.cur = 0
	}
}

// Frame verdicts of ringFrame.
const (
	frameOK        = iota
	frameTruncated // tp_snaplen < tp_len: the block had no room for all of it
	frameOutgoing  // our own output, on kernels without PACKET_IGNORE_OUTGOING
	frameBad       // the header points outside the block
)

// ringFrame reads the tpacket3_hdr at off in block blk. It returns the frame
// (preceded by its vnet header when vnet is set), the offset of the next
// frame in the block (-1 when there is none or the header is bad), and a
// verdict. It never reads outside blk, whatever the block holds.
func ringFrame(blk []byte, off int, vnet bool) (frame []byte, next int, verdict int) {
	if off < blkHeaderSize || off > len(blk)-pktHeaderSize {
		return nil, -1, frameBad
	}
	h := blk[off:]
	next = -1
	if n := int(binary.NativeEndian.Uint32(h[pktNextOffset:])); n > 0 && n <= len(h)-pktHeaderSize {
		next = off + n
	}
	snap := int(binary.NativeEndian.Uint32(h[pktSnaplen:]))
	wire := int(binary.NativeEndian.Uint32(h[pktLen:]))
	mac := int(binary.NativeEndian.Uint16(h[pktMac:]))
	start, end := mac, mac+snap
	if vnet {
		start -= VnetHdrLen // the kernel writes it right before the frame
	}
	if start < pktHeaderSize || end > len(h) {
		return nil, next, frameBad
	}
	if snap < wire {
		return nil, next, frameTruncated
	}
	if h[pktPkttype] == unix.PACKET_OUTGOING {
		return nil, next, frameOutgoing
	}
	return h[start:end], next, frameOK
}

// ringRecv is the RawConn read callback of the ring path: it returns false
// when the current block is still the kernel's, so that the runtime poller
// waits for the kernel to retire it (which wakes the socket).
func (d *AFPacket) ringRecv(uintptr) bool {
	r := &d.r
	n := min(len(r.bufs), len(r.sizes), d.batch)
	if n == 0 {
		return true
	}
	r.n = d.ring.read(r.bufs[:n], r.sizes[:n], r.offset, &r.drops)
	return r.n > 0
}
