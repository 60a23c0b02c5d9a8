package director

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"uvs/conntrack"
	"uvs/link"
)

// afpHost is the AF_PACKET backend. The director reads every frame of the
// ports it serves and writes whole frames itself; the kernel keeps its own
// copy of each frame, so an nftables netdev ingress chain per port drops
// the balanced traffic before the kernel's IP stack sees it (AF_PACKET taps
// see frames before the ingress hook). Without that the kernel would
// answer a SYN for a local VIP with a reset, or, with IP forwarding on,
// forward real servers' replies un-NATed.
//
// Host changes: one nftables table "netdev uvs" with a chain per
// served port, rebuilt in one atomic transaction on every rule change and
// deleted at stop. No routes, rules, sysctls or addresses change.
type afpHost struct {
	d     *Director
	ps    []*port
	nb    *neighbours
	nft   *nftables.Conn // one lasting netlink socket for every change
	table *nftables.Table
	sets  divertTable             // the table's sets and rules
	local map[conntrack.Addr]bool // the namespace's own addresses
	prog  []bpf.RawInstruction    // the fanout program installed (affine workers)
	marks *markHost               // firewall-mark services (marks.go)
}

func openAFPacketHost(d *Director) (hostBackend, error) {
	links, err := servedLinks(d.cfg.Interfaces)
	if err != nil {
		return nil, err
	}
	// A table left behind by a director that was killed outright (a
	// worker panic restores the host itself) is removed first, so its
	// stale rules do not outlive it past the next start.
	h := &afpHost{d: d, table: &nftables.Table{Family: nftables.TableFamilyNetdev, Name: "uvs"}}
	h.sets.table = h.table
	h.sets.frags = true
	if c, err := nftables.New(); err == nil {
		c.DelTable(h.table)
		_ = c.Flush() // ENOENT when there is none
	}
	nft, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	h.nft = nft
	marks, markLink, err := openMarkHost(d, true)
	if err != nil {
		h.close()
		return nil, err
	}
	h.marks = marks
	links = append(links, markLink)
	for _, l := range links {
		pt, err := openAFPacketPort(l, d.queuesPerPort(len(links)), d.cfg, d.affine())
		if err != nil {
			h.close()
			return nil, err
		}
		pt.markIn = l == markLink
		pt.pos = len(h.ps)
		h.ps = append(h.ps, pt)
		d.log.Info("serving interface", "io", IOAFPacket, "name", pt.name, "queues", len(pt.queues), "vnet", pt.vnet)
	}
	h.nb = newNeighbours(d)
	d.wg.Add(1)
	go h.nb.resolver()
	updates := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribe(updates, d.stop); err != nil {
		d.log.Warn("not watching the served interfaces", "err", err)
	} else {
		// An MTU changed between the sockets' opening and the
		// subscription would otherwise go unseen until the next event.
		for _, pt := range h.ps {
			if l, err := netlink.LinkByIndex(pt.index); err == nil {
				pt.mtu.Store(int32(l.Attrs().MTU))
			}
		}
		d.wg.Add(1)
		go h.watchLinks(updates)
	}
	return h, nil
}

// servedLinks returns the named links, or every link that is up, not
// loopback, has an Ethernet address and is not enslaved to a bridge.
func servedLinks(names []string) ([]netlink.Link, error) {
	if len(names) > 0 {
		var out []netlink.Link
		for _, n := range names {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return nil, fmt.Errorf("interface %s: %w", n, err)
			}
			if len(l.Attrs().HardwareAddr) != 6 {
				return nil, fmt.Errorf("interface %s has no Ethernet address; AF_PACKET mode serves Ethernet interfaces", n)
			}
			if isMarkLink(n) {
				return nil, fmt.Errorf("interface %s is the director's own (firewall marks); it is served already", n)
			}
			out = append(out, l)
		}
		return out, nil
	}
	all, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []netlink.Link
	for _, l := range all {
		a := l.Attrs()
		if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 || a.MasterIndex != 0 || isMarkLink(a.Name) {
			continue
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errors.New("no interface to serve: none is up with an Ethernet address (use --interfaces)")
	}
	return out, nil
}

func (h *afpHost) ports() []*port { return h.ps }

