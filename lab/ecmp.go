package lab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"uvs/testbed"
)

// Addresses of the scale-out topology: a client behind a router, which
// spreads the VIP over the directors by ECMP on routes the directors
// announce over BGP; directors and DR real servers on one LAN.
const (
	ECMPClientIP   = "198.18.0.2"
	ECMPClientIP6  = "2001:2::2"
	ECMPRouterIPA  = "198.18.0.1" // the router on the client's network
	ECMPRouterIPA6 = "2001:2::1"
	ECMPRouterIP   = "198.18.1.1" // the router on the directors' LAN, their BGP peer
	ECMPRouterIP6  = "2001:2:0:1::1"
	ECMPVIP        = "198.18.2.100" // on no network: reached through the routes the directors announce
	ECMPVIP6       = "2001:2:0:2::100"
	ECMPRouterASN  = 65000
	ECMPDirASN     = 65001 // every director's
)

// ECMPDirIP, ECMPDirIP6, ECMPRSIP and ECMPRSIP6 are the addresses of
// director and real server i (0-based) on the LAN.
func ECMPDirIP(i int) string  { return fmt.Sprintf("198.18.1.%d", 11+i) }
func ECMPDirIP6(i int) string { return fmt.Sprintf("2001:2:0:1::%x", 0x11+i) }
func ECMPRSIP(i int) string   { return fmt.Sprintf("198.18.1.%d", 21+i) }
func ECMPRSIP6(i int) string  { return fmt.Sprintf("2001:2:0:1::%x", 0x21+i) }

// ECMPNet is the scale-out topology:
//
//	client eth0 -- eth0 router eth1 --+-- [sw] --+-- eth0 d1, d2, ... (directors)
//	                                  |          +-- eth0 rs1, rs2, ... (DR real servers)
//
// The router forwards with an L4 multipath hash
// (net.ipv4.fib_multipath_hash_policy=1, and IPv6's), so that the flows of
// one client spread over the directors. The real servers' default route is
// the router: their replies go straight to the client.
type ECMPNet struct {
	Bed                    *testbed.Bed
	Client, Router, Switch *testbed.Host
	Directors, RS          []*testbed.Host
}

// BuildECMP builds the scale-out topology with the given numbers of
// directors and real servers, the real servers set up for DR with both
// VIPs on lo. The router runs no BGP yet (StartBIRD).
func BuildECMP(prefix string, directors, servers int) (n *ECMPNet, err error) {
	bed, err := testbed.New(prefix)
	if err != nil {
		return nil, err
	}
	n = &ECMPNet{Bed: bed}
	defer func() {
		if err != nil {
			bed.Close()
			n = nil
		}
	}()
	var dnames []string
	for i := range directors {
		dnames = append(dnames, fmt.Sprintf("d%d", i+1))
	}
	hosts, err := hostsOf(bed, slices.Concat([]string{"client", "router", "sw"}, dnames, rsNames(servers)))
	if err != nil {
		return nil, err
	}
	n.Client, n.Router, n.Switch = hosts[0], hosts[1], hosts[2]
	n.Directors, n.RS = hosts[3:3+directors], hosts[3+directors:]
	r := n.Router
	steps := []func() error{
		func() error { return bed.Link(n.Client, "eth0", r, "eth0") },
		func() error { return bed.Bridge(n.Switch, "br0", "eth1", r) },
		func() error {
			return bed.Bridge(n.Switch, "br0", "eth0", append(slices.Clone(n.Directors), n.RS...)...)
		},
		func() error { return n.Client.Addr("eth0", ECMPClientIP+"/24") },
		func() error { return n.Client.Addr("eth0", ECMPClientIP6+"/64") },
		func() error { return n.Client.Route("default", ECMPRouterIPA) },
		func() error { return n.Client.Route("default", ECMPRouterIPA6) },
		func() error { return r.Addr("eth0", ECMPRouterIPA+"/24") },
		func() error { return r.Addr("eth0", ECMPRouterIPA6+"/64") },
		func() error { return r.Addr("eth1", ECMPRouterIP+"/24") },
		func() error { return r.Addr("eth1", ECMPRouterIP6+"/64") },
		r.Forward,
		func() error { return r.Sysctl("net.ipv4.fib_multipath_hash_policy", "1") },
		func() error { return r.Sysctl("net.ipv6.fib_multipath_hash_policy", "1") },
		// The real servers answer from the VIP, whose route points back
		// at the LAN they send from: a strict reverse-path filter would
		// do, but a VIP withdrawn by every director would then drop them.
		func() error { return r.Sysctl("net.ipv4.conf.all.rp_filter", "0") },
		func() error { return r.Sysctl("net.ipv4.conf.eth1.rp_filter", "0") },
	}
	for i, d := range n.Directors {
		ip, ip6 := ECMPDirIP(i), ECMPDirIP6(i)
		steps = append(steps,
			func() error { return d.Addr("eth0", ip+"/24") },
			func() error { return d.Addr("eth0", ip6+"/64") },
		)
	}
	for i, rs := range n.RS {
		ip, ip6 := ECMPRSIP(i), ECMPRSIP6(i)
		steps = append(steps,
			func() error { return rs.Addr("eth0", ip+"/24") },
			func() error { return rs.Addr("eth0", ip6+"/64") },
			func() error { return rs.Route("default", ECMPRouterIP) },
			func() error { return rs.Route("default", ECMPRouterIP6) },
			func() error { return SetupDRRealServer(rs, ECMPVIP, ECMPVIP6) },
		)
	}
	return n, runSteps(steps)
}

