package bgp

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"uvs/service"
)

// VIPs returns the prefixes to announce for rule table c, sorted: a /32 or
// /128 for every virtual address that has a usable real server, that is
// one of weight above zero in some service on that address (any protocol,
// any port: a router routes addresses, so one service with servers keeps
// the address announced for all). Overloaded servers (-x/-y thresholds)
// count as usable: overload comes and goes with the load, and withdrawing
// on it would make the route flap.
//
// A firewall-mark service has no address of its own: the addresses the
// marking rules match are named in marks (mark -> addresses), and they are
// announced while the mark's service has a usable server. A mark service
// not in marks announces nothing.
func VIPs(c *service.Config, marks map[uint32][]netip.Addr) []netip.Prefix {
	if c == nil {
		return nil
	}
	set := map[netip.Prefix]bool{}
	for _, s := range c.Services {
		if !slices.ContainsFunc(s.Dests, func(d *service.Dest) bool { return d.Weight > 0 }) {
			continue
		}
		addrs := []netip.Addr{s.Addr}
		if s.IsFWMark() {
			addrs = marks[s.FWMark]
		}
		for _, a := range addrs {
			if a.IsValid() {
				a = a.Unmap()
				set[netip.PrefixFrom(a, a.BitLen())] = true
			}
		}
	}
	out := make([]netip.Prefix, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// Peer is a BGP neighbour.
type Peer struct {
	Addr netip.Addr
	// ASN is the neighbour's AS number; 0 means the local one (iBGP).
	ASN uint32
	// Port is the neighbour's BGP port; 0 means 179. (Not settable from
	// the command line; the tests use it.)
	Port uint16
}

func (p Peer) String() string {
	switch {
	case p.ASN == 0:
		return p.Addr.String()
	case p.Addr.Is6():
		return "[" + p.Addr.String() + "]:" + strconv.FormatUint(uint64(p.ASN), 10)
	default:
		return p.Addr.String() + ":" + strconv.FormatUint(uint64(p.ASN), 10)
	}
}

// ParsePeers reads --bgp-peer's value: a comma-separated list of ADDR or
// ADDR:ASN, an IPv6 address with an ASN in brackets ([2001:2::1]:65000).
// A peer without an ASN is in the local AS (iBGP).
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	seen := map[netip.Addr]bool{}
	for item := range strings.SplitSeq(s, ",") {
		p, err := parsePeer(strings.TrimSpace(item))
		if err != nil {
			return nil, err
		}
		if seen[p.Addr] {
			return nil, fmt.Errorf("peer %s given twice", p.Addr)
		}
		seen[p.Addr] = true
		out = append(out, p)
	}
	return out, nil
}

func parsePeer(s string) (Peer, error) {
	if s == "" {
		return Peer{}, fmt.Errorf("an empty peer")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return checkPeer(Peer{Addr: a}, s)
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Peer{}, fmt.Errorf("peer %q: want ADDR, ADDR:ASN or [IPV6]:ASN", s)
	}
	host := s[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Is4In6() {
			return Peer{}, fmt.Errorf("peer %q: %q is not an IPv6 address", s, host)
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return Peer{}, fmt.Errorf("peer %q: want ADDR, ADDR:ASN or [IPV6]:ASN", s)
	}
	asn, err := ParseASN(s[i+1:])
	if err != nil {
		return Peer{}, fmt.Errorf("peer %q: %w", s, err)
	}
	return checkPeer(Peer{Addr: a, ASN: asn}, s)
}

func checkPeer(p Peer, s string) (Peer, error) {
	if p.Addr.Zone() != "" {
		return Peer{}, fmt.Errorf("peer %q: link-local peers with a zone are not supported", s)
	}
	p.Addr = p.Addr.Unmap()
	if p.Addr.IsUnspecified() || p.Addr.IsMulticast() {
		return Peer{}, fmt.Errorf("peer %q: not a unicast address", s)
	}
	return p, nil
}

// ParseASN reads an AS number: 1 to 4294967295, asplain.
func ParseASN(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || n > math.MaxUint32 {
		return 0, fmt.Errorf("AS number %q: want 1 to 4294967295", s)
	}
	return uint32(n), nil
}

// ParseMarkVIPs reads --bgp-fwmark-vip's value: a comma-separated list of
// MARK=ADDR (a mark may come more than once, for several addresses).
func ParseMarkVIPs(s string) (map[uint32][]netip.Addr, error) {
	out := map[uint32][]netip.Addr{}
	for item := range strings.SplitSeq(s, ",") {
		m, a, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("%q: want MARK=ADDR", item)
		}
		mark, err := strconv.ParseUint(m, 0, 32)
		if err != nil || mark == 0 {
			return nil, fmt.Errorf("%q: the mark %q is not a number from 1 to 4294967295", item, m)
		}
		addr, err := netip.ParseAddr(a)
		if err != nil || addr.Zone() != "" || addr.IsUnspecified() {
			return nil, fmt.Errorf("%q: %q is not an address", item, a)
		}
		out[uint32(mark)] = append(out[uint32(mark)], addr.Unmap())
	}
	return out, nil
}
