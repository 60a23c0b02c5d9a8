package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runArgs runs `director run ARGS...` in the test process up to its flag
// checks (no test here gets further) and returns its code and output.
func runArgs(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = runMain(args, &o, &e)
	return code, o.String(), e.String()
}

func runFlagNames() []string {
	fs, _ := runFlags()
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// TestRunHelp: --help (and -h) print the usage with every flag on stdout
// and exit 0; a flag's argument is named as a word, not as a piece of its
// help text.
func TestRunHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		code, out, errs := runArgs(arg)
		if code != 0 || errs != "" {
			t.Errorf("director run %s: exit %d, stderr %q; want 0 and nothing", arg, code, errs)
		}
		if !strings.HasPrefix(out, "usage: director run") {
			t.Errorf("director run %s: stdout does not start with the usage:\n%s", arg, out)
		}
		for _, name := range runFlagNames() {
			if !strings.Contains(out, "  -"+name) {
				t.Errorf("director run %s: no -%s", arg, name)
			}
		}
		for _, want := range []string{"-rules FILE", "-keepalived FILE", "-io MODE", "-socket PATH", "-workers N", "-capacity N", "-metrics ADDR"} {
			if !strings.Contains(out, want) {
				t.Errorf("director run %s: lacks %q:\n%s", arg, want, out)
			}
		}
		if strings.Contains(out, "-rules ipvsadm") {
			t.Errorf("director run %s: the rules flag's argument is named after its help text:\n%s", arg, out)
		}
		if !strings.Contains(out, "one per core") || strings.Contains(out, "workers per interface (0") {
			t.Errorf("director run %s: --workers is not one per core by default:\n%s", arg, out)
		}
	}
}

// TestRunFlagErrors: bad values are refused with exit 2 and a message
// naming the flag, before anything else happens.
func TestRunFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--workers", "-3"}, "--workers -3"},
		{[]string{"--workers=-1"}, "--workers -1"},
		{[]string{"--capacity", "0"}, "--capacity 0"},
		{[]string{"--capacity", "-5"}, "--capacity -5"},
		{[]string{"--afpacket-spin", "-1ms"}, "--afpacket-spin -1ms"},
		{[]string{"--io", "pcap"}, `--io "pcap"`},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--socket", ""}, "--socket"},
		{[]string{"--interfaces", "eth0,,eth1"}, "--interfaces"},
		{[]string{"--io", "tun", "--interfaces", "eth0"}, "--interfaces is for --io afpacket"},
		{[]string{"--io", "tun", "--afpacket-ring"}, "--afpacket-ring is for --io afpacket"},
		{[]string{"--afpacket-ring", "--afpacket-blocking"}, "cannot be combined"},
		{[]string{"rules.txt"}, `unexpected argument "rules.txt"`},
		{[]string{"--nosuch"}, "flag provided but not defined: -nosuch"},
		{[]string{"--workers", "many"}, `invalid value "many" for flag -workers`},
		{[]string{"--bgp-peer", "198.18.1.1"}, "--bgp-peer needs --bgp-asn"},
		{[]string{"--bgp-drain", "1s"}, "--bgp-drain needs --bgp-asn"},
		{[]string{"--bgp-asn", "65001"}, "--bgp-asn needs --bgp-peer"},
		{[]string{"--bgp-asn", "0", "--bgp-peer", "198.18.1.1"}, "--bgp-asn: AS number"},
		{[]string{"--bgp-asn", "4294967296", "--bgp-peer", "198.18.1.1"}, "--bgp-asn: AS number"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1:x"}, "--bgp-peer: peer"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "router1"}, "--bgp-peer: peer"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1", "--bgp-router-id", "2001:2::1"}, "--bgp-router-id"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1", "--bgp-hold-time", "2s"}, "--bgp-hold-time 2s"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1", "--bgp-hold-time", "4500ms"}, "--bgp-hold-time 4.5s"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1", "--bgp-drain", "-1s"}, "--bgp-drain -1s"},
		{[]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1", "--bgp-fwmark-vip", "20"}, "--bgp-fwmark-vip"},
		{[]string{"--sync-peers", "224.0.0.81"}, `"224.0.0.81" is not a unicast address`},
		{[]string{"--sync-peers", "198.18.1.2,"}, `"" is not a unicast address`},
		{[]string{"--sync-peers", "198.18.1.2,2001:2::2"}, "one address family"},
	} {
		code, out, errs := runArgs(c.args...)
		if code != 2 || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("director run %q: exit %d, stdout %q, stderr %q; want 2, nothing, and %q", c.args, code, out, errs, c.want)
		}
		if strings.Contains(errs, "-afpacket-affine") {
			t.Errorf("director run %q: the whole flag list on an error:\n%s", c.args, errs)
		}
	}
}

