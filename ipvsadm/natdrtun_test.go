package ipvsadm

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"uvs/rate"
	"uvs/service"
)

// natBlocks returns the n-th (0-based) listing printed after "$ cmd" in
// nat_dr_tun.out.
func natBlock(t *testing.T, cmd string, n int) string {
	t.Helper()
	data, err := os.ReadFile("testdata/nat_dr_tun.out")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "$ "+cmd:
			blocks = append(blocks, "")
			cur = new(strings.Builder)
		case cur == nil:
		case l == "" || strings.HasPrefix(l, "$ ") || strings.HasPrefix(l, "###") || strings.HasPrefix(l, "rs2 "):
			blocks[len(blocks)-1] = cur.String()
			cur = nil
			if l == "$ "+cmd {
				blocks = append(blocks, "")
				cur = new(strings.Builder)
			}
		default:
			cur.WriteString(l + "\n")
		}
	}
	if cur != nil {
		blocks[len(blocks)-1] = cur.String()
	}
	if n >= len(blocks) {
		t.Fatalf("no block %d for %q", n, cmd)
	}
	return blocks[n]
}

func run(t *testing.T, st State, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if rc := Run(args, nil, &out, &errb, st); rc != 0 {
		t.Fatalf("ipvsadm %s: rc=%d %s", strings.Join(args, " "), rc, errb.String())
	}
	return out.String()
}

// natSetup builds the table of nat_dr_tun.sh with the commands it ran.
func natSetup(t *testing.T) *fakeState {
	st := newFake()
	add := func(svc, opts, fwd string) {
		run(t, st, strings.Fields("-A "+svc+" -s rr "+opts)...)
		for n := 2; n <= 4; n++ {
			run(t, st, strings.Fields(fmt.Sprintf("-a %s -r 198.18.1.%d:80 %s", svc, n, fwd))...)
		}
	}
	add("-t 198.18.0.100:80", "", "-m")
	add("-u 198.18.0.100:80", "", "-m")
	add("-t 198.18.0.102:80", "-p 60", "-m")
	add("-t 198.18.0.200:80", "", "-g")
	add("-t 198.18.0.201:80", "", "-i")
	return st
}

// statsFromListing puts the figures of a --stats listing into the
// counters of st's services and servers, and returns the rows by name.
func loadStats(t *testing.T, st *fakeState, listing string) {
	t.Helper()
	var svc *service.Service
	for _, l := range strings.Split(strings.TrimSuffix(listing, "\n"), "\n") {
		f := strings.Fields(l)
		var target *service.Stats
		switch {
		case len(f) == 7 && (f[0] == "TCP" || f[0] == "UDP"):
			ap := netip.MustParseAddrPort(f[1])
			proto := service.TCP
			if f[0] == "UDP" {
				proto = service.UDP
			}
			svc = st.Config().Service(service.Key{Proto: proto, Addr: ap.Addr(), Port: ap.Port()})
			target = svc.Stats
		case len(f) == 7 && f[0] == "->":
			ap := netip.MustParseAddrPort(f[1])
			target = &svc.Dest(ap.Addr(), ap.Port()).DestState.Stats
		default:
			continue
		}
		var v [5]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[2+i], 10, 64)
			if err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			v[i] = n
		}
		for range v[0] {
			target.AddConn(0)
		}
		target.AddIn(0, v[1], v[3])
		target.AddOut(0, v[2], v[4])
	}
}

