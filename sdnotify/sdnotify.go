// Package sdnotify tells systemd how a Type=notify service is doing: the
// sd_notify(3) protocol, one datagram of NAME=VALUE lines to the Unix
// socket named by $NOTIFY_SOCKET. Outside systemd (no $NOTIFY_SOCKET)
// every function does nothing and returns nil.
//
// The variable is read at every call, so that a test can change it; it is
// left in the environment (the director starts no children that could
// mistake it for theirs).
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Ready says that start-up, or a reload, is finished: READY=1.
func Ready() error { return Notify("READY=1") }

// Reloading says that the service reloads its configuration: RELOADING=1,
// with MONOTONIC_USEC, the time of CLOCK_MONOTONIC in microseconds, which
// systemd (Type=notify-reload, from version 253) uses to tell this reload
// from an earlier one. Ready ends the reload.
func Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sd_notify: clock: %w", err)
	}
	return Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

// Stopping says that the service is shutting down: STOPPING=1.
func Stopping() error { return Notify("STOPPING=1") }

// Status sets the one-line status that systemctl status shows: STATUS=s.
// Line breaks in s become spaces (a new line would start another
// assignment).
func Status(s string) error {
	return Notify("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// Notify sends state, newline-separated NAME=VALUE assignments, in one
// datagram to $NOTIFY_SOCKET; nil without the variable. A name starting
// with '@' is an abstract socket (its first byte NUL), as systemd means it.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	addr, err := socketAddr(name)
	if err != nil {
		return err
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// socketAddr turns $NOTIFY_SOCKET into an address: an absolute path, or
// '@' and an abstract name. (systemd 254 also passes vsock: addresses, to
// services in virtual machines; the director does not run as one.)
func socketAddr(name string) (*net.UnixAddr, error) {
	switch {
	case name[0] == '/':
		return &net.UnixAddr{Name: name, Net: "unixgram"}, nil
	case name[0] == '@' && len(name) > 1:
		// Go's runtime maps a leading '@' to the abstract namespace's NUL
		// itself; the NUL is written here so as not to depend on it.
		return &net.UnixAddr{Name: "\x00" + name[1:], Net: "unixgram"}, nil
	}
	return nil, fmt.Errorf("sd_notify: NOTIFY_SOCKET %q: want an absolute path or @name", name)
}
