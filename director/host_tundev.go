package director

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"uvs/conntrack"
	"uvs/hostconf"
	"uvs/service"
)

// tundevHost is the TUN backend. Policy routing steers the balanced traffic
// into a TUN device: packets for a virtual service, and a NAT real
// server's replies and ICMP errors. The director rewrites them and writes
// them back into the TUN, and the kernel routes them on. Because the rules
// come before the kernel's local table, a VIP that is the director's own
// address is diverted too, so the kernel never answers it with a reset;
// and because replies are diverted by their source, the kernel never
// forwards them un-NATed, whatever ip_forward says.
//
// Host changes, all undone at stop:
//   - a TUN device (tundevName), up, with the largest MTU of the other links;
//   - routing table tundevTable: default dev tundevName (IPv4 and IPv6);
//   - the local-table rule moved from priority 0 to localPref, so that the
//     director's rules (rulePref) come first; packets coming out of the TUN
//     skip the director's rules (priority tundevIifPref: iif tundevName goto
//     localPref);
//   - rules per service (to VIP, protocol, port) and per NAT real server
//     (from RIP, protocol, port; from RIP, ICMP), lookup tundevTable;
//     before them (tundevOwnPref), what the nftables table marked as a
//     NAT real server's packet to a host address (the host's own
//     traffic, such as health checks) goes to localPref;
//   - sysctls: net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1,
//     net.ipv4.conf.<tun>.rp_filter=0 and accept_local=1 (replies leave
//     with the VIP, a local address, as source), and
//     net.ipv4.conf.all.rp_filter=0 if it was not, and
//     net.ipv4.tcp_early_demux=0, net.ipv4.udp_early_demux=0 (early demux
//     would tie a diverted packet to a local socket of the same addresses,
//     and the kernel does not forward such packets);
//   - a VIP that is not one of the host's addresses is added as a /32
//     (/128) to the interface that routes to it, so the kernel answers
//     ARP/NDP for it;
//   - an nftables table "inet uvs" whose raw-priority prerouting chain
//     exempts the diverted traffic, and everything coming out of the TUN,
//     from the kernel's connection tracking (as IPVS does with its
//     conntrack=0 default). Otherwise, on a host where conntrack is active,
//     the kernel tracks the two halves of each balanced connection as
//     unrelated flows, and a reused client port clashes with an entry
//     left from before and is dropped.
type tundevHost struct {
	d      *Director
	pt     *port
	link   netlink.Link
	rules  map[string]netlink.Rule
	moved  []int                 // families whose local rule was moved
	hc     *hostconf.Changes     // sysctls and VIP addresses, undone at stop (and after a kill, at the next start)
	vipIf  map[netip.Addr]string // the VIPs hc added, and to which interface
	routes []netlink.Route
	nft    *nftables.Conn
	table  *nftables.Table
	sets   divertTable
	// egress are the Ethernet interfaces, written through send-only
	// AF_PACKET sockets: DR frames leave by them, to next hops nb has the
	// kernel resolve.
	egress []*port
	nb     *neighbours
	// marks and markPt: firewall-mark services (marks.go), whose packets
	// come through a packet socket.
	marks  *markHost
	markPt *port
}

const (
	tundevName    = "uvs0"
	tundevTable   = 0x757673 // "uvs"
	tundevIifPref = 80
	rulePref      = 90
	localPref     = 100
	// tundevMark marks the fragments to divert (rules without ports cannot
	// match them: the kernel's policy routing sees no port in any
	// fragment, the first included).
	tundevMark = tundevTable
	// tundevOwnMark marks what a NAT real server sends to an address of
	// the host (its own traffic: health checks), and the rule at
	// tundevOwnPref sends it past the director's rules, which divert by
	// source, to the kernel's usual lookups.
	tundevOwnMark = tundevTable + 1
	tundevOwnPref = 85
)

