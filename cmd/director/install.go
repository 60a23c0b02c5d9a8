package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"uvs/dist"
)

// installStep is one file director install puts in place: what it would
// do (nothing when the file is already right) and how.
type installStep struct {
	path           string
	todo, done     string // "install, a copy of …" and "installed, a copy of …"; "" when right
	kept           string // said of a file left as it is
	apply          func() error
	replacesBinary bool // a running director goes on with the old one
}

func installUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `usage: director install [--prefix DIR] [--unit-dir DIR] [--etc-dir DIR] [--dry-run]

Installs this binary as PREFIX/sbin/director with PREFIX/sbin/ipvsadm a symbolic
link to it (an ipvsadm that is not UVS's is left alone, and nothing is installed),
the systemd unit uvs.service, and an empty rules file if there is none. It changes
only what differs, says what it did, and starts nothing: systemctl does.

Flags:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// installMain runs `director install`.
func installMain(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("director install", flag.ContinueOnError)
	prefix := fset.String("prefix", "/usr/local", "install the binary as `DIR`/sbin/director, and DIR/sbin/ipvsadm")
	unitDir := fset.String("unit-dir", "/etc/systemd/system", "write the unit "+dist.UnitName+" into `DIR`")
	etcDir := fset.String("etc-dir", dist.EtcDir, "the rules file is `DIR`/rules (made empty if there is none)")
	dryRun := fset.Bool("dry-run", false, "say what would be done and change nothing")
	fset.SetOutput(stderr)
	fset.Usage = func() {}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			installUsage(stdout, fset)
			return 0
		}
		fmt.Fprintln(stderr, "see director install --help")
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "director install: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	for _, p := range []*string{prefix, unitDir, etcDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fmt.Fprintf(stderr, "director install: %v\n", err)
			return 2
		}
		*p = abs
	}
	steps, err := planInstall(*prefix, *unitDir, *etcDir)
	if err != nil {
		fmt.Fprintf(stderr, "director install: %v\nNothing was changed.\n", err)
		return 1
	}

	if *dryRun {
		fmt.Fprintln(stdout, "director install --dry-run: what would be done (nothing is changed)")
	}
	changed, newBinary := 0, false
	for _, s := range steps {
		switch {
		case s.todo == "":
			fmt.Fprintf(stdout, "  %s: %s\n", s.path, s.kept)
			continue
		case *dryRun:
			fmt.Fprintf(stdout, "  %s: would %s\n", s.path, s.todo)
		default:
			if err := s.apply(); err != nil {
				fmt.Fprintf(stderr, "director install: %s: %v\n", s.path, err)
				return 1
			}
			fmt.Fprintf(stdout, "  %s: %s\n", s.path, s.done)
		}
		changed++
		newBinary = newBinary || s.replacesBinary
	}
	rules := filepath.Join(*etcDir, "rules")
	switch {
	case changed == 0 && *dryRun:
		fmt.Fprintln(stdout, "Nothing to change: everything is in place.")
	case changed == 0:
		fmt.Fprintln(stdout, "Nothing changed: everything was already in place.")
	case *dryRun:
		fmt.Fprintf(stdout, "%d to change; run without --dry-run to do it.\n", changed)
	}
	fmt.Fprintf(stdout, `
director install starts nothing. Next steps:
  systemctl daemon-reload
  systemctl enable --now uvs
