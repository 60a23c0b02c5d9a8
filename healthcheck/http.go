package healthcheck

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// userAgent is sent with every HTTP_GET and SSL_GET request.
const userAgent = "uvs-healthcheck"

// checkHTTP is HTTP_GET and SSL_GET: every url is fetched in turn, each on
// a new connection with connect_timeout for the whole exchange, and the
// first that fails fails the attempt.
//
// keepalived checks the urls of a checker that is down, or in alpha mode,
// one per delay_loop unless fast_recovery is set ("When alpha mode is set,
// or when recovering from a failure, each URL is checked, with a delay of
// <delay_loop> between each check", keepalived.conf(5)). Here every attempt
// fetches all of them, which is fast_recovery.
func (e env) checkHTTP(ctx context.Context, s *Spec) Result {
	if len(s.URLs) == 0 {
		return fail("%s: no url to check", s.name())
	}
	var r Result
	for i := range s.URLs {
		if r = e.getURL(ctx, s, &s.URLs[i]); !r.Up {
			return r
		}
	}
	if len(s.URLs) == 1 {
		return r
	}
	return pass("%s %v: %d urls passed", s.name(), s.Addr, len(s.URLs))
}

// getURL fetches one url and judges the answer: the status code must be one
// of the url's (200-299 by default), then the MD5 of the body must be the
// url's digest, if it has one.
func (e env) getURL(ctx context.Context, s *Spec, u *URL) Result {
	if err := u.validate(); err != nil {
		return fail("%s: %v", s.name(), err)
	}
	host := u.VirtualHost
	if host == "" {
		host = s.VirtualHost
	}
	scheme := "http"
	if s.TLS {
		scheme = "https"
	}
	target, err := url.Parse(scheme + "://" + s.Addr.String() + u.Path)
	if err != nil {
		return fail("%s: url %s: %v", s.name(), u.Path, err)
	}
	where := target.String()

	ctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancel()
	c, stop, err := e.dial(ctx, "tcp", s)
	if err != nil {
		return fail("%s %s: connect: %s", s.name(), where, why(err, s.ConnectTimeout))
	}
	defer stop()
	defer c.Close()
	var conn net.Conn = c
	if s.TLS {
		// keepalived verifies no certificate unless an SSL block gives a
		// CA, and sends no server name unless enable_sni is set ("when
		// provided, send Server Name Indicator during SSL handshake").
		// Go sends none for an address either, and Addr is one.
		cfg := &tls.Config{InsecureSkipVerify: true}
		if s.EnableSNI && host != "" {
			cfg.ServerName = hostOnly(host)
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("%s %s: TLS handshake: %s", s.name(), where, why(err, s.ConnectTimeout))
		}
		conn = tc
	}

	req := &http.Request{
		Method:     http.MethodGet,
		URL:        target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"User-Agent": {userAgent}},
		Host:       host, // "" is the address and port
		Close:      true,
	}
	if err := req.Write(conn); err != nil {
		return fail("%s %s: send: %s", s.name(), where, why(err, s.ConnectTimeout))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fail("%s %s: %s", s.name(), where, why(err, s.ConnectTimeout))
	}
	defer resp.Body.Close()
	if !u.accepts(resp.StatusCode) {
		return fail("%s %s: status %d, want %s", s.name(), where, resp.StatusCode, formatStatus(u.StatusCodes))
	}
	if u.Digest == "" {
		return pass("%s %s: status %d", s.name(), where, resp.StatusCode)
	}
	h := md5.New()
	n, err := io.Copy(h, io.LimitReader(resp.Body, MaxBody+1))
	switch {
	case err != nil:
		return fail("%s %s: reading the body: %s", s.name(), where, why(err, s.ConnectTimeout))
	case n > MaxBody:
		return fail("%s %s: body longer than %d bytes, no digest taken", s.name(), where, MaxBody)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(u.Digest) {
		return fail("%s %s: digest %s, want %s", s.name(), where, got, strings.ToLower(u.Digest))
	}
	return pass("%s %s: status %d, digest matches", s.name(), where, resp.StatusCode)
}

// hostOnly strips a port from a Host header value for SNI.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}
