package director

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"uvs/conntrack"
	"uvs/link"
	"uvs/packet"
	"uvs/service"
)

// nexthop is where frames for one real server go on an Ethernet port: the
// port and the link-layer address of the server or of the gateway towards
// it. The address is learned from the kernel's neighbour table or from
// ARP/NDP answers the workers see, and may change under the workers' feet.
type nexthop struct {
	port   *port
	ip     netip.Addr
	mac    atomic.Uint64 // bit 48 set when valid; the address in the low 48 bits
	kicked atomic.Int64  // last resolution request, unix nanoseconds
	kick_  chan<- *nexthop
}

const macValid = 1 << 48

func (n *nexthop) get() ([6]byte, bool) {
	v := n.mac.Load()
	var m [6]byte
	for i := range 6 {
		m[i] = byte(v >> (8 * (5 - i)))
	}
	return m, v&macValid != 0
}

func (n *nexthop) set(m []byte) {
	var v uint64 = macValid
	for i := range 6 {
		v |= uint64(m[i]) << (8 * (5 - i))
	}
	n.mac.Store(v)
}

// kick asks the resolver for the address, at most once a second.
func (n *nexthop) kick() {
	now := time.Now().UnixNano()
	last := n.kicked.Load()
	if now-last < int64(time.Second) || !n.kicked.CompareAndSwap(last, now) {
		return
	}
	select {
	case n.kick_ <- n:
	default:
	}
}

type nhKey struct {
	ifindex int
	ip      netip.Addr
}

// neighbours keeps the next hops of real servers on Ethernet ports.
type neighbours struct {
	d     *Director
	byKey map[nhKey]*nexthop // guarded by d.mu
	kick  chan *nexthop
	// viaKernel has the kernel resolve addresses (netlink NTF_USE), for
	// ports the director only writes: it would not see the answers to
	// requests of its own, and the kernel ignores answers it did not ask
	// for.
	viaKernel bool
}

func newNeighbours(d *Director) *neighbours {
	return &neighbours{d: d, byKey: make(map[nhKey]*nexthop), kick: make(chan *nexthop, 256)}
}

// resolveAll builds s.nh for every real server of s and makes sure each
// next hop is known, waiting up to a second for ARP/NDP answers for the
// next hops this change brings, so that the first connection after
// `ipvsadm -a` already finds its next hop. Next hops that an earlier
// change brought and that are still unanswered are not waited for again
// (the resolver keeps asking, and a packet that needs one asks too):
// otherwise every change would wait a second while one real server is
// down. Each distinct address is routed once per change.
func (nb *neighbours) resolveAll(s *snapshot, need func(*vsvc, *service.Dest) bool) error {
	type key struct {
		addr   netip.Addr
		direct bool
	}
	byAddr := make(map[key]*nexthop)
	var fresh []*nexthop // made by this change
	for _, v := range s.all {
		for _, ds := range v.svc.Dests {
			if need != nil && !need(v, ds) {
				continue
			}
			k := key{ds.Addr, ds.Fwd == service.FwdRoute}
			nh, ok := byAddr[k]
			if !ok {
				var made bool
				var err error
				if nh, made, err = nb.nexthopFor(ds.Addr, k.direct); err != nil {
					// Accepted all the same, as the kernel accepts it
					// (routes come and go): its packets are dropped as
					// no_route until a route appears (routes.go).
					s.unrouted = append(s.unrouted, unroutedDest{ds.Addr, err})
					byAddr[k] = nil
					continue
				}
				byAddr[k] = nh
				if made {
					fresh = append(fresh, nh)
				}
			}
			id := ds.ID()
			for int(id) >= len(s.nh) {
				s.nh = append(s.nh, nil)
			}
			s.nh[id] = nh
		}
	}
	// Next hops no server uses any more are forgotten: not asked for
	// again, not learned.
	used := make(map[*nexthop]bool, len(byAddr))
	for _, nh := range byAddr {
		used[nh] = true
	}
	pruned := false
	for k, nh := range nb.byKey {
		if !used[nh] {
			delete(nb.byKey, k)
			pruned = true
		}
	}
	if len(fresh) == 0 && !pruned {
		return nil
	}
	// Workers learn answers from this map at once, before the snapshot
	// that uses the next hops is published (the kernel ignores answers to
	// requests it did not make, so its table would not have them).
	m := make(map[conntrack.Addr][]*nexthop, len(nb.byKey))
	for _, nh := range nb.byKey {
		a := conntrack.AddrFrom(nh.ip)
		m[a] = append(m[a], nh)
	}
	nb.d.nhByIP.Store(&m)
	if len(fresh) == 0 {
		return nil
	}
	// Ask; the workers learn the answers, and the kernel's table may have
	// them too by then.
	pending := nb.fromKernel(fresh)
	for _, nh := range pending {
		nb.request(nh)
	}
	for deadline := time.Now().Add(time.Second); len(pending) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		pending = nb.fromKernel(pending)
	}
	for _, nh := range pending {
		nb.d.log.Warn("next hop does not answer ARP/NDP yet; packets for it are dropped (no_neighbour) until it does", "address", nh.ip, "interface", nh.port.name)
	}
	return nil
}

