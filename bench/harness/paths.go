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
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"uvs/bench/parse"
	"uvs/lab"
	"uvs/testbed"
)

// Path is one way of getting the client's traffic to the real servers.
type Path struct {
	Name  string // flag value and table row key
	Label string // table row
	// Note says what the row means or leaves out; it goes under the table.
	Note string
	// UDP tells whether the path can carry the UDP workload.
	UDP bool
	// NoFlood says why the flood workload does not apply ("": it does).
	NoFlood string
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
		Note:    "the ceiling: the client talks to rs1 directly, the director namespace routes",
		NoFlood: "no VIP to flood (the client talks to rs1 directly)",
		start:   startKernel},
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
	{Name: "uvs-dr", Label: "UVS DR, --io afpacket", UDP: true, Balancer: true,
		Note: "LVS-DR (`-g`) to " + DSRVIP + ": the director forwards the client's packets only, on the real servers' segment with the MAC rewritten; " +
			"the real servers hold the VIP on lo (arp_ignore=1, arp_announce=2) and answer through the return router, one kernel forwarding hop as on the kernel path",
		start: func(ctx context.Context, t *Topo, o *Options) (*active, error) {
			return startDSR(ctx, t, o, "afpacket", "-g")
		}},
	{Name: "uvs-ipip", Label: "UVS TUN (ipip), --io afpacket", UDP: true, Balancer: true,
		Note: "LVS-TUN (`-i`, IPIP from " + lab.DirInnerIP + ") to " + DSRVIP + ": the director forwards the client's packets only; " +
			"each real server runs `director realserver`, which takes the tunnel in userspace into a TUN device holding the VIP (its CPU is not in the balancer column), " +
			"and answers through the return router",
		start: func(ctx context.Context, t *Topo, o *Options) (*active, error) {
			return startDSR(ctx, t, o, "afpacket", "-i")
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
// as the other paths on the virtual address vip, forwarding by fwd (-m
// NAT, -g DR, -i TUN).
func uvsRules(vip, fwd string) [][]string {
	v := func(port int) string { return net.JoinHostPort(vip, strconv.Itoa(port)) }
	rip := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	return [][]string{
		{"-A", "-t", v(HTTPPort), "-s", "rr"},
		{"-a", "-t", v(HTTPPort), "-r", rip(lab.RS1IP, HTTPPort), fwd},
		{"-a", "-t", v(HTTPPort), "-r", rip(lab.RS2IP, HTTPPort), fwd},
		{"-A", "-t", v(BulkPort), "-s", "rr"},
		{"-a", "-t", v(BulkPort), "-r", rip(lab.RS1IP, BulkPort), fwd},
		{"-A", "-u", v(UDPPort), "-s", "rr"},
		{"-a", "-u", v(UDPPort), "-r", rip(lab.RS1IP, UDPPort), fwd},
		{"-a", "-u", v(UDPPort), "-r", rip(lab.RS2IP, UDPPort), fwd},
	}
}

func startUVS(ctx context.Context, t *Topo, o *Options, io string) (*active, error) {
	return startDirector(ctx, t, o, io, VIP, uvsRules(VIP, "-m"))
}

// startDirector runs `director run --io io` in the director namespace and
// types rules; the active path's target is vip.
func startDirector(ctx context.Context, t *Topo, o *Options, io, vip string, rules [][]string) (*active, error) {
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
		target: vip,
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
	for _, args := range rules {
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

// startDSR sets the real servers up for direct return (fwd -g: the VIP on
// lo with the ARP sysctls, as lab.SetupDRRealServer; fwd -i: a `director
// realserver` decapsulator on each), then runs the director with the
// services on DSRVIP. Stopping undoes both, so that the other paths run
// on real servers as they were.
func startDSR(ctx context.Context, t *Topo, o *Options, io, fwd string) (*active, error) {
	var undo []func() error
	unwind := func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	for i, rs := range t.Net.RS {
		var err error
		switch fwd {
		case "-g":
			undo = append(undo, func() error { return undoDRRealServer(rs) })
			err = lab.SetupDRRealServer(rs, DSRVIP)
		case "-i":
			var stop func() error
			stop, err = startDecap(ctx, t, o, rs, fmt.Sprintf("rs%d", i+1))
			if stop != nil {
				undo = append(undo, stop)
			}
		default:
			err = fmt.Errorf("forwarding %q is not direct return", fwd)
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("set up real server rs%d: %w", i+1, err), unwind())
		}
	}
	a, err := startDirector(ctx, t, o, io, DSRVIP, uvsRules(DSRVIP, fwd))
	if err != nil {
		return nil, errors.Join(err, unwind())
	}
	stopDirector := a.stop
	a.stop = func() error { return errors.Join(stopDirector(), unwind()) }
	return a, nil
}

// undoDRRealServer takes back what lab.SetupDRRealServer did (the
// namespaces' defaults for the sysctls are 0).
func undoDRRealServer(rs *testbed.Host) error {
	var errs []error
	if out, err := rs.Exec("ip", "addr", "del", DSRVIP+"/32", "dev", "lo"); err != nil && !strings.Contains(out, "Cannot assign") {
		errs = append(errs, fmt.Errorf("%s: ip addr del: %w: %s", rs.Short, err, out))
	}
	// Gone with the address, normally; ignore its absence.
	_, _ = rs.Exec("ip", "route", "del", "local", DSRVIP, "dev", "lo", "table", "local")
	for _, k := range []string{"net.ipv4.conf.lo.arp_ignore", "net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.lo.arp_announce", "net.ipv4.conf.all.arp_announce"} {
		if err := rs.Sysctl(k, "0"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// startDecap runs `director realserver` on rs for the TUN path: IPIP from
// the director's address on the real servers' segment, decapsulated into
// the TUN device uvsrs0 holding DSRVIP. It returns once the device holds
// the VIP; stop ends it with SIGTERM (it undoes its host changes).
func startDecap(ctx context.Context, t *Topo, o *Options, rs *testbed.Host, name string) (stop func() error, err error) {
	if o.Director == "" {
		return nil, errors.New("no director binary")
	}
	dir, err := os.MkdirTemp(t.dir, "realserver-")
	if err != nil {
		return nil, err
	}
	cmd := rs.Command(o.Director, "realserver", "--vip", DSRVIP, "--from", lab.DirInnerIP,
		"--state", filepath.Join(dir, "realserver.state"), "--log-level", "warn")
	lb := new(logBuffer)
	cmd.Stdout, cmd.Stderr = lb, lb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start director realserver in %s: %w", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			done <- err
			if err != nil {
				return fmt.Errorf("director realserver in %s: %w\n%s", name, err, tail([]byte(lb.String()), 2000))
			}
			return nil
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("director realserver in %s did not stop on SIGTERM\n%s", name, tail([]byte(lb.String()), 2000))
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, _ := rs.Exec("ip", "-o", "-4", "addr", "show", "dev", "uvsrs0")
		if strings.Contains(out, " "+DSRVIP+"/") {
			return stop, nil
		}
		select {
		case err := <-done:
			done <- err
			return nil, fmt.Errorf("director realserver in %s exited: %v\n%s", name, err, tail([]byte(lb.String()), 2000))
		default:
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return stop, fmt.Errorf("director realserver in %s: uvsrs0 does not hold %s after 10 s\n%s", name, DSRVIP, tail([]byte(lb.String()), 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
