package director

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"uvs/conntrack"
)

// Firewall-mark services (ipvsadm -A -f MARK). The mark is what the host's
// own netfilter rules (iptables -t mangle … -j MARK, or nft … meta mark
// set) give a packet in PREROUTING. The packet sockets see a frame before
// netfilter runs, and a TUN device is handed packets without their mark,
// so the director lets the kernel mark and has it say which mark it gave:
//
//   - a veth pair, markHostSide ↔ markDirSide; the director reads
//     markDirSide like any Ethernet port (both backends);
//   - per mark that has a service, a macvlan on markHostSide (VEPA, so its
//     frames go out through the pair) whose MAC address holds the mark:
//     02:00 then the mark's four bytes; it has ARP off, so the kernel
//     addresses every frame it sends there to that same MAC;
//   - nftables tables "ip uvsmark" and "ip6 uvsmark" with a prerouting
//     chain just after the host's mangle chains (priority mangle + 1): a
//     packet with a service's mark is duplicated to that mark's macvlan
//     (nft dup) and the original dropped.
//
// So the director reads, on markDirSide, each marked packet with its mark
// in the destination MAC (worker.frame), after every mark rule of the host
// ran, in the order the kernel runs them, whatever they match on: the
// host's rules are followed exactly, a rule edited takes effect at once,
// and there is no ruleset to read and evaluate. A NAT server's reply is
// sent back to the mark's MAC: the macvlan receives it and the kernel
// routes it to the client (forwarding is turned on for the macvlans
// alone; IPv6 needs the host's forwarding on).
//
// Two more rules per family once it has a mark service, after those:
// a packet to a learned destination (a firewall-mark connection's VIP,
// protocol and port) goes to uvsmm0 unmarked, so that a connection
// outlives the rule that marked it; and, AF_PACKET only, so does a TCP
// SYN or UDP datagram to an address service that no rule marked: the
// ingress drop lets those through (passRules), and the director takes
// the kernel's copy rather than the interface's (worker.kernelCopies),
// so that the mark service comes first, as in IPVS.
//
// What dup costs: a copy of each marked packet (pskb_copy) and a route
// lookup; it decrements the TTL (the director decrements it again, as a
// router would once) and sets DF on IPv4 copies.
const (
	markHostSide = "uvsm0"
	markDirSide  = "uvsm1"
	markPrefix   = "uvsm" // the veth pair and the macvlans: never served as ports
	markTable    = "uvsmark"
	markMTU      = 65535
)

// markPriority runs after the host's mangle prerouting chains (-150),
// where iptables' MARK rules live, and before the nat ones (-100).
var markPriority = nftables.ChainPriorityRef(-149)

// markMAC is the address of mark's macvlan.
func markMAC(mark uint32) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x00, byte(mark >> 24), byte(mark >> 16), byte(mark >> 8), byte(mark)}
}

// markFromMAC is the mark in a frame's destination MAC, false when it is
// not one of markMAC's.
func markFromMAC(mac []byte) (uint32, bool) {
	if len(mac) < 6 || mac[0] != 0x02 || mac[1] != 0x00 {
		return 0, false
	}
	return uint32(mac[2])<<24 | uint32(mac[3])<<16 | uint32(mac[4])<<8 | uint32(mac[5]), true
}

// markHost keeps the host's mark plumbing in step with the snapshots.
type markHost struct {
	d     *Director
	veth  netlink.Link
	macv  map[uint32]netlink.Link // by mark; 0 is the one for packets the rules did not mark
	nft   *nftables.Conn
	tbl   [2]*nftables.Table // IPv4, IPv6
	chain [2]*nftables.Chain
	// addrSvc: the packet sockets read before netfilter (AF_PACKET), so
	// packets that may open a connection to an address service come
	// through the kernel too, marked or not (svc, svcAny).
	addrSvc bool
	svc     [2]*nftables.Set // VIP . proto . port of the address services
	svcAny  [2]*nftables.Set // VIP . proto of the port-zero ones
	// learned holds the VIP . proto . port of firewall-mark connections,
	// so that their packets still reach the director once the rule that
	// marked them is gone (learnLoop).
	learned [2]*nftables.Set
	learn   chan svcKey
	done    chan struct{}
	mu      sync.Mutex // apply and learnLoop share nft
}

// learnTTL is how long a learned destination stays without a new
// connection to it: the longest idle time of a default TCP connection,
// twice over.
const learnTTL = 2 * 900 * time.Second

