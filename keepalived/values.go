package keepalived

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"uvs/scheduler"
)

// opt is a setting that may not have been given.
type opt[T any] struct {
	v  T
	ok bool
}

func (o *opt[T]) set(v T) { o.v, o.ok = v, true }

// pick is the first given of os, else def: the checker's setting, else
// the real server's, else the virtual server's, else the default.
func pick[T any](def T, os ...opt[T]) T {
	for _, o := range os {
		if o.ok {
			return o.v
		}
	}
	return def
}

// common is what a virtual server passes down to its real servers and a
// real server to its checkers (keepalived.conf(5), "LVS CONFIGURATION").
type common struct {
	connectTimeout   opt[time.Duration]
	retry            opt[int]
	delayBeforeRetry opt[time.Duration]
	warmup           opt[time.Duration]
	delayLoop        opt[time.Duration]
	alpha            opt[bool]
	inhibit          opt[bool]
	virtualHost      opt[string]
}

// Where a common keyword is read: some are not allowed everywhere.
const (
	levelVS = iota
	levelRS
	levelChecker
)

// common reads s if it is one of the inherited settings; ok says it was.
func (p *parser) common(c *common, s stmt, level int) (ok bool, err error) {
	switch s.name() {
	case "connect_timeout":
		// keepalived --config-test: "outside range [0.000001, 4294.967295]".
		v, err := parseTimerArg(p, s, time.Microsecond, 4294967295*time.Microsecond)
		c.connectTimeout.set(v)
		return true, err
	case "retry":
		// keepalived --config-test refuses "retry 0" for a virtual or real
		// server but takes it in a checker.
		min := uint64(1)
		if level == levelChecker {
			min = 0
		}
		v, err := parseUintArg(p, s, min, 1<<32-1)
		c.retry.set(int(v))
		return true, err
	case "delay_before_retry":
		v, err := parseTimerArg(p, s, 0, maxTimer)
		c.delayBeforeRetry.set(v)
		return true, err
	case "warmup":
		v, err := parseTimerArg(p, s, 0, maxTimer)
		c.warmup.set(v)
		return true, err
	case "delay_loop":
		// keepalived --config-test: "outside range [0.000001, ...]".
		v, err := parseTimerArg(p, s, time.Microsecond, maxTimer)
		c.delayLoop.set(v)
		return true, err
	case "alpha":
		v, err := p.flag(s)
		c.alpha.set(v)
		return true, err
	case "inhibit_on_failure":
		if level == levelChecker {
			return false, nil
		}
		v, err := p.flag(s)
		c.inhibit.set(v)
		return true, err
	case "virtualhost":
		if level == levelChecker {
			return false, nil // only HTTP_GET and SSL_GET have one
		}
		v, err := p.arg(s)
		c.virtualHost.set(v)
		return true, err
	}
	return false, nil
}

// maxTimer is the longest time a time.Duration holds, in whole
// microseconds (keepalived's resolution).
const maxTimer = time.Duration(math.MaxInt64 / 1000 * 1000)

func seconds(n uint64) time.Duration { return time.Duration(n) * time.Second }

// parseUint reads a decimal number in [min, max] for keyword s.
func parseUint(s stmt, v string, min, max uint64) (uint64, error) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, errorf(s.pos(), "%s: %q is not a whole number", s.name(), v)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n < min || n > max {
		return 0, errorf(s.pos(), "%s: %s is out of range [%d, %d]", s.name(), v, min, max)
	}
	return n, nil
}

func parseUintArg(p *parser, s stmt, min, max uint64) (uint64, error) {
	v, err := p.arg(s)
	if err != nil {
		return 0, err
	}
	return parseUint(s, v, min, max)
}

// parseTimer reads a <TIMER>: keepalived.conf(5), "a time value in
// seconds, including fractional seconds, e.g. 2.71828 or 3; resolution of
// timer is micro-seconds". keepalived --config-test takes ".5" and "5."
// and refuses more than 6 decimal places, a sign and exponents.
func parseTimer(s stmt, v string, min, max time.Duration) (time.Duration, error) {
	whole, frac, _ := strings.Cut(v, ".")
	if whole+frac == "" || strings.Trim(whole+frac, "0123456789") != "" {
		return 0, errorf(s.pos(), "%s: %q is not a number of seconds", s.name(), v)
	}
	if len(frac) > 6 {
		return 0, errorf(s.pos(), "%s: %q has more than 6 decimal places", s.name(), v)
	}
	frac += strings.Repeat("0", 6-len(frac))
	var sec uint64
	var err error
	if whole != "" {
		sec, err = strconv.ParseUint(whole, 10, 64)
	}
	f, _ := strconv.ParseUint(frac, 10, 64)
	maxUS := uint64(max / time.Microsecond)
	if err != nil || sec > maxUS/1e6 || sec*1e6+f > maxUS {
		return 0, errorf(s.pos(), "%s: %s is out of range [%v, %v]", s.name(), v, min, max)
	}
	d := time.Duration(sec*1e6+f) * time.Microsecond
	if d < min {
		return 0, errorf(s.pos(), "%s: %s is out of range [%v, %v]", s.name(), v, min, max)
	}
	return d, nil
}

