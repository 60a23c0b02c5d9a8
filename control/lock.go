package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockDir holds the per-network-namespace locks (see Acquire).
const LockDir = "/run/uvs"

// Lock makes a director the only one of its network namespace and of its
// control socket's directory. It is held until Release, or until the
// process ends, however it ends (the kernel drops a dead process's locks).
type Lock struct {
	files []*os.File
}

// Acquire takes, before the director touches the host, the two locks that
// make it the only one where it works:
//
//   - LockDir/netns-INODE.lock, named after the inode of the process's
//     network namespace: the host changes (nftables tables, policy rules,
//     the TUN device, sysctls) are per namespace, and so are the leftovers
//     a starting director removes, so two directors in one namespace would
//     undo each other whatever sockets they use;
//   - director.lock beside the control socket: that directory holds the
//     socket and the host-changes record (package hostconf), which two
//     directors, even in different namespaces, cannot share.
//
// Each file names its holder (pid, socket), so a refusal says who holds it.
func Acquire(socket string) (*Lock, error) {
	return acquire(LockDir, socket)
}

func acquire(nsDir, socket string) (*Lock, error) {
	socket, err := filepath.Abs(socket)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	ns := strconv.FormatUint(st.Ino, 10)
	holder := fmt.Sprintf("pid %d socket %s netns %s\n", os.Getpid(), socket, ns)
	l := &Lock{}
	for _, p := range []struct{ path, where string }{
		{filepath.Join(nsDir, "netns-"+ns+".lock"), "in this network namespace"},
		{filepath.Join(filepath.Dir(socket), "director.lock"), "with its control socket in " + filepath.Dir(socket)},
	} {
		f, err := lockFile(p.path, holder)
		if err != nil {
			l.Release()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("another director is running %s: %s (it holds %s); stop it first", p.where, describe(p.path), p.path)
			}
			return nil, err
		}
		l.files = append(l.files, f)
	}
	return l, nil
}

// describe reads a lock file's holder: "pid N, socket PATH".
func describe(path string) string {
	b, _ := os.ReadFile(path)
	f := strings.Fields(string(b))
	var pid, sock string
	for i := 0; i+1 < len(f); i += 2 {
		switch f[i] {
		case "pid":
			pid = f[i+1]
		case "socket":
			sock = f[i+1]
		}
	}
	if pid == "" {
		return "pid unknown"
	}
	return "pid " + pid + ", socket " + sock
}

// lockFile creates (mode 0644, its directory 0755) and locks path, and
// writes holder into it. It makes sure the file locked is still the one
// at path: a holder that was finishing may have removed it in between.
func lockFile(path, holder string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, err
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if _, err := f.WriteAt([]byte(holder), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("lock %s: it keeps being replaced", path)
}

// Release removes the lock files and drops the locks.
func (l *Lock) Release() {
	for i := len(l.files) - 1; i >= 0; i-- {
		f := l.files[i]
		// Removed while still locked: whoever opened it meanwhile finds,
		// once it has the lock, that it is no longer the file at the path.
		_ = os.Remove(f.Name())
		f.Close()
	}
	l.files = nil
}
