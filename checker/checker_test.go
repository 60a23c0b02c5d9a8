package checker

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"uvs/healthcheck"
	"uvs/keepalived"
	"uvs/service"
)

// The checks use delay_loop 0.2 s, no warmup and connect_timeout 1 s: the
// tests assert what the table holds after each change, in order, never
// how fast it came; every wait is bounded by wait.

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// tcpCheck is a TCP_CHECK block that notices a failure at its first
// failed attempt.
const tcpCheck = `TCP_CHECK {
            connect_timeout 1
            retry 0
            warmup 0
        }`

// A failing server is removed and comes back at its weight; one with
// inhibit_on_failure stays at weight 0; one without checkers stays as
// configured; notify_up and notify_down run.
func TestFailAndReturn(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	note := writeScript(t, dir, "note.sh", `echo "$@" >> `+dir+`/notes`)
	s1, s2 := l.server(t, 8101), l.server(t, 8102)
	f := writeConf(t, dir, "k.conf", fmt.Sprintf(`
virtual_server %[1]s 80 {
    delay_loop 0.2
    lvs_sched rr
    protocol TCP
    real_server %[2]s 8101 {
        weight 3
        notify_up "%[3]s up 8101"
        notify_down "%[3]s down 8101"
        %[4]s
    }
    real_server %[2]s 8102 {
        weight 2
        inhibit_on_failure
        %[4]s
    }
    real_server %[2]s 8103 {
        weight 1
    }
}
`, vip, srvIP, note, tcpCheck))
	ft := newTable()
	l.start(t, ft, f)
	k := tcpKey(vip, 80)
	if got, want := listing(ft.config(), k), "198.18.0.2:8101 3, 198.18.0.2:8102 2, 198.18.0.2:8103 1"; got != want {
		t.Fatalf("at start: %q, want %q", got, want)
	}
	if s := ft.config().Service(k); s.Scheduler != "rr" || s.Dests[0].Fwd != service.FwdMasq {
		t.Fatalf("service %+v, dest %+v: want rr, NAT", s, s.Dests[0])
	}

	s1.stop()
	waitListing(t, ft, k, "198.18.0.2:8102 2, 198.18.0.2:8103 1")
	s2.stop()
	waitListing(t, ft, k, "198.18.0.2:8102 0, 198.18.0.2:8103 1")
	s1.start()
	waitListing(t, ft, k, "198.18.0.2:8101 3, 198.18.0.2:8102 0, 198.18.0.2:8103 1")
	s2.start()
	waitListing(t, ft, k, "198.18.0.2:8101 3, 198.18.0.2:8102 2, 198.18.0.2:8103 1")
	if got := lines(t, dir+"/notes", 2); !slices.Equal(got, []string{"down_8101", "up_8101"}) {
		t.Errorf("notify scripts ran %q, want down then up", got)
	}
}

// alpha: the real servers start out and come in once their checks pass.
func TestAlpha(t *testing.T) {
	l := lab(t)
	l.server(t, 8111)
	dir := t.TempDir()
	f := writeConf(t, dir, "k.conf", fmt.Sprintf(`
virtual_server %[1]s 81 {
    delay_loop 0.2
    protocol TCP
    alpha
    real_server %[2]s 8111 {
        weight 4
        %[3]s
    }
    real_server %[2]s 8112 {
        weight 1
        %[3]s
    }
}
`, vip, srvIP, tcpCheck))
	ft := newTable()
	// Checks only start once New has put the table in: at that moment
	// nobody is in.
	c, err := New(ft, f, Options{Log: testLog(t), Do: l.dir.Do})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := tcpKey(vip, 81)
	waitListing(t, ft, k, "198.18.0.2:8111 4")
	// 8112 has no listener: it stays out.
	time.Sleep(600 * time.Millisecond)
	if got := listing(ft.config(), k); got != "198.18.0.2:8111 4" {
		t.Errorf("after some checks: %q", got)
	}
}