// openMarkHost makes the veth pair, after removing what a director killed
// outright left; the director reads the returned link (markDirSide).
func openMarkHost(d *Director, addrSvc bool) (_ *markHost, dirSide netlink.Link, err error) {
	m := &markHost{d: d, macv: make(map[uint32]netlink.Link), addrSvc: addrSvc,
		learn: make(chan svcKey, 1024), done: make(chan struct{})}
	removeLeftMarks()
	defer func() {
		if err != nil {
			m.close()
		}
	}()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: markHostSide, MTU: markMTU}, PeerName: markDirSide}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("add veth %s/%s (firewall marks): %w", markHostSide, markDirSide, err)
	}
	host, err := netlink.LinkByName(markHostSide)
	if err != nil {
		return nil, nil, fmt.Errorf("veth %s: %w", markHostSide, err)
	}
	m.veth = host
	peer, err := netlink.LinkByName(markDirSide)
	if err != nil {
		return nil, nil, fmt.Errorf("veth %s: %w", markDirSide, err)
	}
	if err := netlink.LinkSetMTU(peer, markMTU); err != nil {
		return nil, nil, fmt.Errorf("veth %s mtu: %w", markDirSide, err)
	}
	// Neither side is an IP interface: no addresses, no IPv6 chatter.
	for _, l := range []netlink.Link{host, peer} {
		n := l.Attrs().Name
		if err := writeSysctl("net/ipv6/conf/"+n+"/disable_ipv6", "1"); err != nil {
			return nil, nil, err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, nil, fmt.Errorf("veth %s up: %w", n, err)
		}
	}
	if m.nft, err = nftables.New(nftables.AsLasting()); err != nil {
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	for i, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		m.tbl[i] = m.nft.AddTable(&nftables.Table{Family: fam, Name: markTable})
		m.chain[i] = m.nft.AddChain(&nftables.Chain{Name: "pre", Table: m.tbl[i], Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: markPriority})
		key, noPort := concat4, concat4NoPort
		if i == 1 {
			key, noPort = concat6, concat6NoPort
		}
		for _, st := range []struct {
			p    **nftables.Set
			name string
			key  nftables.SetDatatype
			ttl  bool
		}{{&m.svc[i], "svc", key, false}, {&m.svcAny[i], "svcany", noPort, false}, {&m.learned[i], "learned", key, true}} {
			*st.p = &nftables.Set{Table: m.tbl[i], Name: st.name, KeyType: st.key, Concatenation: true,
				HasTimeout: st.ttl, Timeout: learnTTL}
			if err := m.nft.AddSet(*st.p, nil); err != nil {
				return nil, nil, fmt.Errorf("nftables set %s %s: %w", markTable, st.name, err)
			}
		}
	}
	if err := m.nft.Flush(); err != nil {
		return nil, nil, fmt.Errorf("add nftables tables %s: %w", markTable, err)
	}
	d.learn = m.learn
	go m.learnLoop()
	return m, peer, nil
}

// learned notes that a firewall-mark connection was made to proto, addr
// and port. It never blocks the worker: when the loop is behind, the
// destination is learned at its next connection.
func (d *Director) learned(proto uint8, addr conntrack.Addr, port uint16) {
	if d.learn == nil {
		return
	}
	select {
	case d.learn <- svcKey{addr, port, proto}:
	default:
	}
}

// learnLoop adds the destinations of new firewall-mark connections to the
// learned sets, once per half of learnTTL each, so that one whose
// connections keep coming never times out.
func (m *markHost) learnLoop() {
	seen := make(map[svcKey]time.Time)
	tick := time.NewTicker(learnTTL / 2)
	defer tick.Stop()
	for {
		select {
		case <-m.done:
			return
		case now := <-tick.C:
			for k, t := range seen {
				if now.Sub(t) >= learnTTL/2 {
					delete(seen, k)
				}
			}
		case k := <-m.learn:
			if _, ok := seen[k]; ok {
				continue
			}
			fam := 0
			if !k.addr.Netip().Is4() {
				fam = 1
			}
			m.mu.Lock()
			err := m.nft.SetAddElements(m.learned[fam], []nftables.SetElement{{Key: setKey(k.addr, k.proto, true, k.port), Timeout: learnTTL}})
			if err == nil {
				err = m.nft.Flush()
			}
			m.mu.Unlock()
			if err != nil {
				m.d.log.Warn("learn a firewall-mark destination", "addr", k.addr.Netip(), "port", k.port, "err", err)
				continue
			}
			seen[k] = time.Now()
		}
	}
}

// removeLeftMarks deletes the links and tables a director killed outright
// left behind.
func removeLeftMarks() {
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if n := l.Attrs().Name; n != markDirSide && strings.HasPrefix(n, markPrefix) {
				netlink.LinkDel(l) // the macvlans go with uvsm0
			}
		}
	}
	if c, err := nftables.New(); err == nil {
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: markTable})
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: markTable})
		_ = c.Flush() // ENOENT when there are none
	}
}

