package ipvsadm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"uvs/service"
)

type result struct {
	out, err string
	rc       int
}

func runAll(st State, stdin string, args ...string) result {
	var out, errb bytes.Buffer
	rc := Run(args, strings.NewReader(stdin), &out, &errb, st)
	return result{out.String(), errb.String(), rc}
}

func setup(t *testing.T, lines ...string) *fakeState {
	t.Helper()
	st := newFake()
	for _, l := range lines {
		run(t, st, strings.Fields(l)...)
	}
	return st
}

// Messages and exit codes for cases the goldens do not show, worded as
// ipvsadm words them.
func TestArgumentErrors(t *testing.T) {
	cases := []struct {
		args string
		err  string
		rc   int
	}{
		{"-D -t 198.18.0.1:80 -s rr", "Illegal 'scheduler' option with the 'delete-service' command", 2},
		{"-a -t 198.18.0.1:80", "You need to supply the 'real-server' option for the 'add-server' command", 2},
		{"-d -t 198.18.0.1:80 -r 198.18.1.1 -w 3", "Illegal 'weight' option with the 'delete-server' command", 2},
		{"-L -c --timeout", "The option 'timeout' conflicts with the 'connection' option in the 'list' command", 2},
		{"-L -c --stats", "options conflicts in the list command", 2},
		{"-L --timeout --persistent-conn", "options conflicts in the list command", 2},
		{"-A -t 198.18.0.1:80 -p 10 -p 20", "multiple 'persistent' options specified", 2},
		{"-A -t 198.18.0.1:80 -s sh -b mh-port", "incompatible scheduler flag `mh-port'", 2},
		{"-A -t 198.18.0.1:80 -b sh-port", "incompatible scheduler flag `sh-port'", 2},
		{"-A -t 198.18.0.1:80 -o", "One-Packet Scheduling is only for UDP virtual services", 2},
		{"-A -t 198.18.0.1:80 -p 2678401", "invalid timeout value `2678401' specified", 2},
		{"-A -t 198.18.0.1:80 -M abc", "illegal virtual server persistent mask specified", 2}, // no DNS: inet_aton only
		{"-A -t [2001:2::1]:80 -M 129", "illegal ipv6 netmask specified", 2},
		{"-A -6 -f 1", "-6 used before -f\n", 2},
		{"-a -t 198.18.0.1:80 -r [2001:2::1]:80 -m", "Different address family is allowed only for tunneling servers", 2},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -m --tun-type gue", "Tunnel options conflict with forward method", 2},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type", 2},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-csum", "Illegal 'tun-csum' option with the 'ipip' tunnel type", 2},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gre --tun-csum --tun-nocsum", "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gre' tunnel type", 2},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type vxlan", "illegal tunnel type specified", 2},
		{"--set 1 2", "--set option requires 3 timeout values", 2},
		{"--set 1 2 3 4", "unexpected argument 4", 2},
		{"-L extra", "unexpected argument extra", 2},
		{"-L -A", "invalid option `-A'", 2},
		{"-L --bogus", "--bogus: unknown option", 255},
		{"-A -t", "-t: missing argument", 255},
		{"-n -L", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.", 255},
		{"--start-daemon primary", "illegal start-daemon parameter specified", 2},
		{"-A --sctp-service 198.18.0.1:80", "SCTP services are not supported by this director", 2},
		{"-A -t 80 -s rr", "illegal virtual server address[:port] specified", 2},
		{"-A -t [2001:2::1] -s rr", "illegal virtual server address[:port] specified", 2},
		{"-A -t 198.18.0.1:nosuchport", "illegal virtual server address[:port] specified", 2},
	}
	for _, c := range cases {
		st := newFake()
		before := st.Config()
		got := runAll(st, "", strings.Fields(c.args)...)
		if got.err != c.err+"\n" || got.rc != c.rc || got.out != "" {
			t.Errorf("ipvsadm %s: rc=%d stderr=%q stdout=%q; want rc=%d stderr=%q", c.args, got.rc, got.err, got.out, c.rc, c.err)
		}
		if st.Config() != before || st.updates != 0 {
			t.Errorf("ipvsadm %s: a rejected command changed the table", c.args)
		}
	}
}

