package realserver

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"uvs/forward/tun"
	"uvs/testbed"
)

// A real server killed outright leaves its changes; the next start undoes
// them first, and its own stop leaves the host as it was.
func TestTUNKilled(t *testing.T) {
	tp := newTopo(t)
	if err := tp.rs.Sysctl("net.ipv4.conf.all.rp_filter", "1"); err != nil {
		t.Fatal(err)
	}
	before := hostState(t, tp.rs)
	state := filepath.Join(t.TempDir(), "rs.state")
	args := []string{"--vip", "198.18.0.100,2001:2::100", "--from", "198.18.2.1", "--state", state}
	p := startRS(t, tp.rs, args...)
	p.kill(t)
	left := hostState(t, tp.rs)
	if left == before || !strings.Contains(left, "all.rp_filter=2") {
		t.Fatalf("after SIGKILL the host is\n%s\nwant the changes left", left)
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("state file after SIGKILL: %v", err)
	}
	p = startRS(t, tp.rs, args...)
	pc4, _ := serveEcho(t, tp)
	echoOnce(t, tp, pc4, encap(t, tunnel(tun.IPIP, tun.NoCsum, true), udpPacket(t, clientV4, vipV4, 5000, 7, "again")),
		"echo: again from 198.18.0.2:5000")
	p.stop(t)
	if after := hostState(t, tp.rs); after != before {
		t.Errorf("after kill, start and SIGTERM the host is\n%s\nwant\n%s", after, before)
	}
}

// Without --from the real server warns, and takes tunnels from anyone.
func TestTUNOpen(t *testing.T) {
	tp := newTopo(t)
	p := startRS(t, tp.rs, "--vip", "198.18.0.100", "--name", "rstest0", "--state", filepath.Join(t.TempDir(), "rs.state"))
	if !strings.Contains(p.out.String(), "level=WARN") || !strings.Contains(p.out.String(), "decapsulator is open") {
		t.Errorf("no warning of an open decapsulator:\n%s", p.out)
	}
	if !strings.Contains(hostState(t, tp.rs), "link rstest0: 198.18.0.100/32\n") {
		t.Errorf("no device rstest0 with the VIP:\n%s", hostState(t, tp.rs))
	}
	pc4 := serveEcho4(t, tp)
	tn := tunnel(tun.IPIP, tun.NoCsum, true)
	tn.Src = netip.MustParseAddr("198.18.2.3")
	echoOnce(t, tp, pc4, encap(t, tn, udpPacket(t, clientV4, vipV4, 5000, 7, "from anyone")),
		"echo: from anyone from 198.18.0.2:5000")
	p.stop(t)
}

