package director

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"uvs/conntrack"
	"uvs/forward/tun"
	"uvs/service"
)

// tunnelDest is how packets to one tunnelling real server (-i) leave: the
// encapsulation, whose outer source is the director's address on the way
// to the server, and the MTU of that way (used with --io tun; AF_PACKET
// ports follow their interface's MTU).
type tunnelDest struct {
	t   tun.Tunnel
	mtu int
}

// tunnel returns real server dest's encapsulation, nil if it has none.
func (s *snapshot) tunnel(dest uint32) *tunnelDest {
	if int(dest) < len(s.tunnels) {
		return s.tunnels[dest]
	}
	return nil
}

// tunnelFor builds ds's encapsulation from the route to it: the outer
// source is the director's address on the way to the server. An address
// that is a VIP (in vips) is not taken while the interface has another:
// real servers allow tunnels from the directors' own addresses
// (realserver --from), and a VIP may move to another director.
func tunnelFor(ds *service.Dest, vips map[conntrack.Addr]bool) (*tunnelDest, error) {
	td := &tunnelDest{t: tun.Tunnel{Dst: ds.Addr, Port: ds.TunPort}}
	switch ds.TunType {
	case "", "ipip":
		td.t.Type = tun.IPIP
	case "gue":
		td.t.Type = tun.GUE
	case "gre":
		td.t.Type = tun.GRE
	default:
		return nil, fmt.Errorf("tunnel type %q: %w", ds.TunType, ErrUnsupported)
	}
	switch ds.TunCsum {
	case "", "nocsum":
		td.t.Csum = tun.NoCsum
	case "csum":
		td.t.Csum = tun.WithCsum
	case "remcsum":
		td.t.Csum = tun.RemCsum
	default:
		return nil, fmt.Errorf("tunnel checksum %q: %w", ds.TunCsum, ErrUnsupported)
	}
	routes, err := netlink.RouteGet(net.IP(ds.Addr.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil, fmt.Errorf("no route: %v", err)
	}
	r := routes[0]
	// The source is the address of the outgoing interface on the next
	// hop's network (the gateway's, or the server's if it is on the link):
	// the one a network's operator expects, where the kernel's choice
	// among several addresses (a VIP among them) is not foreseeable.
	nh := ds.Addr
	if g, ok := netip.AddrFromSlice(r.Gw); ok && g.Unmap().Is4() == ds.Addr.Is4() {
		nh = g.Unmap()
	}
	if a, ok := sourceAddr(r.LinkIndex, nh, vips); ok {
		td.t.Src = a
	} else if src, ok := netip.AddrFromSlice(r.Src); ok && src.Unmap().Is4() == ds.Addr.Is4() {
		td.t.Src = src.Unmap()
	} else {
		return nil, fmt.Errorf("no address to send from on the way to it")
	}
	td.mtu = r.MTU
	if td.mtu == 0 {
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			td.mtu = l.Attrs().MTU
		}
	}
	if td.mtu == 0 {
		td.mtu = 1500
	}
	return td, nil
}

// sourceAddr picks an address of interface ifindex, in dst's family and
// not a VIP, to send to dst from: one whose prefix holds dst if there is
// one, else the first global one; a VIP only if there is nothing else.
func sourceAddr(ifindex int, dst netip.Addr, vips map[conntrack.Addr]bool) (netip.Addr, bool) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return netip.Addr{}, false
	}
	fam := netlink.FAMILY_V4
	if dst.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(l, fam)
	if err != nil {
		return netip.Addr{}, false
	}
	var first, vip netip.Addr
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP)
		if !ok || p.IsLinkLocalUnicast() {
			continue
		}
		p = p.Unmap()
		if vips[conntrack.AddrFrom(p)] {
			if !vip.IsValid() {
				vip = p
			}
			continue
		}
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(p, ones).Masked().Contains(dst) {
			return p, true
		}
		if !first.IsValid() {
			first = p
		}
	}
	if first.IsValid() {
		return first, true
	}
	return vip, vip.IsValid()
}