// TestRunBadKeepalived: a keepalived file that does not parse, or that
// names a service the rules file has, stops the start before the host is
// touched (the lock is not even taken), with a message naming the file and
// line, or the service.
func TestRunBadKeepalived(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("director run refuses to run as another user before it reads the file")
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("virtual_server 198.18.0.100 80 {\n  protocol TCP\n  delay_loop soon\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(good, []byte("virtual_server 198.18.0.100 80 {\n  protocol TCP\n  real_server 198.18.1.2 80 {\n  }\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules")
	if err := os.WriteFile(rules, []byte("-A -t 198.18.0.100:80 -s wlc\n-A -t 198.18.0.100:81 -s wlc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "run", "director.sock")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--keepalived", bad}, bad + ":3:"},
		{[]string{"--keepalived", filepath.Join(dir, "missing.conf")}, "missing.conf"},
		{[]string{"--keepalived", good, "--rules", rules}, "both have -t 198.18.0.100:80"},
	} {
		code, out, errs := runArgs(append(c.args, "--socket", sock)...)
		if code != 1 || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("director run %q: exit %d, stdout %q, stderr %q; want 1 and %q", c.args, code, out, errs, c.want)
		}
		if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
			t.Errorf("director run %q: the socket's directory was made (%v): the start went too far", c.args, err)
		}
	}
}

// TestUsage: the top-level usage lists every run flag, goes to stdout
// for help (exit 0) and to stderr for a mistake (exit 2).
func TestUsage(t *testing.T) {
	for _, c := range []struct {
		args    []string
		code    int
		toOut   bool
		unknown bool
	}{
		{[]string{"--help"}, 0, true, false},
		{[]string{"help"}, 0, true, false},
		{nil, 2, false, false},
		{[]string{"frobnicate"}, 2, false, true},
	} {
		var o, e bytes.Buffer
		code := directorMain(c.args, &o, &e)
		text, other := o.String(), e.String()
		if !c.toOut {
			text, other = other, text
		}
		if code != c.code || other != "" && !c.unknown || !strings.Contains(text, "usage:") {
			t.Errorf("director %q: exit %d, stdout %q, stderr %q", c.args, code, o.String(), e.String())
		}
		for _, name := range runFlagNames() {
			if !strings.Contains(text, "[--"+name) {
				t.Errorf("director %q: the usage lacks run's --%s:\n%s", c.args, name, text)
			}
		}
	}
}

// TestVersion: director --version and director version print the
// director's version on stdout.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version", "-version"} {
		var o, e bytes.Buffer
		if code := directorMain([]string{arg}, &o, &e); code != 0 || e.Len() != 0 || !strings.HasPrefix(o.String(), "director (UVS) "+version) {
			t.Errorf("director %s: exit %d, stdout %q, stderr %q", arg, code, o.String(), e.String())
		}
	}
}

// TestREADMERunFlags: "Running it for real" in the README names every
// flag of director run.
func TestREADMERunFlags(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "## Running it for real")
	if i < 0 {
		t.Fatal("README: no section Running it for real")
	}
	sec := text[i+3:]
	if j := strings.Index(sec, "\n## "); j >= 0 {
		sec = sec[:j]
	}
	for _, name := range runFlagNames() {
		if !strings.Contains(sec, "--"+name) {
			t.Errorf("README's Running it for real does not mention --%s", name)
		}
	}
	for _, want := range []string{"director --version", "director run --help"} {
		if !strings.Contains(sec, want) {
			t.Errorf("README's Running it for real does not mention %q", want)
		}
	}
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// binary builds the director into a directory anyone may read.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "uvs-cmd-test-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		built = filepath.Join(dir, "director")
		if out, err := exec.Command("go", "build", "-o", built, ".").CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}

// TestBinaryVersions: the binary's --version is the director's; invoked
// as ipvsadm, or through director ipvsadm, it is ipvsadm's.
func TestBinaryVersions(t *testing.T) {
	bin := binary(t)
	ipvsadm := filepath.Join(filepath.Dir(bin), "ipvsadm")
	if err := os.Symlink(bin, ipvsadm); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	const ipvsadmVersion = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
	for _, c := range []struct {
		cmd  []string
		want string
	}{
		{[]string{bin, "--version"}, "director (UVS) " + version},
		{[]string{bin, "version"}, "director (UVS) " + version},
		{[]string{ipvsadm, "--version"}, ipvsadmVersion},
		{[]string{ipvsadm, "-v"}, ipvsadmVersion},
		{[]string{bin, "ipvsadm", "--version"}, ipvsadmVersion},
	} {
		out, err := exec.Command(c.cmd[0], c.cmd[1:]...).Output()
		if err != nil || !strings.HasPrefix(string(out), c.want) {
			t.Errorf("%q: %q %v; want %q", c.cmd, out, err, c.want)
		}
	}
}