// serveEcho4 is serveEcho for an IPv4 VIP only.
func serveEcho4(t *testing.T, tp *topo) net.PacketConn {
	t.Helper()
	pc, err := tp.rs.ListenPacket("udp", "198.18.0.100:7")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(testbed.ServeUDPEcho(pc, "echo: "))
	c, err := tp.client.ListenPacket("udp", "198.18.0.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDR: the tutorial's real-server setup, traffic forwarded by MAC
// address (what an LVS-DR director does) answered from the VIP straight
// to the client, the host restored at SIGTERM, and after a kill at the
// next start.
func TestDR(t *testing.T) {
	tp := newTopo(t)
	// Values the real server changes, set apart from the defaults so
	// that restoring them is seen.
	if err := tp.rs.Sysctl("net.ipv4.conf.all.arp_announce", "1"); err != nil {
		t.Fatal(err)
	}
	before := hostState(t, tp.rs)
	state := filepath.Join(t.TempDir(), "dr.state")
	args := []string{"--dr", "--vip", "198.18.0.100,2001:2::100", "--state", state}
	p := startRS(t, tp.rs, args...)
	during := hostState(t, tp.rs)
	for _, want := range []string{"all.arp_ignore=1\n", "lo.arp_ignore=1\n", "all.arp_announce=2\n", "lo.arp_announce=2\n",
		"198.18.0.100/32", "2001:2::100/128"} {
		if !strings.Contains(during, want) {
			t.Errorf("while running, want %q in\n%s", want, during)
		}
	}
	if !strings.Contains(during, "link lo: 127.0.0.1/8 198.18.0.100/32 ::1/128 2001:2::100/128\n") &&
		!strings.Contains(during, "link lo: 127.0.0.1/8 198.18.0.100/32 2001:2::100/128 ::1/128\n") {
		t.Errorf("VIPs not on lo:\n%s", during)
	}
	checkNeighbors(t, tp)
	pc4, pc6 := serveEcho(t, tp)
	for _, c := range []struct {
		src, dst netip.Addr
		pc       net.PacketConn
	}{{clientV4, vipV4, pc4}, {clientV6, vipV6, pc6}} {
		// DR: the client's packet as it is, to the real server's MAC.
		echoOnce(t, tp, c.pc, udpPacket(t, c.src, c.dst, 5000, 7, "dr"),
			"echo: dr from "+netip.AddrPortFrom(c.src, 5000).String())
	}
	p.stop(t)
	if after := hostState(t, tp.rs); after != before {
		t.Errorf("after SIGTERM the host is\n%s\nwant\n%s", after, before)
	}

	p = startRS(t, tp.rs, args...)
	p.kill(t)
	if left := hostState(t, tp.rs); left == before {
		t.Fatal("after SIGKILL the host shows no changes")
	}
	p = startRS(t, tp.rs, args...)
	p.stop(t)
	if after := hostState(t, tp.rs); after != before {
		t.Errorf("after kill, start and SIGTERM the host is\n%s\nwant\n%s", after, before)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file after a clean stop: %v", err)
	}
}

// TestFlags: bad command lines are refused with exit status 2 and a
// message, before anything is changed; a user other than root is told.
func TestFlags(t *testing.T) {
	if directorBin == "" {
		t.Skip("needs root (the binary is built only then)")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--vip is required"},
		{[]string{"--vip", ""}, "--vip: empty address list"},
		{[]string{"--vip", "198.18.0.100,nonsense"}, `--vip: bad address "nonsense"`},
		{[]string{"--vip", "198.18.0.100", "--from", "198.18.2.1/24"}, "--from: bad address"},
		{[]string{"--vip", "198.18.0.100", "--gue-port", "0"}, "--gue-port"},
		{[]string{"--vip", "198.18.0.100", "--gue-port", "70000"}, "--gue-port"},
		{[]string{"--vip", "198.18.0.100", "--name", "a/b"}, "--name"},
		{[]string{"--vip", "198.18.0.100", "--name", "much-too-long-name"}, "--name"},
		{[]string{"--dr", "--vip", "198.18.0.100", "--from", "198.18.2.1"}, "--from is for LVS-TUN"},
		{[]string{"--dr", "--vip", "198.18.0.100", "--gue-port", "6080"}, "--gue-port is for LVS-TUN"},
		{[]string{"--vip", "198.18.0.100", "--metrics", "nonsense"}, "--metrics"},
		{[]string{"--vip", "198.18.0.100", "extra"}, `unexpected argument "extra"`},
		{[]string{"--vip", "198.18.0.100", "--nosuch"}, "flag provided but not defined: -nosuch"},
		{[]string{"--vip", "198.18.0.100", "--log-level", "loud"}, "--log-level"},
	} {
		out, err := exec.Command(directorBin, append([]string{"realserver"}, c.args...)...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("realserver %q: %v, output %q; want exit status 2 and %q", c.args, err, out, c.want)
		}
	}
	cmd := exec.Command(directorBin, "realserver", "--vip", "198.18.0.100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "must run as root") {
		t.Errorf("as nobody: %v, %q; want \"must run as root\"", err, out)
	}
}
