package healthcheck

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Kind is the type of a checker, named as its keepalived.conf block.
type Kind uint8

const (
	TCPCheck  Kind = iota + 1 // TCP_CHECK: a TCP connection is made
	HTTPGet                   // HTTP_GET: the urls are fetched
	SSLGet                    // SSL_GET: HTTP_GET over TLS
	MiscCheck                 // MISC_CHECK: a program is run
	DNSCheck                  // DNS_CHECK: a query is answered over UDP
)

var kindNames = [...]string{TCPCheck: "TCP_CHECK", HTTPGet: "HTTP_GET", SSLGet: "SSL_GET", MiscCheck: "MISC_CHECK", DNSCheck: "DNS_CHECK"}

// String is the keepalived.conf name of the checker, e.g. "TCP_CHECK".
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ParseKind returns the Kind of a keepalived.conf checker block name.
func ParseKind(name string) (Kind, bool) {
	for k, n := range kindNames {
		if n != "" && n == name {
			return Kind(k), true
		}
	}
	return 0, false
}

// Defaults of keepalived.conf(5) (keepalived 2.2.7), for the virtual_server,
// real_server and checker options that a configuration leaves out.
const (
	DefaultDelayLoop      = 60 * time.Second // "delay_loop … (60 seconds if not specified)"
	DefaultConnectTimeout = 5 * time.Second  // "connect_timeout … The default is 5 seconds"
	DefaultDNSType        = "SOA"            // DNS_CHECK "type … The default is SOA"
	DefaultDNSName        = "."              // DNS_CHECK "name … The default is . (dot)"
)

// MaxBody is how much of a response body HTTP_GET and SSL_GET read. A url
// with a digest whose body is longer fails: its MD5 cannot be taken.
const MaxBody = 1 << 20

// StatusRange is an inclusive range of HTTP status codes; one code is a
// range with Lo == Hi. keepalived's "status_code 200-299 400-499 503 505" is
// four ranges.
type StatusRange struct{ Lo, Hi int }

// defaultStatus is what a url without status_code accepts: "Default is
// 200-299" (keepalived.conf(5)).
var defaultStatus = []StatusRange{{200, 299}}

// URL is one url block of HTTP_GET or SSL_GET.
type URL struct {
	Path        string        // path and query, e.g. "/" or "/health?full=1"
	StatusCodes []StatusRange // accepted status codes; nil means 200-299
	Digest      string        // MD5 of the body as 32 hex digits (genhash's); "" is not checked
	VirtualHost string        // Host header for this url; "" takes Spec.VirtualHost
}

// Spec is one checker of a real server, with the values in force: the
// keepalived.conf parser starts from Defaults and overrides what the
// configuration sets. A zero ConnectTimeout or DelayLoop takes the
// keepalived default, a zero MiscTimeout takes DelayLoop, an empty DNSType
// or DNSName takes "SOA" or "."; every other field is taken as it is (a zero
// Retry is no retry, a zero Warmup is no warmup).
type Spec struct {
	Kind             Kind
	Addr             netip.AddrPort // where to check: connect_ip and connect_port, else the real server's
	BindTo           netip.Addr     // bindto: source address, unset for the system's choice
	ConnectTimeout   time.Duration  // connect_timeout: the time one attempt may take (per url for HTTP)
	DelayBeforeRetry time.Duration  // delay_before_retry
	DelayLoop        time.Duration  // delay_loop: the checker's own, else the real or virtual server's
	Warmup           time.Duration  // warmup: the first attempt is delayed by a random time up to it
	Retry            int            // retry: further attempts before an up checker is declared down
	URLs             []URL          // HTTP_GET, SSL_GET: every url must pass
	VirtualHost      string         // HTTP_GET, SSL_GET: Host header of urls without their own
	TLS              bool           // HTTP_GET over TLS; implied by SSLGet
	EnableSNI        bool           // SSL_GET enable_sni: send the virtualhost as SNI
	MiscPath         string         // MISC_CHECK misc_path: program and arguments
	MiscTimeout      time.Duration  // MISC_CHECK misc_timeout
	MiscDynamic      bool           // MISC_CHECK misc_dynamic: exit status 2-255 sets the weight
	DNSType          string         // DNS_CHECK type: A, NS, CNAME, SOA, MX, TXT, AAAA, RRSIG, DNSKEY
	DNSName          string         // DNS_CHECK name
}

// Defaults returns the Spec that keepalived.conf(5) gives a checker of kind
// k whose delay_loop (its own, else the real or virtual server's) is
// delayLoop, 0 meaning DefaultDelayLoop:
//
//   - connect_timeout 5 s;
//   - retry 1, but 3 for DNS_CHECK and 0 for MISC_CHECK ("Default: 1
//     unless specified below", "The retry default is 3.", "The retry
//     default is 0.");
//   - delay_before_retry 3 s for HTTP_GET and SSL_GET, delay_loop for
//     DNS_CHECK, 1 s otherwise;
//   - warmup = delay_loop ("Enabled by default, with the maximum at
//     delay_loop. Specify 0 to disable");
//   - misc_timeout = delay_loop (keepalived 1.1.0's ChangeLog, where the
//     keyword was added: "default is delay_loop");
//   - DNS type SOA, name ".".
//
// The caller sets Addr (and the rest of what the configuration says).
func Defaults(k Kind, delayLoop time.Duration) Spec {
	if delayLoop <= 0 {
		delayLoop = DefaultDelayLoop
	}
	s := Spec{
		Kind:             k,
		ConnectTimeout:   DefaultConnectTimeout,
		DelayLoop:        delayLoop,
		Warmup:           delayLoop,
		Retry:            1,
		DelayBeforeRetry: time.Second,
	}
	switch k {
	case HTTPGet, SSLGet:
		s.DelayBeforeRetry = 3 * time.Second
		s.TLS = k == SSLGet
	case DNSCheck:
		s.Retry = 3
		s.DelayBeforeRetry = delayLoop
		s.DNSType, s.DNSName = DefaultDNSType, DefaultDNSName
	case MiscCheck:
		s.Retry = 0
		s.MiscTimeout = delayLoop
	}
	return s
}

