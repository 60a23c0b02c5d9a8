package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"uvs/bench/parse"
	"uvs/lab"
)

// Path is one way of getting the client's traffic to the real servers.
type Path struct {
	Name  string // flag value and table row key
	Label string // table row
	// Note says what the row means or leaves out; it goes under the table.
	Note string
	// UDP tells whether the path can carry the UDP workload.
	UDP bool
	// Balancer tells whether a process of the path's own does the work, so
	// its CPU time can be measured; false for the kernel paths, whose
	// forwarding runs in softirq context that no process is charged for.
	Balancer bool
	start    func(ctx context.Context, t *Topo, o *Options) (*active, error)
}

// active is a path that is set up.
type active struct {
	target string        // the address the client talks to
	pids   func() []int  // the balancer's processes (nil: not attributable)
	stop   func() error  // undo the setup
	logs   func() string // the balancer's output, for errors
}

// Paths are all the paths, in the order of the tables.
var Paths = []Path{
	{Name: "kernel", Label: "kernel routing (no balancing)", UDP: true,
		Note:  "the ceiling: the client talks to rs1 directly, the director namespace routes",
		start: startKernel},
	{Name: "nftables", Label: "nftables DNAT (numgen inc)", UDP: true,
		Note:  "kernel DNAT with conntrack; `numgen inc mod 2` round robin",
		start: startNftables},
	{Name: "haproxy", Label: "HAProxy mode tcp", Balancer: true,
		Note:  "a proxy: two TCP connections per client connection; no UDP in mode tcp",
		start: startHAProxy},
	{Name: "uvs-afpacket", Label: "UVS NAT, --io afpacket", UDP: true, Balancer: true,
		start: func(ctx context.Context, t *Topo, o *Options) (*active, error) {
			return startUVS(ctx, t, o, "afpacket")
		}},
	{Name: "uvs-tun", Label: "UVS NAT, --io tun", UDP: true, Balancer: true,
		start: func(ctx context.Context, t *Topo, o *Options) (*active, error) {
			return startUVS(ctx, t, o, "tun")
		}},
}

// PathByName finds a path.
func PathByName(name string) (Path, bool) {
	for _, p := range Paths {
		if p.Name == name {
			return p, true
		}
	}
	return Path{}, false
}

func noStop() error  { return nil }
func noLogs() string { return "" }

func startKernel(ctx context.Context, t *Topo, o *Options) (*active, error) {
	return &active{target: lab.RS1IP, stop: noStop, logs: noLogs}, nil
}

// nftRuleset balances HTTP and UDP over both real servers and sends bulk
// TCP to rs1 only: iperf3's control and data connections must reach the
// same server.
func nftRuleset() string {
	rr := fmt.Sprintf("numgen inc mod 2 map { 0 : %s, 1 : %s }", lab.RS1IP, lab.RS2IP)
	return fmt.Sprintf(`table ip uvsbench {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s tcp dport %[2]d dnat to %[3]s
		ip daddr %[1]s udp dport %[4]d dnat to %[3]s
		ip daddr %[1]s tcp dport %[5]d dnat to %[6]s
	}
}
`, VIP, HTTPPort, rr, UDPPort, BulkPort, lab.RS1IP)
}

func startNftables(ctx context.Context, t *Topo, o *Options) (*active, error) {
	nft, err := LookPath("nft")
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
		_, err := h.Exec(nft, "delete", "table", "ip", "uvsbench")
		// Translated connections would otherwise outlive the rules.
		if ferr := h.Do(func() error {
			return netlink.ConntrackTableFlush(netlink.ConntrackTable)
		}); ferr != nil {
			err = errors.Join(err, fmt.Errorf("flush conntrack: %w", ferr))
		}
		return err
	}
	return &active{target: VIP, stop: stop, logs: noLogs}, nil
}

// haproxyConf is HAProxy in TCP mode on the VIP, round robin over both
// real servers, bulk TCP to rs1 only.
func haproxyConf() string {
	return fmt.Sprintf(`global
    # The sandbox's hard limit on open files may be low; 4000 connections
    # are plenty for 32 clients.
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend http
    bind %[1]s:%[2]d
    default_backend http
backend http
    balance roundrobin
    server rs1 %[3]s:%[2]d
    server rs2 %[4]s:%[2]d
frontend bulk
    bind %[1]s:%[5]d
    default_backend bulk
backend bulk
    server rs1 %[3]s:%[5]d
`, VIP, HTTPPort, lab.RS1IP, lab.RS2IP, BulkPort)
}