// TestNotRoot: as another user, director run says it must run as root
// (rather than failing deep inside with "operation not permitted"), and
// its --help still works.
func TestNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	bin := binary(t)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd := exec.Command(bin, "run", "--socket", filepath.Join(t.TempDir(), "d.sock"))
	cmd.SysProcAttr = nobody
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(e.String(), "director run: must run as root") {
		t.Errorf("director run as nobody: %v, stdout %q, stderr %q; want exit 1 and must run as root", err, o.String(), e.String())
	}
	cmd = exec.Command(bin, "run", "--help")
	cmd.SysProcAttr = nobody
	if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "usage: director run") {
		t.Errorf("director run --help as nobody: %v\n%s", err, out)
	}
}

// TestRealserverHelp: director realserver --help prints its usage on
// standard output and exits 0, as director run --help does; a bad flag
// is said on standard error with exit 2.
func TestRealserverHelp(t *testing.T) {
	bin := binary(t)
	for _, arg := range []string{"--help", "-h"} {
		var o, e bytes.Buffer
		cmd := exec.Command(bin, "realserver", arg)
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil || !strings.HasPrefix(o.String(), "usage:\n  director realserver") || e.Len() != 0 {
			t.Errorf("director realserver %s: %v, stdout %q, stderr %q", arg, err, o.String(), e.String())
		}
	}
	var o, e bytes.Buffer
	cmd := exec.Command(bin, "realserver", "--bogus")
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || o.Len() != 0 ||
		!strings.HasPrefix(e.String(), "director realserver: flag provided but not defined: -bogus") {
		t.Errorf("director realserver --bogus: %v, stdout %q, stderr %q", err, o.String(), e.String())
	}
}

// TestBGPFlags: the --bgp-* flags make the speaker's configuration.
func TestBGPFlags(t *testing.T) {
	fs, o := runFlags()
	err := fs.Parse([]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1,[2001:2::1]:65000",
		"--bgp-router-id", "198.18.1.11", "--bgp-hold-time", "6s", "--bgp-drain", "0", "--bgp-fwmark-vip", "20=198.18.0.100"})
	if err == nil {
		err = o.check(fs)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := o.bgp.cfg
	if c == nil || c.ASN != 65001 || len(c.Peers) != 2 || c.Peers[0].String() != "198.18.1.1" ||
		c.Peers[1].String() != "[2001:2::1]:65000" || c.RouterID.String() != "198.18.1.11" ||
		c.HoldTime != 6*time.Second || c.Drain != 0 || len(c.MarkVIPs[20]) != 1 {
		t.Errorf("config %+v", c)
	}
	fs, o = runFlags()
	if err := fs.Parse(nil); err != nil || o.check(fs) != nil || o.bgp.cfg != nil {
		t.Errorf("without --bgp-asn: %v, %+v", err, o.bgp.cfg)
	}
	fs, o = runFlags()
	if err := fs.Parse([]string{"--bgp-asn", "65001", "--bgp-peer", "198.18.1.1"}); err != nil || o.check(fs) != nil {
		t.Fatal(err)
	}
	if c := o.bgp.cfg; c.HoldTime != 9*time.Second || c.Drain != 2*time.Second || c.Peers[0].ASN != 0 {
		t.Errorf("defaults: %+v", c)
	}
}

// TestRunConfigFile: --config reads flags from a file, line by line, and
// the command line overrides them; a bad line is named.
func TestRunConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", "# the director\nworkers -3   # bad, but overridden\nbgp-asn 65001\n\nsloppy-tcp\n")
	bad := write("bad.conf", "capacity 5\nnosuch 1\n")
	nested := write("nested.conf", "config "+good+"\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", good}, "--workers -3"},
		{[]string{"--config", good, "--workers", "2"}, "--bgp-asn needs --bgp-peer"},
		{[]string{"--config", bad}, bad + ":2: flag provided but not defined: -nosuch"},
		{[]string{"--config", nested}, nested + ":1: a config file cannot name another"},
		{[]string{"--config", filepath.Join(dir, "none")}, "--config: open"},
	} {
		code, out, errs := runArgs(c.args...)
		if code != 2 || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("director run %q: exit %d, stdout %q, stderr %q; want 2, nothing, and %q", c.args, code, out, errs, c.want)
		}
	}
}
