package testbed

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// nsID names a namespace by the device and inode of its nsfs file, which is
// what /proc/PID/ns/net of every member process resolves to.
type nsID struct{ dev, ino uint64 }

func nsIDByPath(p string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

func nsIDByFd(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

// pidsIn lists the processes whose main thread is in namespace id. A zombie
// has already left its namespaces and is not listed.
func pidsIn(id nsID) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid == self {
			continue
		}
		got, err := nsIDByPath("/proc/" + n + "/ns/net")
		if err == nil && got == id {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killIn sends SIGKILL to every process in namespace id and waits (bounded)
// until none is left, so the namespace really goes away once unnamed.
func killIn(id nsID) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		pids, err := pidsIn(id)
		if err != nil {
			return fmt.Errorf("list processes: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still running after SIGKILL", pids)
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
