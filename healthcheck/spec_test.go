package healthcheck

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKind(t *testing.T) {
	for _, k := range []Kind{TCPCheck, HTTPGet, SSLGet, MiscCheck, DNSCheck} {
		got, ok := ParseKind(k.String())
		if !ok || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), got, ok)
		}
	}
	if _, ok := ParseKind("SMTP_CHECK"); ok {
		t.Error("SMTP_CHECK parsed")
	}
	if s := Kind(0).String(); s != "Kind(0)" {
		t.Errorf("Kind(0) = %q", s)
	}
}

func TestDefaults(t *testing.T) {
	for _, c := range []struct {
		kind       Kind
		delayLoop  time.Duration
		retry      int
		beforeRtry time.Duration
	}{
		{TCPCheck, 0, 1, time.Second},
		{HTTPGet, 6 * time.Second, 1, 3 * time.Second},
		{SSLGet, 6 * time.Second, 1, 3 * time.Second},
		{DNSCheck, 6 * time.Second, 3, 6 * time.Second},
		{MiscCheck, 6 * time.Second, 0, time.Second},
	} {
		s := Defaults(c.kind, c.delayLoop)
		loop := c.delayLoop
		if loop == 0 {
			loop = 60 * time.Second
		}
		if s.Kind != c.kind || s.Retry != c.retry || s.DelayBeforeRetry != c.beforeRtry ||
			s.DelayLoop != loop || s.Warmup != loop || s.ConnectTimeout != 5*time.Second {
			t.Errorf("Defaults(%v, %v) = %+v", c.kind, c.delayLoop, s)
		}
	}
	if s := Defaults(SSLGet, 0); !s.TLS {
		t.Error("SSL_GET without TLS")
	}
	if s := Defaults(DNSCheck, 0); s.DNSType != "SOA" || s.DNSName != "." {
		t.Errorf("DNS_CHECK defaults %q %q", s.DNSType, s.DNSName)
	}
	if s := Defaults(MiscCheck, 7*time.Second); s.MiscTimeout != 7*time.Second {
		t.Errorf("misc_timeout default %v", s.MiscTimeout)
	}
	// The zero values of a Spec that stand for defaults.
	n := Spec{Kind: MiscCheck, Retry: -1, Warmup: -1}.normal()
	if n.DelayLoop != DefaultDelayLoop || n.ConnectTimeout != DefaultConnectTimeout || n.MiscTimeout != DefaultDelayLoop ||
		n.Retry != 0 || n.Warmup != 0 {
		t.Errorf("normal() = %+v", n)
	}
}

func TestValidate(t *testing.T) {
	good := []Spec{
		{Kind: TCPCheck, Addr: ap(srvIP, 80)},
		{Kind: TCPCheck, Addr: ap(srvIP6, 80), BindTo: mustAddr("2001:2::1")},
		{Kind: HTTPGet, Addr: ap(srvIP, 80), URLs: []URL{{Path: "/", Digest: md5hex(""), StatusCodes: []StatusRange{{200, 299}, {503, 503}}}}},
		{Kind: MiscCheck, MiscPath: "/bin/true"},
		{Kind: DNSCheck, Addr: ap(srvIP, 53)},
		{Kind: DNSCheck, Addr: ap(srvIP, 53), DNSType: "aaaa", DNSName: "example.org"},
	}
	for _, s := range good {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	for _, c := range []struct {
		spec Spec
		err  string
	}{
		{Spec{}, "unknown checker"},
		{Spec{Kind: TCPCheck}, "no address"},
		{Spec{Kind: TCPCheck, Addr: ap(srvIP, 0)}, "no address"},
		{Spec{Kind: TCPCheck, Addr: ap(srvIP, 80), BindTo: mustAddr("2001:2::1")}, "different families"},
		{Spec{Kind: SSLGet, Addr: ap(srvIP, 443)}, "SSL_GET: no url"},
		{Spec{Kind: HTTPGet, Addr: ap(srvIP, 80), URLs: []URL{{Path: "index.html"}}}, "does not start with /"},
		{Spec{Kind: HTTPGet, Addr: ap(srvIP, 80), URLs: []URL{{Path: "/", Digest: "abc"}}}, "not 32 hex digits"},
		{Spec{Kind: HTTPGet, Addr: ap(srvIP, 80), URLs: []URL{{Path: "/", StatusCodes: []StatusRange{{299, 200}}}}}, "not within 100-599"},
		{Spec{Kind: HTTPGet, Addr: ap(srvIP, 80), URLs: []URL{{Path: "/", StatusCodes: []StatusRange{{600, 600}}}}}, "not within 100-599"},
		{Spec{Kind: MiscCheck, MiscPath: "  "}, "no misc_path"},
		{Spec{Kind: DNSCheck, Addr: ap(srvIP, 53), DNSType: "HINFO"}, "unknown type"},
		{Spec{Kind: DNSCheck, Addr: ap(srvIP, 53), DNSName: strings.Repeat("a", 64) + ".org"}, "DNS_CHECK: name"},
	} {
		err := c.spec.Validate()
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v: %v, want %q", c.spec, err, c.err)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"/bin/check", []string{"/bin/check"}},
		{"/bin/check a  b\tc", []string{"/bin/check", "a", "b", "c"}},
		{"/bin/check 'a b' c", []string{"/bin/check", "a b", "c"}},
		{"/bin/check x'a b'y", []string{"/bin/check", "xa by"}},
		{"/bin/check ''", []string{"/bin/check", ""}},
		{`/bin/check "a b"`, []string{"/bin/check", `"a`, `b"`}},
	} {
		if got := SplitArgs(c.in); !slices.Equal(got, c.want) {
			t.Errorf("SplitArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestSpecEqual(t *testing.T) {
	a := Spec{Kind: HTTPGet, Addr: ap(srvIP, 80), URLs: []URL{{Path: "/", StatusCodes: []StatusRange{{200, 200}}}}}
	b := a
	b.URLs = []URL{{Path: "/", StatusCodes: []StatusRange{{200, 200}}}}
	if !a.equal(&b) {
		t.Error("copies differ")
	}
	b.URLs[0].StatusCodes = []StatusRange{{200, 201}}
	if a.equal(&b) {
		t.Error("status codes not compared")
	}
	c := a
	c.Retry = 2
	if a.equal(&c) {
		t.Error("retry not compared")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
