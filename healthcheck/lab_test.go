package healthcheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"uvs/testbed"
)

// The tests' network: two namespaces joined by one veth pair. "dir" is the
// director, where the checks run; "srv" holds the real servers. Nothing is
// sent outside them, and only to 198.18.0.0/15 and 2001:2::/48.
//
//	dir eth0 198.18.0.1/24 198.18.0.3/24 2001:2::1/64 ── srv eth0 198.18.0.2/24 2001:2::2/64
//
// 198.18.0.9 is on the link but nobody has it: connections to it time out.
const (
	dirIP  = "198.18.0.1"
	bindIP = "198.18.0.3"
	srvIP  = "198.18.0.2"
	noneIP = "198.18.0.9"
	srvIP6 = "2001:2::2"
)

// bedPrefix names the tests' namespaces (testbed.Cleanup("hc") removes what
// a killed run left).
const bedPrefix = "hc"

type testLab struct {
	bed      *testbed.Bed
	dir, srv *testbed.Host
}

var (
	labOnce sync.Once
	theLab  *testLab
	labErr  error
)

// lab returns the shared network, built by the first test that needs it and
// removed by TestMain. Tests skip where namespaces cannot be made.
func lab(t testing.TB) *testLab {
	t.Helper()
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	labOnce.Do(func() { theLab, labErr = buildLab() })
	if labErr != nil {
		t.Fatal(labErr)
	}
	return theLab
}

func buildLab() (*testLab, error) {
	bed, dir, srv, err := testbed.Pair(bedPrefix, "dir", []string{dirIP + "/24", bindIP + "/24", "2001:2::1/64"},
		"srv", []string{srvIP + "/24", srvIP6 + "/64"})
	if err != nil {
		return nil, err
	}
	l := &testLab{bed: bed, dir: dir, srv: srv}
	err = func() error {
		// The first IPv6 connection over the fresh link loses its first
		// SYN (neighbour discovery) and waits a second for the resend;
		// one exchange now keeps that out of the tests' timeouts.
		for _, ip := range []string{srvIP, srvIP6} {
			ln, err := l.srv.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := l.dir.Dial(ctx, "tcp", ln.Addr().String())
			cancel()
			ln.Close()
			if err != nil {
				return fmt.Errorf("first connection to %s: %w", ip, err)
			}
			c.Close()
		}
		return nil
	}()
	if err != nil {
		return nil, errors.Join(err, bed.Close())
	}
	return l, nil
}

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) != "" {
		os.Exit(benchChild())
	}
	code := m.Run()
	if theLab != nil {
		if err := theLab.bed.Close(); err != nil {
			println("healthcheck tests: closing the test network:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// env makes the checks' sockets and processes in the director namespace.
func (l *testLab) env() env { return env{do: l.dir.Do} }

// monitor returns a monitor whose checks run in the director namespace and
// whose events arrive on the returned channel. It is closed when the test
// ends.
func (l *testLab) monitor(t *testing.T) (*Monitor, chan Event) {
	t.Helper()
	events := make(chan Event, 100)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := NewMonitor(func(ev Event) { events <- ev }, log)
	m.env = l.env()
	t.Cleanup(m.Close)
	return m, events
}

func ap(addr string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}

// listen opens a TCP listener in h, closed when the test ends.
func listen(t *testing.T, h *testbed.Host, addr netip.AddrPort) net.Listener {
	t.Helper()
	ln, err := h.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// tcpServer accepts and closes connections on a listener in h, counting
// them and keeping the address of the last client.
type tcpServer struct {
	ln       net.Listener
	accepted atomic.Int64
	last     atomic.Value // net.Addr
	done     chan struct{}
}

func newTCPServer(t *testing.T, h *testbed.Host, addr netip.AddrPort) *tcpServer {
	t.Helper()
	s := &tcpServer{ln: listen(t, h, addr), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.last.Store(c.RemoteAddr())
			s.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(s.close)
	return s
}

// wait waits for the server to have accepted n connections.
func (s *tcpServer) wait(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.accepted.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server accepted %d connections, want %d", s.accepted.Load(), n)
		}
	}
}

// close stops accepting: connections are refused from now on.
func (s *tcpServer) close() {
	s.ln.Close()
	<-s.done
}

// serveHTTP serves h on a listener in host at addr, over TLS with a fresh
// self-signed certificate when cfg is not nil; it stops when the test ends.
func serveHTTP(t *testing.T, host *testbed.Host, addr netip.AddrPort, cfg *tls.Config, h http.Handler) {
	t.Helper()
	ln := listen(t, host, addr)
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// selfSigned returns a TLS server configuration with a self-signed
// certificate for "uvs.test", as the real servers of `director lab ssl` have.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "uvs.test"},
		DNSNames:     []string{"uvs.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// writeScript writes an executable shell script to a new file in dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := dir + "/" + name
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
