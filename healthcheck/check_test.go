package healthcheck

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// attempt runs one attempt of s from the director namespace.
func (l *testLab) attempt(t *testing.T, s Spec) Result {
	t.Helper()
	s = s.normal()
	return l.env().check(context.Background(), &s)
}

func wantResult(t *testing.T, name string, r Result, up bool, reason string) {
	t.Helper()
	if r.Up != up || !strings.Contains(r.Reason, reason) {
		t.Errorf("%s: got up=%v %q, want up=%v with %q", name, r.Up, r.Reason, up, reason)
	}
}

func TestTCPCheck(t *testing.T) {
	l := lab(t)
	v4 := newTCPServer(t, l.srv, ap(srvIP, 7001))
	newTCPServer(t, l.srv, ap(srvIP6, 7001))

	spec := Spec{Kind: TCPCheck, Addr: ap(srvIP, 7001), ConnectTimeout: 5 * time.Second}
	wantResult(t, "listening", l.attempt(t, spec), true, "TCP_CHECK connected to 198.18.0.2:7001")
	v4.wait(t, 1)

	s6 := spec
	s6.Addr = ap(srvIP6, 7001)
	wantResult(t, "IPv6", l.attempt(t, s6), true, "connected")

	bound := spec
	bound.BindTo = netip.MustParseAddr(bindIP)
	wantResult(t, "bindto", l.attempt(t, bound), true, "connected")
	v4.wait(t, 2)
	if got := v4.last.Load().(net.Addr).(*net.TCPAddr).IP.String(); got != bindIP {
		t.Errorf("bindto %s: server saw the connection from %s", bindIP, got)
	}

	v4.close()
	wantResult(t, "listener closed", l.attempt(t, spec), false, "connection refused")

	none := spec
	none.Addr = ap(noneIP, 7001)
	none.ConnectTimeout = 300 * time.Millisecond
	wantResult(t, "nobody there", l.attempt(t, none), false, "no answer within 300ms")

	wantResult(t, "no address", l.attempt(t, Spec{Kind: TCPCheck}), false, "no address")
}

// httpHandler answers the paths the HTTP tests fetch, and remembers the
// Host header of the last request.
type httpHandler struct {
	mu   sync.Mutex
	host string
	sni  string
}

var bigBody = strings.Repeat("x", MaxBody+1)

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.host = r.Host
	h.mu.Unlock()
	switch r.URL.Path {
	case "/ok":
		_, _ = w.Write([]byte("hello\n"))
	case "/missing":
		http.NotFound(w, r)
	case "/big":
		_, _ = w.Write([]byte(bigBody))
	case "/query":
		_, _ = w.Write([]byte(r.URL.RawQuery))
	default:
		w.WriteHeader(http.StatusInternalServerError)
	}
}

