// Package hostconf makes host changes that are recorded and undone: sysctls
// and interface addresses, the setup that both the director and a real
// server need. A Changes remembers only what it changed itself (a sysctl
// that already had the value, an address that was already there, are left
// alone and not recorded), and Undo reverts it in reverse order.
//
// With a state file (Open), every change is appended to the file before the
// host is touched, so a process killed outright leaves a list of what it
// changed; the next Open of the same file undoes that list first. A clean
// Undo removes the file. The file is locked while a Changes holds it, so two
// processes cannot share one.
//
// Changes act on the network namespace of the calling thread: sysctls under
// /proc/sys/net and addresses are per namespace. Call every method from the
// same namespace (a normal process is in one; tests that switch threads
// into namespaces must call from inside them).
package hostconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Changes records host changes. The zero value is ready to use and keeps
// no state file. Methods may be called from several goroutines.
type Changes struct {
	mu   sync.Mutex
	f    *os.File // the locked state file; nil without one
	path string
	list []change
}

type kind uint8

const (
	kindSysctl kind = iota + 1
	kindAddr
)

// change is one recorded change: a sysctl and the value it had, or an
// address added to an interface.
type change struct {
	kind   kind
	key    string // sysctl: the path under /proc/sys, slash-separated
	old    string // sysctl: the value before
	ifname string // addr
	prefix netip.Prefix
}

func (c change) String() string {
	switch c.kind {
	case kindSysctl:
		return fmt.Sprintf("sysctl %s %s", c.key, strconv.Quote(c.old))
	case kindAddr:
		return fmt.Sprintf("addr %s %s", c.ifname, c.prefix)
	}
	return "?"
}

// header starts every state file: a format version and the network
// namespace the changes were made in.
const header = "uvs-hostconf 1 netns "

// Open returns a Changes that records into stateFile (created with mode
// 0600, its directory with 0755 if missing). If the file lists changes left
// by a previous holder that did not Undo (it was killed), they are undone
// first; an error then is returned together with the Changes, whose
// record is empty: the caller may go on or stop. Open fails when another
// live process holds the file, or when the file was written in another
// network namespace. An empty stateFile gives a Changes without a file.
func Open(stateFile string) (*Changes, error) {
	if stateFile == "" {
		return &Changes{}, nil
	}
	ns, err := netnsID()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o755); err != nil {
		return nil, fmt.Errorf("hostconf: state directory: %w", err)
	}
	f, err := lockFile(stateFile)
	if err != nil {
		return nil, err
	}
	c := &Changes{f: f, path: stateFile}
	b, err := readAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hostconf: read %s: %w", stateFile, err)
	}
	var leftErr error
	if len(b) > 0 {
		left, fileNS, err := parse(b)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("hostconf: %s: %w", stateFile, err)
		}
		if fileNS != ns {
			f.Close()
			return nil, fmt.Errorf("hostconf: %s lists changes made in network namespace %s, this is %s: undo them there or remove the file", stateFile, fileNS, ns)
		}
		leftErr = undoList(left)
		if leftErr != nil {
			leftErr = fmt.Errorf("hostconf: undo changes left in %s: %w", stateFile, leftErr)
		}
	}
	// Start the file afresh: what was left is undone (or cannot be).
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("hostconf: %s: %w", stateFile, err)
	}
	if _, err := f.WriteString(header + ns + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("hostconf: %s: %w", stateFile, err)
	}
	return c, leftErr
}