// normal returns s with the zero values that stand for defaults filled in
// and negative values made zero: the form the checkers and the monitor use.
func (s Spec) normal() Spec {
	if s.DelayLoop <= 0 {
		s.DelayLoop = DefaultDelayLoop
	}
	if s.ConnectTimeout <= 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
	if s.MiscTimeout <= 0 {
		s.MiscTimeout = s.DelayLoop
	}
	s.Retry = max(s.Retry, 0)
	s.DelayBeforeRetry = max(s.DelayBeforeRetry, 0)
	s.Warmup = max(s.Warmup, 0)
	if s.DNSType == "" {
		s.DNSType = DefaultDNSType
	}
	if s.DNSName == "" {
		s.DNSName = DefaultDNSName
	}
	if s.Kind == SSLGet {
		s.TLS = true
	}
	return s
}

// name is the checker's name in logs and the checker label: SSL_GET for an
// HTTP_GET over TLS.
func (s *Spec) name() string {
	if s.Kind == HTTPGet && s.TLS {
		return SSLGet.String()
	}
	return s.Kind.String()
}

// equal reports whether a and b are the same checker.
func (a *Spec) equal(b *Spec) bool {
	if a.Kind != b.Kind || a.Addr != b.Addr || a.BindTo != b.BindTo ||
		a.ConnectTimeout != b.ConnectTimeout || a.DelayBeforeRetry != b.DelayBeforeRetry ||
		a.DelayLoop != b.DelayLoop || a.Warmup != b.Warmup || a.Retry != b.Retry ||
		a.VirtualHost != b.VirtualHost || a.TLS != b.TLS || a.EnableSNI != b.EnableSNI ||
		a.MiscPath != b.MiscPath || a.MiscTimeout != b.MiscTimeout || a.MiscDynamic != b.MiscDynamic ||
		a.DNSType != b.DNSType || a.DNSName != b.DNSName {
		return false
	}
	return slices.EqualFunc(a.URLs, b.URLs, func(x, y URL) bool {
		return x.Path == y.Path && x.Digest == y.Digest && x.VirtualHost == y.VirtualHost &&
			slices.Equal(x.StatusCodes, y.StatusCodes)
	})
}

// Validate reports what in s keeps it from being checked: a missing address
// or url, a malformed digest or status range, an unknown DNS type. A Spec
// that does not validate still runs: its attempts fail with the same error.
func (s Spec) Validate() error {
	s = s.normal()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch s.Kind {
	case TCPCheck, HTTPGet, SSLGet, DNSCheck:
		if !s.Addr.Addr().IsValid() || s.Addr.Port() == 0 {
			bad("%s: no address and port to check (connect_ip, connect_port)", s.name())
		}
		if s.BindTo.IsValid() && s.Addr.Addr().IsValid() && s.BindTo.Unmap().Is4() != s.Addr.Addr().Unmap().Is4() {
			bad("%s: bindto %s and %s are of different families", s.name(), s.BindTo, s.Addr.Addr())
		}
	case MiscCheck:
		if len(SplitArgs(s.MiscPath)) == 0 {
			bad("MISC_CHECK: no misc_path")
		}
	default:
		bad("unknown checker %v", s.Kind)
	}
	switch s.Kind {
	case HTTPGet, SSLGet:
		if len(s.URLs) == 0 {
			bad("%s: no url", s.name())
		}
		for _, u := range s.URLs {
			if err := u.validate(); err != nil {
				bad("%s: %w", s.name(), err)
			}
		}
	case DNSCheck:
		if _, ok := dnsType(s.DNSType); !ok {
			bad("DNS_CHECK: unknown type %q", s.DNSType)
		}
		if _, err := dnsName(s.DNSName); err != nil {
			bad("DNS_CHECK: %w", err)
		}
	}
	return errors.Join(errs...)
}

func (u *URL) validate() error {
	if !strings.HasPrefix(u.Path, "/") {
		return fmt.Errorf("url path %q does not start with /", u.Path)
	}
	if u.Digest != "" {
		if b, err := hex.DecodeString(u.Digest); err != nil || len(b) != 16 {
			return fmt.Errorf("url %s: digest %q is not 32 hex digits", u.Path, u.Digest)
		}
	}
	for _, r := range u.StatusCodes {
		// "Under normal circumstances, status_code returns 100-599"
		// (keepalived 2.0.17's ChangeLog).
		if r.Lo < 100 || r.Hi > 599 || r.Lo > r.Hi {
			return fmt.Errorf("url %s: status_code %d-%d is not within 100-599", u.Path, r.Lo, r.Hi)
		}
	}
	return nil
}

// accepts reports whether status code c passes the url.
func (u *URL) accepts(c int) bool {
	codes := u.StatusCodes
	if len(codes) == 0 {
		codes = defaultStatus
	}
	for _, r := range codes {
		if r.Lo <= c && c <= r.Hi {
			return true
		}
	}
	return false
}

func formatStatus(codes []StatusRange) string {
	if len(codes) == 0 {
		codes = defaultStatus
	}
	var b strings.Builder
	for i, r := range codes {
		if i > 0 {
			b.WriteByte(' ')
		}
		if r.Lo == r.Hi {
			fmt.Fprint(&b, r.Lo)
		} else {
			fmt.Fprintf(&b, "%d-%d", r.Lo, r.Hi)
		}
	}
	return b.String()
}
