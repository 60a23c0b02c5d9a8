package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strings"
	"time"

	"uvs/testbed"
)

// Names are the labs Run knows, in the order of the tutorial.
var Names = []string{"nat", "dr", "ssl", "pcc", "fwmark", "tun"}

// Run runs the lab called name (one of Names).
func Run(ctx context.Context, name string, o Options) error {
	switch name {
	case "nat":
		return NAT(ctx, o)
	case "dr":
		return DR(ctx, o)
	case "ssl":
		return SSL(ctx, o)
	case "pcc":
		return PCC(ctx, o)
	case "fwmark":
		return FWMark(ctx, o)
	case "tun":
		return TUN(ctx, o)
	}
	return fmt.Errorf("no lab %q (labs: %s)", name, strings.Join(Names, ", "))
}

// session is one lab being run: what it prints to, what it must undo.
type session struct {
	ctx  context.Context
	o    Options
	out  io.Writer
	bed  *testbed.Bed
	dir  string // temporary files: the control socket, state files
	d    *Director
	undo []func() // run last first by close
}

func newSession(ctx context.Context, o Options) (*session, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.IO == "" {
		o.IO = "afpacket"
	}
	if o.Prefix == "" {
		o.Prefix = "uvslab"
	}
	dir, err := os.MkdirTemp("", "uvslab-")
	if err != nil {
		return nil, err
	}
	return &session{ctx: ctx, o: o, out: o.Out, dir: dir}, nil
}

func (s *session) say(format string, a ...any) { fmt.Fprintf(s.out, format+"\n", a...) }

// atClose adds f to what close undoes.
func (s *session) atClose(f func()) { s.undo = append(s.undo, f) }

// close tears the lab down: the director, the servers, the namespaces.
// It keeps *err, or sets it if it was nil and the teardown failed.
func (s *session) close(err *error) {
	if s.bed != nil {
		s.say("# tearing the lab down")
	}
	if s.d != nil {
		_ = s.d.Stop()
	}
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
	if s.bed != nil {
		if cerr := s.bed.Close(); cerr != nil && *err == nil {
			*err = cerr
		}
	}
	os.RemoveAll(s.dir)
}

// serve runs an HTTP server answering body on addr in h, over TLS if cfg
// is not nil.
func (s *session) serve(h *testbed.Host, addr, body string, cfg *tls.Config) error {
	l, err := h.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", h.Short, err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	s.atClose(testbed.ServeHTTP(l, body))
	return nil
}

// startDirector types the ip_forward line and `director run` in h, and
// waits for the director.
func (s *session) startDirector(h *testbed.Host) error {
	// The tutorial's first line on the director, for every model.
	s.say("$ echo 1 > /proc/sys/net/ipv4/ip_forward")
	if err := h.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	s.say("$ director run --io %s &", s.o.IO)
	d, err := StartDirector(h, s.o.Binary, s.dir, "--io", s.o.IO)
	if err != nil {
		return err
	}
	s.d = d
	return nil
}

// ipvsadm types the commands, each must succeed.
func (s *session) ipvsadm(cmds ...[]string) error {
	for _, c := range cmds {
		if err := run(s.out, s.d, c...); err != nil {
			return err
		}
	}
	return nil
}

// fetch is one request of a lab's client.
type fetch struct {
	url  string
	from string // the client's source address; "" lets the kernel choose
}

// client makes HTTP(S) requests from inside h, one connection each. TLS
// certificates are not verified: the labs' are self-signed.
func client(h *testbed.Host, from string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			d := net.Dialer{}
			if from != "" {
				d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
			}
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       dial,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		},
	}
}

// fetchAll makes the requests from h in turn and prints each answer; with
// o.Trace the first one is traced on hops. It returns the bodies.
func (s *session) fetchAll(h *testbed.Host, fs []fetch, hops []Hop, tunPort uint16) ([]string, error) {
	var bodies []string
	for i, f := range fs {
		hc := client(h, f.from)
		var tr *Trace
		var local string
		ctx := s.ctx
		if i == 0 && s.o.Trace && len(hops) > 0 {
			var err error
			if tr, err = StartTrace(hops); err != nil {
				return nil, fmt.Errorf("trace: %w", err)
			}
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				GotConn: func(ci httptrace.GotConnInfo) { local = ci.Conn.LocalAddr().String() },
			})
		}
		body, err := get(ctx, hc, f.url)
		if tr != nil {
			time.Sleep(200 * time.Millisecond) // the last packets (FIN, ACK)
			pkts := tr.Stop()
			if err == nil {
				s.printTrace(pkts, local, tunPort)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("fetch %d (%s): %w\ndirector log:\n%s", i+1, f.url, err, s.d.Log())
		}
		label := fmt.Sprintf("curl %d", i+1)
		if differ(fs) {
			label += " " + f.url
			if f.from != "" {
				label += " from " + f.from
			}
		}
		s.say("%s: %s", label, body)
		bodies = append(bodies, body)
	}
	return bodies, nil
}

// differ reports whether the fetches are not all alike.
func differ(fs []fetch) bool {
	for _, f := range fs {
		if f != fs[0] {
			return true
		}
	}
	return false
}

// printTrace shows the traced packets of the connection from local.
func (s *session) printTrace(pkts []Packet, local string, tunPort uint16) {
	host, port, err := net.SplitHostPort(local)
	if err != nil {
		return
	}
	var p uint16
	fmt.Sscan(port, &p)
	lines := FormatTrace(pkts, Filter{ClientPort: p, GUEPort: tunPort}, 40)
	s.say("# trace of this request (client %s), every hop, in time order:", net.JoinHostPort(host, port))
	for _, l := range lines {
		s.say("%s", l)
	}
}

// finish prints the statistics and, with --keep, waits for Ctrl-C.
func (s *session) finish(hosts ...*testbed.Host) error {
	s.say("")
	if err := s.ipvsadm([]string{"-L", "-n", "--stats"}); err != nil {
		return err
	}
	if s.o.Keep {
		s.say("\n# the lab keeps running; press Ctrl-C to tear it down. Enter a namespace with:")
		for _, h := range hosts {
			s.say("#   ip netns exec %s bash", h.Name)
		}
		s.say("# and talk to the director from anywhere with:")
		s.say("#   UVS_SOCKET=%s %s ipvsadm -L -n", s.d.Socket, s.o.Binary)
		<-s.ctx.Done()
	}
	return nil
}

// alternates reports whether the bodies switch server at every answer.
func alternates(bodies []string) bool {
	for i := 1; i < len(bodies); i++ {
		if bodies[i] == bodies[i-1] {
			return false
		}
	}
	return len(bodies) > 1
}

// same reports whether every body is the first.
func same(bodies []string) bool {
	return len(bodies) > 0 && !slices.ContainsFunc(bodies, func(b string) bool { return b != bodies[0] })
}