// quorum and hysteresis with a sorry server: the quorum is lost when the
// live weight falls below quorum − hysteresis, and then the sorry server
// serves alone (the live real servers are taken out, an inhibited one kept
// at weight 0); it is gained at quorum + hysteresis, and the real servers
// are back. quorum_up and quorum_down run.
func TestQuorumSorry(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	note := writeScript(t, dir, "note.sh", `echo "$@" >> `+dir+`/notes`)
	s1, s2, s3 := l.server(t, 8121), l.server(t, 8122), l.server(t, 8123)
	f := writeConf(t, dir, "k.conf", fmt.Sprintf(`
virtual_server %[1]s 82 {
    delay_loop 0.2
    protocol TCP
    quorum 5
    hysteresis 1
    quorum_up "%[3]s quorum_up"
    quorum_down "%[3]s quorum_down"
    sorry_server %[2]s 8129
    real_server %[2]s 8121 {
        weight 2
        %[4]s
    }
    real_server %[2]s 8122 {
        weight 2
        %[4]s
    }
    real_server %[2]s 8123 {
        weight 2
        inhibit_on_failure
        %[4]s
    }
}
`, vip, srvIP, note, tcpCheck))
	ft := newTable()
	c := l.start(t, ft, f)
	k := tcpKey(vip, 82)
	all := "198.18.0.2:8121 2, 198.18.0.2:8122 2, 198.18.0.2:8123 2"
	if got := listing(ft.config(), k); got != all {
		t.Fatalf("at start: %q, want %q", got, all)
	}
	wantQuorum(t, c, k, 1, 6)

	// Live weight 4: not below 5 − 1, the quorum holds.
	s1.stop()
	waitListing(t, ft, k, "198.18.0.2:8122 2, 198.18.0.2:8123 2")
	wantQuorum(t, c, k, 1, 4)
	// Live weight 2: lost. The sorry server alone serves; 8122, still
	// live, is out too, and 8123 (inhibit_on_failure) is at weight 0.
	s3.stop()
	waitListing(t, ft, k, "198.18.0.2:8123 0, 198.18.0.2:8129 1")
	wantQuorum(t, c, k, 0, 2)
	// Live weight 4: below 5 + 1, still lost.
	s3.start()
	waitUntil(t, "8123 counted live", func() bool { return liveOf(c, k) == 4 })
	if got := listing(ft.config(), k); got != "198.18.0.2:8123 0, 198.18.0.2:8129 1" {
		t.Fatalf("live weight 4 of quorum 5 hysteresis 1 after a loss: %q", got)
	}
	// Live weight 6: gained; the sorry server goes.
	s1.start()
	waitListing(t, ft, k, all)
	wantQuorum(t, c, k, 1, 6)
	_ = s2
	if got := lines(t, dir+"/notes", 2); !slices.Equal(got, []string{"quorum_down", "quorum_up"}) {
		t.Errorf("quorum scripts ran %q, want quorum_down then quorum_up", got)
	}
}

// Without a sorry server the quorum only runs the scripts: the live real
// servers stay.
func TestQuorumWithoutSorry(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	note := writeScript(t, dir, "note.sh", `echo "$@" >> `+dir+`/notes`)
	s1 := l.server(t, 8131)
	l.server(t, 8132)
	f := writeConf(t, dir, "k.conf", fmt.Sprintf(`
virtual_server %[1]s 83 {
    delay_loop 0.2
    protocol TCP
    quorum 2
    quorum_down "%[3]s quorum_down"
    real_server %[2]s 8131 {
        %[4]s
    }
    real_server %[2]s 8132 {
        %[4]s
    }
}
`, vip, srvIP, note, tcpCheck))
	ft := newTable()
	c := l.start(t, ft, f)
	k := tcpKey(vip, 83)
	s1.stop()
	waitListing(t, ft, k, "198.18.0.2:8132 1")
	lines(t, dir+"/notes", 1)
	wantQuorum(t, c, k, 0, 1)
}

