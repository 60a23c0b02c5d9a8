// Package lab builds the classic LVS labs in network namespaces on one
// host and runs them: a client, a director running this binary, and real
// servers, with the tutorial's ipvsadm commands typed as they are.
// The end-to-end tests build the same topology.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"uvs/testbed"
)

// Addresses of the NAT lab, all in 198.18.0.0/15 and 2001:2::/48.
const (
	ClientIP   = "198.18.0.2"
	DirOuterIP = "198.18.0.1" // the director's outer address; the tutorial's VIP
	DirInnerIP = "198.18.1.1" // DIP: the real servers' gateway
	RS1IP      = "198.18.1.2"
	RS2IP      = "198.18.1.3"

	ClientIP6   = "2001:2::2"
	DirOuterIP6 = "2001:2::1"
	DirInnerIP6 = "2001:2:0:1::1"
	RS1IP6      = "2001:2:0:1::2"
	RS2IP6      = "2001:2:0:1::3"
)

// NATNet is the LVS-NAT topology:
//
//	client eth0 ---- eth0 director eth1 ---- [bridge in sw] ---- eth0 rs1
//	                                                        \--- eth0 rs2
type NATNet struct {
	Bed                      *testbed.Bed
	Client, Director, Switch *testbed.Host
	RS                       []*testbed.Host
}

// RSIP and RSIP6 are the addresses of real server i (0-based): RS1IP,
// RS2IP, then on up the 198.18.1.0/24 (2001:2:0:1::/64) subnet.
func RSIP(i int) string  { return fmt.Sprintf("198.18.1.%d", 2+i) }
func RSIP6(i int) string { return fmt.Sprintf("2001:2:0:1::%x", 2+i) }

// BuildNAT builds the NAT topology with servers real servers (the lab has
// two) in a new bed whose names start with prefix. The caller closes n.Bed.
func BuildNAT(prefix string, servers int) (n *NATNet, err error) {
	bed, err := testbed.New(prefix)
	if err != nil {
		return nil, err
	}
	n = &NATNet{Bed: bed}
	defer func() {
		if err != nil {
			bed.Close()
			n = nil
		}
	}()
	host := func(name string) *testbed.Host {
		if err != nil {
			return nil
		}
		var h *testbed.Host
		h, err = bed.Host(name)
		return h
	}
	n.Client, n.Director, n.Switch = host("client"), host("dir"), host("sw")
	for i := range servers {
		n.RS = append(n.RS, host(fmt.Sprintf("rs%d", i+1)))
	}
	if err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return bed.Link(n.Client, "eth0", n.Director, "eth0") },
		func() error { return bed.Bridge(n.Switch, "br0", "eth1", n.Director) },
		func() error { return bed.Bridge(n.Switch, "br0", "eth0", n.RS...) },
		func() error { return n.Client.Addr("eth0", ClientIP+"/24") },
		func() error { return n.Client.Addr("eth0", ClientIP6+"/64") },
		func() error { return n.Client.Route("default", DirOuterIP) },
		func() error { return n.Client.Route("default", DirOuterIP6) },
		func() error { return n.Director.Addr("eth0", DirOuterIP+"/24") },
		func() error { return n.Director.Addr("eth0", DirOuterIP6+"/64") },
		func() error { return n.Director.Addr("eth1", DirInnerIP+"/24") },
		func() error { return n.Director.Addr("eth1", DirInnerIP6+"/64") },
	}
	for i, rs := range n.RS {
		ip, ip6 := RSIP(i), RSIP6(i)
		steps = append(steps,
			func() error { return rs.Addr("eth0", ip+"/24") },
			func() error { return rs.Addr("eth0", ip6+"/64") },
			func() error { return rs.Route("default", DirInnerIP) },
			func() error { return rs.Route("default", DirInnerIP6) },
		)
	}
	for _, s := range steps {
		if err = s(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Director is a `director run` process inside a namespace.
type Director struct {
	Host   *testbed.Host
	Binary string
	Socket string
	cmd    *exec.Cmd
	log    *logBuffer
	done   chan error
}

// StartDirector runs `BINARY run --socket DIR/director.sock EXTRA...` in h
// and waits until its control socket answers.
func StartDirector(h *testbed.Host, binary, dir string, extra ...string) (*Director, error) {
	d := &Director{Host: h, Binary: binary, Socket: filepath.Join(dir, "director.sock"), log: new(logBuffer), done: make(chan error, 1)}
	args := append([]string{"run", "--socket", d.Socket}, extra...)
	d.cmd = h.Command(binary, args...)
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start director: %w", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			return nil, fmt.Errorf("director exited at start (%v):\n%s", err, d.log.String())
		default:
		}
		if _, _, code, err := d.Ipvsadm("-L", "-n"); err == nil && code == 0 {
			return d, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.Stop()
	return nil, fmt.Errorf("director did not come up:\n%s", d.log.String())
}

// Ipvsadm runs `BINARY ipvsadm ARGS...` against the director, as a user
// would type `ipvsadm ARGS...`.
func (d *Director) Ipvsadm(args ...string) (stdout, stderr string, code int, err error) {
	return d.IpvsadmIn(nil, args...)
}

// IpvsadmIn is Ipvsadm with standard input (for -R).
func (d *Director) IpvsadmIn(stdin io.Reader, args ...string) (stdout, stderr string, code int, err error) {
	cmd := d.Host.Command(d.Binary, append([]string{"ipvsadm"}, args...)...)
	cmd.Env = append(os.Environ(), "UVS_SOCKET="+d.Socket)
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode(), nil
	}
	return o.String(), e.String(), 0, err
}

// Pid is the director's process id (of `ip netns exec`, which execs it).
func (d *Director) Pid() int { return d.cmd.Process.Pid }

// Signal sends sig to the director.
func (d *Director) Signal(sig os.Signal) error { return d.cmd.Process.Signal(sig) }

// Exited reports whether the director's process has ended.
func (d *Director) Exited() bool {
	select {
	case err := <-d.done:
		d.done <- err
		return true
	default:
		return false
	}
}

// Log is what the director printed so far.
func (d *Director) Log() string { return d.log.String() }

// Stop sends SIGTERM and waits (up to 10 s, then kills).
func (d *Director) Stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		return errors.New("director did not stop on SIGTERM")
	}
}

