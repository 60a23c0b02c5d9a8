package director

import (
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"

	"uvs/link"
)

// openAFPacketPort opens one AF_PACKET socket per worker on l, all in one
// fanout group so that a flow stays with one worker: by flow hash, or for
// affine workers by the director's program (steer.go); affine workers
// with SYN queues get two sockets each, the second for packets with SYN
// set (see steer.go).
func openAFPacketPort(l netlink.Link, workers int, cfg Config, affine bool) (*port, error) {
	name := l.Attrs().Name
	if affine && !cfg.AFPacketNoSYNQueues {
		workers *= 2
	}
	first, err := link.OpenAFPacket(name, &link.AFPacketConfig{RXRing: cfg.AFPacketRing,
		Blocking: !cfg.AFPacketPoller && !cfg.AFPacketRing, SpinFor: cfg.AFPacketSpin,
		FanoutBPF: affine, Defrag: true})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	pt := &port{dev: first, queues: []link.Device{first}, index: first.Index(), name: name,
		mac: first.MAC(), ether: first.Ethernet(), vnet: first.VnetHdr()}
	pt.mtu.Store(int32(first.MTU()))
	for len(pt.queues) < workers {
		q, err := first.OpenQueue()
		if err != nil {
			for _, q := range pt.queues {
				q.Close()
			}
			return nil, fmt.Errorf("open %s queue %d: %w", name, len(pt.queues), err)
		}
		pt.queues = append(pt.queues, q)
	}
	pt.wmu = make([]sync.Mutex, len(pt.queues))
	return pt, nil
}

// openTundevPort creates the TUN device with one queue per worker.
func openTundevPort(name string, mtu, workers int) (*port, error) {
	first, err := link.OpenTUN(name, &link.TUNConfig{MTU: mtu, MultiQueue: workers > 1})
	if err != nil {
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	pt := &port{dev: first, queues: []link.Device{first}, index: first.Index(), name: first.Name(),
		ether: false, vnet: first.VnetHdr()}
	for len(pt.queues) < workers {
		q, err := first.OpenQueue()
		if err != nil {
			for _, q := range pt.queues {
				q.Close()
			}
			return nil, fmt.Errorf("open %s queue %d: %w", name, len(pt.queues), err)
		}
		pt.queues = append(pt.queues, q)
	}
	pt.wmu = make([]sync.Mutex, len(pt.queues))
	return pt, nil
}

// openEgressPort opens a send-only AF_PACKET socket on l, for frames the
// director builds whole (DR with --io tun).
func openEgressPort(l netlink.Link) (*port, error) {
	name := l.Attrs().Name
	q, err := link.OpenAFPacket(name, &link.AFPacketConfig{SendOnly: true, SocketBuffer: 4 << 20})
	if err != nil {
		return nil, fmt.Errorf("open %s for sending: %w", name, err)
	}
	pt := &port{dev: q, queues: []link.Device{q}, wmu: make([]sync.Mutex, 1), index: q.Index(), name: name,
		mac: q.MAC(), ether: true, vnet: q.VnetHdr(), egress: true}
	pt.mtu.Store(int32(q.MTU()))
	return pt, nil
}
