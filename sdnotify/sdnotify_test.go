package sdnotify

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen makes a datagram socket as systemd's notify socket and points
// $NOTIFY_SOCKET at it under the name given (a path, or @abstract).
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	addr := name
	if strings.HasPrefix(name, "@") {
		addr = "\x00" + name[1:]
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// next reads one datagram, or fails after a second.
func next(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(b[:n])
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// check sends each message through its function and compares what the
// socket got.
func check(t *testing.T, c *net.UnixConn) {
	t.Helper()
	for _, m := range []struct {
		send func() error
		want string
	}{
		{Ready, "READY=1"},
		{Stopping, "STOPPING=1"},
		{func() error { return Status("serving 3 services") }, "STATUS=serving 3 services"},
		{func() error { return Status("bad file\nREADY=1\r\nx") }, "STATUS=bad file READY=1 x"},
		{func() error { return Notify("WATCHDOG=1\nSTATUS=x") }, "WATCHDOG=1\nSTATUS=x"},
	} {
		if err := m.send(); err != nil {
			t.Fatalf("%q: %v", m.want, err)
		}
		if got := next(t, c); got != m.want {
			t.Errorf("got %q, want %q", got, m.want)
		}
	}

	before := monotonicUsec(t)
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	got := next(t, c)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("Reloading sent %q; want RELOADING=1 and MONOTONIC_USEC=", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("Reloading: MONOTONIC_USEC %q, want between %d and %d", lines[1], before, after)
	}
}

func TestPathSocket(t *testing.T) {
	check(t, listen(t, filepath.Join(t.TempDir(), "notify")))
}

func TestAbstractSocket(t *testing.T) {
	var r [8]byte
	rand.Read(r[:])
	check(t, listen(t, "@uvs-sdnotify-test-"+hex.EncodeToString(r[:])))
}

// TestUnset: without NOTIFY_SOCKET nothing is sent and nothing fails; the
// variable is read at every call, not once.
func TestUnset(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify"))
	if err := Status("first"); err != nil {
		t.Fatal(err)
	}
	if got := next(t, c); got != "STATUS=first" {
		t.Fatalf("got %q", got)
	}
	os.Unsetenv("NOTIFY_SOCKET")
	for _, f := range []func() error{Ready, Reloading, Stopping, func() error { return Status("lost") }} {
		if err := f(); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v", err)
		}
	}
	t.Setenv("NOTIFY_SOCKET", c.LocalAddr().String())
	if err := Status("last"); err != nil {
		t.Fatal(err)
	}
	if got := next(t, c); got != "STATUS=last" {
		t.Errorf("after the variable came back: got %q, want STATUS=last (something was sent while it was unset)", got)
	}
}

// TestBadSocket: a name that is neither a path nor @name, and a socket
// that is not there, are errors.
func TestBadSocket(t *testing.T) {
	for _, name := range []string{"notify", "@", "vsock:2:1234", filepath.Join(t.TempDir(), "absent")} {
		t.Setenv("NOTIFY_SOCKET", name)
		if err := Ready(); err == nil {
			t.Errorf("NOTIFY_SOCKET=%q: no error", name)
		}
	}
}