// nexthopFor finds (or makes: made) the next hop towards addr through the
// routing table. A new one is not yet in d.nhByIP. direct is for a direct
// routing server: the packet keeps the VIP as its destination, so it must
// go to the server's own link-layer address, on the interface the route
// names, even if the route has a gateway (as IPVS does; such a server
// answers only if it is on that link in fact).
func (nb *neighbours) nexthopFor(addr netip.Addr, direct bool) (nh *nexthop, made bool, err error) {
	routes, err := netlink.RouteGet(net.IP(addr.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil, false, fmt.Errorf("no route: %v", err)
	}
	r := routes[0]
	pt := nb.d.portByIndex(r.LinkIndex)
	if pt == nil {
		name := fmt.Sprint(r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		return nil, false, fmt.Errorf("routed via %s, which this director does not serve", name)
	}
	ip := addr
	if r.Gw != nil && direct {
		nb.d.log.Warn("direct-routing real server is not on a directly connected network; sending to its own link-layer address", "server", addr, "interface", pt.name)
	} else if r.Gw != nil {
		if g, ok := netip.AddrFromSlice(r.Gw); ok {
			ip = g.Unmap()
		}
	}
	k := nhKey{pt.index, ip}
	if nh := nb.byKey[k]; nh != nil {
		return nh, false, nil
	}
	nh = &nexthop{port: pt, ip: ip, kick_: nb.kick}
	nb.byKey[k] = nh
	return nh, true, nil
}

// fromKernel takes the addresses of nhs from the kernel's neighbour table
// where it has usable entries, reading it once per port and family, and
// returns the next hops still unknown.
func (nb *neighbours) fromKernel(nhs []*nexthop) (unknown []*nexthop) {
	type table struct {
		ifindex int
		v6      bool
	}
	known := make(map[table]map[netip.Addr][]byte)
	for _, nh := range nhs {
		if _, ok := nh.get(); ok {
			continue
		}
		tk := table{nh.port.index, nh.ip.Is6()}
		macs, ok := known[tk]
		if !ok {
			macs = kernelNeighbours(tk.ifindex, tk.v6)
			known[tk] = macs
		}
		if mac, ok := macs[nh.ip]; ok {
			nh.set(mac)
			continue
		}
		unknown = append(unknown, nh)
	}
	return unknown
}

// kernelNeighbours returns the usable entries of the kernel's neighbour
// table for one interface and family.
func kernelNeighbours(ifindex int, v6 bool) map[netip.Addr][]byte {
	fam := netlink.FAMILY_V4
	if v6 {
		fam = netlink.FAMILY_V6
	}
	list, err := netlink.NeighList(ifindex, fam)
	if err != nil {
		return nil
	}
	m := make(map[netip.Addr][]byte)
	for _, n := range list {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) != 6 {
			continue
		}
		if n.State&(unix.NUD_REACHABLE|unix.NUD_STALE|unix.NUD_DELAY|unix.NUD_PROBE|unix.NUD_PERMANENT|unix.NUD_NOARP) != 0 {
			m[ip.Unmap()] = n.HardwareAddr
		}
	}
	return m
}

// nexthops returns the known next hops with address a.
func (d *Director) nexthops(a conntrack.Addr) []*nexthop {
	if m := d.nhByIP.Load(); m != nil {
		return (*m)[a]
	}
	return nil
}

// request sends an ARP request or neighbour solicitation for nh.
func (nb *neighbours) request(nh *nexthop) {
	pt := nh.port
	if nb.viaKernel {
		fam := netlink.FAMILY_V4
		if nh.ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		n := &netlink.Neigh{LinkIndex: pt.index, Family: fam, IP: net.IP(nh.ip.AsSlice()), State: netlink.NUD_NONE, Flags: netlink.NTF_USE}
		if err := netlink.NeighSet(n); err != nil {
			nb.d.log.Debug("neighbour request", "port", pt.name, "ip", nh.ip, "err", err)
		}
		return
	}
	src, ok := portAddr(pt.index, nh.ip)
	if !ok {
		return
	}
	buf := make([]byte, headroom+link.VnetHdrLen+128)
	off := headroom
	if pt.vnet {
		off += link.VnetHdrLen
	}
	var n int
	if nh.ip.Is4() {
		n = packet.BuildARPRequest(buf[off:], pt.mac, src.AsSlice(), nh.ip.AsSlice())
	} else {
		n = packet.BuildNeighborSolicit(buf[off:], pt.mac, src.AsSlice(), nh.ip.AsSlice())
	}
	if n == 0 {
		return
	}
	if err := pt.write(0, [][]byte{buf[headroom : off+n]}); err != nil {
		nb.d.log.Debug("neighbour request", "port", pt.name, "ip", nh.ip, "err", err)
	}
}

// portAddr picks the port's own address to ask from, in ip's family.
func portAddr(ifindex int, ip netip.Addr) (netip.Addr, bool) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return netip.Addr{}, false
	}
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(l, fam)
	if err != nil {
		return netip.Addr{}, false
	}
	var fallback netip.Addr
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		p = p.Unmap()
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(p, ones).Masked().Contains(ip) {
			return p, true
		}
		if !fallback.IsValid() {
			fallback = p
		}
	}
	return fallback, fallback.IsValid()
}

