package director_test

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
	"uvs/testbed"
)

// The keepalived tests run `director run --keepalived FILE` in the NAT
// lab: the director health-checks the real servers from its own namespace
// (its inner address) and keeps ipvsadm's table as the checks say.
// delay_loop is 1 s and connect_timeout 1 s, so that each change comes in
// seconds; the waits are bounded by kaWait, and the one timed assertion is
// the bound for taking a dead server out.

// kaWait bounds the waits for a change the checks are to make.
const kaWait = 15 * time.Second

// kaServer is an HTTP server in a real server's namespace that the test
// stops and starts: stopped, its port refuses connections.
type kaServer struct {
	t          *testing.T
	h          *testbed.Host
	addr, body string
	mu         sync.Mutex
	stopFn     func()
}

func kaServe(t *testing.T, h *testbed.Host, addr, body string) *kaServer {
	t.Helper()
	s := &kaServer{t: t, h: h, addr: addr, body: body}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *kaServer) start() {
	s.t.Helper()
	l, err := s.h.Listen("tcp4", s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.stopFn = testbed.ServeHTTP(l, s.body)
	s.mu.Unlock()
}

func (s *kaServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopFn != nil {
		s.stopFn()
		s.stopFn = nil
	}
}

// kaConf writes a keepalived.conf into the env's directory.
func (e *env) kaConf(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var kaDestLine = regexp.MustCompile(`(?m)^  -> (\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)`)

// kaDests lists service svc ("198.18.0.1:80") from ipvsadm -L -n as
// "addr:port weight", in ipvsadm's order, or "no service".
func (e *env) kaDests(t *testing.T, svc string) string {
	t.Helper()
	out, _, code, err := e.d.Ipvsadm("-L", "-n", "-t", svc)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		return "no service"
	}
	var ds []string
	for _, m := range kaDestLine.FindAllStringSubmatch(out, -1) {
		ds = append(ds, m[1]+" "+m[3])
	}
	return strings.Join(ds, ", ")
}

// kaWaitDests waits until svc lists want, and returns how long that took.
func (e *env) kaWaitDests(t *testing.T, svc, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := e.kaDests(t, svc)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > kaWait {
			t.Fatalf("%s lists %q; waited %v for %q", svc, got, kaWait, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kaBodies fetches url n times, each on a new connection, and returns the
// bodies.
func (e *env) kaBodies(t *testing.T, url string, n int) []string {
	t.Helper()
	var got []string
	for i := range n {
		body, _, err := e.get(url)
		if err != nil {
			t.Fatalf("fetch %d of %s: %v", i+1, url, err)
		}
		got = append(got, body)
	}
	return got
}

// kaScript writes a MISC_CHECK program that exits with the status in a
// state file, and returns the program and a function that sets the status.
func kaScript(t *testing.T, dir, name string) (prog string, set func(status int)) {
	t.Helper()
	state := filepath.Join(dir, name+".state")
	set = func(status int) {
		tmp := state + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(status)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, state); err != nil {
			t.Fatal(err)
		}
	}
	set(0)
	prog = filepath.Join(dir, name+".sh")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit \"$(cat "+state+")\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, set
}

// TCP_CHECK: a real server whose listener stops is out within delay_loop
// × (retry + 1) + connect_timeout and takes no new connection; the other
// serves on; started again it is back.
func TestKeepalivedTCPCheck(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			rs1 := kaServe(t, e.n.RS[0], ":81", "rs1")
			kaServe(t, e.n.RS[1], ":81", "rs2")
			vip := lab.DirOuterIP + ":81"
			conf := e.kaConf(t, "keepalived.conf", fmt.Sprintf(`
virtual_server %s 81 {
    delay_loop 1
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server %s 81 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
    real_server %s 81 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
}
`, lab.DirOuterIP, lab.RS1IP, lab.RS2IP))
			e.start("--keepalived", conf)
			both := lab.RS1IP + ":81 1, " + lab.RS2IP + ":81 1"
			if got := e.kaDests(t, vip); got != both {
				t.Fatalf("at start: %q, want %q", got, both)
			}
			// The checks pass from the director (NAT: its own connections
			// to a real server's service port are the host's).
			time.Sleep(2500 * time.Millisecond)
			if got := e.kaDests(t, vip); got != both {
				t.Fatalf("after the first checks: %q, want %q", got, both)
			}

			rs1.stop()
			took := e.kaWaitDests(t, vip, lab.RS2IP+":81 1")
			// delay_loop 1 s × (retry 1 + 1) + connect_timeout 1 s, and
			// 1.5 s for a loaded machine.
			const bound = 1*time.Second*(1+1) + 1*time.Second + 1500*time.Millisecond
			t.Logf("%s: the stopped real server was out of ipvsadm -L -n after %v", mode, took.Round(10*time.Millisecond))
			if took > bound {
				t.Errorf("out after %v, want within %v", took, bound)
			}
			if got := e.kaBodies(t, "http://"+vip+"/", 6); slices.ContainsFunc(got, func(b string) bool { return b != "rs2" }) {
				t.Errorf("with rs1 out, fetches got %q, want rs2 only", got)
			}

			rs1.start()
			took = e.kaWaitDests(t, vip, both)
			t.Logf("%s: the started real server was back after %v", mode, took.Round(10*time.Millisecond))
			if got := e.kaBodies(t, "http://"+vip+"/", 4); !slices.Contains(got, "rs1") || !slices.Contains(got, "rs2") {
				t.Errorf("with both in, fetches got %q, want both", got)
			}
		})
	}
}

