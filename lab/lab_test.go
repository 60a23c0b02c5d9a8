package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"uvs/testbed"
)

// binary is the director, built once by TestMain when running as root.
var binary string

// testPrefix starts the namespace names of the labs the tests run; the
// testbed adds a random suffix per lab.
const testPrefix = "uvslabt"

func TestMain(m *testing.M) {
	code := func() int {
		if testbed.Available() != nil {
			return m.Run() // the lab tests skip themselves
		}
		_ = testbed.Cleanup(testPrefix) // what a killed run left
		defer testbed.Cleanup(testPrefix)
		bin, remove, err := BuildDirector("../cmd/director")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer remove()
		binary = bin
		return m.Run()
	}()
	os.Exit(code)
}

// runLab runs a lab with its output in a buffer, failing the test if it
// fails, and returns the output.
func runLab(t *testing.T, name string, o Options) string {
	t.Helper()
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	o.Out, o.Binary, o.Prefix = &out, binary, testPrefix
	start := time.Now()
	err := Run(ctx, name, o)
	t.Logf("lab %s ran in %v", name, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("lab %s: %v\noutput:\n%s", name, err, out.String())
	}
	s := out.String()
	if !strings.HasSuffix(s, "# tearing the lab down\n") {
		t.Errorf("lab %s did not say it tore the lab down:\n%s", name, s)
	}
	return s
}

// answers are the real servers named by the "curl N...: welcome
// realserver K" lines, in order.
func answers(out string) []string {
	var a []string
	for _, m := range regexp.MustCompile(`(?m)^curl \d+.*: welcome (realserver \d)$`).FindAllStringSubmatch(out, -1) {
		a = append(a, m[1])
	}
	return a
}

func wantAlternation(t *testing.T, out string, n int) {
	t.Helper()
	a := answers(out)
	if len(a) != n || !alternates(a) {
		t.Errorf("answers %q, want %d alternating between the two servers:\n%s", a, n, out)
	}
}

// traceLine is one parsed line of a trace.
type traceLine struct {
	hop, dir, srcMAC, dstMAC, rest string
}

var traceRE = regexp.MustCompile(`^\[(\S+ \S+) +(in |out)\] +[0-9.]+ms (\S+) > (\S+)  (.*)$`)

func traceLines(t *testing.T, out string) []traceLine {
	t.Helper()
	var ls []traceLine
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "[") {
			continue
		}
		m := traceRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("trace line not in the expected form: %q", l)
			continue
		}
		ls = append(ls, traceLine{m[1], strings.TrimSpace(m[2]), m[3], m[4], m[5]})
	}
	if len(ls) == 0 {
		t.Fatalf("no trace in the output:\n%s", out)
	}
	return ls
}

// find is the first line on hop in direction dir whose rest matches re.
func find(ls []traceLine, hop, dir, re string) (traceLine, bool) {
	r := regexp.MustCompile(re)
	for _, l := range ls {
		if l.hop == hop && l.dir == dir && r.MatchString(l.rest) {
			return l, true
		}
	}
	return traceLine{}, false
}

func TestNAT(t *testing.T) {
	out := runLab(t, "nat", Options{})
	wantAlternation(t, out, 6)
	for _, want := range []string{
		"$ echo 1 > /proc/sys/net/ipv4/ip_forward",
		"$ ipvsadm -A -t 198.18.0.1:80 -s rr",
		"$ ipvsadm -a -t 198.18.0.1:80 -r 198.18.1.2 -m",
		"$ ipvsadm -L -n\n",
		"$ ipvsadm -L -n --stats",
		"Masq",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\n[") {
		t.Errorf("a trace without --trace:\n%s", out)
	}
}

// TestNATTrace: the director rewrites the destination address of the
// client's packets.
func TestNATTrace(t *testing.T) {
	out := runLab(t, "nat", Options{Trace: true})
	wantAlternation(t, out, 6)
	ls := traceLines(t, out)
	in, ok1 := find(ls, "director eth0", "in", `^198\.18\.0\.2:\d+ > 198\.18\.0\.1:80 TCP SYN$`)
	fwd, ok2 := find(ls, "director eth1", "out", `^198\.18\.0\.2:\d+ > 198\.18\.1\.[23]:80 TCP SYN$`)
	_, ok3 := find(ls, "director eth0", "out", `^198\.18\.0\.1:80 > 198\.18\.0\.2:\d+ TCP SYN-ACK$`)
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("trace lacks the SYN in (%v), the rewritten SYN out (%v) or the reply from the VIP (%v):\n%s", ok1, ok2, ok3, out)
	}
	port := func(l traceLine) string { return strings.Split(strings.Fields(l.rest)[0], ":")[1] }
	if port(in) != port(fwd) {
		t.Errorf("the client port changed: %q, %q", in.rest, fwd.rest)
	}
	if _, ok := find(ls, "client eth0", "out", `^198\.18\.0\.2:`+port(in)+` > 198\.18\.0\.1:80 TCP SYN$`); !ok {
		t.Errorf("no SYN out of the client:\n%s", out)
	}
}