// misc_dynamic: exit status 2+N sets the weight to N, 0 the configured
// weight again, 1 takes the server out; the quorum counts the weight.
func TestMiscDynamic(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	state := dir + "/state"
	if err := writeState(state, "0"); err != nil {
		t.Fatal(err)
	}
	misc := writeScript(t, dir, "misc.sh", `exit "$(cat `+state+`)"`)
	f := writeConf(t, dir, "k.conf", fmt.Sprintf(`
virtual_server %[1]s 84 {
    delay_loop 0.2
    protocol TCP
    real_server %[2]s 8141 {
        weight 5
        MISC_CHECK {
            misc_path "%[3]s"
            misc_timeout 5
            misc_dynamic
            warmup 0
        }
    }
}
`, vip, srvIP, misc))
	ft := newTable()
	c := l.start(t, ft, f)
	k := tcpKey(vip, 84)
	for _, step := range []struct{ exit, want string }{
		{"12", "198.18.0.2:8141 10"},
		{"2", "198.18.0.2:8141 0"},
		{"0", "198.18.0.2:8141 5"},
		{"1", ""},
		{"9", "198.18.0.2:8141 7"},
	} {
		if err := writeState(state, step.exit); err != nil {
			t.Fatal(err)
		}
		waitListing(t, ft, k, step.want)
	}
	wantQuorum(t, c, k, 1, 7)
}

