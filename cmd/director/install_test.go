package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"uvs/dist"
)

// installDirs are an install's three directories, all under one test
// directory.
type installDirs struct{ prefix, unitDir, etcDir string }

func newInstallDirs(t *testing.T) installDirs {
	d := t.TempDir()
	return installDirs{filepath.Join(d, "usr"), filepath.Join(d, "systemd"), filepath.Join(d, "etc", "uvs")}
}

func (d installDirs) args(extra ...string) []string {
	return append([]string{"install", "--prefix", d.prefix, "--unit-dir", d.unitDir, "--etc-dir", d.etcDir}, extra...)
}

func (d installDirs) bin() string   { return filepath.Join(d.prefix, "sbin", "director") }
func (d installDirs) link() string  { return filepath.Join(d.prefix, "sbin", "ipvsadm") }
func (d installDirs) unit() string  { return filepath.Join(d.unitDir, dist.UnitName) }
func (d installDirs) rules() string { return filepath.Join(d.etcDir, "rules") }

func (d installDirs) install(t *testing.T, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = directorMain(d.args(extra...), &o, &e)
	return code, o.String(), e.String()
}

// stats records each file's identity (a rewrite through rename changes
// it) and modification time.
func (d installDirs) stats(t *testing.T) map[string]os.FileInfo {
	t.Helper()
	m := map[string]os.FileInfo{}
	for _, p := range []string{d.bin(), d.link(), d.unit(), d.rules()} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = fi
	}
	return m
}

// exists lists which of the install's files are there.
func (d installDirs) exists() []string {
	var there []string
	for _, p := range []string{d.bin(), d.link(), d.unit(), d.rules()} {
		if _, err := os.Lstat(p); err == nil {
			there = append(there, p)
		}
	}
	return there
}

// TestInstall: a dry run changes nothing; an install puts the binary, the
// ipvsadm link, the unit and an empty rules file in place and says what
// to do next; a second install changes nothing and says so, and keeps the
// rules file's contents.
func TestInstall(t *testing.T) {
	d := newInstallDirs(t)
	code, out, errs := d.install(t, "--dry-run")
	if code != 0 || errs != "" {
		t.Fatalf("install --dry-run: exit %d, stderr %q", code, errs)
	}
	for _, p := range []string{d.bin(), d.link(), d.unit(), d.rules()} {
		if !strings.Contains(out, p+": would ") {
			t.Errorf("install --dry-run does not say what it would do to %s:\n%s", p, out)
		}
	}
	if there := d.exists(); len(there) > 0 {
		t.Errorf("install --dry-run made %q", there)
	}

	code, out, errs = d.install(t)
	if code != 0 || errs != "" {
		t.Fatalf("install: exit %d, stderr %q\n%s", code, errs, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(self)
	if got, err := os.ReadFile(d.bin()); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s is not a copy of the running binary (%v)", d.bin(), err)
	}
	if fi, err := os.Stat(d.bin()); err != nil || fi.Mode() != 0o755 {
		t.Errorf("%s: %v %v, want mode 0755", d.bin(), fi.Mode(), err)
	}
	if target, err := os.Readlink(d.link()); err != nil || target != "director" {
		t.Errorf("%s: %q %v, want a symbolic link to director", d.link(), target, err)
	}
	wantUnit, err := dist.Unit(d.bin(), d.etcDir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(d.unit()); err != nil || !bytes.Equal(got, wantUnit) {
		t.Errorf("%s is not the unit for %s (%v):\n%s", d.unit(), d.bin(), err, got)
	}
	if !strings.Contains(string(wantUnit), "ExecStart="+d.bin()+" run --rules "+d.rules()+" ") {
		t.Errorf("the unit does not run %s with %s:\n%s", d.bin(), d.rules(), wantUnit)
	}
	if fi, err := os.Stat(d.rules()); err != nil || fi.Size() != 0 || fi.Mode() != 0o644 {
		t.Errorf("%s: %v, want an empty file of mode 0644", d.rules(), err)
	}
	for _, s := range []string{
		d.bin() + ": installed, a copy of ",
		d.link() + ": made, a symbolic link to director",
		d.unit() + ": written",
		d.rules() + ": created, empty",
		"systemctl daemon-reload\n",
		"systemctl enable --now uvs\n",
		"starts nothing",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("install's output lacks %q:\n%s", s, out)
		}
	}

	if strings.Contains(out, "systemctl restart uvs") {
		t.Errorf("a first install speaks of a running director's old binary:\n%s", out)
	}

	rules := "-A -t 198.18.0.100:80 -s wlc\n-a -t 198.18.0.100:80 -r 198.18.1.2:80 -m -w 1\n"
	if err := os.WriteFile(d.rules(), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	before := d.stats(t)
	for _, c := range []struct {
		extra []string
		says  string
	}{{nil, "Nothing changed: "}, {[]string{"--dry-run"}, "Nothing to change: "}} {
		extra := c.extra
		code, out, errs = d.install(t, extra...)
		if code != 0 || errs != "" || !strings.Contains(out, c.says) || strings.Contains(out, ": would ") {
			t.Errorf("install %q again: exit %d, stderr %q, want %q:\n%s", extra, code, errs, c.says, out)
		}
		after := d.stats(t)
		for p, fi := range before {
			if !os.SameFile(fi, after[p]) || !fi.ModTime().Equal(after[p].ModTime()) {
				t.Errorf("install %q again rewrote %s", extra, p)
			}
		}
	}
	if got, _ := os.ReadFile(d.rules()); string(got) != rules {
		t.Errorf("install again changed the rules file: %q", got)
	}
}

// TestInstallUpdate: a binary or a unit that differs is replaced, the old
// unit kept beside; a rules file is never replaced.
func TestInstallUpdate(t *testing.T) {
	d := newInstallDirs(t)
	if code, out, errs := d.install(t); code != 0 {
		t.Fatalf("install: exit %d\n%s%s", code, out, errs)
	}
	good, _ := os.ReadFile(d.unit())
	edited := append(bytes.Clone(good), "# edited here\n"...)
	os.WriteFile(d.unit(), edited, 0o644)
	os.WriteFile(d.bin(), []byte("an older director"), 0o755)
	code, out, errs := d.install(t)
	if code != 0 || errs != "" {
		t.Fatalf("install over an older one: exit %d, stderr %q\n%s", code, errs, out)
	}
	self, _ := os.Executable()
	want, _ := os.ReadFile(self)
	if got, _ := os.ReadFile(d.bin()); !bytes.Equal(got, want) {
		t.Errorf("%s was not replaced", d.bin())
	}
	if got, _ := os.ReadFile(d.unit()); !bytes.Equal(got, good) {
		t.Errorf("%s was not replaced:\n%s", d.unit(), got)
	}
	if got, _ := os.ReadFile(d.unit() + ".old"); !bytes.Equal(got, edited) {
		t.Errorf("%s.old is not the edited unit:\n%s", d.unit(), got)
	}
	for _, s := range []string{d.bin() + ": replaced", d.unit() + ": replaced; the old one is " + d.unit() + ".old",
		d.link() + ": unchanged", d.rules() + ": kept as it is", "systemctl restart uvs"} {
		if !strings.Contains(out, s) {
			t.Errorf("install's output lacks %q:\n%s", s, out)
		}
	}
}

// TestInstallRefusesForeignIpvsadm: an ipvsadm that is not a link to the
// director (the kernel IPVS's, say) is left alone, and nothing at all is
// installed; a link to the director, absolute or relative, is ours.
func TestInstallRefusesForeignIpvsadm(t *testing.T) {
	for _, c := range []struct {
		name  string
		make  func(d installDirs) error
		ours  bool
		wants string
	}{
		{"regular file", func(d installDirs) error {
			return os.WriteFile(d.link(), []byte("#!/bin/sh\necho the kernel's ipvsadm\n"), 0o755)
		}, false, "it is a regular file"},
		{"link elsewhere", func(d installDirs) error { return os.Symlink("/usr/sbin/ipvsadm.real", d.link()) },
			false, "it is a symbolic link to /usr/sbin/ipvsadm.real"},
		{"relative link elsewhere", func(d installDirs) error { return os.Symlink("ipvsadm-legacy", d.link()) },
			false, "it is a symbolic link to ipvsadm-legacy"},
		{"absolute link to the director", func(d installDirs) error { return os.Symlink(d.bin(), d.link()) }, true, ""},
		{"relative link to the director", func(d installDirs) error { return os.Symlink("./director", d.link()) }, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newInstallDirs(t)
			os.MkdirAll(filepath.Dir(d.link()), 0o755)
			if err := c.make(d); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(d.link())
			code, out, errs := d.install(t)
			after, err := os.Lstat(d.link())
			if err != nil || !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
				t.Errorf("install touched %s (%v)", d.link(), err)
			}
			if c.ours {
				if code != 0 || errs != "" || !strings.Contains(out, d.link()+": unchanged") || len(d.exists()) != 4 {
					t.Errorf("install beside our own ipvsadm link: exit %d, stderr %q\n%s", code, errs, out)
				}
				return
			}
			if code != 1 || out != "" || !strings.Contains(errs, d.link()+" exists and is not UVS's: "+c.wants) ||
				!strings.Contains(errs, "Nothing was changed") {
				t.Errorf("install over a foreign ipvsadm: exit %d, stdout %q, stderr %q", code, out, errs)
			}
			if there := d.exists(); len(there) != 1 {
				t.Errorf("a refused install left %q", there)
			}
		})
	}
}

