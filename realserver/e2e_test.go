package realserver

// End-to-end tests: the real `director realserver` binary in a network
// namespace "rs", a "dir" namespace that plays the director (it builds the
// client's packets, tunnels them with forward/tun and sends them to rs) and
// routes rs's answers to a "client" namespace, which must get them from the
// VIP directly.
//
//	client 198.18.0.2/24       dir 198.18.0.1/24 | 198.18.2.1/24       rs 198.18.2.2/24
//	       2001:2::2/64  ----      2001:2::1/64  | 2001:2:0:2::1/64 ---   2001:2:0:2::2/64
//	                           (forwarding)                               VIP 198.18.0.100, 2001:2::100

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"uvs/forward/tun"
	"uvs/hostconf"
	"uvs/lab"
	"uvs/packet"
	"uvs/testbed"
)

var directorBin string // built by TestMain when running as root

func TestMain(m *testing.M) {
	code := func() int {
		if testbed.Available() != nil {
			return m.Run()
		}
		bin, remove, err := lab.BuildDirector("../cmd/director")
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

var (
	clientV4 = netip.MustParseAddr("198.18.0.2")
	clientV6 = netip.MustParseAddr("2001:2::2")
	dirV4    = netip.MustParseAddr("198.18.2.1")
	dirV6    = netip.MustParseAddr("2001:2:0:2::1")
	rsV4     = netip.MustParseAddr("198.18.2.2")
	rsV6     = netip.MustParseAddr("2001:2:0:2::2")
	vipV4    = netip.MustParseAddr("198.18.0.100")
	vipV6    = netip.MustParseAddr("2001:2::100")
)

type topo struct {
	bed             *testbed.Bed
	client, dir, rs *testbed.Host
	rsMAC           net.HardwareAddr
	send            *sender
	icmp            *icmpWatch
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	bed, err := testbed.New(fmt.Sprintf("rs%04x", time.Now().UnixNano()&0xffff))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bed.Close() })
	tp := &topo{bed: bed}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	tp.client, err = bed.Host("client")
	must(err)
	tp.dir, err = bed.Host("dir")
	must(err)
	tp.rs, err = bed.Host("rs")
	must(err)
	must(bed.Link(tp.client, "eth0", tp.dir, "eth0"))
	must(bed.Link(tp.dir, "eth1", tp.rs, "eth0"))
	for _, a := range []struct {
		h    *testbed.Host
		ifn  string
		cidr string
	}{
		{tp.client, "eth0", "198.18.0.2/24"}, {tp.client, "eth0", "2001:2::2/64"},
		{tp.dir, "eth0", "198.18.0.1/24"}, {tp.dir, "eth0", "2001:2::1/64"},
		{tp.dir, "eth1", "198.18.2.1/24"}, {tp.dir, "eth1", "2001:2:0:2::1/64"},
		{tp.rs, "eth0", "198.18.2.2/24"}, {tp.rs, "eth0", "2001:2:0:2::2/64"},
	} {
		must(a.h.Addr(a.ifn, a.cidr))
	}
	must(tp.client.Route("default", "198.18.0.1"))
	must(tp.client.Route("default", "2001:2::1"))
	must(tp.rs.Route("default", "198.18.2.1"))
	must(tp.rs.Route("default", "2001:2:0:2::1"))
	must(tp.dir.Forward())
	// rs answers from the VIP, which is in dir's eth0 subnet, through eth1.
	must(tp.dir.Sysctl("net.ipv4.conf.all.rp_filter", "0"))
	must(tp.dir.Sysctl("net.ipv4.conf.eth1.rp_filter", "0"))
	tp.rsMAC = tp.rs.MAC("eth0")
	tp.send, err = newSender(tp.dir, "eth1", tp.rsMAC)
	must(err)
	t.Cleanup(tp.send.close)
	tp.icmp, err = watchICMP(tp.dir)
	must(err)
	t.Cleanup(tp.icmp.close)
	return tp
}

// sender sends IP packets out of one interface of a host to one MAC
// address, as a director forwarding by MAC or tunnel does.
type sender struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
}

func newSender(h *testbed.Host, ifname string, mac net.HardwareAddr) (*sender, error) {
	s := &sender{fd: -1, mac: mac}
	err := h.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		s.ifindex = l.Attrs().Index
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	return s, err
}

