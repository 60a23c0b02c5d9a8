package director

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"uvs/conntrack"
)

// The traffic the director balances, for the host's nftables rules (the
// AF_PACKET ingress drops, the TUN notrack exemptions): packets to a
// virtual service, a NAT real server's replies and the ICMP errors it
// sends, and for AF_PACKET anything to a VIP the host does not own. It is
// matched through sets, so that a packet costs a few hash lookups however
// many services there are, and so that the rules fit one netlink batch
// (one rule per service and real server did not past a few hundred).
//
// A rule change builds a new generation of sets beside the old one,
// filled in as many batches as it takes while no rule refers to them,
// then swaps the rules over to them and deletes the old ones in one
// transaction: the old rules and sets stay whole until the new ones are
// in.

// divertSet is one kind of set: its name stem and key.
type divertSet struct {
	name string
	key  nftables.SetDatatype
}

var (
	concat4       = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	concat4NoPort = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto)
	concat6       = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	concat6NoPort = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto)

	// By family (0 IPv4, 1 IPv6).
	setSvc    = [2]divertSet{{"svc4", concat4}, {"svc6", concat6}}                   // VIP . proto . port
	setSvcAny = [2]divertSet{{"svcany4", concat4NoPort}, {"svcany6", concat6NoPort}} // VIP . proto: port-0 services
	setRS     = [2]divertSet{{"rs4", concat4}, {"rs6", concat6}}                     // NAT real server . proto . port
	setRSAny  = [2]divertSet{{"rsany4", concat4NoPort}, {"rsany6", concat6NoPort}}   // NAT real server . proto, port 0
	setRSAddr = [2]divertSet{{"rsaddr4", nftables.TypeIPAddr}, {"rsaddr6", nftables.TypeIP6Addr}}
	setVIP    = [2]divertSet{{"vip4", nftables.TypeIPAddr}, {"vip6", nftables.TypeIP6Addr}} // VIPs the host does not own
	// VIP . proto of every service, for fragments, which carry no port
	// after the first.
	setSvcProto = [2]divertSet{{"svcproto4", concat4NoPort}, {"svcproto6", concat6NoPort}}
	// NAT real server . proto of every service, for a reply's fragments
	// (TUN).
	setRSProto = [2]divertSet{{"rsproto4", concat4NoPort}, {"rsproto6", concat6NoPort}}

	divertKinds = [][2]divertSet{setSvc, setSvcAny, setRS, setRSAny, setRSAddr, setVIP, setSvcProto, setRSProto}
)

// elemsPerBatch bounds the set elements sent in one netlink batch: the
// batch goes in one message, which must fit the socket's send buffer.
const elemsPerBatch = 2000

// divertElems are the set elements for a snapshot, by set name stem.
type divertElems map[string][]nftables.SetElement

// divertElements computes the elements for s. When local is not nil, VIPs
// not in it go into the vip sets.
func divertElements(s *snapshot, local map[conntrack.Addr]bool) divertElems {
	e := divertElems{}
	add := func(kind [2]divertSet, a conntrack.Addr, key []byte) {
		fam := 0
		if !a.Netip().Is4() {
			fam = 1
		}
		e[kind[fam].name] = append(e[kind[fam].name], nftables.SetElement{Key: key})
	}
	for k, v := range s.byKey {
		add(setSvcProto, k.addr, setKey(k.addr, k.proto, false, 0))
		if v.svc.Port == 0 {
			add(setSvcAny, k.addr, setKey(k.addr, k.proto, false, 0))
		} else {
			add(setSvc, k.addr, setKey(k.addr, k.proto, true, k.port))
		}
		if local != nil && !local[k.addr] {
			add(setVIP, k.addr, addrKey(k.addr))
		}
	}
	for _, n := range s.nat {
		a := n.addr
		if n.port == 0 {
			add(setRSAny, a, setKey(a, n.proto, false, 0))
		} else {
			add(setRS, a, setKey(a, n.proto, true, n.port))
		}
		add(setRSAddr, a, addrKey(a))
		add(setRSProto, a, setKey(a, n.proto, false, 0))
	}
	for name, els := range e {
		slices.SortFunc(els, func(a, b nftables.SetElement) int { return slices.Compare(a.Key, b.Key) })
		e[name] = slices.CompactFunc(els, func(a, b nftables.SetElement) bool { return slices.Equal(a.Key, b.Key) })
	}
	return e
}

