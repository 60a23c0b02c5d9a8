package realserver

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseAddrs parses a comma-separated list of IPv4 and IPv6 addresses, as
// the --vip and --from flags take them ("198.18.0.100,2001:2::100").
// Spaces around an address are allowed; IPv4-mapped IPv6 addresses are
// taken as IPv4; zones, prefixes, empty elements and duplicates are
// refused. The result keeps the order given.
func ParseAddrs(s string) ([]netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty address list")
	}
	var out []netip.Addr
	for el := range strings.SplitSeq(s, ",") {
		el = strings.TrimSpace(el)
		if el == "" {
			return nil, fmt.Errorf("empty element in address list %q", s)
		}
		a, err := netip.ParseAddr(el)
		if err != nil {
			return nil, fmt.Errorf("bad address %q: not an IPv4 or IPv6 address", el)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("bad address %q: zones are not allowed", el)
		}
		a = a.Unmap()
		if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() {
			return nil, fmt.Errorf("bad address %q: unspecified, multicast, loopback or link-local", el)
		}
		for _, b := range out {
			if a == b {
				return nil, fmt.Errorf("address %s given twice", a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}
