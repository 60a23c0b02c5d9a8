package dist

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"uvs/lab"
	"uvs/testbed"
)

// directives parses a unit: section → key → values, in order.
func directives(t *testing.T, unit []byte) map[string]map[string][]string {
	t.Helper()
	m := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			sec = line[1 : len(line)-1]
			m[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("unit line %d: %q is not Key=Value in a section", n, line)
			}
			m[sec][k] = append(m[sec][k], v)
		}
	}
	return m
}

// buildDirector builds the director into a new temporary directory.
func buildDirector(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "director")
	if out, err := exec.Command("go", "build", "-o", bin, "uvs/cmd/director").CombinedOutput(); err != nil {
		t.Fatalf("build the director: %v\n%s", err, out)
	}
	return bin
}

// TestUnit: the unit as shipped, and Unit's replacement of its paths.
func TestUnit(t *testing.T) {
	d := directives(t, []byte(unit))
	svc := d["Service"]
	for key, want := range map[string]string{
		"Type":                     "notify",
		"ExecStart":                Binary + " run --rules " + EtcDir + "/rules --metrics :9110",
		"ExecReload":               "/bin/kill -HUP $MAINPID",
		"Restart":                  "on-failure",
		"CapabilityBoundingSet":    "CAP_NET_ADMIN CAP_NET_RAW",
		"RuntimeDirectory":         "uvs",
		"RuntimeDirectoryPreserve": "yes",
	} {
		if got := svc[key]; len(got) != 1 || got[0] != want {
			t.Errorf("[Service] %s: %q, want %q", key, got, want)
		}
	}
	if got := d["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy: %q", got)
	}
	// The director writes sysctls and opens /dev/net/tun.
	for _, key := range []string{"ProtectKernelTunables", "ProcSubset", "PrivateDevices", "PrivateNetwork", "PrivateUsers"} {
		if v, ok := svc[key]; ok {
			t.Errorf("[Service] %s=%s would stop the director", key, v[0])
		}
	}
	if !strings.Contains(unit, "#ExecStart="+Binary+" run --keepalived ") {
		t.Error("the unit does not show the --keepalived alternative")
	}

	u, err := Unit("/opt/uvs/sbin/director", "/srv/uvs-etc")
	if err != nil {
		t.Fatal(err)
	}
	r := directives(t, u)["Service"]
	if got := r["ExecStart"][0]; got != "/opt/uvs/sbin/director run --rules /srv/uvs-etc/rules --metrics :9110" {
		t.Errorf("rendered ExecStart: %q", got)
	}
	if bytes.Contains(u, []byte(Binary)) || bytes.Contains(u, []byte(EtcDir+"/")) {
		t.Errorf("the rendered unit still names the default paths:\n%s", u)
	}
	for _, bad := range [][2]string{
		{"director", "/etc/uvs"},
		{"/opt/my uvs/director", "/etc/uvs"},
		{"/opt/uvs/%n", "/etc/uvs"},
		{"/opt/uvs/director", "/etc/$HOME"},
		{"/opt/uvs/../director", "/etc/uvs"},
	} {
		if _, err := Unit(bad[0], bad[1]); err == nil {
			t.Errorf("Unit(%q, %q): no error", bad[0], bad[1])
		}
	}
}

// TestUnitVerify: systemd-analyze verify finds nothing to say about the
// unit pointed at a freshly built director, and does complain about a
// misspelt key (so that its silence means something).
func TestUnitVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing (Debian package systemd)")
		}
		t.Skip("no systemd-analyze (Debian package systemd)")
	}
	bin := buildDirector(t)
	u, err := Unit(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	verify := func(u []byte) (string, error) {
		path := filepath.Join(t.TempDir(), UnitName)
		if err := os.WriteFile(path, u, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", path).CombinedOutput()
		// Only what concerns this unit counts: the other units of the
		// machine are not ours to judge.
		var ours []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, UnitName) {
				ours = append(ours, l)
			} else if strings.TrimSpace(l) != "" {
				t.Logf("systemd-analyze verify, of another unit: %s", l)
			}
		}
		return strings.Join(ours, "\n"), err
	}
	if out, err := verify(u); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s\nthe unit:\n%s", err, out, u)
	}
	bad := bytes.Replace(u, []byte("ProtectSystem="), []byte("ProtectSytem="), 1)
	if out, _ := verify(bad); !strings.Contains(out, "ProtectSytem") {
		t.Errorf("systemd-analyze verify let a misspelt key pass: %q", out)
	}
}

