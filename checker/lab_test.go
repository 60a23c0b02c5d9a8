package checker

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"uvs/keepalived"
	"uvs/service"
	"uvs/testbed"
)

// The tests' network: two namespaces joined by one veth pair. The checker
// runs its checks and scripts in "dir" (Options.Do); "srv" holds the real
// servers, each a port of one address. Nothing is sent outside them.
//
//	dir eth0 198.18.0.1/24 ── srv eth0 198.18.0.2/24
const (
	srvIP = "198.18.0.2"
	vip   = "198.18.0.100"
)

// bedPrefix names the tests' namespaces (testbed.Cleanup("chk") removes
// what a killed run left).
const bedPrefix = "chk"

// wait bounds every wait for something the checks are to do: long enough
// for a loaded machine, so that a broken checker fails instead of hanging.
const wait = 15 * time.Second

type testLab struct {
	bed      *testbed.Bed
	dir, srv *testbed.Host
}

var (
	labOnce sync.Once
	theLab  *testLab
	labErr  error
)

// lab returns the shared network, built by the first test that needs it
// and removed by TestMain. Tests skip where namespaces cannot be made.
func lab(t *testing.T) *testLab {
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
	bed, dir, srv, err := testbed.Pair(bedPrefix, "dir", []string{"198.18.0.1/24"}, "srv", []string{srvIP + "/24"})
	if err != nil {
		return nil, err
	}
	return &testLab{bed: bed, dir: dir, srv: srv}, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if theLab != nil {
		if err := theLab.bed.Close(); err != nil {
			println("checker tests: closing the test network:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// server is a TCP real server in srv that can be stopped and started: a
// stopped one refuses connections.
type server struct {
	t    *testing.T
	h    *testbed.Host
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func (l *testLab) server(t *testing.T, port int) *server {
	t.Helper()
	s := &server{t: t, h: l.srv, addr: net.JoinHostPort(srvIP, fmt.Sprint(port))}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	ln, err := s.h.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

// fakeTable is a Table that keeps the table in memory, or refuses every
// change while fail is set.
type fakeTable struct {
	mu      sync.Mutex
	cfg     *service.Config
	fail    error
	updates int
}

func newTable() *fakeTable { return &fakeTable{cfg: service.NewConfig()} }

func (f *fakeTable) Update(fn func(*service.Config) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	next := f.cfg.Clone()
	if err := fn(next); err != nil {
		return err
	}
	f.cfg = next
	f.updates++
	return nil
}

func (f *fakeTable) config() *service.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

func (f *fakeTable) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// listing is a service's real servers as "addr:port weight", sorted, or
// "no service".
func listing(cfg *service.Config, k service.Key) string {
	s := cfg.Service(k)
	if s == nil {
		return "no service"
	}
	var out []string
	for _, d := range s.Dests {
		out = append(out, fmt.Sprintf("%s %d", d.AddrPort(), d.Weight))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// waitListing waits until service k of ft lists want.
func waitListing(t *testing.T, ft *fakeTable, k service.Key, want string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := listing(ft.config(), k)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lists %q; waited %v for %q", k, got, wait, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tcpKey is the TCP service addr:port.
func tcpKey(addr string, port uint16) service.Key {
	return service.Key{Proto: service.TCP, Addr: mustAddr(addr), Port: port}
}

// writeConf writes a keepalived.conf into dir and parses it.
func writeConf(t *testing.T, dir, name, text string) *keepalived.File {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	f, warnings, err := keepalived.Parse(path)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(warnings) > 0 {
		t.Fatalf("%s: warnings %v", name, warnings)
	}
	return f
}

// writeScript writes an executable shell script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs a checker of f on ft with its checks in the lab's dir
// namespace, closed when the test ends.
func (l *testLab) start(t *testing.T, ft *fakeTable, f *keepalived.File) *Checker {
	t.Helper()
	c, err := New(ft, f, Options{Log: testLog(t), Do: l.dir.Do, ScriptTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines waits until the file at path has n lines and returns them.
func lines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile(path)
		got := strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines %q; waited for %d", path, len(got), got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeFile replaces the file at path with s at once, so that a script
// reading it never sees it half written.
func writeFile(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
