// Package control is the director's control API: a Unix socket on which a
// client hands over one ipvsadm invocation (its arguments and, for -R, its
// standard input) and gets back what ipvsadm would print and its exit code.
// The daemon does all the parsing, so the client and the daemon can never
// disagree about the syntax.
//
// The protocol: the client connects, writes one JSON Request, shuts down its
// writing side, and reads one JSON Response. Anything but one JSON value
// (and white space) before the client's end of stream is refused.
//
// The socket serves root only: it is created mode 0600, and the daemon also
// checks each peer's credentials (SO_PEERCRED). A request may be at most
// MaxRequest bytes and must arrive whole within ten seconds of being taken
// up; at most 64 connections are served at once, of which at most two may be
// larger than 64 KiB; up to 256 more wait a second for their turn, and the
// rest are told the director is busy (Call then retries).
package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
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

// MaxRequest bounds one request as sent (JSON, standard input in base64). A
// rules file for 10 000 services with two real servers each is a request of
// about 2.1 MB (IPv4) or 3.2 MB (IPv6), so 8 MiB leaves room for about 25 000
// IPv6 or 38 000 IPv4 such services.
const MaxRequest = 8 << 20

// limits are the server's bounds; tests shrink the times.
type limits struct {
	maxRequest   int           // bytes per request
	smallRequest int           // a request larger than this needs a big slot
	maxConns     int           // connections served at once
	maxBig       int           // requests larger than smallRequest at once
	maxWaiting   int           // connections waiting for one of maxConns
	busyWait     time.Duration // how long a connection waits for its turn
	readTimeout  time.Duration // the whole request must arrive within this
	writeTimeout time.Duration // the whole response must leave within this
}

var defaultLimits = limits{
	maxRequest:   MaxRequest,
	smallRequest: 64 << 10,
	maxConns:     64,
	maxBig:       2,
	maxWaiting:   256,
	busyWait:     time.Second,
	readTimeout:  10 * time.Second,
	writeTimeout: 10 * time.Second,
}

// Request is one ipvsadm invocation.
type Request struct {
	Args  []string `json:"args"`
	Stdin []byte   `json:"stdin,omitempty"`
}

// Response is what the invocation printed and its exit code. Busy says the
// director did not take the request up because it was serving too many
// others; nothing ran, and the request may be sent again.
type Response struct {
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Code   int    `json:"code"`
	Busy   bool   `json:"busy,omitempty"`
}

// Handler runs one invocation.
type Handler func(args []string, stdin io.Reader, stdout, stderr io.Writer) int

// Server serves a Handler on a Unix socket.
type Server struct {
	l    net.Listener
	path string
	h    Handler
	log  *slog.Logger
	lim  limits
	wg   sync.WaitGroup

	slots   chan struct{} // one per connection being served
	big     chan struct{} // one per large request being read or run
	waiting atomic.Int32  // connections waiting for a slot
	done    chan struct{} // closed by Close

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool

	logMu      sync.Mutex
	logNext    time.Time
	logDropped int
}

// Listen creates the socket (mode 0600, its directory 0755 if missing). A
// stale socket left by a dead daemon is replaced; a live one is an error.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
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
	return newServer(l, path, h, log, defaultLimits), nil
}

// newServer serves h on l, which it owns from now on.
func newServer(l net.Listener, path string, h Handler, log *slog.Logger, lim limits) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		l: l, path: path, h: h, log: log, lim: lim,
		slots: make(chan struct{}, lim.maxConns),
		big:   make(chan struct{}, lim.maxBig),
		done:  make(chan struct{}),
		conns: make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go s.serve()
	return s
}

