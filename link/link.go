// Package link is the director's packet I/O: one batched Device interface with
// headroom, and two Linux backends behind it.
//
//   - AFPacket: a raw AF_PACKET socket bound to one existing interface. Frames
//     carry their Ethernet header. Several sockets share the interface's
//     traffic through a fanout group (OpenQueue), one per worker, so one flow
//     always lands on the same worker and stays in order: PACKET_FANOUT_HASH,
//     or PACKET_FANOUT_CBPF with the caller's program (SetFanoutProgram).
//     Multi reads one queue of several interfaces on one thread.
//   - TUN: a TUN device this package creates. Frames are raw IP packets.
//     Several queues (IFF_MULTI_QUEUE, OpenQueue) give one per worker.
//
// Both backends run with the virtio-net header on (PACKET_VNET_HDR /
// IFF_VNET_HDR). Without it, a userspace path cannot forward the 64 KiB GSO
// segments with partial checksums that veth and local TCP hand it, and bulk
// TCP stalls; with it, each frame is preceded by a VnetHdr that says how the
// kernel is to finish the checksum and split the segment, and writes hand the
// same header back.
//
// Reads and writes are batched (recvmmsg/sendmmsg for AF_PACKET) and
// allocate nothing. They wait in the Go runtime's poller, or, for AF_PACKET
// sockets opened Blocking and for Multi, in the kernel on a thread of their
// own (see afpacket_block_linux.go).
package link

import "encoding/binary"

// Device is one interface's packet I/O. Frames are read into bufs[i][offset:]
// and written from bufs[i][offset:], leaving offset bytes of headroom before
// them so a caller can prepend an outer header in place. When VnetHdr() is
// true, each frame starts with the 10-byte virtio_net_hdr followed by the
// packet; writes must carry one too.
//
// One goroutine may Read while another Writes; Reads must not run
// concurrently with other Reads on the same Device, nor Writes with Writes.
// Workers that want parallelism open one Device (queue) each.
type Device interface {
	// Read blocks until at least one frame is available, then reads up to
	// min(len(bufs), BatchSize()) frames. sizes[i] is the length of frame i
	// counted from offset (vnet header included). After Close it returns an
	// error that matches os.ErrClosed.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write sends bufs[i][offset:] for every i. Each bufs[i] is sliced to
	// offset+frame length. A frame the kernel rejects is dropped and the
	// rest are still sent: n counts frames sent, err is the first error.
	Write(bufs [][]byte, offset int) (n int, err error)
	// BatchSize is the most frames one Read returns or one Write sends in a
	// single system call.
	BatchSize() int
	// Close releases the device and unblocks a Read in progress.
	Close() error
}

// Info describes the device behind a Device, as the pipeline needs it.
type Info interface {
	Ethernet() bool // frames start with an Ethernet header (AF_PACKET); else raw IP (TUN)
	Index() int     // interface index in its network namespace
	Name() string
	MAC() [6]byte // hardware address; zero for TUN
	MTU() int
	VnetHdr() bool // frames are preceded by a VnetHdr
}

// VnetHdrLen is the size of the virtio_net_hdr in front of each frame.
const VnetHdrLen = 10

// VnetHdr.Flags bits.
const (
	VnetHdrFNeedsCsum = 1 // the L4 checksum is partial: the field at CsumStart+CsumOffset holds the pseudo-header sum
	VnetHdrFDataValid = 2 // the checksum was verified already
)

// VnetHdr.GSOType values.
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3 // UFO, IPv4 fragmentation
	GSOTCPv6 = 4
	GSOUDPL4 = 5    // USO: UDP segmentation
	GSOECN   = 0x80 // flag: TCP segments carry ECN CWR
)

// VnetHdr is the virtio_net_hdr: how the kernel is to finish the checksum and
// segment a frame. The fields are in host byte order on the wire, as the
// kernel uses them for packet sockets and TUN on little-endian hosts.
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // length of the headers up to the payload (Ethernet header included for AF_PACKET)
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // offset where checksumming starts (the L4 header)
	CsumOffset uint16 // offset of the checksum field from CsumStart
}

// Decode reads the header from b, which must hold at least VnetHdrLen bytes.
func (h *VnetHdr) Decode(b []byte) {
	_ = b[VnetHdrLen-1]
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
}

// Encode writes the header into b, which must hold at least VnetHdrLen bytes.
func (h *VnetHdr) Encode(b []byte) {
	_ = b[VnetHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}