// isMarkLink reports whether name is one of the director's mark links,
// which are never served as ports of their own (but markDirSide).
func isMarkLink(name string) bool { return strings.HasPrefix(name, markPrefix) }

// apply gives every mark of s's services a macvlan and a rule per family,
// then removes what s no longer needs. On error the rules are as before.
func (m *markHost) apply(s *snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := make(map[uint32][2]bool)
	for k := range s.byMark {
		f := want[k.mark]
		f[b2i(k.v6)] = true
		want[k.mark] = f
	}
	if len(want) > 0 {
		want[0] = s.marks // what the rules did not mark
	}
	var made []uint32
	undo := func() {
		for _, mk := range made {
			netlink.LinkDel(m.macv[mk])
			delete(m.macv, mk)
		}
	}
	for mk := range want {
		if m.macv[mk] != nil {
			continue
		}
		l, err := m.addMacvlan(mk)
		if err != nil {
			undo()
			return err
		}
		m.macv[mk] = l
		made = append(made, mk)
	}
	for i := range m.chain {
		m.nft.FlushChain(m.chain[i])
		marks := make([]uint32, 0, len(want))
		for mk, f := range want {
			if f[i] {
				marks = append(marks, mk)
			}
		}
		slices.Sort(marks)
		for _, mk := range marks {
			if mk == 0 {
				continue
			}
			m.nft.AddRule(&nftables.Rule{Table: m.tbl[i], Chain: m.chain[i], Exprs: dupRule(mk, m.macv[mk].Attrs().Index, i == 1)})
		}
		m.nft.FlushSet(m.svc[i])
		m.nft.FlushSet(m.svcAny[i])
		if !s.marks[i] {
			continue
		}
		// Not marked with a service's mark: through uvsmm0, if a
		// firewall-mark connection's, or, AF_PACKET, one that may open a
		// connection to an address service.
		v6 := i == 1
		unmarked := m.macv[0].Attrs().Index
		m.nft.AddRule(&nftables.Rule{Table: m.tbl[i], Chain: m.chain[i],
			Exprs: append(markTuple(m.learned[i], v6, true), dupTo(unmarked, v6)...)})
		if !m.addrSvc {
			continue
		}
		var els, any []nftables.SetElement
		for k, v := range s.byKey {
			if k.addr.Netip().Is4() == v6 {
				continue
			}
			if v.svc.Port == 0 {
				any = append(any, nftables.SetElement{Key: setKey(k.addr, k.proto, false, 0)})
			} else {
				els = append(els, nftables.SetElement{Key: setKey(k.addr, k.proto, true, k.port)})
			}
		}
		for _, f := range []struct {
			set *nftables.Set
			els []nftables.SetElement
		}{{m.svc[i], els}, {m.svcAny[i], any}} {
			if err := m.fill(f.set, f.els); err != nil {
				undo()
				return err
			}
		}
		for _, set := range []struct {
			s    *nftables.Set
			port bool
		}{{m.svc[i], true}, {m.svcAny[i], false}} {
			syn := append(tcpSYN(), markTuple(set.s, v6, set.port)...)
			udp := append([]expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{unix.IPPROTO_UDP})},
				markTuple(set.s, v6, set.port)...)
			for _, r := range [][]expr.Any{syn, udp} {
				m.nft.AddRule(&nftables.Rule{Table: m.tbl[i], Chain: m.chain[i], Exprs: append(r, dupTo(unmarked, v6)...)})
			}
		}
	}
	if err := m.nft.Flush(); err != nil {
		undo()
		return fmt.Errorf("install the firewall-mark rules (tables ip and ip6 %s): %w", markTable, err)
	}
	for mk, l := range m.macv {
		if _, ok := want[mk]; !ok {
			if err := netlink.LinkDel(l); err != nil {
				m.d.log.Warn("delete a firewall mark's macvlan no longer needed", "name", l.Attrs().Name, "err", err)
			}
			delete(m.macv, mk)
		}
	}
	return nil
}

// revert goes back to the marks of the snapshot in force, after a change
// that apply accepted was refused by a later step.
func (m *markHost) revert() {
	if s := m.d.snap.Load(); s != nil {
		if err := m.apply(s); err != nil {
			m.d.log.Error("firewall-mark rules not restored after a refused change", "err", err)
		}
	}
}