// Option spellings popt accepts: clusters, attached values, long names
// with "=", "-p" with and without its optional value.
func TestOptionForms(t *testing.T) {
	st := setup(t,
		"--add-service --tcp-service=198.18.0.1:http --scheduler=wrr --persistent",
		"-At 198.18.0.2:80 -srr",
		"-a -t198.18.0.1:80 -r198.18.1.1 -mw7",
		"--add-server -t 198.18.0.1:80 --real-server 198.18.1.2:8080 --masquerading --weight 0 --u-threshold 10 --l-threshold 5",
		"-A -u 198.18.0.3:domain -p 30 -o -s sh -b sh-fallback,sh-port",
		"-A -f 7 -6 -s mh -b mh-port -p -M 64",
	)
	want := "" +
		"-A -t 198.18.0.1:80 -s wrr -p 360\n" +
		"-a -t 198.18.0.1:80 -r 198.18.1.1:80 -m -w 7\n" +
		"-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 0\n" +
		"-A -t 198.18.0.2:80 -s rr\n" +
		"-A -u 198.18.0.3:53 -s sh -p 30 -o -b sh-fallback,sh-port\n" +
		"-A -f 7 -6 -s mh -p 360 -M 64 -b mh-port\n"
	if got := run(t, st, "-Sn"); got != want {
		t.Errorf("-S -n:\n%s\nwant:\n%s", got, want)
	}
	if got := run(t, st, "-L", "-n", "--thresholds", "-t", "198.18.0.1:80"); !strings.Contains(got, "  -> 198.18.1.2:8080              10         5          0          0         \n") {
		t.Errorf("--thresholds:\n%s", got)
	}
	if got := run(t, st, "-L", "-n", "-f", "7", "-6"); got != "Prot LocalAddress:Port Scheduler Flags\n"+
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"+
		"FWM  7 IPv6 mh (mh-port) persistent 360 mask 64\n" {
		t.Errorf("-L -f 7 -6:\n%s", got)
	}
}

// -S output fed to -R rebuilds the same table.
func TestSaveRestoreRoundTrip(t *testing.T) {
	st := setup(t,
		"-A -t 198.18.0.100:80 -s wrr",
		"-a -t 198.18.0.100:80 -r 198.18.1.2:80 -m -w 4",
		"-a -t 198.18.0.100:80 -r 198.18.1.3:80 -m -w 3",
		"-A -t 198.18.0.104:443 -s rr -p 300 -M 255.255.255.0 --pe sip",
		"-a -t 198.18.0.104:443 -r 198.18.1.10 -i --tun-type gue --tun-port 6080 --tun-remcsum",
		"-a -t 198.18.0.104:443 -r 198.18.1.11 -i --tun-type gre --tun-csum",
		"-a -t 198.18.0.104:443 -r 198.18.1.12 -i",
		"-A -u 198.18.0.105:5060 -s sh -b sh-fallback,sh-port -o",
		"-a -u 198.18.0.105:5060 -r 198.18.1.11 -m -w 0 -x 100 -y 50",
		"-A -t [2001:2::100]:80 -s wlc -p 60 -M 64",
		"-a -t [2001:2::100]:80 -r [2001:2::1:3]:8080 -m -w 3",
		"-A -f 20 -s wlc -p 1200",
		"-a -f 20 -r 198.18.1.7:0 -g -w 3",
		"-A -f 21 -6 -s lc",
		"-A -t 198.18.0.106:80 -s wlc -b flag-1,flag-3",
		"--set 100 20 30",
	)
	saved := run(t, st, "-S", "-n")
	st2 := newFake()
	if r := runAll(st2, saved, "-R"); r.rc != 0 {
		t.Fatalf("-R: rc=%d %s", r.rc, r.err)
	}
	if st2.updates != 1 {
		t.Errorf("-R made %d updates, want 1", st2.updates)
	}
	if got := run(t, st2, "-S", "-n"); got != saved {
		t.Errorf("restored table saves as:\n%s\nwant:\n%s", got, saved)
	}
	for _, l := range []string{"--tun-info", "--thresholds", "--persistent-conn"} {
		if a, b := run(t, st, "-L", "-n", l), run(t, st2, "-L", "-n", l); a != b && l != "--thresholds" {
			t.Errorf("-L %s differs after restore:\n%s\nvs\n%s", l, a, b)
		}
	}
	tun := run(t, st, "-L", "-n", "--tun-info", "-t", "198.18.0.104:443")
	for _, want := range []string{
		"  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
		"TCP  198.18.0.104:443 rr persistent 300 mask 255.255.255.0 pe sip\n",
		"  -> 198.18.1.10:443              Tunnel  gue:6080:r+c  1      0          0         \n",
		"  -> 198.18.1.11:443              Tunnel  gre:+c        1      0          0         \n",
		"  -> 198.18.1.12:443              Tunnel  ipip          1      0          0         \n",
	} {
		if !strings.Contains(tun, want) {
			t.Errorf("--tun-info lacks %q:\n%s", want, tun)
		}
	}
	if got := run(t, st, "-L", "-n", "-t", "198.18.0.106:80"); !strings.Contains(got, "TCP  198.18.0.106:80 wlc (flag-1,flag-3)\n") {
		t.Errorf("generic scheduler flags:\n%s", got)
	}
	// Thresholds are not saved.
	if strings.Contains(saved, "-x") {
		t.Errorf("-S saved thresholds:\n%s", saved)
	}
}

