package testbed

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ClientAddrHeader is the response header in which ServeHTTP reports the
// address the request came from, so a test can see whether the server saw
// the client's real address or a translated one.
const ClientAddrHeader = "X-Client-Addr"

// ServeHTTP answers every request on l with body plus a newline, the
// client's address in ClientAddrHeader, and closes each connection after one
// response. stop closes l and waits for the server to finish.
func ServeHTTP(l net.Listener, body string) (stop func()) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(ClientAddrHeader, r.RemoteAddr)
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte(body + "\n"))
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	srv.SetKeepAlivesEnabled(false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Warn("testbed: http server stopped", "addr", l.Addr(), "err", err)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = srv.Close()
			<-done
		})
	}
}

// ServeUDPEcho answers every datagram on pc with prefix + payload + " from "
// + the sender's address. stop closes pc and waits for the loop to end.
func ServeUDPEcho(pc net.PacketConn, prefix string) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					slog.Warn("testbed: udp echo stopped", "addr", pc.LocalAddr(), "err", err)
				}
				return
			}
			reply := prefix + string(buf[:n]) + " from " + from.String()
			if _, err := pc.WriteTo([]byte(reply), from); err != nil {
				slog.Debug("testbed: udp echo reply", "to", from, "err", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = pc.Close()
			<-done
		})
	}
}