// HTTP_GET: a wrong status code, or a body whose MD5 is not the digest,
// marks a real server down, and the right one up; --metrics shows
// uvs_healthcheck_up 0 for the failed ones.
func TestKeepalivedHTTPGet(t *testing.T) {
	e := newEnv(t, "afpacket")
	digest := func(body string) string { h := md5.Sum([]byte(body + "\n")); return hex.EncodeToString(h[:]) }
	check := func(status int, dig string) string {
		return fmt.Sprintf(`HTTP_GET {
            url {
                path /
                status_code %d
                digest %s
            }
            connect_timeout 1
            retry 0
            warmup 0
        }`, status, dig)
	}
	conf := e.kaConf(t, "keepalived.conf", fmt.Sprintf(`
virtual_server %[1]s 80 {
    delay_loop 1
    lvs_sched rr
    protocol TCP
    real_server %[2]s 80 {
        %[4]s
    }
    real_server %[3]s 80 {
        %[5]s
    }
}
virtual_server %[1]s 8080 {
    delay_loop 1
    lvs_sched rr
    protocol TCP
    real_server %[2]s 8080 {
        %[6]s
    }
    real_server %[3]s 8080 {
        %[7]s
    }
}
`, lab.DirOuterIP, lab.RS1IP, lab.RS2IP,
		check(200, digest("rs1")), check(200, digest("rs1")), // rs2's body is not rs1's
		check(404, digest("rs1-8080")), check(200, digest("rs2-8080"))))
	e.start("--keepalived", conf, "--metrics", lab.DirOuterIP+":9100")
	e.kaWaitDests(t, lab.DirOuterIP+":80", lab.RS1IP+":80 1")
	e.kaWaitDests(t, lab.DirOuterIP+":8080", lab.RS2IP+":8080 1")
	if got := e.kaBodies(t, "http://"+lab.DirOuterIP+"/", 4); slices.ContainsFunc(got, func(b string) bool { return b != "rs1" }) {
		t.Errorf("port 80 answers %q, want rs1 only", got)
	}
	m := e.scrape(t)
	labels := func(port int, rs string) string {
		return fmt.Sprintf(`{local_address="%s",local_mark="",local_port="%d",proto="TCP",remote_address="%s",remote_port="%d"}`, lab.DirOuterIP, port, rs, port)
	}
	for _, want := range []string{
		"uvs_healthcheck_up" + labels(80, lab.RS1IP) + " 1\n",
		"uvs_healthcheck_up" + labels(80, lab.RS2IP) + " 0\n",
		"uvs_healthcheck_up" + labels(8080, lab.RS1IP) + " 0\n",
		"uvs_healthcheck_up" + labels(8080, lab.RS2IP) + " 1\n",
		`uvs_healthcheck_quorum_up{local_address="` + lab.DirOuterIP + `",local_mark="",local_port="80",proto="TCP"} 1` + "\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The right ones passed checks (they were made, and nothing went
	// down); the wrong ones went down once.
	trans := func(port int, rs, to string) string {
		return fmt.Sprintf(`uvs_healthcheck_transitions_total{local_address="%s",local_mark="",local_port="%d",proto="TCP",remote_address="%s",remote_port="%d",to="%s"}`, lab.DirOuterIP, port, rs, port, to)
	}
	for _, c := range []struct {
		port int
		rs   string
		down string
	}{{80, lab.RS1IP, "0"}, {80, lab.RS2IP, "1"}, {8080, lab.RS1IP, "1"}, {8080, lab.RS2IP, "0"}} {
		if want := trans(c.port, c.rs, "down") + " " + c.down + "\n"; !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
		made := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf(`uvs_healthcheck_duration_seconds_count{checker="HTTP_GET",local_address="%s",local_mark="",local_port="%d",proto="TCP",remote_address="%s",remote_port="%d"} `, lab.DirOuterIP, c.port, c.rs, c.port)) + `[1-9]`)
		if !made.MatchString(m) {
			t.Errorf("no HTTP_GET attempt counted for %s:%d", c.rs, c.port)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(m, "uvs_healthcheck"))
	}
}

