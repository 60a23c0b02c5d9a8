package keepalived

import (
	"errors"
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"uvs/service"
)

// parseFiles parses keepalived.conf from an in-memory tree of files.
func parseFiles(files map[string]string) (*File, []Warning, error) {
	fsys := fstest.MapFS{}
	for name, text := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(text)}
	}
	return ParseFS(fsys, "keepalived.conf")
}

// vs wraps body in a TCP NAT virtual server with one real server line
// given by the caller: line 1 is "virtual_server", body starts on line 5.
func vs(body string) string {
	return "virtual_server 198.18.0.1 80 {\n protocol TCP\n lvs_sched rr\n lvs_method NAT\n" + body + "\n}\n"
}

// rs wraps body in a real server of vs: body starts on line 6.
func rs(body string) string {
	return vs("real_server 198.18.1.2 80 {\n" + body + "\n}")
}

func mustParse(t *testing.T, conf string) (*File, []Warning) {
	t.Helper()
	f, w, err := parseFiles(map[string]string{"keepalived.conf": conf})
	if err != nil {
		t.Fatalf("parse:\n%s\nerror: %v", conf, err)
	}
	return f, w
}

func first(f *File) *VirtualServer { return f.VirtualServers[0] }
func real0(f *File) *RealServer    { return first(f).Reals[0] }
func check0(f *File) *Checker      { return real0(f).Checkers[0] }