// serve accepts until Close. A failed accept (most often "too many open
// files") is retried with a backoff of 5 ms doubling up to 1 s, as net/http
// does; giving up would leave the director without its control socket.
func (s *Server) serve() {
	defer s.wg.Done()
	var backoff time.Duration
	fails := 0
	for {
		c, err := s.l.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			fails++
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			if fails == 1 || fails%100 == 0 {
				s.log.Error("control accept failed; retrying", "err", err, "failures", fails, "retry_in", backoff)
			}
			t := time.NewTimer(backoff)
			select {
			case <-s.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if fails > 0 {
			s.log.Info("control accept works again", "failures", fails)
			fails, backoff = 0, 0
		}
		s.dispatch(c)
	}
}

// dispatch serves c if a slot is free, else lets it wait briefly for one if
// not too many already wait, else tells it the director is busy.
func (s *Server) dispatch(c net.Conn) {
	select {
	case s.slots <- struct{}{}:
		s.start(c, func() { s.handle(c) })
		return
	default:
	}
	if int(s.waiting.Add(1)) > s.lim.maxWaiting {
		s.waiting.Add(-1)
		// A fresh connection's socket buffer is empty: this does not block
		// (the deadline is for a loaded machine's scheduling delays).
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		s.reply(c, s.busy("connections"))
		c.Close()
		return
	}
	s.start(c, func() {
		t := time.NewTimer(s.lim.busyWait)
		defer t.Stop()
		select {
		case s.slots <- struct{}{}:
			s.waiting.Add(-1)
			s.handle(c)
		case <-t.C:
			s.waiting.Add(-1)
			if s.deadline(c, s.lim.writeTimeout, true) {
				s.reply(c, s.busy("connections"))
			}
		case <-s.done:
			s.waiting.Add(-1)
		}
	})
}

// start runs f for c in a goroutine Close waits for, then closes c.
func (s *Server) start(c net.Conn, f func()) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
		f()
	}()
}

// deadline sets c's deadline d from now, unless the server is closing: then
// reads fail (false) and writes get 100 ms.
func (s *Server) deadline(c net.Conn, d time.Duration, write bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		if !write {
			return false
		}
		d = min(d, 100*time.Millisecond)
	}
	return c.SetDeadline(time.Now().Add(d)) == nil
}

func (s *Server) busy(what string) Response {
	s.warn("control: busy, request refused", "too_many", what)
	return Response{Stderr: []byte("director busy: too many control " + what + " at once; try again\n"), Code: 1, Busy: true}
}

func (s *Server) reply(c net.Conn, r Response) {
	_ = json.NewEncoder(c).Encode(r)
}

// warn logs at most one warning a second, saying how many it left out: a
// flood of bad requests must not flood the log.
func (s *Server) warn(msg string, args ...any) {
	s.logMu.Lock()
	now := time.Now()
	if now.Before(s.logNext) {
		s.logDropped++
		s.logMu.Unlock()
		return
	}
	dropped := s.logDropped
	s.logDropped, s.logNext = 0, now.Add(time.Second)
	s.logMu.Unlock()
	if dropped > 0 {
		args = append(args, "warnings_left_out", dropped)
	}
	s.log.Warn(msg, args...)
}

func fail(code int, format string, a ...any) Response {
	return Response{Stderr: fmt.Appendf(nil, format+"\n", a...), Code: code}
}

// handle serves one connection holding a slot.
func (s *Server) handle(c net.Conn) {
	defer func() { <-s.slots }()
	if err := peerAllowed(c); err != nil {
		s.warn("control: connection refused", "err", err)
		if s.deadline(c, s.lim.writeTimeout, true) {
			s.reply(c, fail(1, "%v", err))
		}
		return
	}
	if !s.deadline(c, s.lim.readTimeout, false) {
		return
	}
	body, release, r := s.read(c, time.Now().Add(s.lim.readTimeout))
	defer release()
	if r != nil {
		s.warn("control: request refused", "err", string(bytes.TrimSpace(r.Stderr)))
		if s.deadline(c, s.lim.writeTimeout, true) {
			s.reply(c, *r)
		}
		return
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		s.warn("control: bad request", "err", err)
		if s.deadline(c, s.lim.writeTimeout, true) {
			s.reply(c, fail(2, "bad control request: %v", err))
		}
		return
	}
	body = nil
	var out, errb bytes.Buffer
	code := s.h(req.Args, bytes.NewReader(req.Stdin), &out, &errb)
	if s.deadline(c, s.lim.writeTimeout, true) {
		s.reply(c, Response{Stdout: out.Bytes(), Stderr: errb.Bytes(), Code: code})
	}
}