// capMask is the kernel's mask of capabilities named as in a unit.
func capMask(t *testing.T, names []string) uint64 {
	bits := map[string]uint{"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}
	var m uint64
	for _, n := range names {
		b, ok := bits[n]
		if !ok {
			t.Fatalf("capability %s: add it to capMask", n)
		}
		m |= 1 << b
	}
	return m
}

// TestUnitCapabilities runs the unit's ExecStart, word for word, with no
// capabilities but those of its CapabilityBoundingSet (setpriv lowers the
// bounding set, which for root is what systemd does), in the NAT lab's
// director namespace, with a rules file, and with $NOTIFY_SOCKET on a
// socket of the test's, as systemd would: the director must say READY=1,
// balance a client's requests, reload on SIGHUP (RELOADING=1, READY=1,
// for a good file and for a refused one), say STOPPING=1 at SIGTERM and
// restore the host with no error, with --io afpacket (the unit's) and with
// --io tun. Without any one of those capabilities it must not start: each
// is needed, and the restriction is real.
func TestUnitCapabilities(t *testing.T) {
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv (util-linux)")
	}
	caps := strings.Fields(directives(t, []byte(unit))["Service"]["CapabilityBoundingSet"][0])
	bin := buildDirector(t)
	u, err := Unit(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	exe := strings.Fields(directives(t, u)["Service"]["ExecStart"][0])
	rules := exe[slices.Index(exe, "--rules")+1]

	n, err := lab.BuildNAT("uvsdist", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	for i, rs := range n.RS {
		l, err := rs.Listen("tcp4", ":80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(testbed.ServeHTTP(l, fmt.Sprintf("rs%d", i+1)))
	}
	two := fmt.Sprintf("-A -t %[1]s:80 -s rr\n-a -t %[1]s:80 -r %[2]s:80 -m -w 1\n-a -t %[1]s:80 -r %[3]s:80 -m -w 1\n",
		lab.DirOuterIP, lab.RS1IP, lab.RS2IP)
	one := fmt.Sprintf("-A -t %[1]s:80 -s rr\n-a -t %[1]s:80 -r %[2]s:80 -m -w 1\n", lab.DirOuterIP, lab.RS2IP)

	setpriv := func(caps []string) []string {
		b := "-all"
		for _, c := range caps {
			b += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
		return []string{"setpriv", "--bounding-set=" + b, "--inh-caps=-all", "--no-new-privs", "--"}
	}
	start := func(t *testing.T, caps []string, extra ...string) (cmd *exec.Cmd, notes *net.UnixConn, log *bytes.Buffer, done chan error) {
		dir := t.TempDir()
		notes, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { notes.Close() })
		argv := append(setpriv(caps), append(exe, extra...)...)
		cmd = n.Director.Command(argv[0], argv[1:]...)
		// UVS_SOCKET moves the default control socket (the unit's) out of
		// /run/uvs, which a director on this machine may use.
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"), "UVS_SOCKET="+filepath.Join(dir, "director.sock"))
		log = new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
			done <- nil
		})
		return cmd, notes, log, done
	}
	next := func(t *testing.T, c *net.UnixConn, log *bytes.Buffer) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, 4096)
		k, err := c.Read(b)
		if err != nil {
			t.Fatalf("no notification: %v\ndirector log:\n%s", err, log)
		}
		return string(b[:k])
	}
	expect := func(t *testing.T, c *net.UnixConn, log *bytes.Buffer, want ...string) {
		t.Helper()
		for _, w := range want {
			if got := next(t, c, log); !strings.HasPrefix(got, w) {
				t.Fatalf("notification %q, want %q\ndirector log:\n%s", got, w, log)
			}
		}
	}
	fetch := func(t *testing.T, times int) map[string]int {
		t.Helper()
		got := map[string]int{}
		c := n.Client.HTTPClient()
		c.Timeout = 5 * time.Second
		for range times {
			resp, err := c.Get("http://" + lab.DirOuterIP + "/")
			if err != nil {
				t.Fatalf("fetch through the director: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("fetch: %s", resp.Status)
			}
			got[strings.TrimSpace(string(b))]++
		}
		return got
	}

	for _, mode := range [][]string{nil, {"--io", "tun"}} {
		t.Run("io="+map[bool]string{true: "afpacket", false: "tun"}[mode == nil], func(t *testing.T) {
			if err := os.WriteFile(rules, []byte(two), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd, notes, log, done := start(t, caps, mode...)
			expect(t, notes, log, "READY=1")

			// The restriction took: the director has the unit's
			// capabilities and no other.
			want := capMask(t, caps)
			for _, field := range []string{"CapBnd", "CapEff"} {
				if got := procCaps(t, cmd.Process.Pid, field); got != want {
					t.Errorf("director's %s %#x, want %#x (%s)", field, got, want, caps)
				}
			}
			if got := fetch(t, 6); got["rs1"] != 3 || got["rs2"] != 3 {
				t.Errorf("6 fetches through two real servers, rr: %v", got)
			}

			// Reload: a good file, then a bad one (refused, the rules stay).
			if err := os.WriteFile(rules, []byte(one), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd.Process.Signal(syscall.SIGHUP)
			expect(t, notes, log, "RELOADING=1\nMONOTONIC_USEC=", "STATUS=rules reloaded from "+rules+": 1 services", "READY=1")
			if got := fetch(t, 2); got["rs2"] != 2 {
				t.Errorf("after the reload to rs2 alone: %v", got)
			}
			if err := os.WriteFile(rules, []byte("-A -t nonsense\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd.Process.Signal(syscall.SIGHUP)
			expect(t, notes, log, "RELOADING=1\nMONOTONIC_USEC=", "STATUS=reload refused", "READY=1")
			if got := fetch(t, 2); got["rs2"] != 2 {
				t.Errorf("after a refused reload, still rs2 alone: %v", got)
			}

			cmd.Process.Signal(syscall.SIGTERM)
			expect(t, notes, log, "STOPPING=1")
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Errorf("director: %v\n%s", err, log)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("the director did not stop\n%s", log)
			}
			// The refused reload is the one error of the run.
			for _, l := range strings.Split(log.String(), "\n") {
				if strings.Contains(l, "level=ERROR") && !strings.Contains(l, "rules file rejected") ||
					strings.Contains(l, "level=WARN") {
					t.Errorf("director log: %s", l)
				}
			}
			if out, err := n.Director.Exec("nft", "list", "tables"); err != nil || strings.Contains(out, "uvs") {
				t.Errorf("after stop: nft list tables: %v %q", err, out)
			}
		})
	}

	// Each capability the unit grants is needed: without it the
	// director does not start.
	for _, c := range caps {
		t.Run("without "+c, func(t *testing.T) {
			if err := os.WriteFile(rules, []byte(two), 0o644); err != nil {
				t.Fatal(err)
			}
			_, notes, log, done := start(t, slices.DeleteFunc(slices.Clone(caps), func(s string) bool { return s == c }))
			select {
			case err := <-done:
				done <- err
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(log.String(), "operation not permitted") {
					t.Errorf("director without %s: %v, want exit 1 and operation not permitted\n%s", c, err, log)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("a director without %s did not stop\n%s", c, log)
			}
			notes.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := notes.Read(make([]byte, 64)); err == nil {
				t.Errorf("a director that could not start notified systemd\n%s", log)
			}
		})
	}
}

// procCaps reads a capability set (CapBnd, CapEff, …) of a process.
func procCaps(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