// TestKeywords reads each keyword, and each default keepalived documents,
// into the model.
func TestKeywords(t *testing.T) {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	tests := []struct {
		name string
		conf string
		got  func(*File) any
		want any
	}{
		// The virtual server line.
		{"address and port", vs(""), func(f *File) any { return first(f).Addr }, netip.MustParseAddrPort("198.18.0.1:80")},
		{"IPv6 address", "virtual_server 2001:2::1 443 {\nprotocol TCP\n}", func(f *File) any { return []any{first(f).Addr, first(f).IPv6} }, []any{netip.MustParseAddrPort("[2001:2::1]:443"), true}},
		{"fwmark", "virtual_server fwmark 7 {\n}", func(f *File) any { return []any{first(f).FWMark, first(f).Protocol, first(f).IPv6} }, []any{uint32(7), uint8(0), false}},
		{"fwmark ip_family inet6", "virtual_server fwmark 7 {\nip_family inet6\n}", func(f *File) any { return first(f).IPv6 }, true},
		{"fwmark family from its servers", "virtual_server fwmark 7 {\nlvs_method DR\nreal_server 2001:2::5 { }\n}", func(f *File) any { return first(f).IPv6 }, true},
		{"fwmark family from tunnelled servers", "virtual_server fwmark 7 {\nlvs_method TUN\nreal_server 2001:2::5 { }\n}", func(f *File) any { return first(f).IPv6 }, true},
		{"group", "virtual_server_group G {\n198.18.0.1 80\n}\nvirtual_server group G {\nprotocol TCP\n}", func(f *File) any { return first(f).Group }, "G"},

		// Scheduling.
		{"lvs_sched", vs(""), func(f *File) any { return first(f).Sched }, "rr"},
		{"lb_algo", "virtual_server 198.18.0.1 80 {\nprotocol TCP\nlb_algo sh\n}", func(f *File) any { return first(f).Sched }, "sh"},
		{"scheduler default wlc", "virtual_server 198.18.0.1 80 {\nprotocol TCP\n}", func(f *File) any { return first(f).Sched }, "wlc"},
		{"sh-port", "virtual_server 198.18.0.1 80 {\nprotocol TCP\nlvs_sched sh\nsh-port\nsh-fallback\n}", func(f *File) any { return first(f).SchedFlags }, service.SchedSHPort | service.SchedSHFallback},
		{"mh-port", "virtual_server 198.18.0.1 80 {\nprotocol TCP\nlvs_sched mh\nmh-port\n}", func(f *File) any { return first(f).SchedFlags }, service.SchedMHPort},
		{"flag-1 for mh", "virtual_server 198.18.0.1 80 {\nprotocol TCP\nlvs_sched mh\nflag-1\n}", func(f *File) any { return first(f).SchedFlags }, service.SchedMHFallback},
		{"ops", "virtual_server 198.18.0.1 53 {\nprotocol UDP\nops\n}", func(f *File) any { return first(f).OnePacket }, true},
		{"ops on fwmark", "virtual_server fwmark 1 {\nops\n}", func(f *File) any { return first(f).OnePacket }, true},

		// Forwarding.
		{"method default NAT", "virtual_server 198.18.0.1 80 {\nprotocol TCP\n}", func(f *File) any { return first(f).Method }, service.FwdMasq},
		{"lvs_method DR", vs("lvs_method DR"), func(f *File) any { return first(f).Method }, service.FwdRoute},
		{"lb_kind TUN", vs("lb_kind TUN"), func(f *File) any { return []any{first(f).Method, first(f).Tunnel} }, []any{service.FwdTunnel, Tunnel{Type: "ipip"}}},
		{"TUN type gue", vs("lvs_method TUN type gue port 6080 remcsum"), func(f *File) any { return first(f).Tunnel }, Tunnel{Type: "gue", Port: 6080, Csum: "remcsum"}},
		{"TUN type gre", vs("lvs_method TUN type gre"), func(f *File) any { return first(f).Tunnel }, Tunnel{Type: "gre", Csum: "nocsum"}},
		{"real server inherits the method", vs("lvs_method DR\nreal_server 198.18.1.2 80 { }"), func(f *File) any { return real0(f).Method }, service.FwdRoute},
		{"real server lvs_method", vs("real_server 198.18.1.2 80 {\nlvs_method TUN type gue port 5555\n}"), func(f *File) any { return []any{real0(f).Method, real0(f).Tunnel} }, []any{service.FwdTunnel, Tunnel{Type: "gue", Port: 5555, Csum: "nocsum"}}},

		// Persistence.
		{"not persistent", vs(""), func(f *File) any { return []any{first(f).Persistent, first(f).Timeout, first(f).Granularity} }, []any{false, time.Duration(0), -1}},
		{"persistence_timeout bare is 360", vs("persistence_timeout"), func(f *File) any { return []any{first(f).Persistent, first(f).Timeout} }, []any{true, 360 * time.Second}},
		{"persistence_timeout", vs("persistence_timeout 1800"), func(f *File) any { return first(f).Timeout }, 1800 * time.Second},
		{"granularity implies persistence", vs("persistence_granularity 0xffffff00"), func(f *File) any { return []any{first(f).Persistent, first(f).Timeout, first(f).Granularity} }, []any{true, 360 * time.Second, 24}},
		{"granularity as inet_aton reads it", vs("persistence_granularity 24"), func(f *File) any { return first(f).Granularity }, service.Netmask4(24)},
		{"granularity not a prefix", vs("persistence_granularity 0xffff00ff"), func(f *File) any { return first(f).Granularity }, service.RawMask4 | 0xffff00ff},
		{"IPv6 granularity", "virtual_server 2001:2::1 80 {\nprotocol TCP\npersistence_granularity 64\n}", func(f *File) any { return first(f).Granularity }, 64},
		{"fwmark granularity without a dot is IPv6", "virtual_server fwmark 3 {\npersistence_granularity 48\n}", func(f *File) any { return []any{first(f).IPv6, first(f).Granularity} }, []any{true, 48}},
		{"persistence_engine", vs("persistence_timeout\npersistence_engine sip"), func(f *File) any { return first(f).PE }, "sip"},

		// Protocol.
		{"protocol TCP", vs(""), func(f *File) any { return first(f).Protocol }, service.TCP},
		{"protocol udp", "virtual_server 198.18.0.1 53 {\nprotocol udp\n}", func(f *File) any { return first(f).Protocol }, service.UDP},
		{"protocol default UDP", "virtual_server 198.18.0.1 53 {\n}", func(f *File) any { return first(f).Protocol }, service.UDP},

		// Health-check control.
		{"delay_loop default", vs(""), func(f *File) any { return first(f).DelayLoop }, 60 * time.Second},
		{"delay_loop fractional", vs("delay_loop 0.25"), func(f *File) any { return first(f).DelayLoop }, 250 * time.Millisecond},
		{"delay_loop .5", vs("delay_loop .5"), func(f *File) any { return first(f).DelayLoop }, 500 * time.Millisecond},
		{"delay_loop micro-seconds", vs("delay_loop 0.000001"), func(f *File) any { return first(f).DelayLoop }, time.Microsecond},
		{"quorum default", vs(""), func(f *File) any { return []any{first(f).Quorum, first(f).Hysteresis} }, []any{1, 0}},
		{"quorum hysteresis", vs("quorum 3\nhysteresis 1\nreal_server 198.18.1.2 80 {\nweight 5\n}"), func(f *File) any { return []any{first(f).Quorum, first(f).Hysteresis} }, []any{3, 1}},
		{"quorum_up", vs(`quorum_up "/usr/local/bin/up --now" root wheel`), func(f *File) any { return first(f).QuorumUp }, Script{Command: "/usr/local/bin/up --now", User: "root", Group: "wheel"}},
		{"quorum_down", vs("quorum_down /bin/down"), func(f *File) any { return first(f).QuorumDown }, Script{Command: "/bin/down"}},
		{"alpha omega", vs("alpha\nomega"), func(f *File) any { return []any{first(f).Alpha, first(f).Omega} }, []any{true, true}},
		{"omega off", vs("omega off"), func(f *File) any { return first(f).Omega }, false},
		{"virtualhost", vs("virtualhost www.example.com"), func(f *File) any { return first(f).VirtualHost }, "www.example.com"},

		// Sorry server.
		{"sorry_server", vs("sorry_server 198.18.1.9 8080"), func(f *File) any { return *first(f).Sorry }, RealServer{Pos: Pos{"keepalived.conf", 5}, Addr: netip.MustParseAddrPort("198.18.1.9:8080"), Weight: 1, Method: service.FwdMasq}},
		{"sorry_server port is the service's", vs("sorry_server 198.18.1.9"), func(f *File) any { return first(f).Sorry.Addr }, netip.MustParseAddrPort("198.18.1.9:80")},
		{"sorry_server_inhibit", vs("sorry_server_inhibit\nsorry_server 198.18.1.9 80\nsorry_server_lvs_method DR"), func(f *File) any { return []any{first(f).Sorry.InhibitOnFailure, first(f).Sorry.Method} }, []any{true, service.FwdRoute}},
		{"no sorry server", vs(""), func(f *File) any { return first(f).Sorry == nil }, true},

		// Real servers.
		{"weight default 1", rs(""), func(f *File) any { return real0(f).Weight }, 1},
		{"weight", rs("weight 250"), func(f *File) any { return real0(f).Weight }, 250},
		{"weight 0", rs("weight 0"), func(f *File) any { return real0(f).Weight }, 0},
		{"thresholds", rs("uthreshold 100\nlthreshold 50"), func(f *File) any { return []uint32{real0(f).UThreshold, real0(f).LThreshold} }, []uint32{100, 50}},
		{"notify", rs("notify_up \"/bin/up a b\"\nnotify_down /bin/down nobody"), func(f *File) any { return []Script{real0(f).NotifyUp, real0(f).NotifyDown} }, []Script{{Command: "/bin/up a b"}, {Command: "/bin/down", User: "nobody"}}},
		{"real server port is the service's", vs("real_server 198.18.1.2 { }"), func(f *File) any { return real0(f).Addr }, netip.MustParseAddrPort("198.18.1.2:80")},
		{"NAT server keeps its port", vs("real_server 198.18.1.2 8080 { }"), func(f *File) any { return real0(f).Addr }, netip.MustParseAddrPort("198.18.1.2:8080")},
		{"fwmark real server without port", "virtual_server fwmark 1 {\nreal_server 198.18.1.2 { }\n}", func(f *File) any { return real0(f).Addr }, netip.MustParseAddrPort("198.18.1.2:0")},
		{"inhibit_on_failure inherited", vs("inhibit_on_failure\nreal_server 198.18.1.2 80 { }"), func(f *File) any { return []bool{first(f).InhibitOnFailure, real0(f).InhibitOnFailure} }, []bool{true, true}},
		{"inhibit_on_failure overridden", vs("inhibit_on_failure\nreal_server 198.18.1.2 80 {\ninhibit_on_failure no\n}"), func(f *File) any { return real0(f).InhibitOnFailure }, false},
		{"inhibit_on_failure on a real server", rs("inhibit_on_failure"), func(f *File) any { return real0(f).InhibitOnFailure }, true},
		{"alpha inherited", vs("alpha\nreal_server 198.18.1.2 80 {\nTCP_CHECK {\n}\n}"), func(f *File) any { return []bool{real0(f).Alpha, check0(f).Alpha} }, []bool{true, true}},
		{"alpha on a checker", rs("TCP_CHECK {\nalpha yes\n}"), func(f *File) any { return []bool{real0(f).Alpha, check0(f).Alpha} }, []bool{false, true}},

		// Checkers: the common options and their defaults.
		{"TCP_CHECK defaults", rs("TCP_CHECK {\n}"), func(f *File) any { return *check0(f) }, Checker{
			Pos: Pos{"keepalived.conf", 6}, Kind: TCPCheck,
			ConnectIP: netip.MustParseAddr("198.18.1.2"), ConnectPort: 80,
			ConnectTimeout: 5 * time.Second, Retry: 1, DelayBeforeRetry: time.Second,
			Warmup: 60 * time.Second, DelayLoop: 60 * time.Second,
		}},
		{"TCP_CHECK options", rs("TCP_CHECK {\nconnect_ip 198.18.3.2\nconnect_port 8080\nbindto 198.18.0.9\nbind_port 4000\nconnect_timeout 2.5\nretry 4\ndelay_before_retry 0.5\nwarmup 0\ndelay_loop 3\n}"), func(f *File) any { return *check0(f) }, Checker{
			Pos: Pos{"keepalived.conf", 6}, Kind: TCPCheck,
			ConnectIP: netip.MustParseAddr("198.18.3.2"), ConnectPort: 8080,
			BindTo: netip.MustParseAddr("198.18.0.9"), BindPort: 4000,
			ConnectTimeout: sec(2.5), Retry: 4, DelayBeforeRetry: sec(0.5),
			Warmup: 0, DelayLoop: 3 * time.Second,
		}},
		{"checker inherits from the virtual server", vs("delay_loop 10\nconnect_timeout 3\nretry 2\ndelay_before_retry 4\nwarmup 1\nreal_server 198.18.1.2 80 {\nTCP_CHECK {\n}\n}"), func(f *File) any {
			c := check0(f)
			return []any{c.DelayLoop, c.ConnectTimeout, c.Retry, c.DelayBeforeRetry, c.Warmup}
		}, []any{10 * time.Second, 3 * time.Second, 2, 4 * time.Second, time.Second}},
		{"real server settings override the virtual server's", vs("connect_timeout 3\nretry 2\nreal_server 198.18.1.2 80 {\nconnect_timeout 4\nretry 5\nTCP_CHECK {\nretry 6\n}\n}"), func(f *File) any {
			c := check0(f)
			return []any{c.ConnectTimeout, c.Retry}
		}, []any{4 * time.Second, 6}},
		{"warmup defaults to delay_loop", rs("delay_loop 7\nTCP_CHECK {\n}"), func(f *File) any { return check0(f).Warmup }, 7 * time.Second},
		{"checker retry 0", rs("TCP_CHECK {\nretry 0\n}"), func(f *File) any { return check0(f).Retry }, 0},

		// HTTP_GET and SSL_GET.
		{"HTTP_GET defaults", rs("HTTP_GET {\nurl {\npath /\n}\n}"), func(f *File) any {
			c := check0(f)
			return []any{c.Retry, c.DelayBeforeRetry, c.URLs}
		}, []any{1, 3 * time.Second, []URL{{Path: "/", StatusCodes: []CodeRange{{200, 299}}}}}},
		{"url options", rs("HTTP_GET {\nurl {\npath /a\ndigest 9B3A0C85A887A256D6939DA88AABD8CD\nstatus_code 200 301-302\nstatus_code 404\nvirtualhost a.example.com\n}\nurl {\npath /b\n}\nvirtualhost b.example.com\n}"), func(f *File) any { return []any{check0(f).VirtualHost, check0(f).URLs} }, []any{"b.example.com", []URL{
			{Path: "/a", Digest: "9b3a0c85a887a256d6939da88aabd8cd", StatusCodes: []CodeRange{{200, 200}, {301, 302}, {404, 404}}, VirtualHost: "a.example.com"},
			{Path: "/b", StatusCodes: []CodeRange{{200, 299}}, VirtualHost: "b.example.com"},
		}}},
		{"virtualhost from the real server", vs("virtualhost v.example.com\nreal_server 198.18.1.2 80 {\nvirtualhost r.example.com\nSSL_GET {\nurl {\npath /\n}\n}\n}"), func(f *File) any { return []string{check0(f).VirtualHost, check0(f).URLs[0].VirtualHost} }, []string{"r.example.com", "r.example.com"}},
		{"virtualhost from the virtual server", vs("virtualhost v.example.com\nreal_server 198.18.1.2 80 {\nHTTP_GET {\nurl {\npath /\n}\n}\n}"), func(f *File) any { return check0(f).VirtualHost }, "v.example.com"},
		{"nb_get_retry", rs("HTTP_GET {\nurl {\npath /\n}\nnb_get_retry 4\n}"), func(f *File) any { return check0(f).Retry }, 4},
		{"SSL_GET enable_sni", rs("SSL_GET {\nurl {\npath /\n}\nenable_sni\n}"), func(f *File) any { return []any{check0(f).Kind, check0(f).EnableSNI} }, []any{SSLGet, true}},

		// MISC_CHECK.
		{"MISC_CHECK defaults", rs("delay_loop 20\nMISC_CHECK {\nmisc_path /bin/true\n}"), func(f *File) any {
			c := check0(f)
			return []any{c.Misc, c.MiscTimeout, c.MiscDynamic, c.Retry, c.DelayBeforeRetry, c.ConnectIP.IsValid()}
		}, []any{Script{Command: "/bin/true"}, 20 * time.Second, false, 0, time.Second, false}},
		{"MISC_CHECK options", rs("MISC_CHECK {\nmisc_path \"/bin/check.sh 'a b'\"\nmisc_timeout 5\nmisc_dynamic\nuser nobody nogroup\n}"), func(f *File) any {
			c := check0(f)
			return []any{c.Misc, c.MiscTimeout, c.MiscDynamic}
		}, []any{Script{Command: "/bin/check.sh 'a b'", User: "nobody", Group: "nogroup"}, 5 * time.Second, true}},
		{"a '$' that is no parameter", rs("MISC_CHECK {\nmisc_path \"/bin/sh -c 'exit $?'\"\n}"), func(f *File) any { return check0(f).Misc.Command }, "/bin/sh -c 'exit $?'"},
		{"misc_path unquoted with parameters", rs("MISC_CHECK {\nmisc_path /bin/check.sh -p 80\n}"), func(f *File) any { return check0(f).Misc.Command }, "/bin/check.sh -p 80"},

		// DNS_CHECK.
		{"DNS_CHECK defaults", rs("delay_loop 9\nDNS_CHECK {\n}"), func(f *File) any {
			c := check0(f)
			return []any{c.DNSType, c.DNSName, c.Retry, c.DelayBeforeRetry}
		}, []any{"SOA", ".", 3, 9 * time.Second}},
		{"DNS_CHECK options", rs("DNS_CHECK {\ntype aaaa\nname www.example.com\n}"), func(f *File) any { return []string{check0(f).DNSType, check0(f).DNSName} }, []string{"AAAA", "www.example.com"}},

		// Several checkers, in order.
		{"checkers in order", rs("TCP_CHECK {\n}\nMISC_CHECK {\nmisc_path /bin/true\n}\nTCP_CHECK {\nconnect_port 81\n}"), func(f *File) any {
			var k []string
			for _, c := range real0(f).Checkers {
				k = append(k, c.Kind)
			}
			return k
		}, []string{TCPCheck, MiscCheck, TCPCheck}},

		// Syntax.
		{"comments", vs("lvs_sched wrr # the scheduler\n! a whole line\n# another\nreal_server 198.18.1.2 80 { weight 2 } ! trailing"), func(f *File) any { return []any{first(f).Sched, real0(f).Weight} }, []any{"wrr", 2}},
		{"comment glued to a word", vs("lvs_sched wrr#x"), func(f *File) any { return first(f).Sched }, "wrr"},
		{"quoted string with spaces and a comment sign", vs(`virtualhost "a b#c"`), func(f *File) any { return first(f).VirtualHost }, "a b#c"},
		{"quoted brace is text", vs(`virtualhost "{"`), func(f *File) any { return first(f).VirtualHost }, "{"},
		{"escapes in quotes", vs(`virtualhost "a\tb\x41\101\"\\"`), func(f *File) any { return first(f).VirtualHost }, "a\tbAA\"\\"},
		{"quotes inside a word", vs(`virtualhost ab" c"d`), func(f *File) any { return first(f).VirtualHost }, "ab cd"},
		{"single quotes are kept", vs(`virtualhost 'a'`), func(f *File) any { return first(f).VirtualHost }, "'a'"},
		{"brace on the next line", "virtual_server 198.18.0.1 80\n{\nprotocol TCP\nreal_server 198.18.1.2 80\n{\nweight 3\n}\n}", func(f *File) any { return real0(f).Weight }, 3},
		{"blocks on one line", "virtual_server 198.18.0.1 80 { protocol TCP\nreal_server 198.18.1.2 80 { weight 2 } real_server 198.18.1.3 80 { weight 3 }\n}", func(f *File) any { return []int{first(f).Reals[0].Weight, first(f).Reals[1].Weight} }, []int{2, 3}},
		{"braces glued to words", rs("TCP_CHECK {connect_port 81}"), func(f *File) any { return check0(f).ConnectPort }, uint16(81)},
		{"CRLF line ends", strings.ReplaceAll(rs("weight 4"), "\n", "\r\n"), func(f *File) any { return real0(f).Weight }, 4},
		{"positions", vs("real_server 198.18.1.2 80 {\nTCP_CHECK {\n}\n}"), func(f *File) any { return []Pos{first(f).Pos, real0(f).Pos, check0(f).Pos} }, []Pos{{"keepalived.conf", 1}, {"keepalived.conf", 5}, {"keepalived.conf", 6}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := mustParse(t, tt.conf)
			if got := tt.got(f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestGroups reads each form of virtual_server_group member.
func TestGroups(t *testing.T) {
	conf := `virtual_server_group G {
    198.18.0.1 80
    198.18.0.10-12 80
    198.18.0.254-198.18.1.1 443
    198.18.2.8/30
    2001:2::a-c 53
    2001:2::1:0/127 53
    fwmark 5
    fwmark 6 inet6
}
virtual_server group G {
    protocol TCP
    persistence_timeout
}
`
	f, _ := mustParse(t, conf)
	m := func(line int, first, last string, port uint16) Member {
		return Member{Pos: Pos{"keepalived.conf", line}, First: netip.MustParseAddr(first), Last: netip.MustParseAddr(last), Port: port}
	}
	want := []Member{
		m(2, "198.18.0.1", "198.18.0.1", 80),
		m(3, "198.18.0.10", "198.18.0.12", 80),
		m(4, "198.18.0.254", "198.18.1.1", 443),
		m(5, "198.18.2.8", "198.18.2.11", 0),
		m(6, "2001:2::a", "2001:2::c", 53),
		m(7, "2001:2::1:0", "2001:2::1:1", 53),
		{Pos: Pos{"keepalived.conf", 8}, FWMark: 5},
		{Pos: Pos{"keepalived.conf", 9}, FWMark: 6, Family: "inet6"},
	}
	g := f.Groups["G"]
	if g == nil || g.Name != "G" || g.Pos != (Pos{"keepalived.conf", 1}) {
		t.Fatalf("group G: %+v", g)
	}
	if !reflect.DeepEqual(g.Members, want) {
		t.Errorf("members:\n got %+v\nwant %+v", g.Members, want)
	}
	keys, err := f.Keys(first(f))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, keyName(k))
	}
	wantKeys := []string{
		"TCP 198.18.0.1:80",
		"TCP 198.18.0.10:80", "TCP 198.18.0.11:80", "TCP 198.18.0.12:80",
		"TCP 198.18.0.254:443", "TCP 198.18.0.255:443", "TCP 198.18.1.0:443", "TCP 198.18.1.1:443",
		"TCP 198.18.2.8:0", "TCP 198.18.2.9:0", "TCP 198.18.2.10:0", "TCP 198.18.2.11:0",
		"TCP [2001:2::a]:53", "TCP [2001:2::b]:53", "TCP [2001:2::c]:53",
		"TCP [2001:2::1:0]:53", "TCP [2001:2::1:1]:53",
		"FWM 5", "FWM 6 IPv6",
	}
	if !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("keys:\n got %q\nwant %q", got, wantKeys)
	}
}

// TestErrors checks the exact message, file and line of each kind of
// error, and that nothing else is returned with it.
func TestErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // keepalived.conf and what it includes
		want  string
	}{
		{"block not closed", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 80 {\nprotocol TCP\nreal_server 198.18.1.2 80 {\n}\n"}, "keepalived.conf:1: virtual_server: '{' is not closed"},
		// The braces after it close the checker and the real server.
		{"checker not closed", map[string]string{"keepalived.conf": rs("TCP_CHECK {")}, "keepalived.conf:1: virtual_server: '{' is not closed"},
		{"skipped section not closed", map[string]string{"keepalived.conf": "vrrp_instance VI_1 {\nstate MASTER\n"}, "keepalived.conf:1: vrrp_instance: '{' is not closed"},
		{"extra brace", map[string]string{"keepalived.conf": vs("") + "}\n"}, "keepalived.conf:7: unexpected '}'"},
		{"stray open brace", map[string]string{"keepalived.conf": vs("real_server 198.18.1.2 80 { { } }")}, "keepalived.conf:5: unexpected '{'"},
		{"block where none goes", map[string]string{"keepalived.conf": rs("weight 1 {\n}")}, "keepalived.conf:6: weight: unexpected '{'"},
		{"virtual_server without block", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 80\n"}, "keepalived.conf:1: virtual_server: missing '{'"},
		{"bad real server address", map[string]string{"keepalived.conf": vs("real_server 198.18.1.300 80 {\n}")}, `keepalived.conf:5: real_server: "198.18.1.300" is not an IP address`},
		{"bad virtual server address", map[string]string{"keepalived.conf": "virtual_server www.example.com 80 {\n}\n"}, `keepalived.conf:1: virtual_server: "www.example.com" is not an IP address`},
		{"address with zone", map[string]string{"keepalived.conf": vs("sorry_server 2001:2::1%eth0 80")}, `keepalived.conf:5: sorry_server: "2001:2::1%eth0" is not an IP address`},
		{"bad connect_ip", map[string]string{"keepalived.conf": rs("TCP_CHECK {\nconnect_ip 198.18.9\n}")}, `keepalived.conf:7: connect_ip: "198.18.9" is not an IP address`},
		{"bad port", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 http {\n}\n"}, `keepalived.conf:1: port: "http" is not a whole number`},
		{"port out of range", map[string]string{"keepalived.conf": vs("real_server 198.18.1.2 65536 {\n}")}, `keepalived.conf:5: port: 65536 is out of range [0, 65535]`},
		{"fractional weight", map[string]string{"keepalived.conf": rs("weight 1.5")}, `keepalived.conf:6: weight: "1.5" is not a whole number`},
		{"negative weight", map[string]string{"keepalived.conf": rs("weight -1")}, `keepalived.conf:6: weight: "-1" is not a whole number`},
		{"weight too big", map[string]string{"keepalived.conf": rs("weight 2147483648")}, `keepalived.conf:6: weight: 2147483648 is out of range [0, 2147483647]`},
		{"timer with exponent", map[string]string{"keepalived.conf": vs("delay_loop 1e3")}, `keepalived.conf:5: delay_loop: "1e3" is not a number of seconds`},
		{"timer too precise", map[string]string{"keepalived.conf": vs("delay_loop 1.0000001")}, `keepalived.conf:5: delay_loop: "1.0000001" has more than 6 decimal places`},
		{"delay_loop 0", map[string]string{"keepalived.conf": vs("delay_loop 0")}, `keepalived.conf:5: delay_loop: 0 is out of range [1µs, 2562047h47m16.854775s]`},
		{"connect_timeout too long", map[string]string{"keepalived.conf": vs("connect_timeout 5000")}, `keepalived.conf:5: connect_timeout: 5000 is out of range [1µs, 1h11m34.967295s]`},
		{"misc_timeout fractional", map[string]string{"keepalived.conf": rs("MISC_CHECK {\nmisc_path /bin/true\nmisc_timeout 2.5\n}")}, `keepalived.conf:8: misc_timeout: "2.5" is not a whole number`},
		{"persistence_timeout 0", map[string]string{"keepalived.conf": vs("persistence_timeout 0")}, `keepalived.conf:5: persistence_timeout: 0 is out of range [1, 2678400]`},
		{"quorum 0", map[string]string{"keepalived.conf": vs("quorum 0")}, `keepalived.conf:5: quorum: 0 is out of range [1, 4294967295]`},
		{"retry 0 for a virtual server", map[string]string{"keepalived.conf": vs("retry 0")}, `keepalived.conf:5: retry: 0 is out of range [1, 4294967295]`},
		{"bad bool", map[string]string{"keepalived.conf": rs("inhibit_on_failure maybe")}, `keepalived.conf:6: inhibit_on_failure: "maybe" is not one of on, off, true, false, yes, no`},
		{"missing argument", map[string]string{"keepalived.conf": rs("weight")}, "keepalived.conf:6: weight: missing argument"},
		{"missing real server address", map[string]string{"keepalived.conf": vs("real_server {\n}")}, "keepalived.conf:5: real_server: missing argument"},
		{"missing fwmark", map[string]string{"keepalived.conf": "virtual_server fwmark {\n}\n"}, "keepalived.conf:1: virtual_server: missing argument"},
		{"unterminated quote", map[string]string{"keepalived.conf": vs(`virtualhost "abc`)}, "keepalived.conf:5: unterminated quote"},
		{"SCTP", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 80 {\nprotocol SCTP\n}\n"}, "keepalived.conf:2: protocol SCTP is not supported"},
		{"sctp in lower case", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 80 {\nprotocol sctp\n}\n"}, "keepalived.conf:2: protocol SCTP is not supported"},
		{"bad protocol", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 80 {\nprotocol ICMP\n}\n"}, `keepalived.conf:2: protocol: "ICMP" is not TCP, UDP or SCTP`},
		{"unknown scheduler", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 80 {\nlvs_sched RR\n}\n"}, `keepalived.conf:2: lvs_sched: unknown scheduler "RR"`},
		{"bad method", map[string]string{"keepalived.conf": vs("lvs_method nat")}, `keepalived.conf:5: lvs_method: "nat" is not NAT, DR or TUN`},
		{"gue without port", map[string]string{"keepalived.conf": vs("lvs_method TUN type gue")}, "keepalived.conf:5: lvs_method: a gue tunnel needs port NUM"},
		{"gre remcsum", map[string]string{"keepalived.conf": vs("lvs_method TUN type gre remcsum")}, "keepalived.conf:5: lvs_method: gre tunnels have no remcsum"},
		{"sh-port without sh", map[string]string{"keepalived.conf": vs("sh-port")}, "keepalived.conf:5: sh-port: only for the sh scheduler, not rr"},
		{"persistence_engine", map[string]string{"keepalived.conf": vs("persistence_engine rtsp")}, `keepalived.conf:5: persistence_engine: "rtsp" is not sip`},
		{"ip_family conflict", map[string]string{"keepalived.conf": vs("ip_family inet6")}, "keepalived.conf:1: ip_family inet6 conflicts with the address 198.18.0.1"},
		{"bad ip_family", map[string]string{"keepalived.conf": "virtual_server fwmark 1 {\nip_family ipv6\n}\n"}, `keepalived.conf:2: ip_family: "ipv6" is not inet or inet6`},
		{"IPv6 granularity too long", map[string]string{"keepalived.conf": "virtual_server 2001:2::1 80 {\nprotocol TCP\npersistence_granularity 129\n}\n"}, `keepalived.conf:3: persistence_granularity: "129" is not an IPv6 prefix length from 1 to 128`},
		{"bad IPv4 granularity", map[string]string{"keepalived.conf": vs("persistence_granularity /24")}, `keepalived.conf:5: persistence_granularity: "/24" is not an IPv4 netmask`},
		{"family mismatch", map[string]string{"keepalived.conf": vs("real_server 2001:2::5 80 {\n}")}, "keepalived.conf:5: real_server: 2001:2::5 differs in address family from the virtual server (IPv4); only TUN servers may"},
		{"family mismatch among servers", map[string]string{"keepalived.conf": "virtual_server fwmark 1 {\nlvs_method DR\nreal_server 198.18.1.2 {\n}\nreal_server 2001:2::5 {\n}\n}\n"}, "keepalived.conf:5: real_server: 2001:2::5 differs in address family from 198.18.1.2 (keepalived.conf:3); only TUN servers may"},
		{"family mismatch in a group", map[string]string{"keepalived.conf": "virtual_server_group G {\n2001:2::1 80\n198.18.0.1 80\n}\nvirtual_server group G {\nprotocol TCP\nreal_server 198.18.1.2 80 {\n}\n}\n"}, "keepalived.conf:7: real_server 198.18.1.2: IPv4 server of the IPv6 service TCP [2001:2::1]:80; only TUN servers may differ in address family"},
		{"bindto family", map[string]string{"keepalived.conf": rs("TCP_CHECK {\nbindto 2001:2::9\n}")}, "keepalived.conf:6: TCP_CHECK: bindto 2001:2::9 and the address checked, 198.18.1.2, differ in address family"},
		{"lthreshold above uthreshold", map[string]string{"keepalived.conf": rs("uthreshold 10\nlthreshold 20")}, "keepalived.conf:5: real_server 198.18.1.2: lthreshold 20 is above uthreshold 10"},
		{"lthreshold alone", map[string]string{"keepalived.conf": rs("lthreshold 20")}, "keepalived.conf:5: real_server 198.18.1.2: lthreshold 20 is above uthreshold 0"},
		{"duplicate real server", map[string]string{"keepalived.conf": vs("real_server 198.18.1.2 80 {\n}\nreal_server 198.18.1.2 80 {\n}")}, "keepalived.conf:7: real_server 198.18.1.2:80: already a real server of TCP 198.18.0.1:80"},
		{"DR servers differing only by port", map[string]string{"keepalived.conf": vs("lvs_method DR\nreal_server 198.18.1.2 80 {\n}\nreal_server 198.18.1.2 81 {\n}")}, "keepalived.conf:8: real_server 198.18.1.2:80: already a real server of TCP 198.18.0.1:80"},
		{"duplicate virtual server", map[string]string{"keepalived.conf": vs("") + vs("")}, "keepalived.conf:7: virtual_server: TCP 198.18.0.1:80 is already a service (keepalived.conf:1)"},
		{"group overlapping a virtual server", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.0-3 80\n}\nvirtual_server group G {\nprotocol TCP\n}\n" + vs("")}, "keepalived.conf:7: virtual_server: TCP 198.18.0.1:80 is already a service (keepalived.conf:4)"},
		{"unknown group", map[string]string{"keepalived.conf": "virtual_server group NOPE {\nprotocol TCP\n}\n"}, "keepalived.conf:1: virtual_server group NOPE: no virtual_server_group NOPE"},
		{"empty group", map[string]string{"keepalived.conf": "virtual_server_group G {\n}\n"}, "keepalived.conf:1: virtual_server_group G: no members"},
		{"group defined twice", map[string]string{"keepalived.conf": "virtual_server_group G {\nfwmark 1\n}\nvirtual_server_group G {\nfwmark 2\n}\n"}, "keepalived.conf:4: virtual_server_group G: already defined at keepalived.conf:1"},
		{"range backwards", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.10-1 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.0.10-1": the range's end is not above its start`},
		{"range of one", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.10-10 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.0.10-10": the range's end is not above its start`},
		{"long range backwards", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.10-198.18.0.9 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.0.10-198.18.0.9": the range ends before it starts`},
		{"range end too big", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.1-300 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.0.1-300": the range's end is not a number up to 255`},
		{"range of mixed families", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.1-2001:2::1 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.0.1-2001:2::1": not an address range`},
		{"prefix with host bits", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.2.10/29 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.2.10/29": the address has bits set beyond the prefix length`},
		{"range too large", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.0/16 80\n}\n"}, `keepalived.conf:2: virtual_server_group: "198.18.0.0/16": more than 256 addresses`},
		{"bad fwmark family", map[string]string{"keepalived.conf": "virtual_server_group G {\nfwmark 1 ipv6\n}\n"}, `keepalived.conf:2: fwmark: "ipv6" is not inet or inet6`},
		{"bad digest", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\npath /\ndigest abc\n}\n}")}, `keepalived.conf:9: digest: "abc" is not 32 hexadecimal digits (an MD5 sum)`},
		{"status code 600", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\npath /\nstatus_code 200 600\n}\n}")}, `keepalived.conf:9: status_code: "600" is not a code or range of codes from 100 to 599`},
		{"status code range backwards", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\npath /\nstatus_code 299-200\n}\n}")}, `keepalived.conf:9: status_code: "299-200" is not a code or range of codes from 100 to 599`},
		{"status code class", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\npath /\nstatus_code 2xx\n}\n}")}, `keepalived.conf:9: status_code: "2xx" is not a code or range of codes from 100 to 599`},
		{"url without path", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\nstatus_code 200\n}\n}")}, "keepalived.conf:7: url: no path"},
		{"HTTP_GET without url", map[string]string{"keepalived.conf": rs("HTTP_GET {\n}")}, "keepalived.conf:6: HTTP_GET: no url"},
		{"MISC_CHECK without misc_path", map[string]string{"keepalived.conf": rs("MISC_CHECK {\n}")}, "keepalived.conf:6: MISC_CHECK: no misc_path"},
		{"bad DNS type", map[string]string{"keepalived.conf": rs("DNS_CHECK {\ntype PTR\n}")}, `keepalived.conf:7: type: "PTR" is not A, NS, CNAME, SOA, MX, TXT or AAAA`},
		{"connect_port 0", map[string]string{"keepalived.conf": rs("TCP_CHECK {\nconnect_port 0\n}")}, "keepalived.conf:7: connect_port: 0 is out of range [1, 65535]"},
		{"sorry_server twice", map[string]string{"keepalived.conf": vs("sorry_server 198.18.1.9 80\nsorry_server 198.18.1.8 80")}, "keepalived.conf:6: sorry_server: given twice (first at keepalived.conf:5)"},
		{"conditional line in a virtual server", map[string]string{"keepalived.conf": vs("@main lvs_sched wrr")}, "keepalived.conf:5: @main: conditional configuration is not supported"},
		{"conditional virtual server", map[string]string{"keepalived.conf": "@backup virtual_server 198.18.0.1 80 {\n}\n"}, "keepalived.conf:1: @backup: conditional configuration is not supported"},
		{"conditional brace in a skipped section", map[string]string{"keepalived.conf": "vrrp_instance VI {\n@main track_script {\nchk\n}\n}\n"}, "keepalived.conf:2: @main: conditional configuration is not supported"},
		{"parameter substitution", map[string]string{"keepalived.conf": "$SCHED=wrr\n" + vs("lvs_sched $SCHED")}, `keepalived.conf:6: lvs_sched: "$SCHED": parameter substitution is not supported`},
		{"parameter in braces", map[string]string{"keepalived.conf": vs("virtualhost ${HOST}.example.com")}, `keepalived.conf:5: virtualhost: "${HOST}.example.com": parameter substitution is not supported`},
		{"keepalived's own parameter", map[string]string{"keepalived.conf": vs("virtualhost $_INSTANCE")}, `keepalived.conf:5: virtualhost: "$_INSTANCE": parameter substitution is not supported`},
		{"parameter as a keyword", map[string]string{"keepalived.conf": "$RS=real_server 198.18.1.2 80 { }\n" + vs("$RS")}, "keepalived.conf:6: $RS: parameter substitution is not supported"},

		// Includes.
		{"missing include", map[string]string{"keepalived.conf": "include nothere.conf\n"}, "keepalived.conf:1: include nothere.conf: no such file"},
		{"missing nested include", map[string]string{"keepalived.conf": "\ninclude conf.d/a.conf\n", "conf.d/a.conf": "# a\ninclude b.conf\n"}, "conf.d/a.conf:2: include b.conf: no such file"},
		{"include without name", map[string]string{"keepalived.conf": "include\n"}, "keepalived.conf:1: include: missing file name"},
		{"include cycle", map[string]string{"keepalived.conf": "include conf.d/a.conf\n", "conf.d/a.conf": "include ../keepalived.conf\n"}, "conf.d/a.conf:1: include ../keepalived.conf: include cycle keepalived.conf -> conf.d/a.conf -> keepalived.conf"},
		{"include itself", map[string]string{"keepalived.conf": "include *.conf\n"}, "keepalived.conf:1: include *.conf: include cycle keepalived.conf -> keepalived.conf"},
		{"include above the root", map[string]string{"keepalived.conf": "include ../x.conf\n"}, "keepalived.conf:1: include ../x.conf: outside the file system given"},
		{"bad glob", map[string]string{"keepalived.conf": "include [.conf\n"}, "keepalived.conf:1: include [.conf: syntax error in pattern"},
		{"error in an included file", map[string]string{"keepalived.conf": "include conf.d/*.conf\n", "conf.d/web.conf": rs("weight x")}, `conf.d/web.conf:6: weight: "x" is not a whole number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, w, err := parseFiles(tt.files)
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
			if f != nil || w != nil {
				t.Errorf("a result came with the error: %v, %v", f, w)
			}
			var e *Error
			if !errors.As(err, &e) || e.Pos.Line == 0 {
				t.Errorf("error %v is not an *Error with a line", err)
			}
		})
	}
}

// TestWarnings checks what is skipped or corrected with a warning.
func TestWarnings(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"skipped sections, once each", map[string]string{"keepalived.conf": "global_defs {\nrouter_id A\n}\nvrrp_instance VI_1 {\nstate MASTER\nvirtual_ipaddress {\n198.18.0.1\n}\n}\nvrrp_instance VI_2 {\n}\nstatic_routes {\n}\n" + vs("")},
			[]string{"keepalived.conf:1: global_defs: only lvs_sync_daemon is handled, the rest skipped", "keepalived.conf:4: vrrp_instance: not handled, skipped", "keepalived.conf:12: static_routes: not handled, skipped"}},
		{"unknown keywords, once each", map[string]string{"keepalived.conf": vs("smtp_alert yes\nha_suspend\nreal_server 198.18.1.2 80 {\nsnmp_name rs\nSMTP_CHECK {\nhelo_name x\n}\nTCP_CHECK {\nfwmark 3\nlog_all_failures on\n}\n}\nreal_server 198.18.1.3 80 {\nsnmp_name rs\nSMTP_CHECK {\n}\n}") +
			"virtual_server 198.18.0.2 80 {\nprotocol TCP\nsmtp_alert no\n}\n"},
			[]string{
				"keepalived.conf:5: virtual_server: smtp_alert: not handled, skipped",
				"keepalived.conf:6: virtual_server: ha_suspend: not handled, skipped",
				"keepalived.conf:8: real_server: snmp_name: not handled, skipped",
				"keepalived.conf:9: real_server: SMTP_CHECK: not handled, skipped",
				"keepalived.conf:13: TCP_CHECK: fwmark: not handled, skipped",
				"keepalived.conf:14: TCP_CHECK: log_all_failures: not handled, skipped",
			}},
		{"extra argument", map[string]string{"keepalived.conf": rs("weight 2 3")}, []string{`keepalived.conf:6: weight: extra argument "3" ignored`}},
		{"no protocol", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 53 {\n}\n"}, []string{"keepalived.conf:1: virtual_server: no protocol given, UDP as keepalived defaults"}},
		{"protocol on a fwmark", map[string]string{"keepalived.conf": "virtual_server fwmark 1 {\nprotocol TCP\n}\n"}, []string{"keepalived.conf:2: protocol: ignored for a fwmark service"}},
		{"DR port", map[string]string{"keepalived.conf": vs("lvs_method DR\nreal_server 198.18.1.2 8080 {\n}")}, []string{"keepalived.conf:6: real_server: port 8080 differs from the service's 80: a DR server has the service's port"}},
		{"TUN port in a group", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.1 80\n198.18.0.2 81\n}\nvirtual_server group G {\nprotocol TCP\nlvs_method TUN\nreal_server 198.18.1.2 81 {\n}\n}\n"}, []string{"keepalived.conf:8: real_server: port 81 differs from the service's 80 (keepalived.conf:2): a TUN server has the service's port"}},
		{"zero port", map[string]string{"keepalived.conf": "virtual_server 198.18.0.1 {\nprotocol TCP\n}\n"}, []string{"keepalived.conf:1: virtual_server: port 0 is only for persistent services: persistence_timeout 360 set, as keepalived does"}},
		{"group address without port", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.0.1\n}\nvirtual_server group G {\nprotocol TCP\n}\n"}, []string{"keepalived.conf:4: virtual_server: port 0 is only for persistent services: persistence_timeout 360 set, as keepalived does"}},
		{"ops on TCP", map[string]string{"keepalived.conf": vs("ops")}, []string{"keepalived.conf:1: ops: only for UDP and fwmark services, ignored"}},
		{"quorum above the weight", map[string]string{"keepalived.conf": vs("quorum 10\nhysteresis 4\nreal_server 198.18.1.2 80 {\nweight 3\n}")}, []string{"keepalived.conf:1: quorum 10 is above the real servers' total weight 3: 3, as keepalived does", "keepalived.conf:1: hysteresis 4 is not below quorum 3: 0, as keepalived does"}},
		{"sorry_server_inhibit alone", map[string]string{"keepalived.conf": vs("sorry_server_inhibit")}, []string{"keepalived.conf:1: virtual_server: sorry_server_inhibit or sorry_server_lvs_method without sorry_server ignored"}},
		{"nb_get_retry", map[string]string{"keepalived.conf": rs("HTTP_GET {\nnb_get_retry 2\nurl {\npath /\n}\n}")}, []string{"keepalived.conf:7: nb_get_retry is deprecated, use retry"}},
		{"nb_get_retry outside HTTP", map[string]string{"keepalived.conf": rs("TCP_CHECK {\nnb_get_retry 2\n}")}, []string{"keepalived.conf:7: TCP_CHECK: nb_get_retry: not handled, skipped"}},
		{"glob matching nothing", map[string]string{"keepalived.conf": "include conf.d/*.conf\n" + vs("")}, []string{"keepalived.conf:1: include conf.d/*.conf: no file matches"}},
		{"conditional line outside LVS", map[string]string{"keepalived.conf": "@main net_namespace blue\n" + vs("")}, []string{"keepalived.conf:1: @main: not handled, skipped"}},
		{"parameter definition", map[string]string{"keepalived.conf": "$X=1 \\\n 2\n" + vs("")}, []string{"keepalived.conf:1: $X: parameter definition not handled, skipped"}},
		{"include's extra argument", map[string]string{"keepalived.conf": "include a.conf b.conf\n", "a.conf": vs("")}, []string{`keepalived.conf:1: include: extra argument "b.conf" ignored`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, w, err := parseFiles(tt.files)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range w {
				got = append(got, x.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("warnings\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestIncludes checks that includes are read relative to the including
// file, with globs and braces, in order, nested and inside blocks.
func TestIncludes(t *testing.T) {
	files := map[string]string{
		"keepalived.conf":          "include conf.d/*.conf\ninclude other/{x,y}.conf\n",
		"conf.d/20-b.conf":         "virtual_server 198.18.0.2 80 {\nprotocol TCP\ninclude reals/rs.conf\n}\n",
		"conf.d/10-a.conf":         "virtual_server 198.18.0.1 80 {\nprotocol TCP\n}\n",
		"conf.d/reals/rs.conf":     "real_server 198.18.1.2 80 {\n}\n",
		"conf.d/notes.txt":         "not a configuration",
		"other/x.conf":             "virtual_server 198.18.0.3 80 {\nprotocol TCP\n}\n",
		"other/y.conf":             "virtual_server 198.18.0.4 80 {\nprotocol TCP\n}\n",
		"other/z.conf":             "virtual_server 198.18.0.5 80 {\nprotocol TCP\n}\n",
		"conf.d/reals/unused.conf": "}",
	}
	f, w, err := parseFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}
	var got []string
	for _, v := range f.VirtualServers {
		got = append(got, v.Pos.String()+" "+v.Addr.String())
	}
	want := []string{"conf.d/10-a.conf:1 198.18.0.1:80", "conf.d/20-b.conf:1 198.18.0.2:80", "other/x.conf:1 198.18.0.3:80", "other/y.conf:1 198.18.0.4:80"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("virtual servers\n got %q\nwant %q", got, want)
	}
	if r := f.VirtualServers[1].Reals; len(r) != 1 || r[0].Pos != (Pos{"conf.d/reals/rs.conf", 1}) {
		t.Errorf("included real server: %+v", r)
	}

	// An absolute name is from the root of the file system given.
	f, _, err = parseFiles(map[string]string{"etc/keepalived.conf": "", "keepalived.conf": "include /etc/lvs/*.conf\n", "etc/lvs/a.conf": vs("")})
	if err != nil || len(f.VirtualServers) != 1 || f.VirtualServers[0].Pos.File != "/etc/lvs/a.conf" {
		t.Errorf("absolute include: %v %+v", err, f)
	}
}

// TestParseFromDisk checks Parse: names as given, relative includes from
// the including file's directory wherever the program runs, and the
// error for a missing file.
func TestParseFromDisk(t *testing.T) {
	f, w, err := Parse("testdata/site/keepalived.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.VirtualServers) != 6 {
		t.Errorf("%d virtual servers, want 6", len(f.VirtualServers))
	}
	if got := f.VirtualServers[4].Reals[0].Pos; got != (Pos{"testdata/site/conf.d/reals/fwmark10-a.conf", 1}) {
		t.Errorf("position of an included real server: %v", got)
	}
	if len(w) == 0 || w[0].Pos.File != "testdata/site/keepalived.conf" {
		t.Errorf("warnings: %v", w)
	}
	_, _, err = Parse("testdata/nothere.conf")
	if !errors.Is(err, fs.ErrNotExist) || err.Error() != "testdata/nothere.conf: no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
}

// global_defs' lvs_sync_daemon: its options, the older form without
// "inst", and what is refused, with the line.
func TestSyncDaemon(t *testing.T) {
	f, _ := mustParse(t, "global_defs {\n router_id lb1\n lvs_sync_daemon eth2 inst VI_1 id 5 maxlen 1400 port 8850 ttl 2 group 224.0.0.82\n}\n")
	want := SyncDaemon{Pos: Pos{"keepalived.conf", 3}, Interface: "eth2", Instance: "VI_1", SyncID: 5, MaxLen: 1400,
		Port: 8850, TTL: 2, Group: netip.MustParseAddr("224.0.0.82")}
	if f.SyncDaemon == nil || *f.SyncDaemon != want {
		t.Fatalf("got %+v, want %+v", f.SyncDaemon, want)
	}
	f, _ = mustParse(t, "global_defs {\n lvs_sync_daemon eth0 VI_2\n}\n")
	if d := f.SyncDaemon; d == nil || d.Interface != "eth0" || d.Instance != "VI_2" || d.SyncID != 0 || d.Group.IsValid() {
		t.Fatalf("older form: %+v", d)
	}
	if f, _ := mustParse(t, "global_defs {\n router_id x\n}\n"); f.SyncDaemon != nil {
		t.Fatalf("no lvs_sync_daemon, yet %+v", f.SyncDaemon)
	}
	for _, c := range []struct{ conf, want string }{
		{"global_defs {\n lvs_sync_daemon eth0 id 256\n}\n", "keepalived.conf:2:"},
		{"global_defs {\n lvs_sync_daemon eth0 group 198.18.0.1\n}\n", `keepalived.conf:2: lvs_sync_daemon: group "198.18.0.1" is not a multicast address`},
		{"global_defs {\n lvs_sync_daemon eth0 port\n}\n", "keepalived.conf:2: lvs_sync_daemon: port: missing value"},
		{"global_defs {\n lvs_sync_daemon eth0 VI_1 extra\n}\n", `keepalived.conf:2: lvs_sync_daemon: "extra": unknown option`},
		{"global_defs {\n lvs_sync_daemon eth0\n lvs_sync_daemon eth1\n}\n", "keepalived.conf:3: lvs_sync_daemon: already given at keepalived.conf:2"},
	} {
		if _, _, err := parseFiles(map[string]string{"keepalived.conf": c.conf}); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q…", c.conf, err, c.want)
		}
	}
}
