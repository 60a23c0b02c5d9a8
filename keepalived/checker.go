package keepalived

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// checkerDraft is a checker being read.
type checkerDraft struct {
	ch          *Checker
	c           common
	connectPort bool
	misc        bool // misc_path given
	urls        []urlDraft
}

type urlDraft struct {
	url         URL
	virtualHost opt[string]
}

// checker reads a checker block (s is its opening statement).
func (p *parser) checker(s stmt) (*checkerDraft, error) {
	kind := s.name()
	if len(s.args) > 0 {
		p.warn(s.pos(), fmt.Sprintf("%s: extra argument %q ignored", kind, s.args[0].text))
	}
	c := &checkerDraft{ch: &Checker{Pos: s.pos(), Kind: kind}}
	ch := c.ch
	http := kind == HTTPGet || kind == SSLGet
	for {
		e, ok, err := p.next(&s)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if ok, err := p.common(&c.c, e, levelChecker); ok || err != nil {
			if err != nil {
				return nil, err
			}
			continue
		}
		// keepalived.conf(5): MISC_CHECK has only the options from alpha
		// on, not the connection ones.
		conn := kind != MiscCheck
		switch name := e.name(); {
		case conn && name == "connect_ip":
			ch.ConnectIP, err = p.addrArg(e)
		case conn && name == "bindto":
			ch.BindTo, err = p.addrArg(e)
		case conn && name == "connect_port":
			var v uint64
			// keepalived --config-test: "outside range [1, 65535]".
			if v, err = parseUintArg(p, e, 1, 65535); err == nil {
				ch.ConnectPort, c.connectPort = uint16(v), true
			}
		case conn && name == "bind_port":
			var v uint64
			if v, err = parseUintArg(p, e, 1, 65535); err == nil {
				ch.BindPort = uint16(v)
			}
		case http && name == "nb_get_retry":
			// The old name of retry; keepalived warns that it is deprecated
			// and takes it only in HTTP_GET and SSL_GET.
			p.warn(e.pos(), "nb_get_retry is deprecated, use retry")
			var v uint64
			if v, err = parseUintArg(p, e, 0, 1<<32-1); err == nil {
				c.c.retry.set(int(v))
			}
		case http && name == "url":
			var u urlDraft
			if u, err = p.url(e); err == nil {
				c.urls = append(c.urls, u)
			}
		case http && name == "virtualhost":
			var v string
			if v, err = p.arg(e); err == nil {
				c.c.virtualHost.set(v)
			}
		case kind == SSLGet && name == "enable_sni":
			ch.EnableSNI, err = p.flag(e)
		case kind == MiscCheck && name == "misc_path":
			// keepalived.conf(5): a string or a quoted string; unquoted
			// spaces separate the script's parameters, so they are kept.
			var a []string
			if a, err = p.args(e, 1, -1); err == nil {
				ch.Misc.Command, c.misc = strings.Join(a, " "), true
			}
		case kind == MiscCheck && name == "misc_timeout":
			var v uint64
			// An <INTEGER> (keepalived --config-test refuses "2.5").
			if v, err = parseUintArg(p, e, 1, 1<<32-1); err == nil {
				ch.MiscTimeout = seconds(v)
			}
		case kind == MiscCheck && name == "misc_dynamic":
			ch.MiscDynamic, err = p.flag(e)
		case kind == MiscCheck && name == "user":
			var a []string
			if a, err = p.args(e, 1, 2); err == nil {
				ch.Misc.User = a[0]
				if len(a) == 2 {
					ch.Misc.Group = a[1]
				}
			}
		case kind == DNSCheck && name == "type":
			var v string
			if v, err = p.arg(e); err == nil {
				// keepalived.conf(5): A|NS|CNAME|SOA|MX|TXT|AAAA; keepalived
				// --config-test takes them in any case.
				switch v = strings.ToUpper(v); v {
				case "A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA":
					ch.DNSType = v
				default:
					return nil, errorf(e.pos(), "type: %q is not A, NS, CNAME, SOA, MX, TXT or AAAA", v)
				}
			}
		case kind == DNSCheck && name == "name":
			ch.DNSName, err = p.arg(e)
		default:
			// bind_if, fwmark, log_all_failures, http_protocol, regex, ...
			err = p.unknown(kind, e)
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case http && len(c.urls) == 0:
		return nil, errorf(s.pos(), "%s: no url", kind)
	case kind == MiscCheck && !c.misc:
		return nil, errorf(s.pos(), "%s: no misc_path", kind)
	}
	return c, nil
}

func (p *parser) addrArg(s stmt) (a netip.Addr, err error) {
	v, err := p.arg(s)
	if err != nil {
		return a, err
	}
	return parseAddr(s, v)
}

// url reads an HTTP_GET or SSL_GET url block.
func (p *parser) url(s stmt) (urlDraft, error) {
	var u urlDraft
	if err := needBlock(s); err != nil {
		return u, err
	}
	if len(s.args) > 0 {
		p.warn(s.pos(), fmt.Sprintf("url: extra argument %q ignored", s.args[0].text))
	}
	path := false
	for {
		e, ok, err := p.next(&s)
		if err != nil {
			return u, err
		}
		if !ok {
			break
		}
		switch e.name() {
		case "path":
			u.url.Path, err = p.arg(e)
			path = true
		case "digest":
			var v string
			if v, err = p.arg(e); err == nil {
				// genhash's MD5: keepalived --config-test wants 32 characters.
				if len(v) != 32 || strings.Trim(v, "0123456789abcdefABCDEF") != "" {
					return u, errorf(e.pos(), "digest: %q is not 32 hexadecimal digits (an MD5 sum)", v)
				}
				u.url.Digest = strings.ToLower(v)
			}
		case "status_code":
			var a []string
			if a, err = p.args(e, 1, -1); err == nil {
				for _, v := range a {
					r, err := parseCodes(e, v)
					if err != nil {
						return u, err
					}
					u.url.StatusCodes = append(u.url.StatusCodes, r)
				}
			}
		case "virtualhost":
			var v string
			if v, err = p.arg(e); err == nil {
				u.virtualHost.set(v)
			}
		default:
			// regex, regex_no_match, regex_options, ...
			err = p.unknown("url", e)
		}
		if err != nil {
			return u, err
		}
	}
	if !path {
		// keepalived --config-test: "url has no path - ignoring".
		return u, errorf(s.pos(), "url: no path")
	}
	return u, nil
}

// parseCodes reads a status_code: keepalived.conf(5), "status_code 200"
// or "status_code 200-299 400-499 503"; keepalived --config-test takes
// 100 to 599.
func parseCodes(s stmt, v string) (CodeRange, error) {
	lo, hi, isRange := strings.Cut(v, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := parseUint(s, lo, 100, 599)
	b, err2 := parseUint(s, hi, 100, 599)
	if err1 != nil || err2 != nil || b < a {
		return CodeRange{}, errorf(s.pos(), "status_code: %q is not a code or range of codes from 100 to 599", v)
	}
	return CodeRange{Min: int(a), Max: int(b)}, nil
}

// Checker defaults, keepalived.conf(5) unless said otherwise.
const (
	defaultDelayLoop      = 60 * time.Second // "60 seconds if not specified"
	defaultConnectTimeout = 5 * time.Second  // "The default is 5 seconds"
	defaultHTTPRetryDelay = 3 * time.Second  // delay_before_retry: "3 seconds for HTTP_GET and SSL_GET"
	defaultRetryDelay     = 1 * time.Second  // "... and 1 second otherwise"
	defaultDNSType        = "SOA"            // DNS_CHECK "The default is SOA"
	defaultDNSName        = "."              // "The default is . (dot)"
)

// defaultRetry is retry's default by checker: "Default: 1 unless specified
// below"; DNS_CHECK "The retry default is 3", MISC_CHECK "... is 0".
func defaultRetry(kind string) int {
	switch kind {
	case DNSCheck:
		return 3
	case MiscCheck:
		return 0
	}
	return 1
}

// defaultStatusCodes is a url's status_code when none is given: "Default
// is 200-299".
var defaultStatusCodes = []CodeRange{{200, 299}}

// resolve fills in c's settings from its own, its real server's (r), its
// virtual server's (v) and the defaults.
func (c *checkerDraft) resolve(r, v *common, rs *RealServer) error {
	ch := c.ch
	ch.DelayLoop = pick(defaultDelayLoop, c.c.delayLoop, r.delayLoop, v.delayLoop)
	ch.ConnectTimeout = pick(defaultConnectTimeout, c.c.connectTimeout, r.connectTimeout, v.connectTimeout)
	ch.Retry = pick(defaultRetry(ch.Kind), c.c.retry, r.retry, v.retry)
	retryDelay := defaultRetryDelay
	switch ch.Kind {
	case DNSCheck:
		retryDelay = ch.DelayLoop // "Defaults to delay_loop for DNS_CHECK"
	case HTTPGet, SSLGet:
		retryDelay = defaultHTTPRetryDelay
	}
	ch.DelayBeforeRetry = pick(retryDelay, c.c.delayBeforeRetry, r.delayBeforeRetry, v.delayBeforeRetry)
	// warmup: "Enabled by default, with the maximum at delay_loop".
	ch.Warmup = pick(ch.DelayLoop, c.c.warmup, r.warmup, v.warmup)
	ch.Alpha = pick(false, c.c.alpha, r.alpha, v.alpha)
	if ch.Kind != MiscCheck {
		// connect_ip, connect_port: "The default is the realserver IP/port".
		if !ch.ConnectIP.IsValid() {
			ch.ConnectIP = rs.Addr.Addr()
		}
		if !c.connectPort {
			ch.ConnectPort = rs.Addr.Port()
		}
	}
	if ch.Kind == HTTPGet || ch.Kind == SSLGet {
		ch.VirtualHost = pick("", c.c.virtualHost, r.virtualHost, v.virtualHost)
		for _, u := range c.urls {
			u.url.VirtualHost = pick(ch.VirtualHost, u.virtualHost)
			if len(u.url.StatusCodes) == 0 {
				u.url.StatusCodes = slices.Clone(defaultStatusCodes)
			}
			ch.URLs = append(ch.URLs, u.url)
		}
	}
	if ch.Kind == MiscCheck && ch.MiscTimeout == 0 {
		// keepalived's ChangeLog, where misc_timeout came in: "default is
		// delay_loop".
		ch.MiscTimeout = ch.DelayLoop
	}
	if ch.Kind == DNSCheck {
		if ch.DNSType == "" {
			ch.DNSType = defaultDNSType
		}
		if ch.DNSName == "" {
			ch.DNSName = defaultDNSName
		}
	}
	if ch.BindTo.IsValid() && ch.BindTo.Is4() != ch.ConnectIP.Is4() {
		// keepalived --config-test: "bindto address ... does not match
		// address family of connect_ip".
		return errorf(ch.Pos, "%s: bindto %s and the address checked, %s, differ in address family", ch.Kind, ch.BindTo, ch.ConnectIP)
	}
	return nil
}