func parseTimerArg(p *parser, s stmt, min, max time.Duration) (time.Duration, error) {
	v, err := p.arg(s)
	if err != nil {
		return 0, err
	}
	return parseTimer(s, v, min, max)
}

// parseBool reads a <BOOL>: keepalived.conf(5), "one of
// on|off|true|false|yes|no".
func parseBool(s stmt, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, errorf(s.pos(), "%s: %q is not one of on, off, true, false, yes, no", s.name(), v)
}

// parseAddr reads an IPv4 or IPv6 address (no zone: IPVS has none).
func parseAddr(s stmt, v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, errorf(s.pos(), "%s: %q is not an IP address", s.name(), v)
	}
	return a, nil
}

// maxRange bounds the addresses of one group line: each is a service in
// the table, and a typo like /8 should not make sixteen million.
const maxRange = 256

// parseRange reads a group's address or address range, in the three forms
// keepalived.conf(5) gives: "198.18.0.1-10" (the last part; hex for IPv6),
// "198.18.0.250-198.18.1.10" and "198.18.2.8/29". keepalived --config-test: the
// short form's end must be above its start, the long form's not below;
// "/n" must have no host bits ("Address mask bits not empty").
func parseRange(v string) (first, last netip.Addr, err error) {
	bad := func(why string) (netip.Addr, netip.Addr, error) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q: %s", v, why)
	}
	switch {
	case strings.Contains(v, "/"):
		pfx, err := netip.ParsePrefix(v)
		if err != nil || pfx.Addr().Zone() != "" {
			return bad("not an address/prefix length")
		}
		if pfx.Masked() != pfx {
			return bad("the address has bits set beyond the prefix length")
		}
		if pfx.Addr().BitLen()-pfx.Bits() > 8 {
			return bad(fmt.Sprintf("more than %d addresses", maxRange))
		}
		first = pfx.Addr()
		last = first
		for range 1<<(pfx.Addr().BitLen()-pfx.Bits()) - 1 {
			last = last.Next()
		}
		return first, last, nil
	case strings.Contains(v, "-"):
		a, b, _ := strings.Cut(v, "-")
		first, err = netip.ParseAddr(a)
		if err != nil || first.Zone() != "" {
			return bad("not an address range")
		}
		if last, err = netip.ParseAddr(b); err == nil {
			if last.Zone() != "" || last.Is4() != first.Is4() {
				return bad("not an address range")
			}
			if last.Less(first) {
				return bad("the range ends before it starts")
			}
		} else {
			// The short form replaces the last byte (IPv4, decimal) or the
			// last 16-bit group (IPv6, hex).
			base, bits, max := 10, 8, uint64(255)
			if first.Is6() {
				base, bits, max = 16, 16, 0xffff
			}
			n, err := strconv.ParseUint(b, base, bits)
			if err != nil || n > max {
				return bad("the range's end is not a number up to " + strconv.FormatUint(max, base))
			}
			s := first.AsSlice()
			if first.Is4() {
				s[3] = byte(n)
			} else {
				s[14], s[15] = byte(n>>8), byte(n)
			}
			last, _ = netip.AddrFromSlice(s)
			if !first.Less(last) {
				return bad("the range's end is not above its start")
			}
		}
		n := 1
		for a := first; a != last; a = a.Next() {
			if n++; n > maxRange {
				return bad(fmt.Sprintf("more than %d addresses", maxRange))
			}
		}
		return first, last, nil
	}
	first, err = netip.ParseAddr(v)
	if err != nil || first.Zone() != "" {
		return bad("not an IP address")
	}
	return first, first, nil
}

// inetAton reads an IPv4 netmask as inet_aton(3) does, which is how
// keepalived and ipvsadm read persistence_granularity: "a.b.c.d", "a.b.c",
// "a.b" or "a", each part decimal, 0x hex or 0 octal, so "24" is the mask
// 24 (not a /24) and "0xffffff00" is a /24.
func inetAton(v string) (uint32, bool) {
	parts := strings.Split(v, ".")
	if len(parts) > 4 {
		return 0, false
	}
	var vals []uint64
	for _, p := range parts {
		// Go's base 0 also takes 0b, 0o and underscores; inet_aton does not.
		if p == "" || strings.ContainsAny(p, "+_") || len(p) > 1 && p[0] == '0' && strings.ContainsRune("bBoO", rune(p[1])) {
			return 0, false
		}
		n, err := strconv.ParseUint(p, 0, 32)
		if err != nil {
			return 0, false
		}
		vals = append(vals, n)
	}
	// The last part fills the bytes the others leave.
	var m uint64
	for i, n := range vals[:len(vals)-1] {
		if n > 255 {
			return 0, false
		}
		m |= n << (24 - 8*i)
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return 0, false
	}
	return uint32(m | last), true
}

// schedFlagBits are the scheduler flag keywords as ipvsadm's -b bits
// (IP_VS_SVC_F_SCHED1..3): sh-/mh-fallback is the first, -port the second.
var schedFlagBits = map[string]uint8{
	"flag-1": 1, "flag-2": 2, "flag-3": 4,
	"sh-fallback": 1, "sh-port": 2, "mh-fallback": 1, "mh-port": 2,
}

func validSched(s string) bool { return slices.Contains(scheduler.Names(), s) }
