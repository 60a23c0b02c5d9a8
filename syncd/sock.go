package syncd

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// The sockets are IPVS's: the master sends from the interface's address
// (IPv4) to the group, through the interface, with the TTL asked for, no
// loopback of its own messages and fragmentation allowed; a receiver binds
// the group and port on the interface and joins the group there.

// sendSocket opens a master's socket, connected to the group.
func sendSocket(c Config, ifi *net.Interface) (*net.UDPConn, error) {
	v6 := c.Group.Is6()
	fam := unix.AF_INET
	if v6 {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	set := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("sync socket on %s: %s: %w", ifi.Name, what, err)
		}
		return nil
	}
	var dst unix.Sockaddr
	if v6 {
		if err := set("IPV6_MULTICAST_IF", unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index)); err != nil {
			return nil, err
		}
		if err := set("IPV6_MULTICAST_LOOP", unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0)); err != nil {
			return nil, err
		}
		if err := set("IPV6_MULTICAST_HOPS", unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, int(c.TTL))); err != nil {
			return nil, err
		}
		if err := set("IPV6_MTU_DISCOVER", unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)); err != nil {
			return nil, err
		}
		dst = &unix.SockaddrInet6{Port: int(c.Port), Addr: c.Group.As16(), ZoneId: uint32(ifi.Index)}
	} else {
		if err := set("IP_MULTICAST_IF", unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)})); err != nil {
			return nil, err
		}
		if err := set("IP_MULTICAST_LOOP", unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)); err != nil {
			return nil, err
		}
		if err := set("IP_MULTICAST_TTL", unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, int(c.TTL))); err != nil {
			return nil, err
		}
		if err := set("IP_MTU_DISCOVER", unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)); err != nil {
			return nil, err
		}
		// From the interface's own address, as IPVS binds it (none: any).
		src := &unix.SockaddrInet4{}
		if a, ok := ifaceAddr4(ifi); ok {
			src.Addr = a.As4()
		}
		if err := set("bind", unix.Bind(fd, src)); err != nil {
			return nil, err
		}
		dst = &unix.SockaddrInet4{Port: int(c.Port), Addr: c.Group.As4()}
	}
	if err := set("connect", unix.Connect(fd, dst)); err != nil {
		return nil, err
	}
	ok = true // wrap takes fd, whatever comes
	return wrap(fd, "ipvs-sync-send")
}

// recvSocket opens a socket that receives the group's messages on the
// interface.
func recvSocket(c Config, ifi *net.Interface) (*net.UDPConn, error) {
	v6 := c.Group.Is6()
	fam := unix.AF_INET
	if v6 {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	set := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("sync socket on %s: %s: %w", ifi.Name, what, err)
		}
		return nil
	}
	// Another daemon of this host (a master beside a backup) may listen
	// to the same group and port.
	if err := set("SO_REUSEADDR", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)); err != nil {
		return nil, err
	}
	if err := set("SO_BINDTODEVICE", unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name)); err != nil {
		return nil, err
	}
	if v6 {
		if err := set("bind", unix.Bind(fd, &unix.SockaddrInet6{Port: int(c.Port), Addr: c.Group.As16(), ZoneId: uint32(ifi.Index)})); err != nil {
			return nil, err
		}
		mreq := &unix.IPv6Mreq{Multiaddr: c.Group.As16(), Interface: uint32(ifi.Index)}
		if err := set("IPV6_JOIN_GROUP", unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq)); err != nil {
			return nil, err
		}
	} else {
		if err := set("bind", unix.Bind(fd, &unix.SockaddrInet4{Port: int(c.Port), Addr: c.Group.As4()})); err != nil {
			return nil, err
		}
		mreq := &unix.IPMreqn{Multiaddr: c.Group.As4(), Ifindex: int32(ifi.Index)}
		if err := set("IP_ADD_MEMBERSHIP", unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq)); err != nil {
			return nil, err
		}
	}
	ok = true
	return wrap(fd, "ipvs-sync-recv")
}

// wrap hands fd to the Go runtime's poller; fd is closed in any case (the
// connection has a copy).
func wrap(fd int, name string) (*net.UDPConn, error) {
	f := os.NewFile(uintptr(fd), name)
	pc, err := net.FilePacketConn(f)
	f.Close() // FilePacketConn made its own copy
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("sync socket: not UDP (%T)", pc)
	}
	return uc, nil
}

// ifaceAddr4 is the interface's first IPv4 address.
func ifaceAddr4(ifi *net.Interface) (netip.Addr, bool) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}