func (h *httpHandler) seen() (host, sni string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.host, h.sni
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestHTTPGet(t *testing.T) {
	l := lab(t)
	h := &httpHandler{}
	serveHTTP(t, l.srv, ap(srvIP, 8080), nil, h)
	serveHTTP(t, l.srv, ap(srvIP6, 8080), nil, h)

	get := func(urls ...URL) Spec {
		return Spec{Kind: HTTPGet, Addr: ap(srvIP, 8080), ConnectTimeout: 2 * time.Second, URLs: urls}
	}
	for _, c := range []struct {
		name   string
		spec   Spec
		up     bool
		reason string
	}{
		{"200", get(URL{Path: "/ok"}), true, "status 200"},
		{"404 against the default 200-299", get(URL{Path: "/missing"}), false, "status 404, want 200-299"},
		{"404 in a list of ranges", get(URL{Path: "/missing", StatusCodes: []StatusRange{{200, 299}, {404, 404}}}), true, "status 404"},
		{"200 not in the list", get(URL{Path: "/ok", StatusCodes: []StatusRange{{301, 302}, {503, 503}}}), false, "status 200, want 301-302 503"},
		{"digest", get(URL{Path: "/ok", Digest: md5hex("hello\n")}), true, "digest matches"},
		{"digest in capitals", get(URL{Path: "/ok", Digest: strings.ToUpper(md5hex("hello\n"))}), true, "digest matches"},
		{"digest mismatch", get(URL{Path: "/ok", Digest: md5hex("bye\n")}), false, "digest " + md5hex("hello\n") + ", want " + md5hex("bye\n")},
		{"digest and status both", get(URL{Path: "/missing", StatusCodes: []StatusRange{{404, 404}}, Digest: md5hex("404 page not found\n")}), true, "digest matches"},
		{"status passes, digest fails", get(URL{Path: "/missing", StatusCodes: []StatusRange{{404, 404}}, Digest: md5hex("x")}), false, "digest"},
		{"query string", get(URL{Path: "/query?a=1&b=2", Digest: md5hex("a=1&b=2")}), true, "digest matches"},
		{"body over the limit with a digest", get(URL{Path: "/big", Digest: md5hex(bigBody)}), false, "longer than"},
		{"body over the limit without a digest", get(URL{Path: "/big"}), true, "status 200"},
		{"all urls pass", get(URL{Path: "/ok"}, URL{Path: "/query"}), true, "HTTP_GET 198.18.0.2:8080: 2 urls passed"},
		{"one url of two fails", get(URL{Path: "/ok"}, URL{Path: "/error"}), false, "/error: status 500"},
		{"no url", get(), false, "no url"},
		{"bad digest", get(URL{Path: "/ok", Digest: "xyz"}), false, "not 32 hex digits"},
		{"refused", Spec{Kind: HTTPGet, Addr: ap(srvIP, 8081), URLs: []URL{{Path: "/"}}}, false, "connection refused"},
		{"IPv6", Spec{Kind: HTTPGet, Addr: ap(srvIP6, 8080), URLs: []URL{{Path: "/ok"}}}, true, "http://[2001:2::2]:8080/ok: status 200"},
	} {
		wantResult(t, c.name, l.attempt(t, c.spec), c.up, c.reason)
	}

	// The Host header: the address without a virtualhost, the checker's,
	// or the url's own.
	s := get(URL{Path: "/ok"})
	l.attempt(t, s)
	if host, _ := h.seen(); host != "198.18.0.2:8080" {
		t.Errorf("Host without virtualhost: %q", host)
	}
	s.VirtualHost = "www.uvs.test"
	l.attempt(t, s)
	if host, _ := h.seen(); host != "www.uvs.test" {
		t.Errorf("Host with virtualhost: %q", host)
	}
	s.URLs[0].VirtualHost = "url.uvs.test"
	l.attempt(t, s)
	if host, _ := h.seen(); host != "url.uvs.test" {
		t.Errorf("Host with the url's virtualhost: %q", host)
	}
}

func TestSSLGet(t *testing.T) {
	l := lab(t)
	h := &httpHandler{}
	cfg := selfSigned(t)
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		h.mu.Lock()
		h.sni = hello.ServerName
		h.mu.Unlock()
		return nil, nil
	}
	serveHTTP(t, l.srv, ap(srvIP, 8443), cfg, h)
	serveHTTP(t, l.srv, ap(srvIP, 8080), nil, h)

	s := Spec{Kind: SSLGet, Addr: ap(srvIP, 8443), ConnectTimeout: 2 * time.Second,
		URLs: []URL{{Path: "/ok", Digest: md5hex("hello\n")}}}
	wantResult(t, "self-signed", l.attempt(t, s), true, "https://198.18.0.2:8443/ok: status 200, digest matches")
	if _, sni := h.seen(); sni != "" {
		t.Errorf("SNI sent without enable_sni: %q", sni)
	}

	s.VirtualHost = "www.uvs.test"
	l.attempt(t, s)
	if host, sni := h.seen(); host != "www.uvs.test" || sni != "" {
		t.Errorf("virtualhost without enable_sni: Host %q, SNI %q", host, sni)
	}
	s.EnableSNI = true
	wantResult(t, "enable_sni", l.attempt(t, s), true, "digest matches")
	if _, sni := h.seen(); sni != "www.uvs.test" {
		t.Errorf("enable_sni: SNI %q, want www.uvs.test", sni)
	}

	httpOnTLS := Spec{Kind: HTTPGet, TLS: true, Addr: ap(srvIP, 8443), URLs: []URL{{Path: "/missing"}}}
	wantResult(t, "HTTP_GET with TLS is SSL_GET", l.attempt(t, httpOnTLS), false, "SSL_GET https://198.18.0.2:8443/missing: status 404")

	plain := s
	plain.Addr = ap(srvIP, 8080)
	wantResult(t, "SSL_GET to a plain HTTP server", l.attempt(t, plain), false, "TLS handshake")

	plainGet := Spec{Kind: HTTPGet, Addr: ap(srvIP, 8443), ConnectTimeout: time.Second, URLs: []URL{{Path: "/ok"}}}
	wantResult(t, "HTTP_GET to a TLS server", l.attempt(t, plainGet), false, "HTTP_GET")
}

