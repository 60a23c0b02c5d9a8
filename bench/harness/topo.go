// Package harness runs the side-by-side benchmark of issue 4: it builds
// the LVS-NAT lab topology (package lab) with benchmark servers on the
// real servers, plus a return router that lets the real servers answer the
// client without the director (for LVS-DR and LVS-TUN), sets up each
// balancing path in the director namespace in turn (kernel routing,
// nftables DNAT, HAProxy, UVS NAT with each packet I/O backend, UVS DR and
// TUN), runs each workload through it and measures what the balancer
// process itself spent. Package report turns the samples into tables and
// a chart; bench/cmd/compare is the command.
package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"uvs/bench/udpflood"
	"uvs/lab"
	"uvs/testbed"
)

// Ports of the benchmark's services, the same on the real servers and on
// the VIP.
const (
	HTTPPort = 80   // nginx
	BulkPort = 5201 // iperf3 server
	UDPPort  = 9000 // udpflood sink
)

// SmallFile is what the HTTP workloads fetch: nginx's 612-byte welcome
// page size, a typical small object. LargeFile is what http-large fetches.
const (
	SmallFile     = "/small.html"
	smallFileSize = 612
	LargeFile     = "/large/1MiB.bin"
	LargeFileSize = 1 << 20
)

// Addresses of the direct-return part of the topology (DR and TUN): the
// VIP those paths balance, on the director's eth0 like the DR lab's and
// on the real servers (lo for DR, the decapsulator's TUN device for TUN),
// and the return router between the real servers' segment and the
// client's second interface.
const (
	DSRVIP          = "198.18.0.100"
	RouterRSIP      = "198.18.1.254" // the router on the real servers' segment
	RouterClientIP  = "198.18.2.1"   // the router's end of its link to the client
	ClientReturnIP  = "198.18.2.2"   // the client's end (eth1)
	returnTable     = "100"          // the real servers' routing table for replies from DSRVIP
	returnRulePrefs = "100"
)

// Topo is the lab topology with the benchmark's servers running on the
// real servers.
type Topo struct {
	Net *lab.NATNet
	// Router forwards the real servers' replies from DSRVIP to the
	// client's eth1, bypassing the director (DR and TUN paths only: the
	// others' replies come from the real servers' own addresses and follow
	// their default route, the director).
	Router *testbed.Host
	Sinks  []*udpflood.Sink // one per real server, on UDPPort
	dir    string
	log    *slog.Logger

	mu    sync.Mutex
	procs []*proc
}

