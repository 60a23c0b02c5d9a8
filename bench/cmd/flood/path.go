package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"uvs/bench/floodmeasure"
	"uvs/bench/harness"
	"uvs/lab"
	"uvs/testbed"
)

// metricsAddr is where a UVS director serves its metrics: its own outer
// address, reached over its namespace's loopback, not through the flood.
var metricsAddr = net.JoinHostPort(lab.DirOuterIP, "9100")

// active is a set-up path.
type active struct {
	probe floodmeasure.Probe
	stop  func() error
	logs  func() string
}

// startPath sets up path name in t's director namespace.
func startPath(ctx context.Context, c *config, t *harness.Topo, name string) (*active, error) {
	switch name {
	case "uvs-afpacket":
		return startUVS(ctx, c, t, "afpacket")
	case "uvs-tun":
		return startUVS(ctx, c, t, "tun")
	case "nftables":
		return startNftables(t)
	}
	return nil, fmt.Errorf("unknown path %q", name)
}

func startUVS(ctx context.Context, c *config, t *harness.Topo, io string) (*active, error) {
	dir, err := os.MkdirTemp(t.Dir(), "director-")
	if err != nil {
		return nil, err
	}
	args := []string{"--io", io, "--log-level", "warn", "--metrics", metricsAddr}
	if c.capacity > 0 {
		args = append(args, "--capacity", strconv.Itoa(c.capacity))
	}
	d, err := lab.StartDirector(t.Net.Director, c.director, dir, args...)
	if err != nil {
		return nil, fmt.Errorf("uvs --io %s: %w", io, err)
	}
	vip := net.JoinHostPort(harness.VIP, strconv.Itoa(harness.HTTPPort))
	rules := [][]string{{"-A", "-t", vip, "-s", "rr"}}
	for _, rip := range harness.RealServers() {
		rules = append(rules, []string{"-a", "-t", vip, "-r", net.JoinHostPort(rip, strconv.Itoa(harness.HTTPPort)), "-m"})
	}
	for _, r := range rules {
		so, se, code, err := d.Ipvsadm(r...)
		if err != nil || code != 0 {
			d.Stop()
			return nil, fmt.Errorf("ipvsadm %s: exit %d, %v: %s%s", strings.Join(r, " "), code, err, so, se)
		}
	}
	hc := t.Net.Director.HTTPClient()
	hc.Timeout = 2 * time.Second
	p := &uvsProbe{hc: hc, pid: d.Pid()}
	return &active{probe: p, stop: d.Stop, logs: d.Log}, nil
}

// uvsProbe reads a director's metrics and /proc.
type uvsProbe struct {
	hc  *http.Client
	pid int
}

func (p *uvsProbe) TableName() string { return "uvs_connections" }

func (p *uvsProbe) scrape() (map[string]float64, error) {
	resp, err := p.hc.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "uvs_connections ") && !strings.HasPrefix(line, "uvs_dropped_packets_total{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

func (p *uvsProbe) Table() (int64, error) {
	m, err := p.scrape()
	if err != nil {
		return 0, err
	}
	v, ok := m["uvs_connections"]
	if !ok {
		return 0, errors.New("no uvs_connections in the metrics")
	}
	return int64(v), nil
}

func (p *uvsProbe) Drops() (map[string]float64, error) {
	m, err := p.scrape()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for k, v := range m {
		if r, ok := strings.CutPrefix(k, `uvs_dropped_packets_total{reason="`); ok {
			out[strings.TrimSuffix(r, `"}`)] = v
		}
	}
	return out, nil
}

func (p *uvsProbe) RSS() (cur, peak int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = v
		case "VmHWM:":
			peak = v
		}
	}
	return cur, peak, cur > 0
}

// nftRuleset is the nftables path of bench/harness for the HTTP service
// alone: DNAT round robin over both real servers.
func nftRuleset() string {
	rr := fmt.Sprintf("numgen inc mod 2 map { 0 : %s, 1 : %s }", lab.RS1IP, lab.RS2IP)
	return fmt.Sprintf(`table ip uvsflood {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport %d dnat to %s
	}
}
`, harness.VIP, harness.HTTPPort, rr)
}

func startNftables(t *harness.Topo) (*active, error) {
	nft, err := harness.LookPath("nft")
	if err != nil {
		return nil, err
	}
	h := t.Net.Director
	cmd := h.Command(nft, "-f", "-")
	cmd.Stdin = strings.NewReader(nftRuleset())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft -f: %w: %s", err, out)
	}
	stop := func() error {
		_, err := h.Exec(nft, "delete", "table", "ip", "uvsflood")
		return err
	}
	return &active{probe: &nftProbe{h: h}, stop: stop, logs: func() string { return "" }}, nil
}

// nftProbe reads the director namespace's conntrack.
type nftProbe struct{ h *testbed.Host }

func (p *nftProbe) TableName() string { return "nf_conntrack_count" }

// read reads a file as the director namespace sees it (/proc/sys/net and
// /proc/thread-self/net answer for the reading thread's namespace).
func (p *nftProbe) read(path string) ([]byte, error) {
	var b []byte
	err := p.h.Do(func() error {
		var err error
		b, err = os.ReadFile(path)
		return err
	})
	return b, err
}

func (p *nftProbe) Table() (int64, error) {
	b, err := p.read("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// drops sums conntrack's per-CPU statistics that mean a packet or an
// entry was lost: drop (no room, nothing to evict), early_drop (an
// unreplied entry evicted to make room), insert_failed, invalid.
func (p *nftProbe) Drops() (map[string]float64, error) {
	b, err := p.read("/proc/thread-self/net/stat/nf_conntrack")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return nil, errors.New("nf_conntrack stat: no rows")
	}
	names := strings.Fields(lines[0])
	out := map[string]float64{}
	for _, l := range lines[1:] {
		for i, f := range strings.Fields(l) {
			if i >= len(names) {
				break
			}
			switch names[i] {
			case "drop", "early_drop", "insert_failed", "invalid":
				v, err := strconv.ParseUint(f, 16, 64)
				if err == nil {
					out["conntrack_"+names[i]] += float64(v)
				}
			}
		}
	}
	return out, nil
}

func (p *nftProbe) RSS() (int64, int64, bool) { return 0, 0, false }
