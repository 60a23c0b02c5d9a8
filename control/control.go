// Package control is the director's control API: a Unix socket on which a
// client hands over one ipvsadm invocation (its arguments and, for -R, its
// standard input) and gets back what ipvsadm would print and its exit code.
// The daemon does all the parsing, so the client and the daemon can never
// disagree about the syntax.
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultSocket is where `director run` listens unless told otherwise.
const DefaultSocket = "/run/uvs/director.sock"

// SocketPath is the socket a client uses: $UVS_SOCKET, else DefaultSocket.
func SocketPath() string {
	if p := os.Getenv("UVS_SOCKET"); p != "" {
		return p
	}
	return DefaultSocket
}

// maxRequest bounds what a client may send (a large -R file fits easily).
const maxRequest = 16 << 20

// Request is one ipvsadm invocation.
type Request struct {
	Args  []string `json:"args"`
	Stdin []byte   `json:"stdin,omitempty"`
}

// Response is what the invocation printed and its exit code.
type Response struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Code   int    `json:"code"`
}

// Handler runs one invocation.
type Handler func(args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Server serves a Handler on a Unix socket.
type Server struct {
	l    net.Listener
	path string
	h    Handler
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the socket (mode 0600, its directory 0755 if missing). A
// stale socket left by a dead daemon is replaced; a live one is an error.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another director is already listening", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	s := &Server{l: l, path: path, h: h, log: log}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("control accept", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var req Request
	if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
		s.log.Warn("control: bad request", "err", err)
		_ = json.NewEncoder(c).Encode(Response{Stderr: []byte("bad control request: " + err.Error() + "\n"), Code: 2})
		return
	}
	var out, errb bytes.Buffer
	code := s.h(req.Args, bytes.NewReader(req.Stdin), &out, &errb)
	_ = json.NewEncoder(c).Encode(Response{Stdout: out.Bytes(), Stderr: errb.Bytes(), Code: code})
}

// Close stops listening, waits for running requests and removes the socket.
func (s *Server) Close() error {
	err := s.l.Close()
	s.wg.Wait()
	_ = os.Remove(s.path)
	return err
}

// Call sends one invocation to the daemon at path.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("cannot reach the director at %s (is `director run` running?): %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("send to director at %s: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("read from director at %s: %w", path, err)
	}
	return resp, nil
}