// -R applies everything or nothing, whichever line is wrong.
func TestRestoreAllOrNothing(t *testing.T) {
	base := []string{"-A -t 198.18.0.100:80 -s wrr"}
	cases := []struct {
		name, input, err string
		rc               int
	}{
		{"argument error", "-A -t 198.18.0.1:80\n-a -t 198.18.0.1:80 -r 198.18.1.1 -w -5\n", "illegal weight specified\n", 2},
		{"duplicate service", "-A -t 198.18.0.1:80\n-A -t 198.18.0.100:80\n", "Service already exists\n", 255},
		{"missing service", "-A -t 198.18.0.1:80\n-a -t 198.18.0.2:80 -r 198.18.1.1\n", "Service not defined\n", 255},
		{"unknown scheduler", "-A -t 198.18.0.1:80\n-A -t 198.18.0.2:80 -s nosuch\n", "Scheduler or persistence engine not found\n", 255},
		{"nested restore", "-A -t 198.18.0.1:80\n-R\n", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n", 255},
		{"clear then fail", "-C\n-D -t 198.18.0.7:80\n", "No such service\n", 255},
	}
	for _, c := range cases {
		st := setup(t, base...)
		before := st.Config()
		got := runAll(st, c.input, "-R")
		if got.err != c.err || got.rc != c.rc {
			t.Errorf("%s: rc=%d stderr=%q, want rc=%d %q", c.name, got.rc, got.err, c.rc, c.err)
		}
		if st.Config() != before {
			t.Errorf("%s: the table changed", c.name)
		}
	}
	// Comments, blank lines and a leading "ipvsadm" are fine.
	st := newFake()
	in := "# rules\n\nipvsadm -A -t 198.18.0.1:80 -s rr   # web\n\t-a -t 198.18.0.1:80 -r 198.18.1.1 -m\n"
	if r := runAll(st, in, "--restore"); r.rc != 0 || r.err != "" {
		t.Fatalf("restore: %+v", r)
	}
	if got := run(t, st, "-S", "-n"); got != "-A -t 198.18.0.1:80 -s rr\n-a -t 198.18.0.1:80 -r 198.18.1.1:80 -m -w 1\n" {
		t.Errorf("restored:\n%s", got)
	}
}

func TestZeroAndSet(t *testing.T) {
	st := setup(t,
		"-A -t 198.18.0.1:80",
		"-a -t 198.18.0.1:80 -r 198.18.1.1 -m",
		"-A -t 198.18.0.2:80",
	)
	c := st.Config()
	s1, s2 := c.Services[0], c.Services[1]
	d := s1.Dests[0]
	for _, x := range []*service.Stats{s1.Stats, s2.Stats, &d.DestState.Stats} {
		x.AddConn(0)
		x.AddIn(0, 150_000_000, 2_000_000_000_000_000)
	}
	got := run(t, st, "-L", "-n", "--stats")
	if !strings.Contains(got, fmt.Sprintf("%-33s%9s%9s%9s%9s%9s\n", "TCP  198.18.0.1:80", "1", "150000K", "0", "2000T", "0")) {
		t.Errorf("--stats scaling:\n%s", got)
	}
	got = run(t, st, "-L", "-n", "--stats", "--exact", "-t", "198.18.0.1:80")
	if !strings.Contains(got, fmt.Sprintf("  -> %-28s%9s%10s%9s%17s%9s\n", "198.18.1.1:80", "1", "150000000", "0", "2000000000000000", "0")) {
		t.Errorf("--stats --exact:\n%s", got)
	}
	published := st.Config()
	run(t, st, "-Z", "-t", "198.18.0.1:80")
	if st.Config() != published {
		t.Error("-Z published a new table")
	}
	if s1.Stats.Sum().Conns != 0 || d.DestState.Stats.Sum().Conns != 0 || s2.Stats.Sum().Conns != 1 {
		t.Errorf("-Z of one service: %+v %+v %+v", s1.Stats.Sum(), d.DestState.Stats.Sum(), s2.Stats.Sum())
	}
	if len(st.zeroed) != 2 {
		t.Errorf("-Z reset %d rate estimates, want 2", len(st.zeroed))
	}
	run(t, st, "--zero")
	if s2.Stats.Sum().Conns != 0 {
		t.Errorf("-Z left %+v", s2.Stats.Sum())
	}
	run(t, st, "--set", "0", "60", "0")
	if got := run(t, st, "-L", "--timeout"); got != "Timeout (tcp tcpfin udp): 900 60 300\n" {
		t.Errorf("--set 0 60 0: %s", got)
	}
}

// Without -n listings keep addresses numeric and name ports from the
// embedded table, whatever /etc/services says.
func TestPortNames(t *testing.T) {
	for _, c := range []struct {
		port  uint16
		proto uint8
		want  string
	}{{22, 6, "ssh"}, {79, 6, "finger"}, {8080, 6, "http-alt"}, {53, 17, "domain"}, {5060, 17, "sip"}, {443, 6, "https"}, {0, 6, "0"}, {65000, 6, "65000"}} {
		if got := portName(c.port, c.proto); got != c.want {
			t.Errorf("port %d/%d = %q, want %q", c.port, c.proto, got, c.want)
		}
	}
	if p, ok := serviceToPort("www", 6); !ok || p != 80 {
		t.Errorf("www = %d %v", p, ok)
	}
}

func TestNoSortKeepsKernelOrder(t *testing.T) {
	st := setup(t, "-A -t 198.18.0.9:80", "-A -t 198.18.0.1:80",
		"-a -t 198.18.0.1:80 -r 198.18.1.1 -m", "-a -t 198.18.0.1:80 -r 198.18.1.2 -m")
	r := runAll(st, "", "-S", "-n", "--nosort")
	if r.rc != 2 || r.err != "Illegal 'nosort' option with the 'save' command\n" {
		t.Errorf("-S --nosort: %+v", r)
	}
	got := run(t, st, "-L", "-n", "--nosort")
	i9, i1 := strings.Index(got, "198.18.0.9"), strings.Index(got, "198.18.0.1:")
	j2, j1 := strings.Index(got, "198.18.1.2"), strings.Index(got, "198.18.1.1:")
	if i9 > i1 || j2 > j1 {
		t.Errorf("--nosort listing is sorted:\n%s", got)
	}
}

// Errors a director adds beyond the kernel's are printed as they are.
func TestDirectorErrors(t *testing.T) {
	st := &failing{fakeState: newFake(), err: errors.New("address 198.18.0.1 is not local")}
	r := runAll(st, "", "-A", "-t", "198.18.0.1:80")
	if r.rc != 255 || r.err != "address 198.18.0.1 is not local\n" {
		t.Errorf("%+v", r)
	}
	wrapped := &failing{fakeState: newFake(), err: errors.New("x")}
	wrapped.err = wrapErr{service.ErrNoService}
	r = runAll(wrapped, "", "-d", "-t", "198.18.0.1:80", "-r", "198.18.1.1")
	if r.rc != 255 || r.err != "Service not defined\n" {
		t.Errorf("%+v", r)
	}
}

type wrapErr struct{ error }

func (w wrapErr) Error() string { return "director: " + w.error.Error() }
func (w wrapErr) Unwrap() error { return w.error }

type failing struct {
	*fakeState
	err error
}

func (f *failing) Update(fn func(c *service.Config) error) error {
	c := f.Config().Clone()
	if err := fn(c); err != nil {
		return err
	}
	return f.err
}