// lockFile opens path for appending and takes an exclusive lock on it,
// making sure the locked file is still the one at path (a holder that
// finished may have removed it in between).
func lockFile(path string) (*os.File, error) {
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("hostconf: state file: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("hostconf: state file %s is held by another running process", path)
			}
			return nil, fmt.Errorf("hostconf: lock %s: %w", path, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(path, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("hostconf: state file %s keeps being replaced", path)
}

func readAll(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(&offsetReader{f: f})
	return buf.Bytes(), err
}

type offsetReader struct {
	f   *os.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	return n, err
}

// parse reads a state file: its namespace and the changes still in force.
// A last line without its newline (a write cut short) is ignored.
func parse(b []byte) (list []change, ns string, err error) {
	if i := bytes.LastIndexByte(b, '\n'); i < 0 {
		b = nil
	} else {
		b = b[:i+1]
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			id, ok := strings.CutPrefix(line, header)
			if !ok || id == "" {
				return nil, "", fmt.Errorf("not a hostconf state file (first line %q)", line)
			}
			ns = id
			continue
		}
		undone := false
		if rest, ok := strings.CutPrefix(line, "undone "); ok {
			undone, line = true, rest
		}
		ch, err := parseChange(line)
		if err != nil {
			return nil, "", err
		}
		if !undone {
			list = append(list, ch)
			continue
		}
		for i := len(list) - 1; i >= 0; i-- {
			if list[i] == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	if first {
		return nil, "", errors.New("empty state file")
	}
	return list, ns, nil
}

func parseChange(line string) (change, error) {
	word, rest, _ := strings.Cut(line, " ")
	switch word {
	case "sysctl":
		key, q, ok := strings.Cut(rest, " ")
		if !ok || checkKey(key) != nil {
			break
		}
		old, err := strconv.Unquote(q)
		if err != nil {
			break
		}
		return change{kind: kindSysctl, key: key, old: old}, nil
	case "addr":
		name, p, ok := strings.Cut(rest, " ")
		if !ok || checkIfName(name) != nil {
			break
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			break
		}
		return change{kind: kindAddr, ifname: name, prefix: pfx}, nil
	}
	return change{}, fmt.Errorf("bad line %q", line)
}

// netnsID names the calling thread's network namespace by its inode.
func netnsID() (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st); err != nil {
		return "", fmt.Errorf("hostconf: network namespace: %w", err)
	}
	return strconv.FormatUint(st.Ino, 10), nil
}

// record appends ch to the state file (before the host is changed).
func (c *Changes) record(prefix string, ch change) error {
	if c.f == nil {
		return nil
	}
	if _, err := c.f.WriteString(prefix + ch.String() + "\n"); err != nil {
		return fmt.Errorf("hostconf: record in %s: %w", c.path, err)
	}
	return nil
}

// checkKey keeps a sysctl key inside /proc/sys.
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.ContainsAny(key, " \t\n\x00") {
		return fmt.Errorf("hostconf: bad sysctl key %q", key)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("hostconf: bad sysctl key %q", key)
		}
	}
	return nil
}

func checkIfName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \t\n\x00:") || name == "." || name == ".." {
		return fmt.Errorf("hostconf: bad interface name %q", name)
	}
	return nil
}

// SysctlPath turns a key in dotted form ("net.ipv4.conf.all.arp_ignore")
// or slash form ("net/ipv4/conf/all/arp_ignore") into the slash form. A
// key with a slash is taken as it is, so an interface name with a dot
// ("eth0.100") needs the slash form.
func SysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return key
	}
	return strings.ReplaceAll(key, ".", "/")
}

