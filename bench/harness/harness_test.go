package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"uvs/bench/udpflood"
	"uvs/lab"
	"uvs/testbed"
)

var directorBin string // built by TestMain when running as root

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run()
		}
		bin, remove, err := lab.BuildDirector("../../cmd/director")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer remove()
		directorBin = bin
		return m.Run()
	}()
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
}

func needPeers(t *testing.T) {
	t.Helper()
	if m := MissingPeers(); len(m) > 0 {
		t.Skipf("peers missing (apt-get install %s)", pkgList(m))
	}
}

func pkgList(ps []Peer) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Package)
	}
	return strings.Join(s, " ")
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestConfigsAccepted checks the generated HAProxy and nftables
// configurations with the programs' own check modes.
func TestConfigsAccepted(t *testing.T) {
	if hap, err := LookPath("haproxy"); err != nil {
		t.Log("haproxy not installed: its configuration is not checked")
	} else {
		f := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(f, []byte(haproxyConf()), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(hap, "-c", "-f", f).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c rejects the configuration: %v\n%s\n%s", err, out, haproxyConf())
		}
	}
	nft, err := LookPath("nft")
	if err != nil || os.Geteuid() != 0 {
		t.Log("nft check mode needs nft and root: skipped")
		return
	}
	// -c checks against the kernel without committing anything.
	cmd := exec.Command(nft, "-c", "-f", "-")
	cmd.Stdin = strings.NewReader(nftRuleset())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("nft -c rejects the ruleset: %v\n%s\n%s", err, out, nftRuleset())
	}
}

func TestByName(t *testing.T) {
	for _, p := range Paths {
		if got, ok := PathByName(p.Name); !ok || got.Name != p.Name {
			t.Errorf("PathByName(%q) = %v, %v", p.Name, got.Name, ok)
		}
	}
	for _, w := range Workloads {
		if got, ok := WorkloadByName(w.Name); !ok || got.Name != w.Name {
			t.Errorf("WorkloadByName(%q) = %v, %v", w.Name, got.Name, ok)
		}
	}
	if _, ok := PathByName("ipvs"); ok {
		t.Error("PathByName found a path that does not exist")
	}
	if _, ok := WorkloadByName("bulk"); ok {
		t.Error("WorkloadByName found a workload that does not exist")
	}
}

// TestBuild builds the topology and checks that every real server serves
// what the workloads need, reached from the director namespace, and that
// Close leaves no namespace behind.
func TestBuild(t *testing.T) {
	needRoot(t)
	needPeers(t)
	ctx := context.Background()
	topo, err := Build(ctx, "uvsbenchtopo", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	prefix := topo.Net.Bed.Prefix()
	defer func() {
		if topo != nil {
			topo.Close()
		}
	}()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: topo.Net.Director.Dial}}
	for i, ip := range RealServers() {
		resp, err := hc.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(HTTPPort)) + SmallFile)
		if err != nil {
			t.Fatalf("rs%d: %v", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) != smallFileSize {
			t.Errorf("rs%d: status %d, %d bytes; want 200, %d", i+1, resp.StatusCode, len(body), smallFileSize)
		}
		c, err := topo.Net.Director.Dial(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(BulkPort)))
		if err != nil {
			t.Errorf("rs%d iperf3: %v", i+1, err)
		} else {
			c.Close()
		}
	}
	// A datagram from the director to each sink is counted there.
	for i, ip := range RealServers() {
		var conn *net.UDPConn
		if err := topo.Net.Director.Do(func() error {
			var err error
			conn, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: net.ParseIP(ip), Port: UDPPort})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		r, err := udpflood.Send(ctx, []*net.UDPConn{conn}, udpflood.Config{Size: 64, Count: 10, Duration: time.Second})
		conn.Close()
		if err != nil || r.Sent != 10 {
			t.Fatalf("send to rs%d: %d sent, %v", i+1, r.Sent, err)
		}
		s := topo.Sinks[i]
		for deadline := time.Now().Add(2 * time.Second); s.Received() < 10 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if s.Received() != 10 {
			t.Errorf("rs%d sink counted %d of 10", i+1, s.Received())
		}
	}
	// The client reaches the real servers only through the director.
	if out, err := topo.Net.Client.Exec("ip", "route", "show", "default"); err != nil || !strings.Contains(out, lab.DirOuterIP) {
		t.Errorf("client default route: %q, %v", out, err)
	}
	// Only what comes from the DR/TUN VIP returns by the router.
	for i, rs := range topo.Net.RS {
		if out, err := rs.Exec("ip", "rule", "show"); err != nil || !strings.Contains(out, "from "+DSRVIP+" lookup "+returnTable) {
			t.Errorf("rs%d rules: %q, %v", i+1, out, err)
		}
		if out, err := rs.Exec("ip", "route", "show", "default"); err != nil || !strings.Contains(out, lab.DirInnerIP) {
			t.Errorf("rs%d default route: %q, %v", i+1, out, err)
		}
	}
	if out, err := topo.Router.Exec("ip", "route", "get", lab.ClientIP); err != nil || !strings.Contains(out, "dev eth0") {
		t.Errorf("router's route to the client: %q, %v", out, err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	topo = nil
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left after Close", e.Name())
		}
	}
}