func (s *sender) sendIP(pkt []byte) error {
	proto := uint16(unix.ETH_P_IP)
	if pkt[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: s.ifindex, Halen: 6}
	copy(sa.Addr[:], s.mac)
	return unix.Sendto(s.fd, pkt, 0, sa)
}

func (s *sender) close() { unix.Close(s.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// icmpWatch collects the ICMP errors (IPv4 destination unreachable, ICMPv6
// destination unreachable and parameter problem) a host receives.
type icmpWatch struct {
	mu     sync.Mutex
	seen   []string
	fds    []int
	wg     sync.WaitGroup
	closed atomic.Bool
}

func watchICMP(h *testbed.Host) (*icmpWatch, error) {
	w := &icmpWatch{}
	err := h.Do(func() error {
		for _, s := range [][2]int{{unix.AF_INET, unix.IPPROTO_ICMP}, {unix.AF_INET6, unix.IPPROTO_ICMPV6}} {
			fd, err := unix.Socket(s[0], unix.SOCK_RAW|unix.SOCK_CLOEXEC, s[1])
			if err != nil {
				return err
			}
			tv := unix.Timeval{Usec: 100000}
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			w.fds = append(w.fds, fd)
		}
		return nil
	})
	if err != nil {
		w.close()
		return nil, err
	}
	for i, fd := range w.fds {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			buf := make([]byte, 2048)
			for !w.closed.Load() {
				n, from, err := unix.Recvfrom(fd, buf, 0)
				if err != nil || n == 0 {
					continue // the receive timeout: look at closed again
				}
				var typ, code byte
				if i == 0 {
					ihl := int(buf[0]&0xf) * 4
					if n < ihl+2 || buf[ihl] != 3 {
						continue
					}
					typ, code = buf[ihl], buf[ihl+1]
				} else {
					if n < 2 || (buf[0] != 1 && buf[0] != 4) {
						continue
					}
					typ, code = buf[0], buf[1]
				}
				w.mu.Lock()
				w.seen = append(w.seen, fmt.Sprintf("family %d type %d code %d from %v", i*2+4, typ, code, sockaddrIP(from)))
				w.mu.Unlock()
			}
		}()
	}
	return w, nil
}

func sockaddrIP(sa unix.Sockaddr) netip.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr)
	}
	return netip.Addr{}
}

// take returns and forgets what was seen.
func (w *icmpWatch) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.seen
	w.seen = nil
	return s
}

func (w *icmpWatch) close() {
	w.closed.Store(true)
	w.wg.Wait()
	for _, fd := range w.fds {
		unix.Close(fd)
	}
}

// udpPacket builds an IPv4 or IPv6 UDP packet with valid checksums.
func udpPacket(t *testing.T, src, dst netip.Addr, sport, dport uint16, payload string) []byte {
	t.Helper()
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	var ip gopacket.SerializableLayer
	if src.Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Flags: layers.IPv4DontFragment}
		udp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		udp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// encap tunnels inner with tn.
func encap(t *testing.T, tn *tun.Tunnel, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, tun.MaxOverhead+len(inner))
	copy(buf[tun.MaxOverhead:], inner)
	start, ok := tn.Encap(buf, tun.MaxOverhead, len(inner))
	if !ok {
		t.Fatalf("Encap %v %v -> %v refused %d bytes", tn.Type, tn.Src, tn.Dst, len(inner))
	}
	return buf[start:]
}

// rsProc is a running `director realserver`.
type rsProc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
	err  error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRS starts the real server in h and waits until it says it is set