func openTundevHost(d *Director) (hb hostBackend, err error) {
	h := &tundevHost{d: d, rules: make(map[string]netlink.Rule), vipIf: make(map[netip.Addr]string),
		table: &nftables.Table{Family: nftables.TableFamilyINet, Name: "uvs"}}
	h.sets.table = h.table
	h.sets.mark = tundevMark
	h.sets.own = tundevOwnMark
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	// What a director killed outright changed (sysctls, VIP addresses) is
	// undone first; the state file is locked while this one runs.
	state := ""
	if d.cfg.StateDir != "" {
		state = filepath.Join(d.cfg.StateDir, "host-changes")
	}
	hc, err := hostconf.Open(state)
	if hc == nil {
		return nil, err
	}
	if err != nil {
		d.log.Warn("undoing what a killed director left", "err", err)
	}
	h.hc = hc
	mtu := 1500
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if a := l.Attrs(); a.Flags&net.FlagLoopback == 0 && a.MTU > mtu {
				mtu = a.MTU
			}
		}
	}
	pt, err := openTundevPort(tundevName, mtu, d.queuesPerPort(1))
	if err != nil {
		return nil, err
	}
	h.pt = pt
	l, err := netlink.LinkByName(tundevName)
	if err != nil {
		return nil, fmt.Errorf("tun %s: %w", tundevName, err)
	}
	h.link = l
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("tun %s up: %w", tundevName, err)
	}
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv4/conf/" + tundevName + "/rp_filter", "0"},
		{"net/ipv4/conf/" + tundevName + "/accept_local", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		// Early demux would attach a diverted packet to a local socket
		// with the same addresses (a TIME_WAIT left by a local server on
		// the VIP, say) before the policy rules run, and the kernel then
		// refuses to forward it into the TUN.
		{"net/ipv4/tcp_early_demux", "0"},
		{"net/ipv4/udp_early_demux", "0"},
	} {
		if err := h.hc.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	removeLeftRules()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		r := netlink.Route{LinkIndex: l.Attrs().Index, Table: tundevTable, Family: fam}
		if fam == netlink.FAMILY_V4 {
			r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		} else {
			r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := netlink.RouteReplace(&r); err != nil {
			return nil, fmt.Errorf("route default dev %s table %d: %w", tundevName, tundevTable, err)
		}
		h.routes = append(h.routes, r)
		if err := h.moveLocal(fam); err != nil {
			return nil, err
		}
		skip := netlink.NewRule()
		skip.Family, skip.Priority, skip.IifName, skip.Goto = fam, tundevIifPref, tundevName, localPref
		if err := h.addRule("iif-"+fmt.Sprint(fam), *skip); err != nil {
			return nil, err
		}
		// Fragments to a VIP or from a NAT real server, marked by the
		// nftables table: the director reassembles them.
		frag := netlink.NewRule()
		frag.Family, frag.Priority, frag.Table, frag.Mark = fam, rulePref, tundevTable, tundevMark
		mask := uint32(0xffffffff)
		frag.Mask = &mask
		if err := h.addRule("iif-frag-"+fmt.Sprint(fam), *frag); err != nil {
			return nil, err
		}
		own := netlink.NewRule()
		own.Family, own.Priority, own.Goto, own.Mark = fam, tundevOwnPref, localPref, tundevOwnMark
		own.Mask = &mask
		if err := h.addRule("iif-own-"+fmt.Sprint(fam), *own); err != nil {
			return nil, err
		}
	}
	if c, err := nftables.New(); err == nil {
		c.DelTable(h.table) // left by a director that was killed
		_ = c.Flush()
	}
	if h.nft, err = nftables.New(nftables.AsLasting()); err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	// Direct routing needs link-layer sends, which the TUN device cannot
	// make: a send-only packet socket on each Ethernet interface.
	if links, err := servedLinks(nil); err == nil {
		for _, l := range links {
			ep, err := openEgressPort(l)
			if err != nil {
				return nil, err
			}
			ep.pos = 1 + len(h.egress)
			h.egress = append(h.egress, ep)
		}
	}
	marks, markLink, err := openMarkHost(d, false)
	if err != nil {
		return nil, err
	}
	h.marks = marks
	if h.markPt, err = openAFPacketPort(markLink, d.queuesPerPort(1), d.cfg, false); err != nil {
		return nil, err
	}
	h.markPt.markIn = true
	h.markPt.pos = 1 + len(h.egress)
	h.nb = newNeighbours(d)
	h.nb.viaKernel = true
	d.wg.Add(1)
	go h.nb.resolver()
	d.log.Info("serving through TUN", "io", IOTUN, "name", tundevName, "queues", len(pt.queues), "mtu", mtu, "dr_interfaces", len(h.egress))
	return h, nil
}

func (h *tundevHost) ports() []*port { return append(append([]*port{h.pt}, h.egress...), h.markPt) }