// TestSmoke runs every workload through every path for a second each with
// tiny counts, so the harness cannot rot: each path must start, every
// workload must produce a figure, and the balancer's CPU must be read.
func TestSmoke(t *testing.T) {
	needRoot(t)
	needPeers(t)
	if testing.Short() {
		t.Skip("smoke run skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	topo, err := Build(ctx, "uvsbenchsmoke", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	o := Options{
		Director: directorBin, Duration: time.Second, Repeat: 1,
		Paths: Paths, Workloads: DefaultWorkloads(),
		UDPFlows: 4, UDPCount: 20000, UDPSize: 64, Log: quietLog(),
	}
	samples, err := Run(ctx, topo, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != len(Paths)*len(o.Workloads) {
		t.Fatalf("%d samples, want one per path and workload (%d)", len(samples), len(Paths)*len(o.Workloads))
	}
	for _, s := range samples {
		p, _ := PathByName(s.Path)
		w, _ := WorkloadByName(s.Workload)
		name := s.Path + "/" + s.Workload
		switch {
		case w.UDP && !p.UDP:
			if s.Skipped == "" {
				t.Errorf("%s: should be n/a", name)
			}
			continue
		case s.Err != "":
			t.Errorf("%s: %s", name, s.Err)
			continue
		}
		if s.Value <= 0 || s.Work <= 0 {
			t.Errorf("%s: value %v, work %v", name, s.Value, s.Work)
		}
		if p.Balancer != s.CPUKnown {
			t.Errorf("%s: CPU known %v, want %v", name, s.CPUKnown, p.Balancer)
		}
		if w.UDP && s.Sent > o.UDPCount {
			t.Errorf("%s: sent %d, more than the bound %d", name, s.Sent, o.UDPCount)
		}
		if strings.HasPrefix(w.Name, "http") && (s.P50 <= 0 || s.P99 < s.P50) {
			t.Errorf("%s: latency p50 %v p99 %v", name, s.P50, s.P99)
		}
		t.Logf("%s: %.4g %s, cpu %v", name, s.Value, w.Unit, s.CPU)
	}
}

// TestFloodSmoke runs a short, slow flood through one UVS path and shows
// the kernel path n/a: the flood workload must produce its figures. It
// runs apart from TestSmoke, whose every-path run it would lengthen by
// more than a minute.
func TestFloodSmoke(t *testing.T) {
	needRoot(t)
	needPeers(t)
	if testing.Short() {
		t.Skip("smoke run skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo, err := Build(ctx, "uvsbenchflood", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	kernel, _ := PathByName("kernel")
	uvs, _ := PathByName("uvs-afpacket")
	flood, _ := WorkloadByName("flood")
	o := Options{
		Director: directorBin, Duration: time.Second, Repeat: 1,
		Paths: []Path{kernel, uvs}, Workloads: []Workload{flood},
		FloodRate: 2000, FloodDuration: time.Second, Log: quietLog(),
	}
	samples, err := Run(ctx, topo, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 2 {
		t.Fatalf("%d samples, want 2", len(samples))
	}
	if s := samples[0]; s.Skipped == "" {
		t.Errorf("kernel/flood: %+v, want n/a", s)
	}
	s := samples[1]
	if s.Err != "" {
		t.Fatalf("uvs-afpacket/flood: %s", s.Err)
	}
	if s.Sent <= 0 || s.Sent > 2000 || s.KATotal != FloodKeepalive || !s.CPUKnown || s.Value < 0 || s.Value > 100 {
		t.Errorf("uvs-afpacket/flood: %+v", s)
	}
	t.Logf("uvs-afpacket/flood: %.1f %% served, %d SYNs, keep-alive %d/%d, recovery %v (%v)", s.Value, s.Sent, s.KASurvived, s.KATotal, s.Recovery, s.Recovered)
}

// searchRate closes in on the highest passing rate from below, within the
// interval's last half, and never reports a rate that failed.
func TestSearchRate(t *testing.T) {
	for _, limit := range []float64{0, 1, 123456, 899999, 1e6} {
		var tried []float64
		got, err := searchRate(1e6, RateSteps, func(r float64) (bool, error) {
			tried = append(tried, r)
			return r <= limit, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(tried) != RateSteps {
			t.Errorf("limit %v: %d trials, want %d", limit, len(tried), RateSteps)
		}
		if got > limit || limit < 1e6 && limit-got > 1e6/(1<<RateSteps) {
			t.Errorf("limit %v: found %v (tried %v)", limit, got, tried)
		}
	}
	boom := errors.New("boom")
	if _, err := searchRate(1e6, RateSteps, func(float64) (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("error %v, want the trial's", err)
	}
}