// proc is a long-running peer process and its end.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// Build makes the topology in namespaces named prefix-RANDOM-*, starts
// nginx, iperf3 servers and UDP sinks on both real servers and waits until
// they answer. The caller must Close it.
func Build(ctx context.Context, prefix string, log *slog.Logger) (t *Topo, err error) {
	n, err := lab.BuildNAT(prefix, 2)
	if err != nil {
		return nil, fmt.Errorf("build topology: %w", err)
	}
	t = &Topo{Net: n, log: log}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	// The director routes for the kernel paths; the userspace paths set
	// their own needs on top. Wide port ranges and TIME_WAIT reuse on the
	// connecting sides keep the new-connection workload from running out of
	// ports; they are per-namespace sysctls.
	if err := n.Director.Forward(); err != nil {
		return nil, err
	}
	if err := t.buildReturn(); err != nil {
		return nil, fmt.Errorf("return router: %w", err)
	}
	for _, h := range []*testbed.Host{n.Client, n.Director} {
		if err := h.Sysctl("net.ipv4.ip_local_port_range", "1024 65000"); err != nil {
			return nil, err
		}
		if err := h.Sysctl("net.ipv4.tcp_tw_reuse", "1"); err != nil {
			return nil, err
		}
	}
	if t.dir, err = os.MkdirTemp("", "uvsbench-"); err != nil {
		return nil, err
	}
	// nginx's workers run as nobody: they must be able to read the files.
	if err := os.Chmod(t.dir, 0o755); err != nil {
		return nil, err
	}
	www := filepath.Join(t.dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		return nil, err
	}
	body := strings.Repeat("x", smallFileSize-1) + "\n"
	if err := os.WriteFile(filepath.Join(www, SmallFile), []byte(body), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(www, filepath.Dir(LargeFile)), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(www, LargeFile), make([]byte, LargeFileSize), 0o644); err != nil {
		return nil, err
	}
	nginx, err := LookPath("nginx")
	if err != nil {
		return nil, err
	}
	iperf3, err := LookPath("iperf3")
	if err != nil {
		return nil, err
	}
	for i, rs := range n.RS {
		name := fmt.Sprintf("rs%d", i+1)
		conf, err := t.nginxConf(name, www)
		if err != nil {
			return nil, err
		}
		if err := t.start(rs, name+"-nginx", nginx, "-p", filepath.Join(t.dir, name), "-c", conf); err != nil {
			return nil, err
		}
		if err := t.start(rs, name+"-iperf3", iperf3, "-s", "-p", strconv.Itoa(BulkPort)); err != nil {
			return nil, err
		}
		pc, err := rs.ListenPacket("udp", ":"+strconv.Itoa(UDPPort))
		if err != nil {
			return nil, fmt.Errorf("%s udp sink: %w", name, err)
		}
		s, err := udpflood.NewSink(pc.(*net.UDPConn))
		if err != nil {
			pc.Close()
			return nil, err
		}
		t.Sinks = append(t.Sinks, s)
	}
	for i, ip := range RealServers() {
		if err := waitTCP(ctx, n.Director, net.JoinHostPort(ip, strconv.Itoa(HTTPPort)), 10*time.Second); err != nil {
			return nil, fmt.Errorf("real server service: %w\n%s", err, t.procLogs())
		}
		// iperf3 serves one client at a time and, when a client goes
		// without a test, closes its listening socket and opens it
		// again: a probing connection would leave the next one refused
		// for a moment. So its socket is looked for, not connected to.
		if err := waitListening(ctx, n.RS[i], BulkPort, 10*time.Second); err != nil {
			return nil, fmt.Errorf("real server service: iperf3 on %s: %w\n%s", ip, err, t.procLogs())
		}
	}
	return t, nil
}