// removeLeftRules deletes the policy rules that look up the director's
// table: a director killed outright leaves them (the ones a new start
// makes again it would find, but not those of real servers it no longer
// has).
func removeLeftRules() {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := netlink.RuleList(fam)
		if err != nil {
			continue
		}
		for _, r := range rules {
			if r.Table == tundevTable {
				netlink.RuleDel(&r)
			}
		}
	}
}

// moveLocal moves the local-table rule from priority 0 to localPref.
func (h *tundevHost) moveLocal(fam int) error {
	r := netlink.NewRule()
	r.Family, r.Table, r.Priority = fam, unix.RT_TABLE_LOCAL, localPref
	if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add local rule at priority %d: %w", localPref, err)
	}
	h.moved = append(h.moved, fam)
	old := netlink.NewRule()
	old.Family, old.Table, old.Priority = fam, unix.RT_TABLE_LOCAL, 0
	if err := netlink.RuleDel(old); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("move local rule from priority 0: %w", err)
	}
	return nil
}

func (h *tundevHost) addRule(key string, r netlink.Rule) error {
	if err := netlink.RuleAdd(&r); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add rule %s: %w", key, err)
	}
	h.rules[key] = r
	return nil
}

// apply installs the rules of s, then removes the ones s no longer needs.
func (h *tundevHost) apply(s *snapshot) error {
	// DR frames leave through the Ethernet interfaces, and so does every
	// packet of a firewall-mark service (it comes in through the mark
	// port, an Ethernet one): their next hops are the director's to know.
	if err := h.nb.resolveAll(s, func(v *vsvc, ds *service.Dest) bool {
		// Through the mark port come firewall-mark connections, and
		// address services' connections to the destinations of earlier
		// ones (marks.go): the director sends those on itself.
		return ds.Fwd == service.FwdRoute || v.mark || s.marks[b2i(v.svc.Addr.Is6())]
	}); err != nil {
		return err
	}
	want := make(map[string]netlink.Rule)
	for k := range s.byKey {
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table = family(k.addr), rulePref, tundevTable
		r.Dst = hostNet(k.addr)
		r.IPProto = int(k.proto)
		if k.port != 0 {
			r.Dport = netlink.NewRulePortRange(k.port, k.port)
		}
		want[fmt.Sprintf("to %v %d %d", k.addr.Netip(), k.proto, k.port)] = *r
	}
	for _, n := range s.nat {
		ip := n.addr.Netip()
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table = family(n.addr), rulePref, tundevTable
		r.Src = hostNet(n.addr)
		r.IPProto = int(n.proto)
		if n.port != 0 {
			r.Sport = netlink.NewRulePortRange(n.port, n.port)
		}
		want[fmt.Sprintf("from %v %d %d", ip, n.proto, n.port)] = *r
		ic := netlink.NewRule()
		ic.Family, ic.Priority, ic.Table = family(n.addr), rulePref, tundevTable
		ic.Src = hostNet(n.addr)
		ic.IPProto = unix.IPPROTO_ICMP
		if ip.Is6() {
			ic.IPProto = unix.IPPROTO_ICMPV6
		}
		want[fmt.Sprintf("from %v icmp", ip)] = *ic
	}
	// All or nothing: first everything s needs is added (rules, VIP
	// addresses, the notrack sets), each step undone if a later one
	// fails; only then goes what s no longer needs.
	added, err := h.addRules(want)
	if err != nil {
		return err
	}
	undoRules := func() {
		for _, k := range added {
			r := h.rules[k]
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				h.d.log.Warn("undo a policy rule of a refused change", "rule", k, "err", err)
			}
			delete(h.rules, k)
		}
	}
	newVIPs, err := h.addVIPs(s)
	if err != nil {
		undoRules()
		return err
	}
	if err := h.marks.apply(s); err != nil {
		h.dropVIPs(newVIPs)
		undoRules()
		return err
	}
	if err := h.notrack(s); err != nil {
		h.marks.revert()
		h.dropVIPs(newVIPs)
		undoRules()
		return err
	}
	for k, r := range h.rules {
		if strings.HasPrefix(k, "iif-") {
			continue
		}
		if _, ok := want[k]; !ok {
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				h.d.log.Warn("delete a policy rule no longer needed", "rule", k, "err", err)
			}
			delete(h.rules, k)
		}
	}
	var old []netip.Addr
	for ip := range h.vipIf {
		if !s.vips[conntrack.AddrFrom(ip)] {
			old = append(old, ip)
		}
	}
	h.dropVIPs(old)
	return nil
}