// TestInstallFlags: --help on stdout, mistakes exit 2.
func TestInstallFlags(t *testing.T) {
	var o, e bytes.Buffer
	if code := directorMain([]string{"install", "--help"}, &o, &e); code != 0 || e.Len() != 0 ||
		!strings.HasPrefix(o.String(), "usage: director install") || !strings.Contains(o.String(), "-etc-dir DIR") {
		t.Errorf("install --help: exit %d, stdout %q, stderr %q", code, o.String(), e.String())
	}
	for _, args := range [][]string{{"install", "extra"}, {"install", "--bogus"}} {
		o.Reset()
		e.Reset()
		if code := directorMain(args, &o, &e); code != 2 || o.Len() != 0 || e.Len() == 0 {
			t.Errorf("director %q: exit %d, stdout %q, stderr %q", args, code, o.String(), e.String())
		}
	}
}

// TestInstallBinary: the built director installs itself, and the
// installed ipvsadm link is ipvsadm.
func TestInstallBinary(t *testing.T) {
	bin := binary(t)
	d := newInstallDirs(t)
	if out, err := exec.Command(bin, d.args()...).CombinedOutput(); err != nil {
		t.Fatalf("director install: %v\n%s", err, out)
	}
	want, _ := os.ReadFile(bin)
	if got, _ := os.ReadFile(d.bin()); !bytes.Equal(got, want) {
		t.Errorf("%s is not a copy of %s", d.bin(), bin)
	}
	out, err := exec.Command(d.link(), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "ipvsadm v1.31") {
		t.Errorf("%s --version: %q %v", d.link(), out, err)
	}
	out, err = exec.Command(d.bin(), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "director (UVS) ") {
		t.Errorf("%s --version: %q %v", d.bin(), out, err)
	}
}
