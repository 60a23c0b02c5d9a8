package control

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestAcquire: one lock per network namespace and one per socket
// directory; a refusal names the holder; Release removes the files and
// lets the next one in.
func TestAcquire(t *testing.T) {
	nsDir, dirA, dirB := t.TempDir(), t.TempDir(), t.TempDir()
	sockA := filepath.Join(dirA, "director.sock")
	first, err := acquire(nsDir, sockA)
	if err != nil {
		t.Fatal(err)
	}
	pid := "pid " + strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		name, nsDir, sock, where string
	}{
		{"same socket", nsDir, sockA, "in this network namespace"},
		{"another socket, same namespace", nsDir, filepath.Join(dirB, "director.sock"), "in this network namespace"},
		// Another namespace is another netns lock file: here, another
		// directory for them.
		{"same socket directory, another namespace", t.TempDir(), filepath.Join(dirA, "other.sock"), "with its control socket in " + dirA},
	} {
		l, err := acquire(c.nsDir, c.sock)
		if err == nil {
			l.Release()
			t.Errorf("%s: a second lock was granted", c.name)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"another director is running " + c.where, pid, "socket " + sockA} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q lacks %q", c.name, msg, want)
			}
		}
	}
	// A refused attempt leaves the holder's files as they were.
	if b, err := os.ReadFile(filepath.Join(dirA, "director.lock")); err != nil || !strings.Contains(string(b), pid) {
		t.Errorf("the holder's lock file: %q %v", b, err)
	}
	first.Release()
	for _, p := range []string{filepath.Join(dirA, "director.lock")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after Release: %v", p, err)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(nsDir, "*")); len(m) != 0 {
		t.Errorf("left after Release: %v", m)
	}
	again, err := acquire(nsDir, filepath.Join(dirB, "director.sock"))
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	again.Release()
}