// addRules adds the rules of want the host does not have yet, and returns
// their keys; on error it removes those it added.
func (h *tundevHost) addRules(want map[string]netlink.Rule) ([]string, error) {
	var added []string
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := h.rules[k]; ok {
			continue
		}
		if err := h.addRule(k, want[k]); err != nil {
			for _, a := range added {
				r := h.rules[a]
				netlink.RuleDel(&r)
				delete(h.rules, a)
			}
			return nil, err
		}
		added = append(added, k)
	}
	return added, nil
}

func (h *tundevHost) notrack(s *snapshot) error {
	chains := func(t *nftables.Table) []*nftables.Chain {
		return []*nftables.Chain{h.nft.AddChain(&nftables.Chain{Name: "raw-prerouting", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})}
	}
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, tundevName)
	first := [][]expr.Any{{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, cmpEq(name)}}
	if err := h.sets.install(h.nft, divertElements(s, nil), chains, first, &expr.Notrack{}); err != nil {
		return fmt.Errorf("install nftables notrack rules (table inet %s): %w", h.table.Name, err)
	}
	return nil
}

// addVIPs makes every VIP of s an address of the host, and returns those
// it added; on error it removes those again.
func (h *tundevHost) addVIPs(s *snapshot) ([]netip.Addr, error) {
	local, err := localAddrs()
	if err != nil {
		return nil, err
	}
	var added []netip.Addr
	for a := range s.vips {
		ip := a.Netip()
		if _, ours := h.vipIf[ip]; ours || local[a] {
			continue
		}
		routes, err := netlink.RouteGet(net.IP(ip.AsSlice()))
		if err != nil || len(routes) == 0 {
			h.dropVIPs(added)
			return nil, fmt.Errorf("VIP %s: no route to find its interface: %v", ip, err)
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			h.dropVIPs(added)
			return nil, fmt.Errorf("VIP %s: %w", ip, err)
		}
		name := l.Attrs().Name
		if err := h.hc.AddAddr(name, netip.PrefixFrom(ip, ip.BitLen())); err != nil {
			h.dropVIPs(added)
			return nil, fmt.Errorf("add VIP %s to %s: %w", ip, name, err)
		}
		h.vipIf[ip] = name
		added = append(added, ip)
	}
	return added, nil
}

// dropVIPs removes the VIP addresses ips that the director added.
func (h *tundevHost) dropVIPs(ips []netip.Addr) {
	for _, ip := range ips {
		name, ok := h.vipIf[ip]
		if !ok {
			continue
		}
		if err := h.hc.DelAddr(name, netip.PrefixFrom(ip, ip.BitLen())); err != nil {
			h.d.log.Warn("remove an address the director added", "address", ip, "interface", name, "err", err)
		}
		delete(h.vipIf, ip)
	}
}

func (h *tundevHost) close() error {
	var errs []error
	if h.nft != nil {
		h.nft.DelTable(h.table)
		if err := h.nft.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete nftables table inet %s: %w", h.table.Name, err))
		}
		h.nft.CloseLasting()
	}
	for k, r := range h.rules {
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule %s: %w", k, err))
		}
	}
	for _, fam := range h.moved {
		r := netlink.NewRule()
		r.Family, r.Table, r.Priority = fam, unix.RT_TABLE_LOCAL, 0
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("restore local rule: %w", err))
			continue
		}
		r.Priority = localPref
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete local rule at priority %d: %w", localPref, err))
		}
	}
	for _, r := range h.routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete route %v table %d: %w", r.Dst, r.Table, err))
		}
	}
	if h.hc != nil {
		if err := h.hc.Undo(); err != nil {
			errs = append(errs, err)
		}
	}
	if h.pt != nil {
		for _, q := range h.pt.queues {
			q.Close()
		}
	}
	for _, ep := range h.egress {
		ep.dev.Close()
	}
	if h.markPt != nil {
		for _, q := range h.markPt.queues {
			q.Close()
		}
	}
	if h.marks != nil {
		if err := h.marks.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func family(a conntrack.Addr) int {
	if a.Netip().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func hostNet(a conntrack.Addr) *net.IPNet {
	ip := a.Netip()
	return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}