// A DR or TUN server is checked at its own address and the service's
// port; connect_ip and connect_port override that.
func TestCheckAddress(t *testing.T) {
	dir := t.TempDir()
	f := writeConf(t, dir, "k.conf", `
virtual_server 198.18.0.100 443 {
    protocol TCP
    lvs_method DR
    real_server 198.18.1.2 443 {
        TCP_CHECK {
        }
    }
    real_server 198.18.1.3 443 {
        lvs_method TUN
        HTTP_GET {
            url {
                path /
            }
        }
        TCP_CHECK {
            connect_ip 198.18.1.30
            connect_port 8443
        }
    }
}
virtual_server fwmark 7 {
    lvs_method NAT
    persistence_timeout 60
    real_server 198.18.1.4 80 {
        TCP_CHECK {
        }
    }
}
`)
	vss, warnings, err := build(f)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("build: %v, warnings %q", err, warnings)
	}
	var got []string
	for _, v := range vss {
		for _, r := range v.reals {
			for _, s := range r.specs {
				got = append(got, fmt.Sprintf("%v %v %v", r.target, s.Kind, s.Addr))
			}
		}
	}
	want := []string{
		"-t 198.18.0.100:443 -r 198.18.1.2:443 TCP_CHECK 198.18.1.2:443",
		"-t 198.18.0.100:443 -r 198.18.1.3:443 HTTP_GET 198.18.1.3:443",
		"-t 198.18.0.100:443 -r 198.18.1.3:443 TCP_CHECK 198.18.1.30:8443",
		"-f 7 -r 198.18.1.4:80 TCP_CHECK 198.18.1.4:80",
	}
	if !slices.Equal(got, want) {
		t.Errorf("checks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Rules from elsewhere live beside the file's: a service the table has
// already is refused (and the table unchanged); others stay untouched.
func TestShareTable(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	ft := newTable()
	foreign := tcpKey(vip, 9999)
	if err := ft.Update(func(c *service.Config) error {
		if err := c.AddService(&service.Service{Key: foreign, Scheduler: "wlc"}); err != nil {
			return err
		}
		return c.AddDest(foreign, &service.Dest{Addr: mustAddr("198.18.1.9"), Port: 9999, Weight: 1, Fwd: service.FwdMasq})
	}); err != nil {
		t.Fatal(err)
	}
	clash := writeConf(t, dir, "clash.conf", fmt.Sprintf(`
virtual_server %s 9999 {
    protocol TCP
    real_server %s 8151 {
    }
}
virtual_server %[1]s 85 {
    protocol TCP
}
`, vip, srvIP))
	before := ft.config()
	if _, err := New(ft, clash, Options{Log: testLog(t), Do: l.dir.Do}); err == nil || !strings.Contains(err.Error(), "clash.conf:2:") {
		t.Fatalf("New over a service the table has: %v, want an error naming clash.conf:2", err)
	}
	if ft.config() != before {
		t.Fatal("a refused start changed the table")
	}
	ok := writeConf(t, dir, "ok.conf", fmt.Sprintf(`
virtual_server %s 85 {
    protocol TCP
    real_server %s 8151 {
    }
}
`, vip, srvIP))
	c := l.start(t, ft, ok)
	cfg := ft.config()
	if got := listing(cfg, foreign); got != "198.18.1.9:9999 1" {
		t.Errorf("the foreign service lists %q", got)
	}
	if got := listing(cfg, tcpKey(vip, 85)); got != "198.18.0.2:8151 1" {
		t.Errorf("the file's service lists %q", got)
	}
	if got := c.Keys(); !slices.Equal(got, []service.Key{tcpKey(vip, 85)}) {
		t.Errorf("Keys() = %v", got)
	}
}

// Reload applies only the difference, keeps the check state and the live
// state of what stays, and leaves other services alone; a file that cannot
// be run, or a table that refuses, changes nothing.
func TestReload(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	l.server(t, 8161)
	down := l.server(t, 8162)
	l.server(t, 8163)
	conf := func(sched string, reals []int, extra string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "virtual_server %s 86 {\n delay_loop 0.2\n protocol TCP\n lvs_sched %s\n", vip, sched)
		for _, p := range reals {
			fmt.Fprintf(&b, " real_server %s %d {\n inhibit_on_failure\n %s\n }\n", srvIP, p, tcpCheck)
		}
		b.WriteString("}\n" + extra)
		return b.String()
	}
	gone := fmt.Sprintf("virtual_server %s 87 {\n protocol TCP\n real_server %s 8171 {\n }\n}\n", vip, srvIP)
	added := fmt.Sprintf("virtual_server %s 88 {\n protocol TCP\n real_server %s 8181 {\n }\n}\n", vip, srvIP)
	ft := newTable()
	foreign := tcpKey(vip, 9998)
	if err := ft.Update(func(c *service.Config) error { return c.AddService(&service.Service{Key: foreign, Scheduler: "wlc"}) }); err != nil {
		t.Fatal(err)
	}
	c := l.start(t, ft, writeConf(t, dir, "a.conf", conf("rr", []int{8161, 8162}, gone)))
	k := tcpKey(vip, 86)
	down.stop()
	waitListing(t, ft, k, "198.18.0.2:8161 1, 198.18.0.2:8162 0")
	cfg := ft.config()
	stats := cfg.Service(k).Stats
	state8161 := cfg.Service(k).Dest(mustAddr(srvIP), 8161).DestState
	state8162 := cfg.Service(k).Dest(mustAddr(srvIP), 8162).DestState

	// A model whose table cannot be made (Config fails: what Parse lets
	// through never does, so it is made by hand): the table stays as it
	// is.
	bad := writeConf(t, dir, "bad.conf", conf("rr", []int{8161}, ""))
	bad.VirtualServers[0].Sched = "nosuch"
	if _, err := bad.Config(); err == nil {
		t.Fatal("Config takes an unknown scheduler")
	}
	if err := c.Reload(bad); err == nil {
		t.Fatal("a file whose table cannot be made reloaded")
	}
	if ft.config() != cfg {
		t.Fatal("a refused reload changed the table")
	}
	// A table that refuses: nothing changes, the checker's state neither.
	next := writeConf(t, dir, "b.conf", conf("wlc", []int{8162, 8163}, added))
	ft.setFail(errors.New("host says no"))
	if err := c.Reload(next); err == nil || !strings.Contains(err.Error(), "host says no") {
		t.Fatalf("reload on a refusing table: %v", err)
	}
	ft.setFail(nil)
	if got := c.Keys(); !slices.Equal(got, []service.Key{k, tcpKey(vip, 87)}) {
		t.Fatalf("after a refused reload the checker owns %v", got)
	}

	updates := ft.updates
	if err := c.Reload(next); err != nil {
		t.Fatal(err)
	}
	if ft.updates != updates+1 {
		t.Errorf("a reload made %d table changes, want 1", ft.updates-updates)
	}
	cfg = ft.config()
	s := cfg.Service(k)
	switch {
	case s.Scheduler != "wlc":
		t.Errorf("scheduler %s after the reload, want wlc", s.Scheduler)
	case s.Stats != stats:
		t.Error("the kept service lost its counters")
	case s.Dest(mustAddr(srvIP), 8161) != nil:
		t.Error("the removed real server is still there")
	case s.Dest(mustAddr(srvIP), 8162).DestState != state8162:
		t.Error("the kept real server lost its live state")
	case cfg.Service(tcpKey(vip, 87)) != nil:
		t.Error("the removed service is still there")
	case listing(cfg, tcpKey(vip, 88)) != "198.18.0.2:8181 1":
		t.Errorf("the added service lists %q", listing(cfg, tcpKey(vip, 88)))
	case cfg.Service(foreign) == nil:
		t.Error("the reload deleted a service that is not the file's")
	}
	_ = state8161
	// 8162 kept its state (down, so at weight 0); the new 8163 starts up.
	if got := listing(cfg, k); got != "198.18.0.2:8162 0, 198.18.0.2:8163 1" {
		t.Errorf("after the reload %q, want 8162 still down", got)
	}
	down.start()
	waitListing(t, ft, k, "198.18.0.2:8162 1, 198.18.0.2:8163 1")
	if up, ok := c.mon.State(healthcheck.Target{Service: k, Addr: mustAddr(srvIP), Port: 8161}); ok {
		t.Errorf("the removed real server is still checked (up %v)", up)
	}
	if got := c.Keys(); !slices.Equal(got, []service.Key{k, tcpKey(vip, 88)}) {
		t.Errorf("after the reload the checker owns %v", got)
	}
}

// The collector: the monitor's series and the quorum's.
func TestCollector(t *testing.T) {
	l := lab(t)
	dir := t.TempDir()
	f := writeConf(t, dir, "k.conf", fmt.Sprintf(`
virtual_server fwmark 9 {
    delay_loop 0.2
    persistence_timeout 60
    quorum 2
    real_server %s 8191 {
        weight 3
        %s
    }
}
`, srvIP, tcpCheck))
	ft := newTable()
	c := l.start(t, ft, f)
	k := service.Key{FWMark: 9}
	// No listener: the server goes down, the quorum is lost.
	waitUntil(t, "the quorum lost", func() bool { q, _ := quorumOf(c, k); return q == 0 })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()+labelString(m)] = fmt.Sprint(value(m))
		}
	}
	for name, want := range map[string]string{
		`uvs_healthcheck_up{local_address="",local_mark="00000009",local_port="0",proto="FWM",remote_address="198.18.0.2",remote_port="8191"}`:                          "0",
		`uvs_healthcheck_quorum_up{local_address="",local_mark="00000009",local_port="0",proto="FWM"}`:                                                                  "0",
		`uvs_healthcheck_live_weight{local_address="",local_mark="00000009",local_port="0",proto="FWM"}`:                                                                "0",
		`uvs_healthcheck_quorum_transitions_total{local_address="",local_mark="00000009",local_port="0",proto="FWM",to="down"}`:                                         "1",
		`uvs_healthcheck_transitions_total{local_address="",local_mark="00000009",local_port="0",proto="FWM",remote_address="198.18.0.2",remote_port="8191",to="down"}`: "1",
		`uvs_healthcheck_table_errors_total`: "0",
	} {
		if got[name] != want {
			t.Errorf("%s = %q, want %s", name, got[name], want)
		}
	}
}