func startHAProxy(ctx context.Context, t *Topo, o *Options) (*active, error) {
	bin, err := LookPath("haproxy")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(t.dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(haproxyConf()), 0o644); err != nil {
		return nil, err
	}
	// -db: foreground, one process (its threads are counted in its stat).
	cmd := t.Net.Director.Command(bin, "-db", "-f", conf)
	lb := new(logBuffer)
	cmd.Stdout, cmd.Stderr = lb, lb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start haproxy: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	stop := func() error {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
			return nil
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return errors.New("haproxy did not stop on SIGINT")
		}
	}
	a := &active{target: VIP, pids: func() []int { return []int{pid} }, stop: stop, logs: lb.String}
	// Stop waiting at once if haproxy exits (a configuration it refuses).
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case err := <-done:
			done <- err
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := waitTCP(wctx, t.Net.Client, net.JoinHostPort(VIP, strconv.Itoa(HTTPPort)), 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("haproxy: %w\n%s", err, lb.String())
	}
	return a, nil
}

// uvsRules are the ipvsadm commands for the UVS paths: the same services
// as the other paths, NAT forwarding.
func uvsRules() [][]string {
	vip := func(port int) string { return net.JoinHostPort(VIP, strconv.Itoa(port)) }
	rip := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	return [][]string{
		{"-A", "-t", vip(HTTPPort), "-s", "rr"},
		{"-a", "-t", vip(HTTPPort), "-r", rip(lab.RS1IP, HTTPPort), "-m"},
		{"-a", "-t", vip(HTTPPort), "-r", rip(lab.RS2IP, HTTPPort), "-m"},
		{"-A", "-t", vip(BulkPort), "-s", "rr"},
		{"-a", "-t", vip(BulkPort), "-r", rip(lab.RS1IP, BulkPort), "-m"},
		{"-A", "-u", vip(UDPPort), "-s", "rr"},
		{"-a", "-u", vip(UDPPort), "-r", rip(lab.RS1IP, UDPPort), "-m"},
		{"-a", "-u", vip(UDPPort), "-r", rip(lab.RS2IP, UDPPort), "-m"},
	}
}

func startUVS(ctx context.Context, t *Topo, o *Options, io string) (*active, error) {
	if o.Director == "" {
		return nil, errors.New("no director binary")
	}
	dir, err := os.MkdirTemp(t.dir, "director-")
	if err != nil {
		return nil, err
	}
	args := []string{"--io", io, "--log-level", "warn"}
	// UVSBENCH_DIRECTOR_ARGS adds flags to `director run` (e.g. "--workers 1"
	// or "--pprof 127.0.0.1:6060") for experiments.
	args = append(args, strings.Fields(os.Getenv("UVSBENCH_DIRECTOR_ARGS"))...)
	d, err := lab.StartDirector(t.Net.Director, o.Director, dir, args...)
	if err != nil {
		return nil, fmt.Errorf("uvs --io %s: %w", io, err)
	}
	a := &active{
		target: VIP,
		pids:   func() []int { return []int{d.Pid()} }, // `ip netns exec` execs the director
		logs:   d.Log,
	}
	a.stop = func() error {
		err := d.Stop()
		if err != nil {
			err = fmt.Errorf("director --io %s: %w\n%s", io, err, tail([]byte(d.Log()), 3000))
		}
		// A director that died without cleaning up leaves its netdev
		// table dropping the balanced traffic, which would fail every path
		// after it: remove it, and say so.
		if nft, lerr := LookPath("nft"); lerr == nil {
			if _, lerr := t.Net.Director.Exec(nft, "list", "table", "netdev", "uvs"); lerr == nil {
				_, derr := t.Net.Director.Exec(nft, "delete", "table", "netdev", "uvs")
				err = errors.Join(err, fmt.Errorf("director --io %s left its nftables table behind (removed: %v)", io, derr))
			}
		}
		return err
	}
	for _, args := range uvsRules() {
		so, se, code, err := d.Ipvsadm(args...)
		if err != nil || code != 0 {
			d.Stop()
			return nil, fmt.Errorf("ipvsadm %s: exit %d, %v: %s%s", strings.Join(args, " "), code, err, so, se)
		}
	}
	return a, nil
}

// cpuOf sums the user and system time of pids; an error if one is gone.
func cpuOf(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("cpu of %d: %w", pid, err)
		}
		ps, err := parse.ParseProcStat(b)
		if err != nil {
			return 0, err
		}
		sum += ps.CPU()
	}
	return sum, nil
}