// MISC_CHECK: exit status 0 is up, 1 down; with misc_dynamic 2+N sets the
// weight to N, and 0 the configured weight again.
func TestKeepalivedMiscCheck(t *testing.T) {
	e := newEnv(t, "afpacket")
	dir := t.TempDir()
	prog1, set1 := kaScript(t, dir, "rs1")
	prog2, set2 := kaScript(t, dir, "rs2")
	misc := func(prog string) string {
		return fmt.Sprintf(`MISC_CHECK {
            misc_path "%s"
            misc_timeout 5
            misc_dynamic
            warmup 0
        }`, prog)
	}
	conf := e.kaConf(t, "keepalived.conf", fmt.Sprintf(`
virtual_server %s 80 {
    delay_loop 1
    lvs_sched wrr
    protocol TCP
    real_server %s 80 {
        weight 3
        %s
    }
    real_server %s 80 {
        weight 3
        %s
    }
}
`, lab.DirOuterIP, lab.RS1IP, misc(prog1), lab.RS2IP, misc(prog2)))
	e.start("--keepalived", conf)
	vip := lab.DirOuterIP + ":80"
	r1, r2 := lab.RS1IP+":80", lab.RS2IP+":80"
	e.kaWaitDests(t, vip, r1+" 3, "+r2+" 3")
	set1(1)
	e.kaWaitDests(t, vip, r2+" 3")
	set2(12)
	e.kaWaitDests(t, vip, r2+" 10")
	set1(0)
	e.kaWaitDests(t, vip, r1+" 3, "+r2+" 10")
	set2(0)
	e.kaWaitDests(t, vip, r1+" 3, "+r2+" 3")
}