func TestNatDrTunListings(t *testing.T) {
	st := natSetup(t)
	// Connection counts as the kernel had them at the end of the run.
	for _, s := range st.Config().Services {
		for _, d := range s.Dests {
			switch {
			case s.Port == 80 && s.Addr == netip.MustParseAddr("198.18.0.102"):
				if d.Addr == netip.MustParseAddr("198.18.1.4") {
					d.AddConns(0, 4)
					d.AddPersist(1)
				}
			default:
				d.AddConns(0, 2)
			}
		}
	}
	if got, want := run(t, st, "-L", "-n"), natBlock(t, "ipvsadm -L -n", 1); got != want {
		t.Errorf("-L -n:\n%s\nwant:\n%s", got, want)
	}
	stats := natBlock(t, "ipvsadm -L -n --stats", 1)
	loadStats(t, st, stats)
	if got := run(t, st, "-L", "-n", "--stats"); got != stats {
		t.Errorf("--stats:\n%s\nwant:\n%s", got, stats)
	}
	for _, svc := range []string{"-u 198.18.0.100:80", "-t 198.18.0.201:80"} {
		args := append([]string{"-L", "-n", "--stats"}, strings.Fields(svc)...)
		cmd := "ipvsadm " + strings.Join(args, " ")
		want := natBlock(t, cmd, 0)
		if got := run(t, st, args...); got != want {
			t.Errorf("%s:\n%s\nwant:\n%s", cmd, got, want)
		}
	}
	if got, want := run(t, st, "-S", "-n"), natBlock(t, "ipvsadm -S -n", 0); got != want {
		t.Errorf("-S -n:\n%s\nwant:\n%s", got, want)
	}

	// --rate formats whatever the director's estimator says.
	rates := natBlock(t, "ipvsadm -L -n --rate", 1)
	st.rates = map[*service.Stats]rate.Rates{}
	var svc *service.Service
	for _, l := range strings.Split(strings.TrimSuffix(rates, "\n"), "\n") {
		f := strings.Fields(l)
		if len(f) != 7 || f[0] == "Prot" {
			continue
		}
		var v [5]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[2+i], 10, 64)
		}
		r := rate.Rates{CPS: v[0], InPPS: v[1], OutPPS: v[2], InBPS: v[3], OutBPS: v[4]}
		ap := netip.MustParseAddrPort(f[1])
		if f[0] == "->" {
			st.rates[&svc.Dest(ap.Addr(), ap.Port()).DestState.Stats] = r
			continue
		}
		proto := service.TCP
		if f[0] == "UDP" {
			proto = service.UDP
		}
		svc = st.Config().Service(service.Key{Proto: proto, Addr: ap.Addr(), Port: ap.Port()})
		st.rates[svc.Stats] = r
	}
	if got := run(t, st, "-L", "-n", "--rate"); got != rates {
		t.Errorf("--rate:\n%s\nwant:\n%s", got, rates)
	}
}

// The first --rate listing of the run follows from its --stats figures
// after one estimator period: the estimator and the listing together.
func TestNatRateFromEstimator(t *testing.T) {
	st := newFake()
	run(t, st, "-A", "-t", "198.18.0.100:80", "-s", "rr")
	for n := 2; n <= 4; n++ {
		run(t, st, "-a", "-t", "198.18.0.100:80", "-r", fmt.Sprintf("198.18.1.%d:80", n), "-m")
	}
	est := rate.New()
	s := st.Config().Services[0]
	all := []*service.Stats{s.Stats}
	for _, d := range s.Dests {
		all = append(all, &d.DestState.Stats)
	}
	for _, x := range all {
		est.Track(x)
	}
	t0 := time.Unix(1e9, 0)
	est.Tick(t0)
	loadStats(t, st, natBlock(t, "ipvsadm -L -n --stats", 0))
	est.Tick(t0.Add(rate.Period))
	st.rates = map[*service.Stats]rate.Rates{}
	for _, x := range all {
		st.rates[x] = est.Get(x)
	}
	if got, want := run(t, st, "-L", "-n", "--rate"), natBlock(t, "ipvsadm -L -n --rate", 0); got != want {
		t.Errorf("--rate:\n%s\nwant:\n%s", got, want)
	}
}

// -L -c lists the director's connection entries; the kernel's order is its
// hash order, so they compare as sets.
func TestNatConnections(t *testing.T) {
	st := natSetup(t)
	want := natBlock(t, "ipvsadm -L -n -c", 3)
	for _, l := range strings.Split(want, "\n")[2:] {
		f := strings.Fields(l)
		if len(f) != 6 {
			continue
		}
		mm, ss, _ := strings.Cut(f[1], ":")
		m, _ := strconv.Atoi(mm)
		s, _ := strconv.Atoi(ss)
		proto := service.TCP
		if f[0] == "UDP" {
			proto = service.UDP
		}
		st.conns = append(st.conns, Conn{
			Proto: proto, State: f[2], Expires: time.Duration(m*60+s) * time.Second,
			Client: netip.MustParseAddrPort(f[3]), Virtual: netip.MustParseAddrPort(f[4]), Dest: netip.MustParseAddrPort(f[5]),
		})
	}
	if len(st.conns) != 29 {
		t.Fatalf("read %d connections from the golden, want 29", len(st.conns))
	}
	// Reverse the order to show that order does not matter to the test.
	for i, j := 0, len(st.conns)-1; i < j; i, j = i+1, j-1 {
		st.conns[i], st.conns[j] = st.conns[j], st.conns[i]
	}
	got := run(t, st, "-L", "-n", "-c")
	if !strings.HasPrefix(got, "IPVS connection entries\npro expire state       source             virtual            destination\n") {
		t.Errorf("header:\n%s", got)
	}
	if sortedLines(got) != sortedLines(want) {
		t.Errorf("-L -n -c:\n%s\nwant (any order):\n%s", got, want)
	}
	// Without -n ports are named; addresses stay numeric.
	named := run(t, st, "-L", "-c")
	if !strings.Contains(named, "TCP 00:53  ASSURED     198.18.0.2:0       198.18.0.102:http  198.18.1.4:http\n") {
		t.Errorf("-L -c without -n:\n%s", named)
	}
}