func addrKey(a conntrack.Addr) []byte {
	if a.Netip().Is4() {
		return slices.Clone(a[12:])
	}
	return slices.Clone(a[:])
}

// setKey is a concatenated key: each part padded to 4 bytes, as the
// kernel's 32-bit registers hold them.
func setKey(a conntrack.Addr, proto uint8, withPort bool, port uint16) []byte {
	k := append(addrKey(a), proto, 0, 0, 0)
	if withPort {
		k = binary.BigEndian.AppendUint16(k, port)
		k = append(k, 0, 0)
	}
	return k
}

// divertTable installs the sets and rules in one table.
type divertTable struct {
	table *nftables.Table
	gen   int
	sets  []*nftables.Set // the generation the rules use
	// frags adds a rule for fragments to a service's VIP with the
	// service's protocol (the AF_PACKET director balances the datagrams
	// whole).
	frags bool
	// mark, when not 0, adds rules that set it as the packet mark on
	// fragments to a service's VIP with the service's protocol and from
	// a NAT real server with a service's protocol (TUN: a policy rule
	// on the mark sends them to the director).
	mark uint32
	// pass, by family, lets a TCP SYN or a UDP datagram to an address
	// service through to the host's rules, which may mark it (AF_PACKET
	// with firewall-mark services: marks.go).
	pass [2]bool
	// own, when not 0, adds rules that set it as the packet mark on what a
	// NAT real server sends to an address of the host (ownRules).
	own uint32
}

// install makes the table's chains hold, in order, the rules in first and
// then the divert rules, each with verdict v, over sets filled with e.
// chains adds the chains to c (within the swap transaction).
func (dt *divertTable) install(c *nftables.Conn, e divertElems, chains func(*nftables.Table) []*nftables.Chain,
	first [][]expr.Any, v expr.Any) error {
	gen := dt.gen + 1
	t := c.AddTable(dt.table)
	byName := map[string]*nftables.Set{}
	var made []*nftables.Set
	drop := func() {
		for _, s := range made {
			c.DelSet(s)
		}
		c.Flush()
	}
	pending := 0
	for _, kind := range divertKinds {
		if kind[0].name == setRSProto[0].name && dt.mark == 0 {
			continue // only the mark rules use it
		}
		for _, k := range kind {
			s := &nftables.Set{Table: t, Name: fmt.Sprintf("%s_g%d", k.name, gen), KeyType: k.key,
				Concatenation: len(nftables.ConcatSetTypeElements(k.key)) > 1}
			if err := c.AddSet(s, nil); err != nil {
				drop()
				return fmt.Errorf("nftables set %s: %w", s.Name, err)
			}
			made = append(made, s)
			byName[k.name] = s
			els := e[k.name]
			for len(els) > 0 {
				n := min(len(els), elemsPerBatch-pending)
				if err := c.SetAddElements(s, els[:n]); err != nil {
					drop()
					return fmt.Errorf("nftables set %s: %w", s.Name, err)
				}
				els, pending = els[n:], pending+n
				if pending == elemsPerBatch {
					if err := c.Flush(); err != nil {
						drop()
						return fmt.Errorf("fill nftables set %s: %w", s.Name, err)
					}
					pending = 0
				}
			}
		}
	}
	if err := c.Flush(); err != nil {
		drop()
		return fmt.Errorf("fill nftables sets: %w", err)
	}
	// The swap: one transaction.
	rules := append(slices.Clone(first), divertRules(byName, dt.frags)...)
	swap := func(old []*nftables.Set) error {
		c.AddTable(dt.table)
		c.FlushTable(t)
		for _, ch := range chains(t) {
			for _, r := range passRules(byName, dt.pass) {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(r, &expr.Verdict{Kind: expr.VerdictAccept})})
			}
			for _, r := range rules {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(slices.Clone(r), v)})
			}
			if dt.mark != 0 {
				for _, r := range markRules(byName, dt.mark) {
					c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
				}
			}
			if dt.own != 0 {
				for _, r := range ownRules(byName, dt.own) {
					c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
				}
			}
		}
		for _, s := range old {
			c.DelSet(s)
		}
		return c.Flush()
	}
	err := swap(dt.sets)
	if err != nil && errors.Is(err, unix.ENOENT) && len(dt.sets) > 0 {
		// The table was deleted from outside (nft delete table, a second
		// director before it was refused): the old generation is gone
		// with it, and the table is made again, with its chains, here.
		err = swap(nil)
		if err == nil {
			slog.Default().Warn("nftables table was deleted from outside; made again", "table", dt.table.Name)
		}
	}
	if err != nil {
		drop()
		return err
	}
	dt.gen, dt.sets = gen, made
	return nil
}

