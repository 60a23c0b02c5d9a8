package lab

import (
	"fmt"

	"uvs/testbed"
)

// Addresses of the DR lab: everyone on one segment, as the tutorial's
// LVS-DR example ("everyone on one physical network").
const (
	DRClientIP  = "198.18.0.2"
	DRDirIP     = "198.18.0.1"   // DIP
	DRVIP       = "198.18.0.100" // on the director's eth0 (the tutorial's eth0:1) and the real servers' lo
	DRClientIP6 = "2001:2::2"
	DRDirIP6    = "2001:2::1"
	DRVIP6      = "2001:2::100"
)

// DRRSIP and DRRSIP6 are the addresses of DR real server i (0-based).
func DRRSIP(i int) string  { return fmt.Sprintf("198.18.0.%d", 11+i) }
func DRRSIP6(i int) string { return fmt.Sprintf("2001:2::%x", 0x11+i) }

// DRNet is the LVS-DR topology: one switch joins the client, the director
// and the real servers.
//
//	client eth0 --\
//	director eth0 -+- [bridge in sw]
//	rs1 eth0 -----/|
//	rs2 eth0 ------/
type DRNet struct {
	Bed                      *testbed.Bed
	Client, Director, Switch *testbed.Host
	RS                       []*testbed.Host
}

// BuildDR builds the DR topology with servers real servers, the VIP on the
// director's eth0 as the tutorial has it. The real servers are not set up
// for DR yet (SetupDRRealServer, or `director realserver --dr`).
func BuildDR(prefix string, servers int) (n *DRNet, err error) {
	bed, err := testbed.New(prefix)
	if err != nil {
		return nil, err
	}
	n = &DRNet{Bed: bed}
	defer func() {
		if err != nil {
			bed.Close()
			n = nil
		}
	}()
	hosts, err := hostsOf(bed, append([]string{"client", "dir", "sw"}, rsNames(servers)...))
	if err != nil {
		return nil, err
	}
	n.Client, n.Director, n.Switch, n.RS = hosts[0], hosts[1], hosts[2], hosts[3:]
	all := append([]*testbed.Host{n.Client, n.Director}, n.RS...)
	steps := []func() error{
		func() error { return bed.Bridge(n.Switch, "br0", "eth0", all...) },
		func() error { return n.Client.Addr("eth0", DRClientIP+"/24") },
		func() error { return n.Client.Addr("eth0", DRClientIP6+"/64") },
		func() error { return n.Director.Addr("eth0", DRDirIP+"/24") },
		func() error { return n.Director.Addr("eth0", DRDirIP6+"/64") },
		func() error { return n.Director.Addr("eth0", DRVIP+"/32") },
		func() error { return n.Director.Addr("eth0", DRVIP6+"/128") },
	}
	for i, rs := range n.RS {
		ip, ip6 := DRRSIP(i), DRRSIP6(i)
		steps = append(steps,
			func() error { return rs.Addr("eth0", ip+"/24") },
			func() error { return rs.Addr("eth0", ip6+"/64") },
		)
	}
	return n, runSteps(steps)
}

// DRRealServerCommands are the tutorial's real-server lines for LVS-DR,
// with VIP in place of its address.
func DRRealServerCommands(vip string) []string {
	return []string{
		"echo 1 > /proc/sys/net/ipv4/conf/lo/arp_ignore",
		"echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore",
		"echo 2 > /proc/sys/net/ipv4/conf/lo/arp_announce",
		"echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce",
		"ip addr add " + vip + "/32 dev lo label lo:0",
		"ip route replace local " + vip + " dev lo",
	}
}

// SetupDRRealServer types DRRealServerCommands in h, and adds the IPv6
// VIPs to lo (IPv6 has no ARP to quiet: a host answers neighbour
// solicitations only for addresses on the link they arrive on).
func SetupDRRealServer(h *testbed.Host, vip string, vip6s ...string) error {
	for _, c := range DRRealServerCommands(vip) {
		if out, err := h.Exec("sh", "-c", c); err != nil {
			return fmt.Errorf("%s: %v: %s", c, err, out)
		}
	}
	for _, v := range vip6s {
		if err := h.Addr("lo", v+"/128"); err != nil {
			return err
		}
	}
	return nil
}

