package testbed

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// maxIfName is IFNAMSIZ less the terminating NUL.
const maxIfName = 15

func checkIfName(s string) error {
	if s == "" || len(s) > maxIfName {
		return fmt.Errorf("bad interface name %q (1-%d characters)", s, maxIfName)
	}
	return nil
}

// Link joins a and c with a veth pair, aIf in a and cIf in c, both up. It
// returns once both ends are operationally up: until then the kernel drops
// what is sent on them.
func (b *Bed) Link(a *Host, aIf string, c *Host, cIf string) error {
	err := a.use()
	if err == nil {
		defer a.mu.RUnlock()
		if c != a {
			if err = c.use(); err == nil {
				defer c.mu.RUnlock()
			}
		}
	}
	if err == nil {
		err = b.link(a, aIf, c, cIf)
	}
	if err != nil {
		return fmt.Errorf("link %s:%s-%s:%s: %w", a.Short, aIf, c.Short, cIf, err)
	}
	return nil
}

// link does Link with a.mu and c.mu held.
func (b *Bed) link(a *Host, aIf string, c *Host, cIf string) error {
	if err := checkIfName(aIf); err != nil {
		return err
	}
	if err := checkIfName(cIf); err != nil {
		return err
	}
	if a.bed != b || c.bed != b {
		return fmt.Errorf("host of another bed")
	}
	v := &netlink.Veth{
		LinkAttrs: netlink.NewLinkAttrs(),
		PeerName:  cIf,
	}
	v.Name = aIf
	if a != c {
		// Made by a's netlink socket, so it is born in a; the peer is born in c.
		v.PeerNamespace = netlink.NsFd(int(c.ns))
	}
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	if err := up(a, aIf); err != nil {
		return err
	}
	if err := up(c, cIf); err != nil {
		return err
	}
	if err := waitUp(a, aIf); err != nil {
		return err
	}
	return waitUp(c, cIf)
}

func up(h *Host, ifname string) error {
	l, err := h.link(ifname)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("host %s: set %s up: %w", h.Short, ifname, err)
	}
	return nil
}

// waitUp polls until ifname is operationally up, at most two seconds. The
// kernel turns the carrier on asynchronously after both veth ends are up.
func waitUp(h *Host, ifname string) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		l, err := h.link(ifname)
		if err != nil {
			return err
		}
		if s := l.Attrs().OperState; s == netlink.OperUp || s == netlink.OperUnknown && ifname == "lo" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host %s: %s not up after 2s (state %s)", h.Short, ifname, l.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Bridge puts the hosts in ports on one L2 segment: a bridge named br inside
// sw (made on first use, with STP off so ports forward at once) and, for
// each port host, a veth whose end in that host is called ifname and whose
// other end in sw is a port of br. Call it again to add more hosts.
func (b *Bed) Bridge(sw *Host, br, ifname string, ports ...*Host) error {
	if err := b.bridge(sw, br, ifname, ports); err != nil {
		return fmt.Errorf("bridge %s:%s: %w", sw.Short, br, err)
	}
	return nil
}

func (b *Bed) bridge(sw *Host, br, ifname string, ports []*Host) error {
	if err := checkIfName(br); err != nil {
		return err
	}
	if len(br) > maxIfName-4 {
		return fmt.Errorf("bridge name %q too long for its port names (at most %d characters)", br, maxIfName-4)
	}
	if sw.bed != b {
		return fmt.Errorf("host of another bed")
	}
	// Read locks only, here as everywhere but close: with a single writer
	// taking one host at a time, holding two read locks cannot deadlock.
	if err := sw.use(); err != nil {
		return err
	}
	defer sw.mu.RUnlock()
	master, err := sw.nl.LinkByName(br)
	if err != nil {
		la := netlink.NewLinkAttrs()
		la.Name = br
		if err := sw.nl.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add bridge: %w", err)
		}
		if err := up(sw, br); err != nil {
			return err
		}
		// A switch forwards frames and nothing else. With br_netfilter
		// loaded (by anything on the machine) bridged IP traffic would
		// also go through the switch's own netfilter hooks and
		// conntrack: a sixth of the CPU of a new-connection benchmark.
		for _, k := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables"} {
			if err := sw.sysctl(k, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if master, err = sw.link(br); err != nil {
			return err
		}
	}
	for _, p := range ports {
		if p == sw {
			return fmt.Errorf("host %s cannot be a port of its own bridge", p.Short)
		}
		if err := p.use(); err != nil {
			return err
		}
		port := fmt.Sprintf("%s-%d", br, sw.ports.Add(1)-1)
		err := b.link(sw, port, p, ifname)
		p.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("port %s: %w", p.Short, err)
		}
		l, err := sw.link(port)
		if err != nil {
			return err
		}
		if err := sw.nl.LinkSetMaster(l, master); err != nil {
			return fmt.Errorf("enslave %s: %w", port, err)
		}
	}
	return nil
}

// Pair makes a bed of two hosts, a and b, joined by one link (eth0 on
// each), with the given addresses (CIDR) on it: the smallest network a
// test of something that talks to a server needs. On error nothing is
// left.
func Pair(prefix, a string, aAddrs []string, b string, bAddrs []string) (*Bed, *Host, *Host, error) {
	bed, err := New(prefix)
	if err != nil {
		return nil, nil, nil, err
	}
	ha, hb, err := func() (*Host, *Host, error) {
		ha, err := bed.Host(a)
		if err != nil {
			return nil, nil, err
		}
		hb, err := bed.Host(b)
		if err != nil {
			return nil, nil, err
		}
		if err := bed.Link(ha, "eth0", hb, "eth0"); err != nil {
			return nil, nil, err
		}
		for _, x := range []struct {
			h     *Host
			addrs []string
		}{{ha, aAddrs}, {hb, bAddrs}} {
			for _, cidr := range x.addrs {
				if err := x.h.Addr("eth0", cidr); err != nil {
					return nil, nil, err
				}
			}
		}
		return ha, hb, nil
	}()
	if err != nil {
		return nil, nil, nil, errors.Join(err, bed.Close())
	}
	return bed, ha, hb, nil
}
