package director

import (
	"sync"
	"sync/atomic"

	"uvs/link"
)

// The pipeline, in the order a packet meets it, one file a stage:
//
//  1. worker.go, worker.run: a batch of frames is read from one queue of
//     one port (or, for affine workers, of every port).
//  2. frame.go, worker.frame: the virtio-net header (if any) and the frame
//     are parsed into offsets; malformed frames are counted by reason and
//     dropped; ARP and NDP for a virtual address are answered and answers
//     from next hops learned (neigh.go); fragments are reassembled.
//  3. conn.go, worker.ip: the connection is looked up by its tuple in
//     either direction; a first packet for a virtual service is scheduled
//     (persist.go for templates) and inserted; a connection a sync master
//     must send now is copied into the worker's ring for the sync daemon,
//     and a learned one takes its client's address (sync.go). icmp.go
//     matches ICMP errors through the packet they quote, and generates the
//     director's own (port unreachable, fragmentation needed),
//     rate-limited.
//  4. xmit.go, worker.xmit: the one transmit step, dispatching on the
//     connection's forwarding method: NAT rewrites addresses and ports
//     (forward/nat), DR only the link-layer header (forward/dr), TUN
//     wraps the packet in an outer header in the buffer's headroom
//     (forward/tun), segmenting GSO packets first (gso). Then the next
//     hop's link-layer header, the MTU check, and the packet is queued.
//  5. worker.go, worker.flush: every port's pending frames are written in
//     one batch.

const (
	headroom = 64 // room to prepend an outer header in place (tunnels)
	maxFrame = 65535 + 14
	bufSize  = headroom + link.VnetHdrLen + maxFrame
	scratchN = 8 // generated replies (ARP, ICMP) per batch

	// A GSO packet to tunnel is cut into at most maxSegments segments,
	// in a buffer of segBufSize (64 KiB of payload in 1448-byte segments
	// with their headroom takes 45 x ~1600 bytes).
	maxSegments = 256
	segBufSize  = 256 << 10
)

// port is one device the director serves.
type port struct {
	dev    link.Device   // the first queue, for Info
	queues []link.Device // one reader per worker
	// wmu serialises writes per queue: a device takes one Write at a
	// time, and workers of every port write to every port.
	wmu   []sync.Mutex
	index int // interface index
	name  string
	mac   [6]byte
	ether bool
	vnet  bool
	pos   int // position in Director.ports
	// egress ports are written, never read: with --io tun, the Ethernet
	// interfaces DR frames leave by (their one queue sends only).
	egress bool
	// markIn is the firewall-mark port (marks.go): the kernel's marked
	// packets, the mark in each frame's destination MAC.
	markIn bool
	// mtu is the interface's MTU, followed by the link watcher: what a
	// packet (or each segment of a GSO packet) sent here may carry.
	mtu atomic.Int32
}

func (d *Director) portByIndex(idx int) *port {
	for _, pt := range d.ports {
		if pt.index == idx {
			return pt
		}
	}
	return nil
}