// Addresses of the TUN lab: the real servers are in another network,
// behind a router, and answer the client through it, not through the
// director.
const (
	TUNClientIP   = "198.18.0.2"
	TUNDirIP      = "198.18.0.1"
	TUNVIP        = "198.18.0.100"
	TUNRouterIP   = "198.18.0.254" // the router on the client's network
	TUNRouterIPB  = "198.18.2.1"   // the router on the real servers' network
	TUNClientIP6  = "2001:2::2"
	TUNDirIP6     = "2001:2::1"
	TUNVIP6       = "2001:2::100"
	TUNRouterIP6  = "2001:2::fe"
	TUNRouterIPB6 = "2001:2:0:2::1"
)

// TUNRSIP and TUNRSIP6 are the addresses of tunnel real server i.
func TUNRSIP(i int) string  { return fmt.Sprintf("198.18.2.%d", 2+i) }
func TUNRSIP6(i int) string { return fmt.Sprintf("2001:2:0:2::%x", 2+i) }

// TUNNet is the LVS-TUN topology:
//
//	client eth0 ---\                         /--- eth0 rs1
//	director eth0 --+- [swa] -- eth0 router eth1 -- [swb] -+
//	                                                        \--- eth0 rs2
type TUNNet struct {
	Bed                                *testbed.Bed
	Client, Director, Router, SwA, SwB *testbed.Host
	RS                                 []*testbed.Host
}

// BuildTUN builds the TUN topology with servers real servers; the VIP is
// on the director's eth0. The real servers are not set up for tunnelling
// yet (`director realserver`).
func BuildTUN(prefix string, servers int) (n *TUNNet, err error) {
	bed, err := testbed.New(prefix)
	if err != nil {
		return nil, err
	}
	n = &TUNNet{Bed: bed}
	defer func() {
		if err != nil {
			bed.Close()
			n = nil
		}
	}()
	hosts, err := hostsOf(bed, append([]string{"client", "dir", "rtr", "swa", "swb"}, rsNames(servers)...))
	if err != nil {
		return nil, err
	}
	n.Client, n.Director, n.Router, n.SwA, n.SwB, n.RS = hosts[0], hosts[1], hosts[2], hosts[3], hosts[4], hosts[5:]
	steps := []func() error{
		func() error { return bed.Bridge(n.SwA, "br0", "eth0", n.Client, n.Director, n.Router) },
		func() error { return bed.Bridge(n.SwB, "br0", "eth0", n.RS...) },
		func() error { return bed.Bridge(n.SwB, "br0", "eth1", n.Router) },
		func() error { return n.Client.Addr("eth0", TUNClientIP+"/24") },
		func() error { return n.Client.Addr("eth0", TUNClientIP6+"/64") },
		func() error { return n.Director.Addr("eth0", TUNDirIP+"/24") },
		func() error { return n.Director.Addr("eth0", TUNDirIP6+"/64") },
		func() error { return n.Director.Addr("eth0", TUNVIP+"/32") },
		func() error { return n.Director.Addr("eth0", TUNVIP6+"/128") },
		func() error { return n.Director.Route("198.18.2.0/24", TUNRouterIP) },
		func() error { return n.Director.Route("2001:2:0:2::/64", TUNRouterIP6) },
		func() error { return n.Router.Addr("eth0", TUNRouterIP+"/24") },
		func() error { return n.Router.Addr("eth0", TUNRouterIP6+"/64") },
		func() error { return n.Router.Addr("eth1", TUNRouterIPB+"/24") },
		func() error { return n.Router.Addr("eth1", TUNRouterIPB6+"/64") },
		n.Router.Forward,
		// The real servers answer from the VIP, which the router routes
		// back towards the client's network: a strict reverse-path filter
		// would drop their replies.
		func() error { return n.Router.Sysctl("net.ipv4.conf.all.rp_filter", "0") },
		func() error { return n.Router.Sysctl("net.ipv4.conf.eth1.rp_filter", "0") },
	}
	for i, rs := range n.RS {
		ip, ip6 := TUNRSIP(i), TUNRSIP6(i)
		steps = append(steps,
			func() error { return rs.Addr("eth0", ip+"/24") },
			func() error { return rs.Addr("eth0", ip6+"/64") },
			func() error { return rs.Route("default", TUNRouterIPB) },
			func() error { return rs.Route("default", TUNRouterIPB6) },
		)
	}
	return n, runSteps(steps)
}

func rsNames(n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("rs%d", i+1))
	}
	return s
}

func hostsOf(bed *testbed.Bed, names []string) ([]*testbed.Host, error) {
	var hs []*testbed.Host
	for _, name := range names {
		h, err := bed.Host(name)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func runSteps(steps []func() error) error {
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}