func writeState(path, s string) error { return writeFile(path, s) }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", wait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quorumOf returns the quorum state (1 up, 0 lost, -1 unknown service) and
// live weight of the virtual server of k.
func quorumOf(c *Checker, k service.Key) (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.vss {
		if slices.Contains(v.keys, k) {
			if v.quorumUp {
				return 1, v.liveWeight
			}
			return 0, v.liveWeight
		}
	}
	return -1, 0
}

func liveOf(c *Checker, k service.Key) int { _, w := quorumOf(c, k); return w }

func wantQuorum(t *testing.T, c *Checker, k service.Key, up, live int) {
	t.Helper()
	if q, w := quorumOf(c, k); q != up || w != live {
		t.Fatalf("quorum %d live weight %d, want %d and %d", q, w, up, live)
	}
}

func labelString(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var parts []string
	for _, lp := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return -1
}

// desired: a sorry server that is also a real server is the sorry server
// while the quorum is lost and the real server otherwise;
// sorry_server_inhibit keeps the sorry server at weight 0.
func TestDesired(t *testing.T) {
	dir := t.TempDir()
	f := writeConf(t, dir, "k.conf", `
virtual_server 198.18.0.100 80 {
    protocol TCP
    quorum 3
    sorry_server 198.18.1.2 80
    real_server 198.18.1.2 80 {
        weight 2
    }
    real_server 198.18.1.3 80 {
        weight 2
    }
}
virtual_server 198.18.0.100 81 {
    protocol TCP
    sorry_server 198.18.1.9 81
    sorry_server_inhibit
    real_server 198.18.1.2 81 {
    }
}
`)
	vss, _, err := build(f)
	if err != nil {
		t.Fatal(err)
	}
	show := func(v *virtual) string {
		var out []string
		for _, w := range desired(v, 0) {
			if w.d == nil {
				out = append(out, w.addr.String()+" out")
			} else {
				out = append(out, fmt.Sprintf("%s %d", w.addr, w.d.Weight))
			}
		}
		return strings.Join(out, ", ")
	}
	v := vss[0]
	for _, r := range v.reals {
		r.up = true
	}
	v.quorumUp = true
	if got, want := show(v), "198.18.1.2:80 2, 198.18.1.3:80 2"; got != want {
		t.Errorf("quorum: %q, want %q", got, want)
	}
	v.reals[1].up = false
	v.quorumUp = false
	if got, want := show(v), "198.18.1.3:80 out, 198.18.1.2:80 1"; got != want {
		t.Errorf("quorum lost: %q, want %q", got, want)
	}
	v = vss[1]
	v.reals[0].up, v.quorumUp = true, true
	if got, want := show(v), "198.18.1.2:81 1, 198.18.1.9:81 0"; got != want {
		t.Errorf("sorry_server_inhibit, quorum: %q, want %q", got, want)
	}
	v.reals[0].up, v.quorumUp = false, false
	if got, want := show(v), "198.18.1.2:81 out, 198.18.1.9:81 1"; got != want {
		t.Errorf("sorry_server_inhibit, quorum lost: %q, want %q", got, want)
	}
}

