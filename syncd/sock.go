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

// step is one setting of a socket being made.
type step struct {
	what string
	do   func(fd int) error
}

func intOpt(level, opt, v int) func(int) error {
	return func(fd int) error { return unix.SetsockoptInt(fd, level, opt, v) }
}

// openSocket makes a UDP socket of the group's family, applies steps in
// order and hands it to the Go runtime.
func openSocket(c Config, ifi *net.Interface, name string, steps []step) (*net.UDPConn, error) {
	fam := unix.AF_INET
	if c.Group.Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	for _, s := range steps {
		if err := s.do(fd); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("sync socket on %s: %s: %w", ifi.Name, s.what, err)
		}
	}
	return wrap(fd, name)
}

// sendSocket opens a master's socket, connected to the group.
func sendSocket(c Config, ifi *net.Interface) (*net.UDPConn, error) {
	var steps []step
	if c.Group.Is6() {
		steps = []step{
			{"IPV6_MULTICAST_IF", intOpt(unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index)},
			{"IPV6_MULTICAST_LOOP", intOpt(unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0)},
			{"IPV6_MULTICAST_HOPS", intOpt(unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, int(c.TTL))},
			{"IPV6_MTU_DISCOVER", intOpt(unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)},
			{"connect", func(fd int) error {
				return unix.Connect(fd, &unix.SockaddrInet6{Port: int(c.Port), Addr: c.Group.As16(), ZoneId: uint32(ifi.Index)})
			}},
		}
	} else {
		// From the interface's own address, as IPVS binds it (none: any).
		src := &unix.SockaddrInet4{}
		if a, ok := ifaceAddr4(ifi); ok {
			src.Addr = a.As4()
		}
		steps = []step{
			{"IP_MULTICAST_IF", func(fd int) error {
				return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)})
			}},
			{"IP_MULTICAST_LOOP", intOpt(unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)},
			{"IP_MULTICAST_TTL", intOpt(unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, int(c.TTL))},
			{"IP_MTU_DISCOVER", intOpt(unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)},
			{"bind", func(fd int) error { return unix.Bind(fd, src) }},
			{"connect", func(fd int) error {
				return unix.Connect(fd, &unix.SockaddrInet4{Port: int(c.Port), Addr: c.Group.As4()})
			}},
		}
	}
	return openSocket(c, ifi, "ipvs-sync-send", steps)
}

// recvSocket opens a socket that receives the group's messages on the
// interface.
func recvSocket(c Config, ifi *net.Interface) (*net.UDPConn, error) {
	steps := []step{
		// Another daemon of this host (a master beside a backup) may
		// listen to the same group and port.
		{"SO_REUSEADDR", intOpt(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)},
		{"SO_BINDTODEVICE", func(fd int) error { return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name) }},
	}
	if c.Group.Is6() {
		steps = append(steps,
			step{"bind", func(fd int) error {
				return unix.Bind(fd, &unix.SockaddrInet6{Port: int(c.Port), Addr: c.Group.As16(), ZoneId: uint32(ifi.Index)})
			}},
			step{"IPV6_JOIN_GROUP", func(fd int) error {
				return unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &unix.IPv6Mreq{Multiaddr: c.Group.As16(), Interface: uint32(ifi.Index)})
			}})
	} else {
		steps = append(steps,
			step{"bind", func(fd int) error { return unix.Bind(fd, &unix.SockaddrInet4{Port: int(c.Port), Addr: c.Group.As4()}) }},
			step{"IP_ADD_MEMBERSHIP", func(fd int) error {
				return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, &unix.IPMreqn{Multiaddr: c.Group.As4(), Ifindex: int32(ifi.Index)})
			}})
	}
	return openSocket(c, ifi, "ipvs-sync-recv", steps)
}

// out is where a daemon's datagrams go: the group its socket is connected
// to, or each unicast peer (Options.Peers).
type out struct {
	c     *net.UDPConn
	peers []netip.AddrPort
}

// write sends b; with peers, to each, the first error returned after all
// were tried.
func (o *out) write(b []byte) error {
	if len(o.peers) == 0 {
		_, err := o.c.Write(b)
		return err
	}
	var first error
	for _, p := range o.peers {
		if _, err := o.c.WriteToUDPAddrPort(b, p); err != nil && first == nil {
			first = fmt.Errorf("to %s: %w", p, err)
		}
	}
	return first
}

// openOut opens a daemon's sending socket: connected to the group, or,
// with peers, unconnected, from the interface's address.
func openOut(c Config, ifi *net.Interface, peers []netip.Addr) (*out, error) {
	if len(peers) == 0 {
		tx, err := sendSocket(c, ifi)
		if err != nil {
			return nil, err
		}
		return &out{c: tx}, nil
	}
	o := &out{}
	v6 := peers[0].Is6()
	for _, p := range peers {
		if p.Is6() != v6 {
			return nil, fmt.Errorf("sync peers %v: one address family, please", peers)
		}
		o.peers = append(o.peers, netip.AddrPortFrom(p, c.Port))
	}
	steps := []step{{"SO_BINDTODEVICE", func(fd int) error { return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name) }}}
	if !v6 {
		src := &unix.SockaddrInet4{}
		if a, ok := ifaceAddr4(ifi); ok {
			src.Addr = a.As4()
		}
		steps = append(steps, step{"bind", func(fd int) error { return unix.Bind(fd, src) }})
	}
	cc := c
	cc.Group = peers[0] // the family
	tx, err := openSocket(cc, ifi, "ipvs-sync-send", steps)
	if err != nil {
		return nil, err
	}
	o.c = tx
	return o, nil
}

// recvUnicast opens a socket that receives datagrams to the daemon's port
// at any address of the interface (Options.Peers).
func recvUnicast(c Config, ifi *net.Interface, v6 bool) (*net.UDPConn, error) {
	cc := c
	cc.Group = netip.IPv4Unspecified()
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(c.Port)}
	if v6 {
		cc.Group, sa = netip.IPv6Unspecified(), &unix.SockaddrInet6{Port: int(c.Port)}
	}
	return openSocket(cc, ifi, "ipvs-sync-recv", []step{
		{"SO_REUSEADDR", intOpt(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)},
		{"SO_BINDTODEVICE", func(fd int) error { return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name) }},
		{"bind", func(fd int) error { return unix.Bind(fd, sa) }},
	})
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