func TestMiscCheck(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	exit := writeScript(t, dir, "exit.sh", `exit "$1"`)
	args := writeScript(t, dir, "args.sh", `[ "$#" = 2 ] && [ "$1" = "a b" ] && [ "$2" = c ] && exit 0; exit 1`)
	// In the director namespace: the address of dir is there.
	netns := writeScript(t, dir, "netns.sh", `grep -q "$1" /proc/net/fib_trie`)
	pidFile := dir + "/pids"
	hang := writeScript(t, dir, "hang.sh", `sleep 30 & echo $! >> `+pidFile+`; wait`)
	stubborn := writeScript(t, dir, "stubborn.sh", `trap '' TERM; sleep 30 & echo $! >> `+pidFile+`; wait; wait`)
	notExec := dir + "/plain.sh"
	if err := os.WriteFile(notExec, []byte("exit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	misc := func(path string, dynamic bool) Spec {
		return Spec{Kind: MiscCheck, MiscPath: path, MiscDynamic: dynamic, MiscTimeout: 5 * time.Second}
	}
	for _, c := range []struct {
		name   string
		spec   Spec
		up     bool
		weight int
		reason string
	}{
		{"exit 0", misc(exit+" 0", false), true, -1, "exit status 0"},
		{"exit 1", misc(exit+" 1", false), false, -1, "exit status 1"},
		{"exit 3 without misc_dynamic", misc(exit+" 3", false), false, -1, "exit status 3"},
		{"dynamic exit 0", misc(exit+" 0", true), true, -1, "exit status 0"},
		{"dynamic exit 1", misc(exit+" 1", true), false, -1, "exit status 1"},
		{"dynamic exit 2", misc(exit+" 2", true), true, 0, "weight 0"},
		{"dynamic exit 12", misc(exit+" 12", true), true, 10, "weight 10"},
		{"dynamic exit 255", misc(exit+" 255", true), true, 253, "weight 253"},
		{"quoted argument", misc(args+" 'a b' c", false), true, -1, "exit status 0"},
		{"unquoted argument", misc(args+" a b c", false), false, -1, "exit status 1"},
		{"in the namespace", misc(netns+" "+dirIP, false), true, -1, "exit status 0"},
		{"not in the namespace", misc(netns+" 198.18.0.77", false), false, -1, "exit status 1"},
		{"no such program", misc(dir+"/nothing", false), false, -1, "no such file"},
		{"not executable", misc(notExec, false), false, -1, "permission denied"},
		{"empty", misc(" ", false), false, -1, "no misc_path"},
	} {
		r := l.attempt(t, c.spec)
		wantResult(t, c.name, r, c.up, c.reason)
		if r.Weight != c.weight {
			t.Errorf("%s: weight %d, want %d", c.name, r.Weight, c.weight)
		}
	}

	// misc_timeout: the process group gets SIGTERM, and SIGKILL after
	// miscGrace if it ignores it; either way nothing of it is left.
	for _, c := range []struct {
		name   string
		script string
		min    time.Duration
	}{
		{"timeout", hang, 0},
		{"timeout, SIGTERM ignored", stubborn, miscGrace},
	} {
		_ = os.Remove(pidFile)
		s := misc(c.script, false)
		s.MiscTimeout = 300 * time.Millisecond
		start := time.Now()
		r := l.attempt(t, s)
		took := time.Since(start)
		wantResult(t, c.name, r, false, "misc_timeout 300ms exceeded")
		if took < 300*time.Millisecond+c.min {
			t.Errorf("%s: returned after %v, before the timeout and grace", c.name, took)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: pid file %q", c.name, b)
		}
		waitGone(t, c.name, pid)
	}
}

// waitGone waits a little for process pid to be gone or a zombie.
func waitGone(t *testing.T, name string, pid int) {
	t.Helper()
	for range 100 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return // reaped
		}
		// The state follows the command name in parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	t.Errorf("%s: process %d of the script still runs after the timeout", name, pid)
}