// ReadSysctl returns a sysctl's value without its trailing newline.
func ReadSysctl(key string) (string, error) {
	key = SysctlPath(key)
	if err := checkKey(key); err != nil {
		return "", err
	}
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// Sysctl sets key (dotted or slash form, see SysctlPath) to value. If it
// had another value, the old one is recorded for Undo; if it had the value
// already, nothing is changed or recorded.
func (c *Changes) Sysctl(key, value string) error {
	key = SysctlPath(key)
	old, err := ReadSysctl(key)
	if err != nil {
		return err
	}
	if sameValue(old, value) {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := change{kind: kindSysctl, key: key, old: old}
	if err := c.record("", ch); err != nil {
		return err
	}
	if err := writeSysctl(key, value); err != nil {
		return err
	}
	c.list = append(c.list, ch)
	return nil
}

// sameValue compares sysctl values the way the kernel prints them: fields
// separated by tabs, as they may be written with spaces.
func sameValue(a, b string) bool {
	return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
}

func writeSysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// AddAddr adds prefix p (its address and length, e.g. 198.18.0.100/32) to
// interface ifname and records it for Undo. An address already on the
// interface is left alone and not recorded: Undo then leaves it too. IPv6
// addresses are added without duplicate address detection (IFA_F_NODAD), so
// they are usable at once.
func (c *Changes) AddAddr(ifname string, p netip.Prefix) error {
	if err := checkIfName(ifname); err != nil {
		return err
	}
	if !p.IsValid() || p.Addr().Zone() != "" {
		return fmt.Errorf("hostconf: bad address %v", p)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	if p.Bits() > p.Addr().BitLen() {
		return fmt.Errorf("hostconf: bad address %v", p)
	}
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("hostconf: interface %s: %w", ifname, err)
	}
	has, err := hasAddr(l, p)
	if err != nil {
		return err
	}
	if has {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := change{kind: kindAddr, ifname: ifname, prefix: p}
	if err := c.record("", ch); err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, nlAddr(p)); err != nil {
		if errors.Is(err, unix.EEXIST) {
			// Added by someone else since hasAddr: theirs, not ours.
			c.record("undone ", ch)
			return nil
		}
		return fmt.Errorf("hostconf: add %s to %s: %w", p, ifname, err)
	}
	c.list = append(c.list, ch)
	return nil
}

// DelAddr removes an address that AddAddr added (and removes it from the
// record). An address this Changes did not add is not touched, and that is
// no error.
func (c *Changes) DelAddr(ifname string, p netip.Prefix) error {
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := change{kind: kindAddr, ifname: ifname, prefix: p}
	for i := len(c.list) - 1; i >= 0; i-- {
		if c.list[i] != ch {
			continue
		}
		err := undoOne(ch)
		if err == nil {
			c.list = append(c.list[:i], c.list[i+1:]...)
			err = c.record("undone ", ch)
		}
		return err
	}
	return nil
}

// Added returns the addresses this Changes added and still holds, in the
// order they were added.
func (c *Changes) Added() []netip.Prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []netip.Prefix
	for _, ch := range c.list {
		if ch.kind == kindAddr {
			ps = append(ps, ch.prefix)
		}
	}
	return ps
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// hasAddr reports whether l holds p's address with p's length.
func hasAddr(l netlink.Link, p netip.Prefix) (bool, error) {
	fam := netlink.FAMILY_V4
	if p.Addr().Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(l, fam)
	if err != nil {
		return false, fmt.Errorf("hostconf: addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if ok && ip.Unmap() == p.Addr() && ones == p.Bits() {
			return true, nil
		}
	}
	return false, nil
}

// Undo reverts every recorded change, the last first, and forgets them;
// errors are joined, and a change that fails to revert is not retried. A
// sysctl whose interface is gone, or an address already removed (with its
// interface, say), counts as reverted. With a state file, the file is
// removed and unlocked: the Changes then records without a file. Undo may be
// called more than once.
func (c *Changes) Undo() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := undoList(c.list)
	c.list = nil
	if c.f != nil {
		// Removed while locked: a new holder that opened the old file
		// sees it is no longer at the path (lockFile) and starts again.
		if rerr := os.Remove(c.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("hostconf: remove %s: %w", c.path, rerr))
		}
		c.f.Close()
		c.f = nil
	}
	return err
}

// Close releases the state file without undoing anything, leaving the
// changes listed in it for the next Open to undo (what a kill does). It is
// for tests and for handing the changes over on purpose.
func (c *Changes) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	c.list = nil
	return err
}

func undoList(list []change) error {
	var errs []error
	for i := len(list) - 1; i >= 0; i-- {
		if err := undoOne(list[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func undoOne(ch change) error {
	switch ch.kind {
	case kindSysctl:
		err := writeSysctl(ch.key, ch.old)
		if errors.Is(err, os.ErrNotExist) {
			return nil // the interface it belonged to is gone
		}
		return err
	case kindAddr:
		l, err := netlink.LinkByName(ch.ifname)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil // gone with its address
			}
			return fmt.Errorf("hostconf: remove %s from %s: %w", ch.prefix, ch.ifname, err)
		}
		err = netlink.AddrDel(l, nlAddr(ch.prefix))
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("hostconf: remove %s from %s: %w", ch.prefix, ch.ifname, err)
		}
	}
	return nil
}