// addMacvlan makes mark's macvlan on the veth pair's host side.
func (m *markHost) addMacvlan(mark uint32) (netlink.Link, error) {
	name := fmt.Sprintf("%s%d", markPrefix, mark)
	if mark <= 1 {
		name = fmt.Sprintf("%sm%d", markPrefix, mark) // not uvsm0 or uvsm1
	}
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: m.veth.Attrs().Index,
		MTU: markMTU, HardwareAddr: markMAC(mark)}, Mode: netlink.MACVLAN_MODE_VEPA}
	if err := netlink.LinkAdd(mv); err != nil {
		return nil, fmt.Errorf("add macvlan %s for firewall mark %d: %w", name, mark, err)
	}
	l, err := netlink.LinkByName(name)
	if err == nil {
		err = m.prepare(l)
	}
	if err != nil {
		netlink.LinkDel(mv)
		return nil, fmt.Errorf("macvlan %s for firewall mark %d: %w", name, mark, err)
	}
	return l, nil
}

// prepare sets a new macvlan up: no ARP (frames go to its own MAC), and
// the kernel forwards the NAT replies the director sends back to it, whose
// source is a VIP, perhaps a local address.
func (m *markHost) prepare(l netlink.Link) error {
	name := l.Attrs().Name
	if err := netlink.LinkSetARPOff(l); err != nil {
		return err
	}
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + name + "/forwarding", "1"},
		{"net/ipv4/conf/" + name + "/rp_filter", "0"},
		{"net/ipv4/conf/" + name + "/accept_local", "1"},
		{"net/ipv6/conf/" + name + "/accept_dad", "0"},
		{"net/ipv6/conf/" + name + "/accept_ra", "0"},
	} {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return netlink.LinkSetUp(l)
}

// dupRule is "meta mark MARK dup to … device DEV drop". IPv4 copies go to
// their own destination on the device: the route lookup dup makes with an
// output device takes any address as on-link there. An IPv6 one needs an
// address the lookup does not find local: a link-local one (the macvlan has
// its link-local address, which IPv6 routing through it needs).
func dupRule(mark uint32, ifindex int, v6 bool) []expr.Any {
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}, dupTo(ifindex, v6)...)
}

// fill adds els to set, in batches that fit a netlink message; all but
// the last are sent at once (a table of thousands of services is not
// swapped in one transaction).
func (m *markHost) fill(set *nftables.Set, els []nftables.SetElement) error {
	for len(els) > 0 {
		n := min(len(els), elemsPerBatch)
		if err := m.nft.SetAddElements(set, els[:n]); err != nil {
			return fmt.Errorf("nftables set %s %s: %w", markTable, set.Name, err)
		}
		if els = els[n:]; len(els) > 0 {
			if err := m.nft.Flush(); err != nil {
				return fmt.Errorf("fill nftables set %s %s: %w", markTable, set.Name, err)
			}
		}
	}
	return nil
}

// markTuple loads daddr . l4proto [. dport] and looks it up in set.
func markTuple(set *nftables.Set, v6, port bool) []expr.Any {
	daddr, alen := uint32(16), uint32(4)
	if v6 {
		daddr, alen = 24, 16
	}
	e := []expr.Any{
		&expr.Payload{DestRegister: reg32, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32 + alen/4},
	}
	if port {
		e = append(e, &expr.Payload{DestRegister: reg32 + alen/4 + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	}
	return append(e, &expr.Lookup{SourceRegister: reg32, SetName: set.Name, SetID: set.ID})
}

// tcpSYN matches a TCP segment with SYN and without ACK.
func tcpSYN() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		cmpEq([]byte{unix.IPPROTO_TCP}),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		cmpEq([]byte{0x02}),
	}
}

// dupTo is "dup to … device DEV drop" (dupRule).
func dupTo(ifindex int, v6 bool) []expr.Any {
	var e []expr.Any
	if v6 {
		e = append(e, &expr.Immediate{Register: 1, Data: net.ParseIP("fe80::1").To16()})
	} else {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
	}
	return append(e,
		&expr.Immediate{Register: 2, Data: binaryutil.NativeEndian.PutUint32(uint32(ifindex))},
		&expr.Dup{RegAddr: 1, RegDev: 2, IsRegDevSet: true},
		&expr.Verdict{Kind: expr.VerdictDrop})
}

// close removes the tables and the links.
func (m *markHost) close() error {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	if m.nft != nil {
		for _, t := range m.tbl {
			if t != nil {
				m.nft.DelTable(t)
			}
		}
		if err := m.nft.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete nftables tables %s: %w", markTable, err))
		}
		m.nft.CloseLasting()
	}
	for mk, l := range m.macv {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete macvlan %s: %w", l.Attrs().Name, err))
		}
		delete(m.macv, mk)
	}
	if m.veth != nil {
		if err := netlink.LinkDel(m.veth); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", markHostSide, err))
		}
	}
	return errors.Join(errs...)
}

// writeSysctl sets one of the director's own interfaces' sysctls: they
// go with the interface, so nothing is recorded to restore.
func writeSysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}