// Registers: the 32-bit ones a concatenation is loaded into.
const reg32 = 8 // NFT_REG32_00

// divertRules are the matches over the sets, for both families, with
// frags those for IPv4 fragments after the first too.
func divertRules(sets map[string]*nftables.Set, frags bool) [][]expr.Any {
	var rules [][]expr.Any
	for fam, v6 := range []bool{false, true} {
		alen, saddr, daddr := uint32(4), uint32(12), uint32(16)
		// A real server's ICMP errors: destination unreachable, time
		// exceeded, parameter problem (and for IPv6 packet too big).
		icmp, types := uint8(1), []byte{3, 11, 12}
		if v6 {
			alen, saddr, daddr = 16, 8, 24
			icmp, types = 58, []byte{1, 2, 3, 4}
		}
		words := alen / 4
		// addr . l4proto [. port] into the 32-bit registers, then a lookup.
		tuple := func(addrOff uint32, portOff int, set [2]divertSet) []expr.Any {
			r := append(etherProto(v6),
				&expr.Payload{DestRegister: reg32, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: alen},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32 + words})
			if portOff >= 0 {
				r = append(r, &expr.Payload{DestRegister: reg32 + words + 1, Base: expr.PayloadBaseTransportHeader,
					Offset: uint32(portOff), Len: 2})
			}
			s := sets[set[fam].name]
			return append(r, &expr.Lookup{SourceRegister: reg32, SetName: s.Name, SetID: s.ID})
		}
		addr := func(off uint32, set [2]divertSet) []expr.Any {
			s := sets[set[fam].name]
			return append(etherProto(v6),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
				&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
		}
		// What a NAT real server sends to an address of the host is the
		// host's own traffic (a health check's reply, an ssh session):
		// a balanced reply goes to a client. The kernel keeps that.
		rules = append(rules,
			tuple(daddr, 2, setSvc),
			tuple(daddr, -1, setSvcAny),
			append(tuple(saddr, 0, setRS), toLocal(false)...),
			append(tuple(saddr, -1, setRSAny), toLocal(false)...),
			addr(daddr, setVIP),
		)
		for _, t := range types {
			r := append(addr(saddr, setRSAddr), l4(icmp)...)
			r = append(r, icmpType(), cmpEq([]byte{t}))
			rules = append(rules, append(r, toLocal(false)...))
		}
		if frags {
			// Every fragment to a VIP with a service of its protocol, the
			// first too: the director balances the datagrams whole, and
			// a kernel given only some of a datagram's fragments would
			// hold them 30 s in the reassembly memory the director's
			// own reassembly shares. (So the host's own fragmented
			// datagrams to another port of such an address are lost.)
			// A NAT real server's are left alone: without a port they
			// cannot be told from its own traffic through the host;
			// the first fragment of a reply meets the rules above.
			rules = append(rules, append(tuple(daddr, -1, setSvcProto), fragMatch(v6)...))
		}
	}
	return rules
}