// read reads a request up to the client's end of stream, taking a big slot
// (given back by release) once it grows past smallRequest. A request that is
// too large or too slow, or cannot get a big slot in time, yields the
// Response to send instead.
func (s *Server) read(c net.Conn, until time.Time) (body []byte, release func(), r *Response) {
	release = func() {}
	const chunk = 64 << 10
	var chunks [][]byte
	n, haveBig := 0, false
	for {
		if !haveBig && n > s.lim.smallRequest-chunk {
			if !s.takeBig(until) {
				b := s.busy("large requests")
				return nil, release, &b
			}
			haveBig, release = true, func() { <-s.big }
		}
		buf := make([]byte, min(chunk, s.lim.maxRequest+1-n))
		m, err := io.ReadFull(c, buf)
		n += m
		if m > 0 {
			chunks = append(chunks, buf[:m])
		}
		if n > s.lim.maxRequest {
			f := fail(2, "control request too large: more than %d bytes (%d MiB)", s.lim.maxRequest, s.lim.maxRequest>>20)
			return nil, release, &f
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		f := fail(2, "control request: %v", err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			f = fail(2, "control request timed out: it must arrive whole (the client shutting down its sending side) within %v", s.lim.readTimeout)
		}
		return nil, release, &f
	}
	if len(chunks) == 1 {
		return chunks[0], release, nil
	}
	body = make([]byte, 0, n)
	for _, b := range chunks {
		body = append(body, b...)
	}
	return body, release, nil
}

// takeBig waits for a big slot until the request's read deadline (or Close).
func (s *Server) takeBig(until time.Time) bool {
	select {
	case s.big <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case s.big <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-s.done:
		return false
	}
}

// peerAllowed admits root and the daemon's own user only.
func peerAllowed(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("permission denied: cannot check the credentials of a %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("permission denied: peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		cerr = err
	}
	if cerr != nil {
		return fmt.Errorf("permission denied: peer credentials: %w", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("permission denied: the director's control socket serves root only (you are uid %d)", cred.Uid)
	}
	return nil
}

// Close stops listening, cuts requests still being received, waits for
// running ones and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.closing = true
	close(s.done)
	now := time.Now()
	for c := range s.conns {
		_ = c.SetDeadline(now)
	}
	s.mu.Unlock()
	err := s.l.Close()
	s.wg.Wait()
	_ = os.Remove(s.path)
	return err
}

// Call sends one invocation to the daemon at path. While the director says it
// is busy, Call tries again (backing off from 10 ms to 500 ms) until ctx is
// done or for at most 30 s, then returns the busy Response.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("encode request: %w", err)
	}
	b = append(b, '\n')
	if len(b) > MaxRequest {
		return Response{}, fmt.Errorf("request of %d bytes is larger than the director takes (%d bytes, %d MiB)", len(b), MaxRequest, MaxRequest>>20)
	}
	giveUp := time.Now().Add(30 * time.Second)
	backoff := 10 * time.Millisecond
	for {
		resp, err := call1(ctx, path, b)
		again := err == nil && resp.Busy || errors.Is(err, syscall.EAGAIN)
		if !again || time.Now().Add(backoff).After(giveUp) {
			return resp, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, err
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func call1(ctx context.Context, path string, req []byte) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, dialError(path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_, werr := c.Write(req)
	if uc, ok := c.(*net.UnixConn); ok && werr == nil {
		werr = uc.CloseWrite()
	}
	// Even if sending failed, the director may have said why.
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		if werr != nil {
			return Response{}, fmt.Errorf("send to director at %s: %w", path, werr)
		}
		return Response{}, fmt.Errorf("read from director at %s: %w", path, err)
	}
	return resp, nil
}

// dialError explains a failed connect: no director, not allowed, or busy.
func dialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("permission denied on the director's control socket %s: it serves root only, run this as root: %w", path, err)
	case errors.Is(err, syscall.EAGAIN):
		return fmt.Errorf("the director at %s is busy (its connection queue is full): %w", path, err)
	}
	return fmt.Errorf("cannot reach the director at %s (is `director run` running?): %w", path, err)
}
