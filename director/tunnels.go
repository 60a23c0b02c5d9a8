package director

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"uvs/forward/tun"
	"uvs/service"
)

// tunDest is how packets to one tunnelling real server (-i) leave: the
// encapsulation, whose outer source is the director's address on the way
// to the server, and the MTU of that way (used with --io tun; AF_PACKET
// ports follow their interface's MTU).
type tunDest struct {
	t   tun.Tunnel
	mtu int
}

// tunnel returns real server dest's encapsulation, nil if it has none.
func (s *snapshot) tunnel(dest uint32) *tunDest {
	if int(dest) < len(s.tun) {
		return s.tun[dest]
	}
	return nil
}

// tunnelFor builds ds's encapsulation from the route to it, as IPVS takes
// the outer source from the route (its preferred source, else an address
// of the interface it leaves by).
func tunnelFor(ds *service.Dest) (*tunDest, error) {
	td := &tunDest{t: tun.Tunnel{Dst: ds.Addr, Port: ds.TunPort}}
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
	if src, ok := netip.AddrFromSlice(r.Src); ok && src.Unmap().Is4() == ds.Addr.Is4() {
		td.t.Src = src.Unmap()
	} else if a, ok := portAddr(r.LinkIndex, ds.Addr); ok {
		td.t.Src = a
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