// Options are the lab command's options.
type Options struct {
	IO     string    // the director's --io
	Keep   bool      // leave the lab running until ctx is done
	Out    io.Writer // where the lab talks
	Binary string    // this program, to run as the director
	// Trace captures the packets of the first request on every hop and
	// prints them.
	Trace bool
	// TunType is the TUN lab's encapsulation: ipip (default), gue or
	// gre; TunPort is the GUE port.
	TunType string
	TunPort uint16
	// Prefix starts the names of the lab's namespaces (default "uvslab";
	// the testbed adds a random suffix).
	Prefix string
}

// NAT runs the LVS-NAT lab: the tutorial's example 1 with its commands as
// typed, the VIP being the director's outer address.
func NAT(ctx context.Context, o Options) (err error) {
	s, err := newSession(ctx, o)
	if err != nil {
		return err
	}
	defer s.close(&err)
	s.say("# LVS-NAT lab: building namespaces (client, director, switch, two real servers)")
	n, err := BuildNAT(s.o.Prefix, 2)
	if err != nil {
		return err
	}
	s.bed = n.Bed
	for i, rs := range n.RS {
		if err := s.serve(rs, ":80", fmt.Sprintf("welcome realserver %d", i+1), nil); err != nil {
			return err
		}
	}
	s.say("#   client    %-10s eth0 %s/24, default via %s", n.Client.Name, ClientIP, DirOuterIP)
	s.say("#   director  %-10s eth0 %s/24 (VIP), eth1 %s/24 (DIP)", n.Director.Name, DirOuterIP, DirInnerIP)
	s.say("#   rs1       %-10s eth0 %s/24, default via %s, serves \"welcome realserver 1\"", n.RS[0].Name, RS1IP, DirInnerIP)
	s.say("#   rs2       %-10s eth0 %s/24, default via %s, serves \"welcome realserver 2\"", n.RS[1].Name, RS2IP, DirInnerIP)

	s.say("\n# on the director:")
	if err := s.startDirector(n.Director); err != nil {
		return err
	}
	vip := DirOuterIP + ":80"
	if err := s.ipvsadm(
		[]string{"-A", "-t", vip, "-s", "rr"},
		[]string{"-a", "-t", vip, "-r", RS1IP, "-m"},
		[]string{"-a", "-t", vip, "-r", RS2IP, "-m"},
		[]string{"-L", "-n"},
	); err != nil {
		return err
	}

	s.say("\n# on the client: fetch http://%s/ six times", DirOuterIP)
	hops := []Hop{
		{n.Client, "client", "eth0"},
		{n.Director, "director", "eth0"},
		{n.Director, "director", "eth1"},
		{n.RS[0], "rs1", "eth0"},
		{n.RS[1], "rs2", "eth0"},
	}
	bodies, err := s.fetchAll(n.Client, repeat(fetch{url: "http://" + DirOuterIP + "/"}, 6), hops, 0)
	if err != nil {
		return err
	}
	s.sayAlternation(bodies)
	return s.finish(append([]*testbed.Host{n.Client, n.Director}, n.RS...)...)
}

// repeat is n copies of f.
func repeat(f fetch, n int) []fetch {
	fs := make([]fetch, n)
	for i := range fs {
		fs[i] = f
	}
	return fs
}

// sayAlternation says whether the answers alternated.
func (s *session) sayAlternation(bodies []string) {
	if alternates(bodies) {
		s.say("# the answers alternate between the real servers (rr)")
	} else {
		s.say("# the answers did not alternate")
	}
}

// run types an ipvsadm command and shows what it printed.
func run(out io.Writer, d *Director, args ...string) error {
	fmt.Fprintf(out, "$ ipvsadm %s\n", strings.Join(args, " "))
	so, se, code, err := d.Ipvsadm(args...)
	if err != nil {
		return fmt.Errorf("ipvsadm %s: %w", strings.Join(args, " "), err)
	}
	io.WriteString(out, so)
	io.WriteString(out, se)
	if code != 0 {
		return fmt.Errorf("ipvsadm %s exited %d\ndirector log:\n%s", strings.Join(args, " "), code, d.Log())
	}
	return nil
}

// get fetches url and returns the body without its trailing newline.
func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// logBuffer collects a process's output while others read it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