func TestDR(t *testing.T) {
	out := runLab(t, "dr", Options{})
	checkDR(t, out)
}

func checkDR(t *testing.T, out string) {
	t.Helper()
	wantAlternation(t, out, 6)
	want := "$ ipvsadm -A -t 198.18.0.100:80 -s rr -g\n" +
		"Illegal 'forwarding-method' option with the 'add-service' command\n" +
		"(exit status 2)\n"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks the refusal\n%s\nin:\n%s", want, out)
	}
	for _, want := range append(DRRealServerCommands(DRVIP),
		"ipvsadm -A -t 198.18.0.100:80 -s rr\n",
		"ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.11\n",
		"ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.12\n",
		"echo 1 > /proc/sys/net/ipv4/ip_forward",
		"Route",
	) {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// No reply crossed the director.
	if !regexp.MustCompile(`(?m)^TCP  198\.18\.0\.100:80 +6 +\d+ +0 +\d+ +0$`).MatchString(out) {
		t.Errorf("stats do not show 6 connections and nothing out:\n%s", out)
	}
}

// TestDRTrace: the director changes only the MAC addresses.
func TestDRTrace(t *testing.T) {
	out := runLab(t, "dr", Options{Trace: true})
	checkDR(t, out)
	ls := traceLines(t, out)
	in, ok1 := find(ls, "director eth0", "in", `^198\.18\.0\.2:\d+ > 198\.18\.0\.100:80 TCP SYN$`)
	fwd, ok2 := find(ls, "director eth0", "out", `^198\.18\.0\.2:\d+ > 198\.18\.0\.100:80 TCP SYN$`)
	if !ok1 || !ok2 {
		t.Fatalf("trace lacks the SYN in (%v) or out (%v) of the director:\n%s", ok1, ok2, out)
	}
	if in.rest != fwd.rest {
		t.Errorf("the director changed more than the MAC addresses: in %q, out %q", in.rest, fwd.rest)
	}
	if in.dstMAC == fwd.dstMAC {
		t.Errorf("the destination MAC address did not change: %s", in.dstMAC)
	}
	var rsMAC string
	for _, rs := range []string{"rs1 eth0", "rs2 eth0"} {
		if l, ok := find(ls, rs, "in", `^`+regexp.QuoteMeta(in.rest)+`$`); ok {
			rsMAC = l.dstMAC
		}
	}
	if rsMAC != fwd.dstMAC {
		t.Errorf("the SYN reached no real server with the director's destination MAC %s:\n%s", fwd.dstMAC, out)
	}
	// The reply goes from the real server straight to the client.
	if _, ok := find(ls, "client eth0", "in", `^198\.18\.0\.100:80 > 198\.18\.0\.2:\d+ TCP SYN-ACK$`); !ok {
		t.Errorf("no SYN-ACK from the VIP at the client:\n%s", out)
	}
	if _, ok := find(ls, "director eth0", "out", `TCP SYN-ACK$`); ok {
		t.Errorf("a reply went through the director:\n%s", out)
	}
}