// up.
func startRS(t *testing.T, h *testbed.Host, args ...string) *rsProc {
	t.Helper()
	p := &rsProc{cmd: h.Command(directorBin, append([]string{"realserver"}, args...)...), out: &syncBuf{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		t.Logf("realserver %v output:\n%s", args, p.out)
	})
	deadline := time.After(10 * time.Second)
	for !strings.Contains(p.out.String(), "real server set up") {
		select {
		case <-p.done:
			t.Fatalf("realserver exited at start: %v\n%s", p.err, p.out)
		case <-deadline:
			t.Fatalf("realserver not set up after 10s:\n%s", p.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p
}

// stop sends SIGTERM and wants exit status 0.
func (p *rsProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("realserver did not stop 10s after SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("realserver exit after SIGTERM: %v\n%s", p.err, p.out)
	}
}

// kill stops it with SIGKILL: no cleanup.
func (p *rsProc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("realserver did not die 10s after SIGKILL")
	}
}

// hostState is what the real server may change in h and must restore:
// the ARP and rp_filter sysctls, the links and the addresses of lo.
func hostState(t *testing.T, h *testbed.Host) string {
	t.Helper()
	var b strings.Builder
	err := h.Do(func() error {
		for _, k := range []string{"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.lo.arp_ignore", "net.ipv4.conf.all.arp_announce",
			"net.ipv4.conf.lo.arp_announce", "net.ipv4.conf.all.rp_filter"} {
			v, err := hostconf.ReadSysctl(k)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "link %s:", l.Attrs().Name)
			for _, a := range addrs {
				if !a.IP.IsLinkLocalUnicast() {
					fmt.Fprintf(&b, " %s", a.IPNet)
				}
			}
			b.WriteString("\n")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// metrics fetches the real server's metrics inside h and returns the
// uvs_realserver_* samples, "name{labels}" to value.
func metrics(t *testing.T, h *testbed.Host, addr string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	resp, err := h.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "uvs_realserver_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// echoOnce sends one tunnelled datagram from the client's address and port
// to the VIP's echo port and waits for the answer at the client.
func echoOnce(t *testing.T, tp *topo, pc net.PacketConn, outer []byte, want string) {
	t.Helper()
	if err := tp.send.sendIP(outer); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer at the client: %v", err)
	}
	if got := string(buf[:n]); got != want {
		t.Errorf("client got %q from %v, want %q", got, from, want)
	}
	t.Logf("client got %q from %v", buf[:n], from)
}

// probeNeighbor asks, from h's interface ifname with address src, for the
// link-layer address of target (ARP or NDP) and reports whether anyone
// answered within a second.
func probeNeighbor(t *testing.T, h *testbed.Host, ifname string, src, target netip.Addr) bool {
	t.Helper()
	var fd, ifindex int
	var mac [6]byte
	err := h.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		ifindex = l.Attrs().Index
		copy(mac[:], l.Attrs().HardwareAddr)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	frame := make([]byte, 128)
	var n int
	if target.Is4() {
		n = packet.BuildARPRequest(frame, mac, src.AsSlice(), target.AsSlice())
	} else {
		n = packet.BuildNeighborSolicit(frame, mac, src.AsSlice(), target.AsSlice())
	}
	if n == 0 {
		t.Fatal("cannot build the neighbour request")
	}
	if err := unix.Sendto(fd, frame[:n], 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Usec: 100000}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 2048)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		f := buf[:m]
		switch {
		case m >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2 && netip.AddrFrom4([4]byte(f[28:32])) == target:
			return true
		case m >= 14+40+24 && f[12] == 0x86 && f[13] == 0xdd && f[20] == 58 && f[54] == 136 &&
			netip.AddrFrom16([16]byte(f[62:78])) == target:
			return true
		}
	}
	return false
}

// checkNeighbors: rs answers ARP/NDP for its own address on eth0, not for
// the VIPs.
func checkNeighbors(t *testing.T, tp *topo) {
	t.Helper()
	for _, c := range []struct {
		src, target netip.Addr
		want        bool
	}{{dirV4, rsV4, true}, {dirV4, vipV4, false}, {dirV6, rsV6, true}, {dirV6, vipV6, false}} {
		if got := probeNeighbor(t, tp.dir, "eth1", c.src, c.target); got != c.want {
			t.Errorf("neighbour request for %v on rs's link: answered %v, want %v", c.target, got, c.want)
		}
	}
}

// serveEcho runs UDP echo servers on the VIPs in rs and opens the client's
// sockets.
func serveEcho(t *testing.T, tp *topo) (pc4, pc6 net.PacketConn) {
	t.Helper()
	for _, vip := range []netip.Addr{vipV4, vipV6} {
		pc, err := tp.rs.ListenPacket("udp", netip.AddrPortFrom(vip, 7).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(testbed.ServeUDPEcho(pc, "echo: "))
	}
	var err error
	if pc4, err = tp.client.ListenPacket("udp", "198.18.0.2:5000"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc4.Close() })
	if pc6, err = tp.client.ListenPacket("udp", "[2001:2::2]:5000"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc6.Close() })
	return pc4, pc6
}

const guePort = 6080

// tunnel is the director's tunnel to rs in one family.
func tunnel(typ tun.Type, csum tun.Csum, outer4 bool) *tun.Tunnel {
	if outer4 {
		return &tun.Tunnel{Type: typ, Csum: csum, Src: dirV4, Dst: rsV4, Port: guePort}
	}
	return &tun.Tunnel{Type: typ, Csum: csum, Src: dirV6, Dst: rsV6, Port: guePort}
}

func TestTUN(t *testing.T) {
	tp := newTopo(t)
	if err := tp.rs.Sysctl("net.ipv4.conf.all.rp_filter", "1"); err != nil {
		t.Fatal(err)
	}
	before := hostState(t, tp.rs)

	// Without anyone taking protocols 4 and 41 (no ipip, sit or ip6_tunnel
	// module, no raw socket), the kernel refuses them. (The first IPv6
	// answer is sometimes lost while rs resolves dir's address: a few
	// tries.)
	var control []string
	want4, want6 := "family 4 type 3 code 2 from 198.18.2.2", "family 6 type 4 code 1 from 2001:2:0:2::2"
	for try := 0; try < 5 && !(slicesContainsPrefix(control, want4) && slicesContainsPrefix(control, want6)); try++ {
		for _, outer4 := range []bool{true, false} {
			src, dst := clientV4, vipV4
			if !outer4 {
				src, dst = clientV6, vipV6
			}
			if err := tp.send.sendIP(encap(t, tunnel(tun.IPIP, tun.NoCsum, outer4), udpPacket(t, src, dst, 5000, 7, "control"))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond)
		control = append(control, tp.icmp.take()...)
	}
	t.Logf("ICMP errors without the real server: %q", control)
	if !slicesContainsPrefix(control, want4) || !slicesContainsPrefix(control, want6) {
		t.Errorf("without the real server, want protocol unreachable (IPv4) and unknown next header (IPv6) from rs, got %q", control)
	}

	state := filepath.Join(t.TempDir(), "rs.state")
	p := startRS(t, tp.rs, "--vip", "198.18.0.100,2001:2::100", "--from", "198.18.2.1,2001:2:0:2::1",
		"--gue-port", strconv.Itoa(guePort), "--metrics", "127.0.0.1:9101", "--state", state)
	during := hostState(t, tp.rs)
	for _, want := range []string{"all.arp_ignore=1\n", "all.arp_announce=2\n", "all.rp_filter=2\n",
		"link uvsrs0: 198.18.0.100/32 2001:2::100/128\n"} {
		if !strings.Contains(during, want) {
			t.Errorf("while running, want %q in\n%s", want, during)
		}
	}
	if v, err := tp.rs.Exec("cat", "/proc/sys/net/ipv4/conf/uvsrs0/rp_filter"); err != nil || strings.TrimSpace(v) != "0" {
		t.Errorf("rp_filter of uvsrs0 = %q, %v; want 0", v, err)
	}
	if strings.Contains(p.out.String(), "decapsulator is open") {
		t.Error("warned of an open decapsulator although --from was given")
	}
	checkNeighbors(t, tp)
	pc4, pc6 := serveEcho(t, tp)

	var wantPkts, wantBytes [3]int
	cases := []struct {
		name           string
		typ            tun.Type
		csum           tun.Csum
		inner4, outer4 bool
	}{
		{"ipip4", tun.IPIP, tun.NoCsum, true, true},
		{"gue4", tun.GUE, tun.WithCsum, true, true},
		{"gue4-nocsum", tun.GUE, tun.NoCsum, true, true},
		{"gre4", tun.GRE, tun.NoCsum, true, true},
		{"gre4-csum", tun.GRE, tun.WithCsum, true, true},
		{"ipip6", tun.IPIP, tun.NoCsum, false, false},
		{"gue6", tun.GUE, tun.WithCsum, false, false},
		{"gue6-nocsum", tun.GUE, tun.NoCsum, false, false},
		{"gre6", tun.GRE, tun.WithCsum, false, false},
		{"ipip-4in6", tun.IPIP, tun.NoCsum, true, false},
		{"ipip-6in4", tun.IPIP, tun.NoCsum, false, true},
		{"gue-4in6", tun.GUE, tun.WithCsum, true, false},
		{"gre-6in4", tun.GRE, tun.NoCsum, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst, pc := clientV4, vipV4, pc4
			if !c.inner4 {
				src, dst, pc = clientV6, vipV6, pc6
			}
			msg := "hello " + c.name
			inner := udpPacket(t, src, dst, 5000, 7, msg)
			wantPkts[c.typ]++
			wantBytes[c.typ] += len(inner)
			echoOnce(t, tp, pc, encap(t, tunnel(c.typ, c.csum, c.outer4), inner),
				"echo: "+msg+" from "+netip.AddrPortFrom(src, 5000).String())
		})
	}

	// What is dropped, and why.
	send := func(pkt []byte) {
		t.Helper()
		if err := tp.send.sendIP(pkt); err != nil {
			t.Fatal(err)
		}
	}
	good4 := func() []byte { return udpPacket(t, clientV4, vipV4, 5000, 7, "drop me") }
	send(encap(t, tunnel(tun.IPIP, tun.NoCsum, true), udpPacket(t, clientV4, netip.MustParseAddr("198.18.0.101"), 5000, 7, "x")))
	send(encap(t, tunnel(tun.GUE, tun.NoCsum, false), udpPacket(t, clientV6, netip.MustParseAddr("2001:2::101"), 5000, 7, "x")))
	spoof4 := tunnel(tun.IPIP, tun.NoCsum, true)
	spoof4.Src = netip.MustParseAddr("198.18.2.3")
	send(encap(t, spoof4, good4()))
	spoof6 := tunnel(tun.GRE, tun.NoCsum, false)
	spoof6.Src = netip.MustParseAddr("2001:2:0:2::3")
	send(encap(t, spoof6, udpPacket(t, clientV6, vipV6, 5000, 7, "x")))
	badsum := encap(t, tunnel(tun.GRE, tun.WithCsum, true), good4())
	badsum[24] ^= 0xff // the GRE checksum, after the 20-byte IPv4 header
	send(badsum)
	badlen := encap(t, tunnel(tun.IPIP, tun.NoCsum, true), good4())
	badlen[23] += 8 // the inner packet's total length says more than there is
	send(badlen)
	gre1 := encap(t, tunnel(tun.GRE, tun.NoCsum, false), good4())
	gre1[41] |= 1 // GRE version 1 (after the 40-byte IPv6 header)
	send(gre1)
	pc4.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, from, err := pc4.ReadFrom(make([]byte, 100)); err == nil {
		t.Errorf("the client got an answer (%d bytes from %v) to a packet that was to be dropped", n, from)
	}

	want := map[string]float64{
		`uvs_realserver_dropped_packets_total{reason="not_vip"}`:            2,
		`uvs_realserver_dropped_packets_total{reason="source_not_allowed"}`: 2,
		`uvs_realserver_dropped_packets_total{reason="bad_checksum"}`:       1,
		`uvs_realserver_dropped_packets_total{reason="malformed"}`:          1,
		`uvs_realserver_dropped_packets_total{reason="unsupported"}`:        1,
		`uvs_realserver_dropped_packets_total{reason="not_tunnel"}`:         0,
		`uvs_realserver_dropped_packets_total{reason="write_failed"}`:       0,
	}
	for typ, name := range typeNames {
		want[`uvs_realserver_packets_total{type="`+name+`"}`] = float64(wantPkts[typ])
		want[`uvs_realserver_bytes_total{type="`+name+`"}`] = float64(wantBytes[typ])
	}
	got := metrics(t, tp.rs, "127.0.0.1:9101")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("metrics: got %v, want %v", got, want)
	}
	if seen := tp.icmp.take(); len(seen) > 0 {
		t.Errorf("ICMP errors while the real server ran: %q", seen)
	}

	p.stop(t)
	if after := hostState(t, tp.rs); after != before {
		t.Errorf("after SIGTERM the host is\n%s\nwant\n%s", after, before)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file after a clean stop: %v", err)
	}
}

func slicesContainsPrefix(s []string, prefix string) bool {
	for _, e := range s {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}