// TestREADMEExample: the README's keepalived.conf parses (its global_defs
// skipped with a warning, nothing else said) and can be run. keepalived
// --config-test (2.2.7) accepts it too.
func TestREADMEExample(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, text, ok := strings.Cut(string(b), "# /etc/keepalived/keepalived.conf\n")
	if !ok {
		t.Fatal("README: no keepalived.conf example")
	}
	text, _, _ = strings.Cut(text, "```")
	path := filepath.Join(t.TempDir(), "keepalived.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	f, warnings, err := keepalived.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].Msg, "global_defs") {
		t.Errorf("warnings %v, want one for global_defs", warnings)
	}
	if err := Check(f); err != nil {
		t.Fatal(err)
	}
	vss, warns, err := build(f)
	if err != nil || len(warns) > 0 || len(vss) != 2 || vss[0].vs.Sorry == nil {
		t.Errorf("build: %d virtual servers, warnings %q, err %v", len(vss), warns, err)
	}
}

// A reload drains what it removes: a real server with established
// connections stays at weight 0 until they are over, a virtual server
// likewise; one named again returns at its weight; the fake table reads
// as the director does (Config), so nothing is changed while nothing is
// due.
func TestReloadDrains(t *testing.T) {
	dir := t.TempDir()
	ft := &readableTable{newTable()}
	c, err := New(ft, drainConf(t, dir, []int{8191, 8192, 8194, 8195}, true), Options{Log: testLog(t), DrainTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k90, k91 := tcpKey(vip, 90), tcpKey(vip, 91)
	conns := func(k service.Key, port uint16, n int32) {
		ft.config().Service(k).Dest(mustAddr(srvIP), port).AddConns(n, 0)
	}
	conns(k90, 8191, 1)
	conns(k90, 8194, 1) // never ends: drains all along
	conns(k90, 8195, 1)
	conns(k91, 8193, 2)

	if err := c.Reload(drainConf(t, dir, []int{8192}, false)); err != nil {
		t.Fatal(err)
	}
	if got := listing(ft.config(), k90); got != "198.18.0.2:8191 0, 198.18.0.2:8192 1, 198.18.0.2:8194 0, 198.18.0.2:8195 0" {
		t.Fatalf("after the reload %q, want the removed servers at weight 0", got)
	}
	if got := listing(ft.config(), k91); got != "198.18.0.2:8193 0" {
		t.Fatalf("the removed service lists %q, want its server at weight 0", got)
	}
	if !slices.Contains(c.Keys(), k91) {
		t.Error("a draining service is not the checker's any more: a rules-file reload would drop it")
	}
	updates := ft.count()
	time.Sleep(2 * drainTick)
	if n := ft.count(); n != updates {
		t.Errorf("%d table changes while nothing was drained", n-updates)
	}

	conns(k90, 8191, -1)
	waitListing(t, ft.fakeTable, k90, "198.18.0.2:8192 1, 198.18.0.2:8194 0, 198.18.0.2:8195 0")
	conns(k91, 8193, -2)
	waitListing(t, ft.fakeTable, k91, "no service")
	if slices.Contains(c.Keys(), k91) {
		t.Error("the drained service is still the checker's")
	}
	// 8195 is named again before it is gone: back at its weight, and it
	// stays.
	if err := c.Reload(drainConf(t, dir, []int{8192, 8195}, false)); err != nil {
		t.Fatal(err)
	}
	waitListing(t, ft.fakeTable, k90, "198.18.0.2:8192 1, 198.18.0.2:8194 0, 198.18.0.2:8195 1")
	time.Sleep(2 * drainTick)
	if got := listing(ft.config(), k90); got != "198.18.0.2:8192 1, 198.18.0.2:8194 0, 198.18.0.2:8195 1" {
		t.Errorf("later: %q, want 8194 still draining", got)
	}
}

// A drain ends at DrainTimeout even if the connections do not.
func TestDrainTimeout(t *testing.T) {
	dir := t.TempDir()
	ft := &readableTable{newTable()}
	const timeout = time.Second
	c, err := New(ft, drainConf(t, dir, []int{8191, 8192}, false), Options{Log: testLog(t), DrainTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k90 := tcpKey(vip, 90)
	ft.config().Service(k90).Dest(mustAddr(srvIP), 8191).AddConns(1, 0) // never ends
	start := time.Now()
	if err := c.Reload(drainConf(t, dir, []int{8192}, false)); err != nil {
		t.Fatal(err)
	}
	waitListing(t, ft.fakeTable, k90, "198.18.0.2:8192 1")
	if el := time.Since(start); el < timeout {
		t.Errorf("the server went after %v, before its drain time (%v) was up", el, timeout)
	}
}

// drainConf is a keepalived file with virtual server 90 of real servers
// reals (no checks) and, with91, virtual server 91 of one.
func drainConf(t *testing.T, dir string, reals []int, with91 bool) *keepalived.File {
	var b strings.Builder
	fmt.Fprintf(&b, "virtual_server %s 90 {\n protocol TCP\n lvs_sched rr\n", vip)
	for _, p := range reals {
		fmt.Fprintf(&b, " real_server %s %d {\n }\n", srvIP, p)
	}
	b.WriteString("}\n")
	if with91 {
		fmt.Fprintf(&b, "virtual_server %s 91 {\n protocol TCP\n real_server %s 8193 {\n }\n}\n", vip, srvIP)
	}
	return writeConf(t, dir, fmt.Sprintf("k%d-%v.conf", len(reals), with91), b.String())
}

// readableTable is a fakeTable that can be read as the director can.
type readableTable struct{ *fakeTable }

func (r *readableTable) Config() *service.Config { return r.config() }

func (r *readableTable) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updates
}