func TestSSL(t *testing.T) {
	out := runLab(t, "ssl", Options{})
	wantAlternation(t, out, 6)
	for _, want := range []string{
		"$ ipvsadm -A -t 198.18.0.100:443 -s rr\n",
		"$ ipvsadm -a -t 198.18.0.100:443 -r 198.18.0.11 -g\n",
		"$ ipvsadm -a -t 198.18.0.100:443 -r 198.18.0.12 -g\n",
		"https://198.18.0.100/",
		"self-signed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPCC(t *testing.T) {
	out := runLab(t, "pcc", Options{Trace: true})
	for _, want := range []string{
		"$ ipvsadm -A -t 198.18.0.100:0 -p 1200\n",
		"$ ipvsadm -a -t 198.18.0.100:0 -r 198.18.0.11 -g -w 10\n",
		"$ ipvsadm -a -t 198.18.0.100:0 -r 198.18.0.12 -g -w 5\n",
		"$ ipvsadm -L -n -c\n",
		"persistent 1200",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	a := answers(out)
	if len(a) != 9 {
		t.Fatalf("%d answers, want 9:\n%s", len(a), out)
	}
	if !same(a[:6]) || !same(a[6:]) {
		t.Errorf("answers %q: want the first six from one server, the last three from one server:\n%s", a, out)
	}
	for _, port := range []string{"", ":8080"} {
		if !strings.Contains(out, "http://198.18.0.100"+port+"/: welcome") {
			t.Errorf("no fetch of http://198.18.0.100%s/:\n%s", port, out)
		}
	}
	rs := map[string]string{"realserver 1": "198.18.0.11", "realserver 2": "198.18.0.12"}[a[0]]
	tmpl := `(?m)^TCP \d\d:\d\d  (NONE|ASSURED) +198\.18\.0\.2:0 +198\.18\.0\.100:0 +` + regexp.QuoteMeta(rs) + `:0$`
	if !regexp.MustCompile(tmpl).MatchString(out) {
		t.Errorf("no persistence template to %s in the connection listing:\n%s", rs, out)
	}
	traceLines(t, out)
}

// TestFWMark is the tutorial's example 5 with its own lines: iptables
// marks 80 and 443, one persistent mark service over DR real servers.
func TestFWMark(t *testing.T) {
	for _, io := range []string{"afpacket", "tun"} {
		t.Run(io, func(t *testing.T) {
			out := runLab(t, "fwmark", Options{IO: io})
			for _, want := range []string{
				"$ iptables -t mangle -A PREROUTING -i eth0 -p tcp -d 198.18.0.100 --dport 80 -j MARK --set-mark 20\n",
				"$ iptables -t mangle -A PREROUTING -i eth0 -p tcp -d 198.18.0.100 --dport 443 -j MARK --set-mark 20\n",
				"$ ipvsadm -A -f 20 -s wlc -p 1200\n",
				"$ ipvsadm -a -f 20 -r 198.18.0.11 -g -w 3\n",
				"$ ipvsadm -a -f 20 -r 198.18.0.12 -g -w 2\n",
				"FWM  20 wlc persistent 1200\n",
				"curl http://198.18.0.100:8080/: connection refused\n",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			a := answers(out)
			if len(a) != 6 {
				t.Fatalf("%d answers, want 6:\n%s", len(a), out)
			}
			if !same(a[:4]) || !same(a[4:]) {
				t.Errorf("answers %q: want the first four (ports 80 and 443) from one server, the last two from one server:\n%s", a, out)
			}
			rs := map[string]string{"realserver 1": "198.18.0.11", "realserver 2": "198.18.0.12"}[a[0]]
			tmpl := `(?m)^IP  \d\d:\d\d  (NONE|ASSURED) +198\.18\.0\.2:0 +0\.0\.0\.20:0 +` + regexp.QuoteMeta(rs) + `:0$`
			if !regexp.MustCompile(tmpl).MatchString(out) {
				t.Errorf("no firewall-mark template to %s in the connection listing:\n%s", rs, out)
			}
			// Replies went from the real servers to the client directly.
			if !regexp.MustCompile(`(?m)^FWM  20 +\d+ +\d+ +0 +\d+ +0$`).MatchString(out) {
				t.Errorf("stats show packets out through the director:\n%s", out)
			}
		})
	}
}

func TestTUN(t *testing.T) {
	if binary != "" {
		if out, _ := exec.Command(binary, "realserver", "--help").CombinedOutput(); strings.Contains(string(out), "unknown command") {
			t.Skip("this director has no realserver command yet")
		}
	}
	for _, c := range []struct {
		typ   string
		port  uint16
		outer string
	}{
		{"ipip", 0, `^IPIP 198\.18\.0\.1 > 198\.18\.2\.[23] \| 198\.18\.0\.2:\d+ > 198\.18\.0\.100:80 TCP SYN$`},
		{"gue", 6080, `^GUE 198\.18\.0\.1:\d+ > 198\.18\.2\.[23]:6080 \| 198\.18\.0\.2:\d+ > 198\.18\.0\.100:80 TCP SYN$`},
		{"gre", 0, `^GRE 198\.18\.0\.1 > 198\.18\.2\.[23] \| 198\.18\.0\.2:\d+ > 198\.18\.0\.100:80 TCP SYN$`},
	} {
		t.Run(c.typ, func(t *testing.T) {
			out := runLab(t, "tun", Options{Trace: true, TunType: c.typ, TunPort: c.port})
			wantAlternation(t, out, 6)
			if !strings.Contains(out, "$ director realserver --vip 198.18.0.100 --from 198.18.0.1") ||
				!strings.Contains(out, "-r 198.18.2.2 -i") || !strings.Contains(out, "Tunnel") {
				t.Errorf("output lacks the real server's or the director's lines:\n%s", out)
			}
			ls := traceLines(t, out)
			for _, hop := range []string{"director eth0", "router eth1"} {
				if _, ok := find(ls, hop, "out", c.outer); !ok {
					t.Errorf("no tunnelled SYN out of %s:\n%s", hop, out)
				}
			}
			if _, ok := find(ls, "router eth0", "out", `^198\.18\.0\.100:80 > 198\.18\.0\.2:\d+ TCP SYN-ACK$`); !ok {
				t.Errorf("no reply through the router:\n%s", out)
			}
		})
	}
}

// TestInterrupted: a lab stopped while it runs (Ctrl-C) tears down what
// it built.
func TestInterrupted(t *testing.T) {
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	w := &notify{w: &out, on: "welcome realserver", f: cancel}
	go func() {
		done <- Run(ctx, "dr", Options{Out: w, Binary: binary, Prefix: testPrefix, Keep: true})
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("lab: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("the lab did not stop")
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), testPrefix+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if !strings.Contains(out.String(), "# tearing the lab down") {
		t.Errorf("no teardown:\n%s", out.String())
	}
}

// notify is a writer that calls f once what it was given contains on.
type notify struct {
	w    *bytes.Buffer
	on   string
	f    func()
	done bool
}

func (n *notify) Write(p []byte) (int, error) {
	k, err := n.w.Write(p)
	if !n.done && strings.Contains(n.w.String(), n.on) {
		n.done = true
		n.f()
	}
	return k, err
}

// TestUsage: an unknown lab is a usage error.
func TestUsage(t *testing.T) {
	if binary == "" {
		t.Skip("needs root (the director is built only then)")
	}
	for _, args := range [][]string{{"lab"}, {"lab", "nope"}, {"lab", "nat", "--tun-type", "gre"}, {"lab", "tun", "--tun-type", "gue"}} {
		cmd := exec.Command(binary, args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || len(args) < 3 && !strings.Contains(string(out), "usage: director lab") {
			t.Errorf("director %s: %v, want exit status 2 and a usage line:\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDescribe: the trace's description of a tunnelled frame, without
// namespaces.
func TestDescribe(t *testing.T) {
	mac1, _ := net.ParseMAC("02:00:00:00:00:01")
	mac2, _ := net.ParseMAC("02:00:00:00:00:0a")
	inner := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.ParseIP("198.18.0.2").To4(), DstIP: net.ParseIP("198.18.0.100").To4()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Window: 1000}
	tcp.SetNetworkLayerForChecksum(inner)
	frame := func(ls ...gopacket.SerializableLayer) []byte {
		b := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	eth := &layers.Ethernet{SrcMAC: mac1, DstMAC: mac2, EthernetType: layers.EthernetTypeIPv4}
	outer := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4,
		SrcIP: net.ParseIP("198.18.0.1").To4(), DstIP: net.ParseIP("198.18.2.2").To4()}
	for _, c := range []struct {
		frame []byte
		f     Filter
		want  string
	}{
		{frame(eth, inner, tcp), Filter{ClientPort: 40000},
			"02:00:00:00:00:01 > 02:00:00:00:00:0a  198.18.0.2:40000 > 198.18.0.100:80 TCP SYN"},
		{frame(eth, outer, inner, tcp), Filter{ClientPort: 40000},
			"02:00:00:00:00:01 > 02:00:00:00:00:0a  IPIP 198.18.0.1 > 198.18.2.2 | 198.18.0.2:40000 > 198.18.0.100:80 TCP SYN"},
		{frame(eth, inner, tcp), Filter{ClientPort: 40001}, ""},
	} {
		got, ok := Describe(c.frame, c.f)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("Describe = %q, %v; want %q", got, ok, c.want)
		}
	}
}