Then add services with ipvsadm and save them (ipvsadm -S -n > %s), or edit
%s and run systemctl reload uvs. systemctl status uvs and journalctl -u uvs
show how it runs.
`, rules, rules)
	if newBinary && !*dryRun {
		fmt.Fprintln(stdout, "A director already running goes on with the old binary until systemctl restart uvs (a restart loses the connection table).")
	}
	return 0
}

// planInstall looks at what is in place and returns the steps, in the
// order they are to be done; an error (an ipvsadm that is not ours, a
// directory where a file goes) stops the install before it changes
// anything.
func planInstall(prefix, unitDir, etcDir string) ([]installStep, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("this binary: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return nil, fmt.Errorf("this binary: %w", err)
	}
	binary, err := os.ReadFile(self)
	if err != nil {
		return nil, fmt.Errorf("this binary: %w", err)
	}
	sbin := filepath.Join(prefix, "sbin")
	bin := filepath.Join(sbin, "director")
	unit, err := dist.Unit(bin, etcDir)
	if err != nil {
		return nil, fmt.Errorf("the unit cannot name %v", err)
	}
	var steps []installStep

	// The binary.
	s := installStep{path: bin, kept: "unchanged",
		apply: func() error { return writeAtomic(bin, binary, 0o755) }}
	switch old, err := readRegular(bin); {
	case errors.Is(err, fs.ErrNotExist):
		s.todo, s.done = "install it, a copy of "+self, "installed, a copy of "+self
	case err != nil:
		return nil, err
	case !bytes.Equal(old, binary) || !hasMode(bin, 0o755):
		s.todo, s.done = "replace it with a copy of "+self, "replaced with a copy of "+self
		s.replacesBinary = true
	}
	steps = append(steps, s)

	// ipvsadm, beside it.
	link := filepath.Join(sbin, "ipvsadm")
	s = installStep{path: link, kept: "unchanged, a symbolic link to director",
		apply: func() error {
			if err := os.MkdirAll(sbin, 0o755); err != nil {
				return err
			}
			return os.Symlink("director", link)
		}}
	if fi, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
		s.todo, s.done = "make it a symbolic link to director", "made, a symbolic link to director"
	} else if err != nil {
		return nil, err
	} else if fi.Mode()&fs.ModeSymlink == 0 {
		return nil, fmt.Errorf("%s exists and is not UVS's: it is a %s, perhaps the ipvsadm of the kernel's IPVS. "+
			"It is left as it is. Move it away yourself, or install elsewhere with --prefix, and run director install again", link, kind(fi))
	} else if target, err := os.Readlink(link); err != nil {
		return nil, err
	} else if !filepath.IsAbs(target) && filepath.Join(sbin, target) != bin || filepath.IsAbs(target) && filepath.Clean(target) != bin {
		return nil, fmt.Errorf("%s exists and is not UVS's: it is a symbolic link to %s, not to %s. "+
			"It is left as it is. Remove it yourself, or install elsewhere with --prefix, and run director install again", link, target, bin)
	}
	steps = append(steps, s)

	// The rules file, if there is none.
	rules := filepath.Join(etcDir, "rules")
	s = installStep{path: rules, kept: "kept as it is",
		apply: func() error { return createEmpty(rules, 0o644) }}
	if fi, err := os.Stat(rules); errors.Is(err, fs.ErrNotExist) {
		s.todo, s.done = "create it, empty (mode 0644)", "created, empty (mode 0644)"
	} else if err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s; the rules file must be a file", rules, kind(fi))
	}
	steps = append(steps, s)

	// The unit, last: it names the others. A unit that differs (an
	// older one, or edited in place) is kept beside as uvs.service.old.
	path := filepath.Join(unitDir, dist.UnitName)
	s = installStep{path: path, kept: "unchanged"}
	switch old, err := readRegular(path); {
	case errors.Is(err, fs.ErrNotExist):
		s.todo, s.done = "write it", "written"
		s.apply = func() error { return writeAtomic(path, unit, 0o644) }
	case err != nil:
		return nil, err
	case !bytes.Equal(old, unit):
		s.todo, s.done = "replace it, keeping the old one as "+path+".old", "replaced; the old one is "+path+".old"
		s.apply = func() error {
			if err := writeAtomic(path+".old", old, 0o644); err != nil {
				return err
			}
			return writeAtomic(path, unit, 0o644)
		}
	}
	return append(steps, s), nil
}

// readRegular reads a regular file; anything else there is an error.
func readRegular(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s, not a file; it is left as it is", path, kind(fi))
	}
	return os.ReadFile(path)
}

func hasMode(path string, mode fs.FileMode) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm() == mode
}

func kind(fi fs.FileInfo) string {
	switch m := fi.Mode(); {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "special file (" + m.Type().String() + ")"
	}
}

// writeAtomic writes b to path through a temporary file renamed over it,
// so that a reader, or a running director's binary, never sees half a
// file; the directory is made if needed.
func writeAtomic(path string, b []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// createEmpty makes an empty file with exactly mode, never over one.
func createEmpty(path string, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // whatever the umask
		f.Close()
		return err
	}
	return f.Close()
}