// DirectorBGPArgs are the `director run` flags that peer director i with
// the router over IPv4 and IPv6, with the given drain.
func (n *ECMPNet) DirectorBGPArgs(drain time.Duration) []string {
	return []string{"--bgp-asn", fmt.Sprint(ECMPDirASN),
		"--bgp-peer", fmt.Sprintf("%s:%d,[%s]:%d", ECMPRouterIP, ECMPRouterASN, ECMPRouterIP6, ECMPRouterASN),
		"--bgp-drain", drain.String()}
}

// BIRDConfig is the router's BIRD 2 configuration: a passive eBGP session
// with each of the directors, over IPv4 and IPv6, routes imported and
// merged into multipath (ECMP) routes in the kernel. logFile is where BIRD
// logs.
func (n *ECMPNet) BIRDConfig(logFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `log "%s" all;
router id %s;

protocol device {
}

# Each VIP's routes from the directors, merged into one multipath route.
protocol kernel {
	ipv4 { import none; export all; };
	merge paths on;
}
protocol kernel {
	ipv6 { import none; export all; };
	merge paths on;
}

template bgp director {
	local as %d;
	passive on;             # the directors connect
	hold time 9;            # the session's is the smaller of both offers
	keepalive time 3;
	error wait time 1, 5;   # after a hold timer expiry, take the director back in seconds, not 60
}
`, logFile, ECMPRouterIP, ECMPRouterASN)
	for i := range n.Directors {
		fmt.Fprintf(&b, `protocol bgp d%d from director {
	neighbor %s as %d;
	ipv4 { import all; export none; };
}
protocol bgp d%dv6 from director {
	neighbor %s as %d;
	ipv6 { import all; export none; };
}
`, i+1, ECMPDirIP(i), ECMPDirASN, i+1, ECMPDirIP6(i), ECMPDirASN)
	}
	return b.String()
}

// BIRD is a BIRD 2 daemon running in a namespace.
type BIRD struct {
	Socket, LogFile string
	cmd             *exec.Cmd
	done            chan error
}

// StartBIRD writes conf (with BIRDConfig's log file, if it names one) to
// dir and runs `bird -f -c CONF -s SOCK -P PIDFILE` in h, in the
// foreground so that it is this process's child; it returns once BIRD
// answers on its control socket. BIRD needs the bird and birdc commands
// (Debian's bird2 package).
func StartBIRD(h *testbed.Host, dir, conf string) (*BIRD, error) {
	for _, c := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("BIRD 2 is not installed (Debian: apt-get install bird2): %w", err)
		}
	}
	b := &BIRD{Socket: filepath.Join(dir, "bird.ctl"), done: make(chan error, 1)}
	if m := regexp.MustCompile(`(?m)^log "([^"]+)"`).FindStringSubmatch(conf); m != nil {
		b.LogFile = m[1]
	}
	cf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("bird config: %w", err)
	}
	var out bytes.Buffer
	b.cmd = h.Command("bird", "-f", "-c", cf, "-s", b.Socket, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stdout, b.cmd.Stderr = &out, &out
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bird: %w", err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-b.done:
			b.done <- err
			return nil, fmt.Errorf("bird exited at start (%v): %s", err, out.String())
		default:
		}
		if _, err := b.Cmd("show", "status"); err == nil {
			return b, nil
		}
	}
	b.Stop()
	return nil, fmt.Errorf("bird did not answer on %s: %s", b.Socket, out.String())
}

// Cmd runs `birdc -s SOCK ARGS...` and returns its output. The control
// socket is a file: birdc needs no namespace.
func (b *BIRD) Cmd(args ...string) (string, error) {
	out, err := exec.Command("birdc", append([]string{"-s", b.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

var viaRE = regexp.MustCompile(`^\s+via (\S+) on `)

// Paths returns the next hops of BIRD's routes for prefix (`birdc show
// route PREFIX`), sorted: one per director announcing it.
func (b *BIRD) Paths(prefix string) ([]string, error) {
	out, err := b.Cmd("show", "route", prefix)
	if err != nil {
		if strings.Contains(out, "Network not found") {
			return nil, nil // no route: no path
		}
		return nil, err
	}
	var hops []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := viaRE.FindStringSubmatch(sc.Text()); m != nil {
			hops = append(hops, m[1])
		}
	}
	slices.Sort(hops)
	return hops, nil
}

// WaitPaths waits until BIRD's next hops for prefix are want (in any
// order), polling every 10 ms for at most timeout; it returns when they
// were first seen.
func (b *BIRD) WaitPaths(prefix string, want []string, timeout time.Duration) (time.Time, error) {
	want = slices.Sorted(slices.Values(want))
	var got []string
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = b.Paths(prefix); err == nil && slices.Equal(got, want) {
			return time.Now(), nil
		}
	}
	return time.Time{}, fmt.Errorf("BIRD's paths for %s: %q (err %v) after %v, want %q", prefix, got, err, timeout, want)
}

// Log is what BIRD logged, if it logs to a file.
func (b *BIRD) Log() string {
	if b.LogFile == "" {
		return ""
	}
	out, _ := os.ReadFile(b.LogFile)
	return string(out)
}

// Stop stops BIRD (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (b *BIRD) Stop() error {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		b.done <- err
		return nil
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		return errors.New("bird did not stop on SIGTERM")
	}
}