// quorum and the sorry server: when the live weight falls below the
// quorum, the sorry server alone serves (the live real server too is
// taken out, as keepalived does); when it is back, so are the real
// servers, and the sorry server goes.
func TestKeepalivedQuorumSorry(t *testing.T) {
	e := newEnv(t, "afpacket")
	rs1 := kaServe(t, e.n.RS[0], ":82", "rs1")
	kaServe(t, e.n.RS[1], ":82", "rs2")
	kaServe(t, e.n.RS[1], ":8082", "sorry")
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes")
	note := filepath.Join(dir, "note.sh")
	if err := os.WriteFile(note, []byte("#!/bin/sh\necho \"$@\" >> "+notes+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := e.kaConf(t, "keepalived.conf", fmt.Sprintf(`
virtual_server %[1]s 82 {
    delay_loop 1
    lvs_sched rr
    protocol TCP
    quorum 2
    quorum_up "%[4]s quorum_up"
    quorum_down "%[4]s quorum_down"
    sorry_server %[3]s 8082
    real_server %[2]s 82 {
        TCP_CHECK {
            connect_timeout 1
            retry 0
        }
    }
    real_server %[3]s 82 {
        TCP_CHECK {
            connect_timeout 1
            retry 0
        }
    }
}
`, lab.DirOuterIP, lab.RS1IP, lab.RS2IP, note))
	e.start("--keepalived", conf)
	vip := lab.DirOuterIP + ":82"
	both := lab.RS1IP + ":82 1, " + lab.RS2IP + ":82 1"
	if got := e.kaDests(t, vip); got != both {
		t.Fatalf("at start: %q, want %q", got, both)
	}
	rs1.stop()
	e.kaWaitDests(t, vip, lab.RS2IP+":8082 1")
	if got := e.kaBodies(t, "http://"+vip+"/", 3); slices.ContainsFunc(got, func(b string) bool { return b != "sorry" }) {
		t.Errorf("without the quorum, fetches got %q, want the sorry server's", got)
	}
	rs1.start()
	e.kaWaitDests(t, vip, both)
	if got := e.kaBodies(t, "http://"+vip+"/", 4); !slices.Contains(got, "rs1") || !slices.Contains(got, "rs2") {
		t.Errorf("with the quorum back, fetches got %q, want rs1 and rs2", got)
	}
	deadline := time.Now().Add(kaWait)
	for {
		b, _ := os.ReadFile(notes)
		if got := strings.Fields(string(b)); slices.Equal(got, []string{"quorum_down", "quorum_up"}) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("quorum scripts ran %q, want quorum_down then quorum_up", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inhibit_on_failure: a failed real server stays listed at weight 0, its
// open connection goes on working, and new connections go to the other.
func TestKeepalivedInhibit(t *testing.T) {
	e := newEnv(t, "afpacket")
	dir := t.TempDir()
	prog, set := kaScript(t, dir, "rs1")
	conf := e.kaConf(t, "keepalived.conf", fmt.Sprintf(`
virtual_server %[1]s 7000 {
    delay_loop 1
    lvs_sched rr
    protocol TCP
    real_server %[2]s 7000 {
        weight 2
        inhibit_on_failure
        MISC_CHECK {
            misc_path "%[4]s"
            misc_timeout 5
            warmup 0
        }
    }
    real_server %[3]s 7000 {
        weight 2
    }
}
`, lab.DirOuterIP, lab.RS1IP, lab.RS2IP, prog))
	e.start("--keepalived", conf)
	vip := lab.DirOuterIP + ":7000"
	// An open connection to rs1 (rr alternates: at most two tries).
	var held *heldEcho
	for range 2 {
		c, r, name, err := e.echoConn(t, vip)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if name == "rs1" {
			held = &heldEcho{c: c, r: r}
			break
		}
	}
	if held == nil {
		t.Fatal("no connection reached rs1 in two tries")
	}
	set(1)
	e.kaWaitDests(t, vip, lab.RS1IP+":7000 0, "+lab.RS2IP+":7000 2")
	if ans, err := echo(held.c, held.r, "still"); err != nil || ans != "rs1: still" {
		t.Errorf("the open connection to the inhibited server: %q, %v", ans, err)
	}
	for i := range 4 {
		c, _, name, err := e.echoConn(t, vip)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if name != "rs2" {
			t.Errorf("new connection %d went to %s, want rs2", i+1, name)
		}
	}
	set(0)
	e.kaWaitDests(t, vip, lab.RS1IP+":7000 2, "+lab.RS2IP+":7000 2")
}

// SIGHUP reloads the keepalived file and the rules file: only the
// difference is applied, a held connection of an unchanged service goes
// on, its counters stay, each file keeps to its own services, and a
// broken keepalived file changes nothing.
func TestKeepalivedReload(t *testing.T) {
	e := newEnv(t, "afpacket")
	rules := filepath.Join(e.dir, "rules")
	writeRules := func(s string) {
		if err := os.WriteFile(rules, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := lab.DirOuterIP
	writeRules(fmt.Sprintf("-A -t %s:9000 -s rr\n-a -t %s:9000 -r %s:9000 -m -w 1\n", v, v, lab.RS1IP))
	echoVS := fmt.Sprintf(`
virtual_server %s 7000 {
    delay_loop 1
    lvs_sched rr
    protocol TCP
    real_server %s 7000 {
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
`, v, lab.RS1IP)
	httpVS := func(rs string) string {
		return fmt.Sprintf(`
virtual_server %s 80 {
    delay_loop 1
    lvs_sched rr
    protocol TCP
    real_server %s 80 {
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
`, v, rs)
	}
	conf := e.kaConf(t, "keepalived.conf", echoVS+httpVS(lab.RS1IP))
	e.start("--rules", rules, "--keepalived", conf)
	if got := e.kaDests(t, v+":9000"); got != lab.RS1IP+":9000 1" {
		t.Fatalf("the rules file's service at start: %q", got)
	}
	e.kaWaitDests(t, v+":80", lab.RS1IP+":80 1")
	c, r, name, err := e.echoConn(t, v+":7000")
	if err != nil || name != "rs1" {
		t.Fatalf("echo: %s %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	stats := func() string {
		return regexp.MustCompile(`(?m)^TCP  ` + regexp.QuoteMeta(v) + `:7000 +\d+`).FindString(e.ipvsadm(t, "-L", "-n", "--stats", "--exact", "-t", v+":7000"))
	}
	before := stats()

	// The keepalived file changes 80's real server; the rules file gains
	// a server. Neither reload touches the other's services.
	e.kaConf(t, "keepalived.conf", echoVS+httpVS(lab.RS2IP))
	writeRules(fmt.Sprintf("-A -t %s:9000 -s rr\n-a -t %s:9000 -r %s:9000 -m -w 1\n-a -t %s:9000 -r %s:9000 -m -w 1\n", v, v, lab.RS1IP, v, lab.RS2IP))
	if err := e.d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.kaWaitDests(t, v+":80", lab.RS2IP+":80 1")
	e.kaWaitDests(t, v+":9000", lab.RS1IP+":9000 1, "+lab.RS2IP+":9000 1")
	if got := e.kaDests(t, v+":7000"); got != lab.RS1IP+":7000 1" {
		t.Errorf("the unchanged keepalived service after the reload: %q", got)
	}
	if ans, err := echo(c, r, "after"); err != nil || ans != "rs1: after" {
		t.Errorf("the held connection after the reload: %q, %v", ans, err)
	}
	if got := stats(); got != before {
		t.Errorf("the unchanged service's counters after the reload: %q, were %q", got, before)
	}
	if got := e.kaBodies(t, "http://"+v+"/", 2); slices.ContainsFunc(got, func(b string) bool { return b != "rs2" }) {
		t.Errorf("port 80 after the reload answers %q, want rs2", got)
	}

	// A broken keepalived file: refused whole, the log names the line.
	listed := e.ipvsadm(t, "-S", "-n")
	e.kaConf(t, "keepalived.conf", echoVS+httpVS(lab.RS1IP)+"virtual_server 198.18.0.1 81 {\n    delay_loop soon\n}\n")
	if err := e.d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	at := fmt.Sprintf("%s:%d:", conf, strings.Count(echoVS+httpVS(lab.RS1IP), "\n")+2)
	deadline := time.Now().Add(kaWait)
	for !strings.Contains(e.d.Log(), at) {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not name %s:\n%s", at, e.d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if now := e.ipvsadm(t, "-S", "-n"); now != listed {
		t.Errorf("a broken keepalived file changed the table:\n%s\nwas:\n%s", now, listed)
	}
	if ans, err := echo(c, r, "still"); err != nil || ans != "rs1: still" {
		t.Errorf("the held connection after a refused reload: %q, %v", ans, err)
	}

	// A service moves from the keepalived file to the rules file, then
	// one the other way, each in one reload.
	e.kaConf(t, "keepalived.conf", echoVS)
	writeRules(fmt.Sprintf("-A -t %s:9000 -s rr\n-a -t %s:9000 -r %s:9000 -m -w 1\n-A -t %s:80 -s wlc\n-a -t %s:80 -r %s:80 -m -w 5\n", v, v, lab.RS1IP, v, v, lab.RS1IP))
	if err := e.d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.kaWaitDests(t, v+":80", lab.RS1IP+":80 5")
	e.kaWaitDests(t, v+":9000", lab.RS1IP+":9000 1")
	nineK := fmt.Sprintf(`
virtual_server %s 9000 {
    lvs_sched rr
    protocol TCP
    real_server %s 9000 {
        weight 7
    }
}
`, v, lab.RS2IP)
	e.kaConf(t, "keepalived.conf", echoVS+nineK)
	writeRules(fmt.Sprintf("-A -t %s:80 -s wlc\n-a -t %s:80 -r %s:80 -m -w 5\n", v, v, lab.RS1IP))
	if err := e.d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.kaWaitDests(t, v+":9000", lab.RS2IP+":9000 7")
	if got := e.kaDests(t, v+":80"); got != lab.RS1IP+":80 5" {
		t.Errorf("the rules file's service after the second move: %q", got)
	}
	if strings.Contains(e.d.Log(), "both have") {
		t.Errorf("a move between the files was refused:\n%s", e.d.Log())
	}
}

// heldEcho is an open connection to the echo service.
type heldEcho struct {
	c net.Conn
	r *bufio.Reader
}

// TestKeepalivedReloadDrains: a real server that a reload removes drains:
// listed at weight 0 while its connection lasts, which keeps working, no
// new connection goes to it, and it goes once the connection is over.
func TestKeepalivedReloadDrains(t *testing.T) {
	e := newEnv(t, "afpacket")
	v := lab.DirOuterIP
	vs := func(reals ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "virtual_server %s 7000 {\n    delay_loop 1\n    lvs_sched rr\n    protocol TCP\n", v)
		for _, rs := range reals {
			fmt.Fprintf(&b, "    real_server %s 7000 {\n        TCP_CHECK {\n            connect_timeout 1\n        }\n    }\n", rs)
		}
		b.WriteString("}\n")
		return b.String()
	}
	conf := e.kaConf(t, "keepalived.conf", vs(lab.RS1IP, lab.RS2IP))
	e.start("--keepalived", conf)
	c, r, name, err := e.echoConn(t, v+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held, other := lab.RS1IP, lab.RS2IP
	if name == "rs2" {
		held, other = other, held
	}
	e.kaConf(t, "keepalived.conf", vs(other))
	if err := e.d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	draining := other + ":7000 1, " + held + ":7000 0"
	if held < other { // ipvsadm lists by address
		draining = held + ":7000 0, " + other + ":7000 1"
	}
	e.kaWaitDests(t, v+":7000", draining)
	for i := range 3 {
		if ans, err := echo(c, r, fmt.Sprint("drain ", i)); err != nil || ans != fmt.Sprintf("%s: drain %d", name, i) {
			t.Fatalf("the held connection while its server drains: %q, %v", ans, err)
		}
		c2, _, got, err := e.echoConn(t, v+":7000")
		if err != nil || got == name {
			t.Fatalf("a new connection while %s drains went to %q (%v)", name, got, err)
		}
		c2.Close()
	}
	c.Close()
	e.kaWaitDests(t, v+":7000", other+":7000 1")
}

// TestKeepalivedSyncDaemon: global_defs' lvs_sync_daemon starts the
// connection sync daemons, master and backup, as keepalived does without
// a VRRP instance; ipvsadm lists them.
func TestKeepalivedSyncDaemon(t *testing.T) {
	e := newEnv(t, "afpacket")
	conf := e.kaConf(t, "keepalived.conf", fmt.Sprintf(`global_defs {
    router_id lb1
    lvs_sync_daemon eth1 id 5
}
virtual_server %s 7000 {
    lvs_sched rr
    protocol TCP
    real_server %s 7000 {
    }
}
`, lab.DirOuterIP, lab.RS1IP))
	e.start("--keepalived", conf)
	out := e.ipvsadm(t, "-L", "--daemon")
	for _, want := range []string{"master sync daemon (mcast=eth1, syncid=5,", "backup sync daemon (mcast=eth1, syncid=5,"} {
		if !strings.Contains(out, want) {
			t.Errorf("ipvsadm -L --daemon:\n%s\nwant a line starting %q", out, want)
		}
	}
}