// watchLinks follows the served interfaces' MTUs and logs what happens to
// them: down and up (the readers wait for it; see link's afRx.downs), and
// removal, after which the director no longer serves that name: its
// sockets were bound to the interface that is gone.
func (h *afpHost) watchLinks(updates <-chan netlink.LinkUpdate) {
	defer h.d.wg.Done()
	up := make(map[int]bool)
	for _, pt := range h.ps {
		up[pt.index] = true
	}
	for u := range updates {
		a := u.Link.Attrs()
		pt := h.d.portByIndex(a.Index)
		if pt == nil {
			continue
		}
		if mtu := int32(a.MTU); u.Header.Type != unix.RTM_DELLINK && mtu > 0 && mtu != pt.mtu.Load() {
			h.d.log.Info("served interface MTU changed", "name", pt.name, "from", pt.mtu.Load(), "to", mtu)
			pt.mtu.Store(mtu)
		}
		switch isUp := a.Flags&net.FlagUp != 0; {
		case u.Header.Type == unix.RTM_DELLINK:
			h.d.log.Warn("served interface removed; restart the director to serve one created in its place", "name", pt.name)
		case isUp != up[a.Index]:
			up[a.Index] = isUp
			if isUp {
				h.d.log.Info("served interface up", "name", pt.name)
			} else {
				h.d.log.Warn("served interface down; its traffic resumes when it is up", "name", pt.name)
			}
		}
	}
}

func (h *afpHost) apply(s *snapshot) error {
	if err := h.nb.resolveAll(s, nil); err != nil {
		return err
	}
	local, err := localAddrs()
	if err != nil {
		return err
	}
	h.local = local
	var prog []bpf.RawInstruction
	if h.d.affine() {
		p, err := steerProgram(s, h.d.synQueues())
		if err != nil {
			return err
		}
		prog = p
	}
	if err := h.marks.apply(s); err != nil {
		return err
	}
	if err := h.nftApply(s); err != nil {
		h.marks.revert()
		return err
	}
	if prog != nil {
		h.steer(prog)
	}
	return nil
}

// steer installs the affine workers' fanout program (steer.go) on every
// port, unless it is the one they have: the kernel waits for an RCU grace
// period when it replaces one (about 10 ms a port here), and most rule
// changes leave the NAT real servers, all the program depends on, as
// they are. A port that refuses it keeps its old program: steering only
// decides which worker handles a frame, so that is logged, not an error.
func (h *afpHost) steer(prog []bpf.RawInstruction) {
	if slices.Equal(prog, h.prog) {
		return
	}
	h.prog = prog
	for _, pt := range h.ps {
		if len(pt.queues) < 2 {
			continue
		}
		if q, ok := pt.queues[0].(*link.AFPacket); ok {
			if err := q.SetFanoutProgram(prog); err != nil {
				h.prog = nil // try again at the next change
				h.d.log.Warn("fanout program not updated; connections may be split between workers", "port", pt.name, "err", err)
			}
		}
	}
}

func (h *afpHost) close() error {
	var errs []error
	if h.nft != nil {
		h.nft.DelTable(h.table)
		if err := h.nft.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete nftables table %s: %w", h.table.Name, err))
		}
		h.nft.CloseLasting()
	}
	h.closePorts()
	if h.marks != nil {
		if err := h.marks.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *afpHost) closePorts() {
	for _, pt := range h.ps {
		for _, q := range pt.queues {
			q.Close()
		}
		if pt.dev != nil && !slices.Contains(pt.queues, pt.dev) {
			pt.dev.Close()
		}
	}
}

// localAddrs returns the namespace's own addresses. An error fails the
// change that asked: with no addresses every VIP would look foreign, and
// the filters would take the host's own traffic to those addresses.
func localAddrs() (map[conntrack.Addr]bool, error) {
	m := make(map[conntrack.Addr]bool)
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	for _, a := range addrs {
		var ca conntrack.Addr
		if ip4 := a.IP.To4(); ip4 != nil {
			setAddr(&ca, ip4)
		} else {
			setAddr(&ca, a.IP.To16())
		}
		m[ca] = true
	}
	return m, nil
}

// nftApply rebuilds the drop rules (nftsets.go): the old rules stay until
// the new ones are in.
func (h *afpHost) nftApply(s *snapshot) error {
	prio := nftables.ChainPriorityRef(-500)
	chains := func(t *nftables.Table) []*nftables.Chain {
		var out []*nftables.Chain
		for _, pt := range h.ps {
			out = append(out, h.nft.AddChain(&nftables.Chain{
				Name: "in-" + pt.name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookIngress, Priority: prio, Device: pt.name,
			}))
		}
		return out
	}
	h.sets.pass = s.marks
	err := h.sets.install(h.nft, divertElements(s, h.local), chains, nil, &expr.Verdict{Kind: expr.VerdictDrop})
	if err != nil {
		return fmt.Errorf("install nftables ingress rules (table netdev %s): %w", h.table.Name, err)
	}
	return nil
}

// Expression helpers. Register 1 holds each loaded field in turn.

func cmpEq(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }

func etherProto(v6 bool) []expr.Any {
	p := []byte{0x08, 0x00}
	if v6 {
		p = []byte{0x86, 0xdd}
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}, cmpEq(p)}
}

func l4(proto uint8) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{proto})}
}