// dnsResponder answers DNS queries on a UDP socket in the server namespace.
// What it sends depends on the question's name (see serve); it remembers
// the last question.
type dnsResponder struct {
	pc   net.PacketConn
	mu   sync.Mutex
	last dnsmessage.Question
	done chan struct{}
}

func newDNSResponder(t *testing.T, l *testLab, addr netip.AddrPort) *dnsResponder {
	t.Helper()
	pc, err := l.srv.ListenPacket("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsResponder{pc: pc, done: make(chan struct{})}
	go d.serve()
	t.Cleanup(func() {
		pc.Close()
		<-d.done
	})
	return d
}

func (d *dnsResponder) question() dnsmessage.Question {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

func (d *dnsResponder) serve() {
	defer close(d.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		d.mu.Lock()
		d.last = q
		d.mu.Unlock()
		reply := func(h dnsmessage.Header, qs ...dnsmessage.Question) {
			h.Response = true
			b, err := (&dnsmessage.Message{Header: h, Questions: qs}).Pack()
			if err == nil {
				_, _ = d.pc.WriteTo(b, from)
			}
		}
		switch q.Name.String() {
		case "silent.uvs.test.":
		case "nx.uvs.test.":
			h.RCode = dnsmessage.RCodeNameError
			reply(h, q)
		case "refused.uvs.test.":
			h.RCode = dnsmessage.RCodeRefused
			reply(h)
		case "wrongid.uvs.test.":
			other := h
			other.ID++
			reply(other, q)
			reply(h, q)
		case "garbage.uvs.test.":
			_, _ = d.pc.WriteTo([]byte{0xde, 0xad, 0xbe, 0xef}, from)
			reply(h, q)
		case "query.uvs.test.":
			// A query, not a response, with the right ID.
			b, _ := (&dnsmessage.Message{Header: h, Questions: []dnsmessage.Question{q}}).Pack()
			_, _ = d.pc.WriteTo(b, from)
		case "otherq.uvs.test.":
			other := q
			other.Name = dnsmessage.MustNewName("other.uvs.test.")
			reply(h, other)
		default:
			reply(h, q)
		}
	}
}

func TestDNSCheck(t *testing.T) {
	l := lab(t)
	d := newDNSResponder(t, l, ap(srvIP, 5353))
	newDNSResponder(t, l, ap(srvIP6, 5353))

	dns := func(typ, name string) Spec {
		return Spec{Kind: DNSCheck, Addr: ap(srvIP, 5353), ConnectTimeout: 5 * time.Second, DNSType: typ, DNSName: name}
	}
	wantResult(t, "defaults", l.attempt(t, dns("", "")), true, "SOA .: answered, NOERROR")
	if q := d.question(); q.Type != dnsmessage.TypeSOA || q.Name.String() != "." || q.Class != dnsmessage.ClassINET {
		t.Errorf("default query: %v", q)
	}
	wantResult(t, "A", l.attempt(t, dns("a", "www.uvs.test")), true, "NOERROR")
	if q := d.question(); q.Type != dnsmessage.TypeA || q.Name.String() != "www.uvs.test." {
		t.Errorf("A query: %v", q)
	}
	for _, c := range []struct {
		name   string
		up     bool
		reason string
	}{
		{"nx.uvs.test", true, "NXDOMAIN"},
		{"refused.uvs.test.", true, "REFUSED"},
		{"wrongid.uvs.test", true, "NOERROR"},
		{"garbage.uvs.test", true, "NOERROR"},
		{"silent.uvs.test", false, "no answer within 300ms"},
		{"query.uvs.test", false, "no answer within 300ms"},
		{"otherq.uvs.test", false, "no answer within 300ms"},
	} {
		s := dns("AAAA", c.name)
		if !c.up {
			s.ConnectTimeout = 300 * time.Millisecond
		}
		wantResult(t, c.name, l.attempt(t, s), c.up, c.reason)
	}

	s6 := dns("TXT", "uvs.test")
	s6.Addr = ap(srvIP6, 5353)
	wantResult(t, "IPv6", l.attempt(t, s6), true, "NOERROR")

	closed := dns("", "")
	closed.Addr = ap(srvIP, 5354)
	closed.ConnectTimeout = 5 * time.Second
	start := time.Now()
	wantResult(t, "port unreachable", l.attempt(t, closed), false, "connection refused")
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("port unreachable took %v: the ICMP error was not seen", took)
	}

	wantResult(t, "unknown type", l.attempt(t, dns("WKS", ".")), false, "unknown type")
}