// passRules match, for the families pass names, a TCP SYN or a UDP
// datagram to an address service.
func passRules(sets map[string]*nftables.Set, pass [2]bool) [][]expr.Any {
	var rules [][]expr.Any
	for fam, v6 := range []bool{false, true} {
		if !pass[fam] {
			continue
		}
		for _, set := range []struct {
			s    *nftables.Set
			port bool
		}{{sets[setSvc[fam].name], true}, {sets[setSvcAny[fam].name], false}} {
			tuple := markTuple(set.s, v6, set.port)
			rules = append(rules,
				append(append(etherProto(v6), tcpSYN()...), tuple...),
				append(append(etherProto(v6), l4(unix.IPPROTO_UDP)...), tuple...))
		}
	}
	return rules
}

// rtnLocal is the route type of a host address (RTN_LOCAL), as the fib
// expression gives it.
const rtnLocal = 2

// toLocal matches a packet to an address of the host (local true) or to
// any other (local false), by a route lookup: it follows the host's
// address changes without a rule change. nftables has fib in the netdev
// ingress hook too.
func toLocal(local bool) []expr.Any {
	op := expr.CmpOpNeq
	if local {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: op, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, rtnLocal)},
	}
}

// ownRules set mark on what a NAT real server sends to an address of the
// host (TUN: a policy rule on the mark keeps it from the director's rules,
// which divert by source).
func ownRules(sets map[string]*nftables.Set, mark uint32) [][]expr.Any {
	var rules [][]expr.Any
	for fam, v6 := range []bool{false, true} {
		saddr, alen := uint32(12), uint32(4)
		if v6 {
			saddr, alen = 8, 16
		}
		s := sets[setRSAddr[fam].name]
		r := append(etherProto(v6),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
		r = append(r, toLocal(true)...)
		r = append(r,
			&expr.Immediate{Register: 1, Data: binary.NativeEndian.AppendUint32(nil, mark)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
		rules = append(rules, r)
	}
	return rules
}

// fragMatch matches a fragment, the first too.
func fragMatch(v6 bool) []expr.Any {
	if v6 { // a fragment header; meta l4proto is what it carries
		return []expr.Any{
			&expr.Exthdr{Op: expr.ExthdrOpIpv6, Type: 44, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: 1},
			cmpEq([]byte{1}),
		}
	}
	return []expr.Any{ // IPv4: MF or an offset
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0x3f, 0xff}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0}},
	}
}

// markRules set mark on fragments to a VIP with a service's protocol, and
// on those from a NAT real server with a service's protocol (all of them:
// without a port, a reply's cannot be told from the server's own
// traffic, which the director hands back whole).
func markRules(sets map[string]*nftables.Set, mark uint32) [][]expr.Any {
	m := binary.NativeEndian.AppendUint32(nil, mark)
	var rules [][]expr.Any
	for fam, v6 := range []bool{false, true} {
		alen, saddr, daddr := uint32(4), uint32(12), uint32(16)
		if v6 {
			alen, saddr, daddr = 16, 8, 24
		}
		for _, k := range []struct {
			off uint32
			set [2]divertSet
		}{{daddr, setSvcProto}, {saddr, setRSProto}} {
			s := sets[k.set[fam].name]
			r := append(etherProto(v6), fragMatch(v6)...)
			r = append(r,
				&expr.Payload{DestRegister: reg32, Base: expr.PayloadBaseNetworkHeader, Offset: k.off, Len: alen},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32 + alen/4},
				&expr.Lookup{SourceRegister: reg32, SetName: s.Name, SetID: s.ID},
				&expr.Immediate{Register: 1, Data: m},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
			rules = append(rules, r)
		}
	}
	return rules
}

func icmpType() expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}
}
