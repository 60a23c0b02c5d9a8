package control

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "d.sock")
	s, err := Listen(path, func(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		in, _ := io.ReadAll(stdin)
		io.WriteString(stdout, strings.Join(args, ",")+"|"+string(in))
		io.WriteString(stderr, "warn\n")
		return 7
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := Call(ctx, path, Request{Args: []string{"-L", "-n"}, Stdin: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "-L,-n|x" || string(resp.Stderr) != "warn\n" || resp.Code != 7 {
		t.Errorf("got %q %q %d", resp.Stdout, resp.Stderr, resp.Code)
	}
	// A second daemon on the same socket is refused.
	if _, err := Listen(path, nil, nil); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second Listen: %v", err)
	}
}

func TestCallNoDaemon(t *testing.T) {
	_, err := Call(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Request{})
	if err == nil || !strings.Contains(err.Error(), "is `director run` running?") {
		t.Errorf("err = %v", err)
	}
}

func TestBadRequest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	s, err := Listen(path, func([]string, io.Reader, io.Writer, io.Writer) int { return 0 }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "{not json\n")
	c.(*net.UnixConn).CloseWrite()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), `"code":2`) {
		t.Errorf("reply %s", b)
	}
}