// resolver answers kicks and refreshes every next hop now and then, so a
// server that changed its link-layer address is followed.
func (nb *neighbours) resolver() {
	defer nb.d.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-nb.d.stop:
			return
		case nh := <-nb.kick:
			if len(nb.fromKernel([]*nexthop{nh})) > 0 {
				nb.request(nh)
			}
		case <-t.C:
			nb.d.mu.Lock()
			all := make([]*nexthop, 0, len(nb.byKey))
			for _, nh := range nb.byKey {
				all = append(all, nh)
			}
			nb.d.mu.Unlock()
			for _, nh := range all {
				nb.request(nh)
			}
		}
	}
}

// arp answers ARP requests for virtual addresses and learns next hops
// from any ARP packet they send.
func (w *worker) arp(s *snapshot) {
	p := &w.p
	a := p.Buf[p.L3:]
	if len(a) < 28 {
		return
	}
	op := uint16(a[6])<<8 | uint16(a[7])
	var sender, target conntrack.Addr
	setAddr(&sender, a[14:18])
	setAddr(&target, a[24:28])
	for _, nh := range w.d.nexthops(sender) {
		if nh.port == w.in {
			nh.set(a[8:14])
		}
	}
	if op == 1 && s.vips[target] {
		b := w.scratch()
		if b == nil {
			return
		}
		off := headroom
		if w.in.vnet {
			clear(b[off : off+link.VnetHdrLen])
			off += link.VnetHdrLen
		}
		if n := packet.BuildARPReply(b[off:], p, w.in.mac); n > 0 {
			w.send(w.in, b[headroom:off+n])
		}
	}
}

// ndp answers neighbour solicitations for virtual addresses and learns
// next hops from advertisements.
func (w *worker) ndp(s *snapshot) {
	p := &w.p
	if p.L4 < 0 || len(p.Buf) < p.L4+24 {
		return
	}
	var target conntrack.Addr
	copy(target[:], p.Buf[p.L4+8:p.L4+24])
	if p.ICMPType == packet.ICMPv6NeighborAdvert {
		var src conntrack.Addr
		setAddr(&src, p.Src())
		for _, key := range [2]conntrack.Addr{target, src} {
			for _, nh := range w.d.nexthops(key) {
				if nh.port == w.in && p.L2 >= 0 {
					nh.set(p.Buf[p.L2+6 : p.L2+12])
				}
			}
		}
		return
	}
	if !s.vips[target] || !w.in.ether {
		return
	}
	b := w.scratch()
	if b == nil {
		return
	}
	off := headroom
	if w.in.vnet {
		clear(b[off : off+link.VnetHdrLen])
		off += link.VnetHdrLen
	}
	if n := packet.BuildNeighborAdvert(b[off:], p, w.in.mac); n > 0 {
		w.send(w.in, b[headroom:off+n])
	}
}
