//lint:file-ignore ST1005 these errors are printed verbatim as ipvsadm prints the kernel's answers, capitalised as it prints them

package main

import (
	"errors"

	"uvs/director"
	"uvs/ipvsadm"
	"uvs/syncd"
)

// syncState is the director with its connection sync daemons, as the
// ipvsadm command sees it (ipvsadm.Syncer): --start-daemon, --stop-daemon
// and -L --daemon.
type syncState struct {
	*director.Director
	sync *syncd.Manager
}

// StartDaemon starts a master or backup daemon.
func (s *syncState) StartDaemon(d ipvsadm.Daemon) error {
	c := syncd.Config{Master: d.Master, Interface: d.Interface, SyncID: uint8(d.SyncID), MaxLen: d.MaxLen,
		Group: d.Group, Port: uint16(d.Port), TTL: uint8(d.TTL)}
	return ipvsadmError(s.sync.Start(c))
}

// StopDaemon stops one.
func (s *syncState) StopDaemon(master bool) error {
	return ipvsadmError(s.sync.Stop(master))
}

// Daemons lists them as the kernel reports them, defaults filled in.
func (s *syncState) Daemons() []ipvsadm.Daemon {
	var out []ipvsadm.Daemon
	for _, c := range s.sync.Daemons() {
		out = append(out, ipvsadm.Daemon{Master: c.Master, Interface: c.Interface, SyncID: int(c.SyncID),
			MaxLen: c.MaxLen, Group: c.Group, Port: int(c.Port), TTL: int(c.TTL)})
	}
	return out
}

// ipvsadmError words the daemon's refusals as ipvsadm 1.31 prints the
// kernel's (measured on Linux 6.1: ENODEV, EEXIST, ESRCH).
func ipvsadmError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syncd.ErrNoDevice):
		return errors.New("No such device")
	case errors.Is(err, syncd.ErrRunning):
		return errors.New("Daemon has already run")
	case errors.Is(err, syncd.ErrNotRunning):
		return errors.New("No daemon is running")
	}
	return err
}
