package director_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
	"uvs/testbed"
)

// syncNet is a director pair in front of NAT real servers:
//
//	client eth0 --[brf in sw]-- eth0 d1 eth1 --[brb in sw]-- eth0 rs1, rs2
//	                        \-- eth0 d2 eth1 --/
//	                             d1 eth2 ------ eth2 d2   (the sync link)
//
// The client reaches the virtual address 198.18.2.100 through the
// floating address 198.18.0.1 and the real servers' gateway is the
// floating 198.18.1.1: both on the active director, moved to the other by
// the test as VRRP would move them (keepalived's virtual_ipaddress).
type syncNet struct {
	bed        *testbed.Bed
	client, sw *testbed.Host
	d          [2]*testbed.Host
	rs         []*testbed.Host
}

const (
	syncVIP      = "198.18.2.100"
	floatFront   = "198.18.0.1"
	floatBack    = "198.18.1.1"
	syncClientIP = "198.18.0.2"
)

func buildSyncNet(t *testing.T) *syncNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	bed, err := testbed.New("uvssync")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bed.Close() })
	n := &syncNet{bed: bed}
	host := func(name string) *testbed.Host {
		h, err := bed.Host(name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	n.client, n.sw = host("client"), host("sw")
	n.d = [2]*testbed.Host{host("d1"), host("d2")}
	n.rs = []*testbed.Host{host("rs1"), host("rs2")}
	steps := []func() error{
		func() error { return bed.Bridge(n.sw, "brf", "eth0", n.client, n.d[0], n.d[1]) },
		func() error { return bed.Bridge(n.sw, "brb", "eth1", n.d[0], n.d[1]) },
		func() error { return bed.Bridge(n.sw, "brb", "eth0", n.rs...) },
		func() error { return bed.Link(n.d[0], "eth2", n.d[1], "eth2") },
		func() error { return n.client.Addr("eth0", syncClientIP+"/24") },
		func() error { return n.client.Route("198.18.2.0/24", floatFront) },
	}
	for i, d := range n.d {
		steps = append(steps,
			func() error { return d.Addr("eth0", fmt.Sprintf("198.18.0.%d/24", 11+i)) },
			func() error { return d.Addr("eth1", fmt.Sprintf("198.18.1.%d/24", 11+i)) },
			func() error { return d.Addr("eth2", fmt.Sprintf("198.18.9.%d/24", 1+i)) },
			func() error { return d.Sysctl("net.ipv4.ip_forward", "1") },
			// With --io tun the VIP goes on the interface that routes to it.
			func() error { return d.Route("default", syncClientIP) },
		)
	}
	for i, rs := range n.rs {
		steps = append(steps,
			func() error { return rs.Addr("eth0", fmt.Sprintf("198.18.1.%d/24", 2+i)) },
			func() error { return rs.Route("default", floatBack) },
		)
	}
	// The floating addresses start on d1.
	steps = append(steps,
		func() error { return n.d[0].Addr("eth0", floatFront+"/24") },
		func() error { return n.d[0].Addr("eth1", floatBack+"/24") },
	)
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// failover moves the floating addresses from d1 to d2 and points the
// client's and the real servers' neighbour entries at d2, as the
// gratuitous ARPs of a VRRP takeover do.
func (n *syncNet) failover(t *testing.T) {
	t.Helper()
	for _, c := range [][]string{
		{"ip", "addr", "del", floatFront + "/24", "dev", "eth0"},
		{"ip", "addr", "del", floatBack + "/24", "dev", "eth1"},
	} {
		if _, err := n.d[0].Exec(c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.d[1].Addr("eth0", floatFront+"/24"); err != nil {
		t.Fatal(err)
	}
	if err := n.d[1].Addr("eth1", floatBack+"/24"); err != nil {
		t.Fatal(err)
	}
	front, back := n.d[1].MAC("eth0").String(), n.d[1].MAC("eth1").String()
	if _, err := n.client.Exec("ip", "neigh", "replace", floatFront, "lladdr", front, "dev", "eth0", "nud", "reachable"); err != nil {
		t.Fatal(err)
	}
	for _, rs := range n.rs {
		if _, err := rs.Exec("ip", "neigh", "replace", floatBack, "lladdr", back, "dev", "eth0", "nud", "reachable"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSyncFailover: established connections through a UVS sync master go
// on through the UVS backup that takes over (NAT and DR, both I/O
// backends), to the same real servers, and the persistence template
// learned sends a new connection where the old ones went.
//
// Beyond IPVS: "both" runs a master and a backup on each director (each
// the backup of the other's connections); "late" starts the backup only
// once the connections were sent (to nobody), so that it has them from
// the master's full dump, which its start asks for.
func TestSyncFailover(t *testing.T) {
	for _, fwd := range []string{"-m", "-g"} {
		for _, io := range []string{"afpacket", "tun"} {
			name := map[string]string{"-m": "nat", "-g": "dr"}[fwd] + "-" + io
			t.Run(name, func(t *testing.T) { testSyncFailover(t, io, fwd, "") })
		}
	}
	t.Run("both-nat-afpacket", func(t *testing.T) { testSyncFailover(t, "afpacket", "-m", "both") })
	t.Run("late-nat-afpacket", func(t *testing.T) { testSyncFailover(t, "afpacket", "-m", "late") })
}

func testSyncFailover(t *testing.T, io, fwd, mode string) {
	n := buildSyncNet(t)
	var servers sync.Map // client port -> the server's side of the connection
	for i, rs := range n.rs {
		name := fmt.Sprintf("rs%d", i+1)
		if fwd == "-g" {
			// The VIP on lo, ARP for it off; replies go to the client
			// through the floating gateway, not through the director.
			if err := lab.SetupDRRealServer(rs, syncVIP); err != nil {
				t.Fatal(err)
			}
		}
		for _, port := range []string{":7000", ":7001"} {
			l, err := rs.Listen("tcp4", port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go serveLines(l, name, &servers)
		}
	}
	var ds [2]*directorProc
	for i, h := range n.d {
		d, err := lab.StartDirector(h, binary, t.TempDir(), "--io", io)
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = &directorProc{t: t, d: d}
		t.Cleanup(func() {
			err := d.Stop()
			if err != nil && !ds[i].killed {
				t.Errorf("director %d stop: %v", i+1, err)
			}
			if t.Failed() || os.Getenv("SYNC_LOG") != "" {
				t.Logf("director %d log:\n%s", i+1, d.Log())
			}
		})
		for _, cmd := range [][]string{
			{"-A", "-t", syncVIP + ":7000", "-s", "rr"},
			{"-a", "-t", syncVIP + ":7000", "-r", "198.18.1.2:7000", fwd},
			{"-a", "-t", syncVIP + ":7000", "-r", "198.18.1.3:7000", fwd},
			{"-A", "-t", syncVIP + ":7001", "-s", "rr", "-p", "300"},
			{"-a", "-t", syncVIP + ":7001", "-r", "198.18.1.2:7001", fwd},
			{"-a", "-t", syncVIP + ":7001", "-r", "198.18.1.3:7001", fwd},
		} {
			ds[i].ipvsadm(cmd...)
		}
	}
	const masterLine = "master sync daemon (mcast=eth2, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
	const backupLine = "backup sync daemon (mcast=eth2, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
	startBackup := func() {
		ds[1].ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth2", "--syncid", "5")
		want := backupLine
		if mode == "both" {
			want = masterLine + backupLine
		}
		if got := ds[1].ipvsadm("-L", "-n", "--daemon"); got != want {
			t.Errorf("d2 -L --daemon:\n%q\nwant\n%q", got, want)
		}
	}
	ds[0].ipvsadm("--start-daemon", "master", "--mcast-interface", "eth2", "--syncid", "5")
	if mode == "both" {
		ds[0].ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth2", "--syncid", "5")
		ds[1].ipvsadm("--start-daemon", "master", "--mcast-interface", "eth2", "--syncid", "5")
	}
	want := masterLine
	if mode == "both" {
		want += backupLine
	}
	if got := ds[0].ipvsadm("-L", "--daemon"); got != want {
		t.Errorf("d1 -L --daemon:\n%q\nwant\n%q", got, want)
	}
	if mode != "late" {
		startBackup()
	}

	// Long-lived connections through d1: four to the rr service, two to
	// the persistent one (one template), three lines each.
	type flow struct {
		c    net.Conn
		r    *bufio.Reader
		port string
		rs   string
	}
	var flows []*flow
	for _, port := range []string{"7000", "7000", "7000", "7000", "7001", "7001"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := n.client.Dial(ctx, "tcp4", syncVIP+":"+port)
		cancel()
		if err != nil {
			t.Fatalf("dial %s: %v", port, err)
		}
		t.Cleanup(func() { c.Close() })
		f := &flow{c: c, r: bufio.NewReader(c), port: port}
		for k := range 3 {
			got, err := echo(c, f.r, fmt.Sprintf("before %d", k))
			if err != nil {
				t.Fatalf("%s: %v", port, err)
			}
			name, _, _ := strings.Cut(got, ":")
			if f.rs != "" && name != f.rs {
				t.Fatalf("one connection, two servers: %s, %s", f.rs, name)
			}
			f.rs = name
		}
		flows = append(flows, f)
	}

	if mode == "late" {
		time.Sleep(3 * time.Second) // the master's messages went, to nobody
		if l := ds[1].ipvsadm("-L", "-n", "-c"); strings.Count(l, "\n") != 2 {
			t.Fatalf("d2 knows connections before its backup started:\n%s", l)
		}
		startBackup()
	}

	// The backup learns them: six ESTABLISHED and the template.
	est := regexp.MustCompile(`(?m)^TCP\s+\S+\s+ESTABLISHED\s+198\.18\.0\.2:\d+\s+198\.18\.2\.100:700[01]\s+198\.18\.1\.[23]:700[01]$`)
	tmpl := regexp.MustCompile(`(?m)^TCP\s+\S+\s+ASSURED\s+198\.18\.0\.2:0\s+198\.18\.2\.100:7001\s+198\.18\.1\.[23]:7001$`)
	var listing string
	deadline := time.Now().Add(15 * time.Second)
	for {
		listing = ds[1].ipvsadm("-L", "-n", "-c")
		if len(est.FindAllString(listing, -1)) == len(flows) && tmpl.MatchString(listing) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backup did not learn the connections:\n%s\nmaster:\n%s", listing, ds[0].ipvsadm("-L", "-n", "-c"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Learned connections count for their servers, as IPVS's do.
	method := map[string]string{"-m": "Masq", "-g": "Route"}[fwd]
	if l := ds[1].ipvsadm("-L", "-n"); !regexp.MustCompile(`(?m)^  -> 198\.18\.1\.2:7000\s+` + method + `\s+1\s+2\s+0\s*$`).MatchString(l) {
		t.Errorf("backup's counts:\n%s", l)
	}

	// d1 dies; the floating addresses move to d2.
	ds[0].killed = true
	if err := ds[0].d.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n.failover(t)

	// A server speaks first on one connection: with NAT, the backup has
	// not seen its client yet and routes to it (the server retransmits
	// meanwhile).
	port := flows[0].c.LocalAddr().(*net.TCPAddr).Port
	sc, ok := servers.Load(port)
	if !ok {
		t.Fatalf("no server side for client port %d", port)
	}
	fmt.Fprintln(sc.(net.Conn), "server first")
	flows[0].c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := flows[0].r.ReadString('\n'); err != nil || got != "server first\n" {
		t.Fatalf("the server's line after the failover: %q %v", got, err)
	}

	// Every connection goes on, to the same server, through d2.
	for i, f := range flows {
		for k := range 3 {
			got, err := echo(f.c, f.r, fmt.Sprintf("after %d", k))
			if err != nil {
				t.Fatalf("flow %d (port %s, %s) after the failover: %v\nbackup:\n%s", i, f.port, f.rs, err, ds[1].ipvsadm("-L", "-n", "-c", "--stats"))
			}
			if want := f.rs + ": after " + fmt.Sprint(k); got != want {
				t.Fatalf("flow %d after the failover: %q, want %q", i, got, want)
			}
		}
	}
	// A new connection from the client to the persistent service goes to
	// the server the learned template names.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c, err := n.client.Dial(ctx, "tcp4", syncVIP+":7001")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := echo(c, bufio.NewReader(c), "new")
	if name, _, _ := strings.Cut(got, ":"); err != nil || name != flows[4].rs {
		t.Errorf("new connection to the persistent service: %q %v, want %s", got, err, flows[4].rs)
	}
	if s := ds[1].ipvsadm("-L", "-n", "--stats"); !strings.Contains(s, "198.18.2.100:7000") {
		t.Errorf("backup stats:\n%s", s)
	}
}

// directorProc is a director of the pair.
type directorProc struct {
	t      *testing.T
	d      *lab.Director
	killed bool
}

func (p *directorProc) ipvsadm(args ...string) string {
	p.t.Helper()
	out, errs, code, err := p.d.Ipvsadm(args...)
	if err != nil || code != 0 {
		p.t.Fatalf("ipvsadm %s: code %d err %v\n%s%s", strings.Join(args, " "), code, err, out, errs)
	}
	return out
}

// serveLines answers each line of each connection with name + ": " + the
// line, until l is closed, and records each connection in conns by its
// client's port.
func serveLines(l net.Listener, name string, conns *sync.Map) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		conns.Store(c.RemoteAddr().(*net.TCPAddr).Port, c)
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintf(c, "%s: %s\n", name, sc.Text()); err != nil {
					return
				}
			}
		}()
	}
}