// buildReturn adds the return router and the routes the DR and TUN paths
// need, which change nothing for the other paths:
//
//	client eth0 ---- eth0 director eth1 ---- [bridge in sw] ---- eth0 rs1, rs2
//	client eth1 ---- eth0 rtr eth1 -------------/
//
// The director holds DSRVIP on eth0 (its kernel answers the client's ARP
// for it). The real servers send what comes from DSRVIP to the router
// (policy routing: a rule for the source address), everything else to the
// director as before; the router forwards it to the client's eth1. The
// client's route to DSRVIP is through eth0, so replies come in by another
// interface than its requests go out: the client and the router have no
// reverse-path filter, as the TUN lab's router.
func (t *Topo) buildReturn() error {
	n := t.Net
	rtr, err := n.Bed.Host("rtr")
	if err != nil {
		return err
	}
	t.Router = rtr
	steps := []func() error{
		func() error { return n.Bed.Link(n.Client, "eth1", rtr, "eth0") },
		func() error { return n.Bed.Bridge(n.Switch, "br0", "eth1", rtr) },
		func() error { return n.Client.Addr("eth1", ClientReturnIP+"/24") },
		func() error { return rtr.Addr("eth0", RouterClientIP+"/24") },
		func() error { return rtr.Addr("eth1", RouterRSIP+"/24") },
		func() error { return rtr.Route(lab.ClientIP+"/32", ClientReturnIP) },
		rtr.Forward,
		func() error { return n.Director.Addr("eth0", DSRVIP+"/32") },
	}
	for _, h := range []*testbed.Host{n.Client, rtr} {
		for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.eth0.rp_filter", "net.ipv4.conf.eth1.rp_filter"} {
			steps = append(steps, func() error { return h.Sysctl(k, "0") })
		}
	}
	for _, rs := range n.RS {
		steps = append(steps, func() error {
			for _, c := range [][]string{
				{"ip", "route", "add", "default", "via", RouterRSIP, "dev", "eth0", "table", returnTable},
				{"ip", "rule", "add", "from", DSRVIP, "lookup", returnTable, "pref", returnRulePrefs},
			} {
				if out, err := rs.Exec(c[0], c[1:]...); err != nil {
					return fmt.Errorf("%s: %s: %w: %s", rs.Short, strings.Join(c, " "), err, out)
				}
			}
			return nil
		})
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// waitListening waits until a TCP socket in h listens on port (IPv4 or
// IPv6), reading /proc/net/tcp and tcp6, or limit passes.
func waitListening(ctx context.Context, h *testbed.Host, port int, limit time.Duration) error {
	want := fmt.Sprintf(":%04X ", port)
	for deadline := time.Now().Add(limit); ; {
		out, err := h.Exec("cat", "/proc/net/tcp", "/proc/net/tcp6")
		if err == nil {
			for _, line := range strings.Split(out, "\n") {
				// sl local_address rem_address st ...: st 0A is LISTEN.
				f := strings.Fields(line)
				if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && f[3] == "0A" {
					return nil
				}
			}
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d in %s within %v (%v)", port, h.Short, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RealServers are the real servers' addresses, rs1 first.
func RealServers() []string { return []string{lab.RS1IP, lab.RS2IP} }

// VIP is the virtual service address: the director's outer address, as in
// the lab.
const VIP = lab.DirOuterIP

func (t *Topo) nginxConf(name, www string) (string, error) {
	prefix := filepath.Join(t.dir, name)
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return "", err
	}
	// One worker per real server: two real servers on two cores. Keep-alive
	// connections live as long as the run (nginx closes them after 1000
	// requests by default, which would turn keep-alive into reconnects).
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]d reuseport backlog=4096;
        root %[3]s;
        # The large file (http-large) goes out by sendfile, as a file
        # server's would; the small one as before.
        location %[4]s {
            sendfile on;
            tcp_nopush on;
        }
    }
}
`, prefix, HTTPPort, www, filepath.Dir(LargeFile)+"/")
	p := filepath.Join(prefix, "nginx.conf")
	return p, os.WriteFile(p, []byte(conf), 0o644)
}

// start runs a long-lived process inside h; Close ends it.
func (t *Topo) start(h *testbed.Host, name, bin string, args ...string) error {
	cmd := h.Command(bin, args...)
	lb := new(logBuffer)
	cmd.Stdout, cmd.Stderr = lb, lb
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.mu.Lock()
	t.procs = append(t.procs, p)
	t.mu.Unlock()
	return nil
}

// procLogs is what the peers printed, for error messages.
func (t *Topo) procLogs() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for _, p := range t.procs {
		fmt.Fprintf(&b, "--- %s:\n%s\n", p.name, tail([]byte(p.cmd.Stdout.(*logBuffer).String()), 1000))
	}
	return b.String()
}

// Dir is a scratch directory that Close removes.
func (t *Topo) Dir() string { return t.dir }

// Close stops the servers and removes the namespaces (which kills every
// process left in them) and the scratch directory.
func (t *Topo) Close() error {
	var errs []error
	for _, s := range t.Sinks {
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	t.Sinks = nil
	errs = append(errs, t.Net.Bed.Close())
	t.mu.Lock()
	for _, p := range t.procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			errs = append(errs, fmt.Errorf("%s did not end with its namespace", p.name))
		}
	}
	t.procs = nil
	t.mu.Unlock()
	if t.dir != "" {
		errs = append(errs, os.RemoveAll(t.dir))
	}
	return errors.Join(errs...)
}

// waitTCP dials addr from h until it connects or limit passes.
func waitTCP(ctx context.Context, h *testbed.Host, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := h.Dial(dctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s from %s: no answer within %v: %w", addr, h.Short, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logBuffer collects a process's output, capped so a chatty peer cannot
// fill the memory.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

const logCap = 64 << 10

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > logCap {
		l.b = append(l.b[:0], l.b[len(l.b)-logCap/2:]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
