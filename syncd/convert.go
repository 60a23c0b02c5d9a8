package syncd

import (
	"time"

	"uvs/conntrack"
	"uvs/director"
	"uvs/ipvssync"
	"uvs/service"
)

// toWire fills w with the entry IPVS would send for c: its flags are the
// forwarding method, the template flag, and the inactive flag for
// everything but an established TCP connection (IPVS's counting); the
// state is IPVS's number; the timeout whole seconds (at least 1: 0 would
// mean "your own").
func toWire(c *director.SyncConn, w *ipvssync.Conn) {
	*w = ipvssync.Conn{
		V6: c.Client.Is6(), Proto: c.Proto, CPort: c.CPort, VPort: c.VPort, DPort: c.DPort,
		FWMark: c.FWMark, CAddr: c.Client, VAddr: c.Virtual, DAddr: c.Dest, Resync: c.Resync,
	}
	switch c.Fwd {
	case service.FwdRoute:
		w.Flags = ipvssync.FwdRoute
	case service.FwdTunnel:
		w.Flags = ipvssync.FwdTunnel
	}
	switch {
	case c.Template:
		w.Flags |= ipvssync.FlagTemplate | ipvssync.FlagInactive
		if c.State == conntrack.StateAssured {
			w.State = 1
		}
	case c.Proto == service.TCP:
		w.State = uint16(c.State)
		if c.State != conntrack.StateEstablished {
			w.Flags |= ipvssync.FlagInactive
		}
	default:
		w.Flags |= ipvssync.FlagInactive // UDP: state 0, always inactive
	}
	secs := (c.Timeout + time.Second/2) / time.Second
	w.Timeout = uint32(min(max(secs, 1), 1<<31))
}

// numTCPStates is the number of IPVS's TCP states (NONE … SYNACK).
const numTCPStates = 11

// fromWire fills c with what entry w says, or returns why a backup skips
// it ("" for none).
func fromWire(w *ipvssync.Conn, c *director.SyncConn) string {
	tmpl := w.Flags&ipvssync.FlagTemplate != 0
	switch {
	case len(w.PEData) > 0:
		return DropPE // no persistence engine here (IPVS skips what it has no engine for)
	case tmpl && w.Proto == 0 && w.FWMark == 0:
		return DropProtocol
	case w.Proto != service.TCP && w.Proto != service.UDP && !(tmpl && w.Proto == 0):
		return DropProtocol
	case !tmpl && w.Proto == service.TCP && w.State >= numTCPStates,
		!tmpl && w.Proto == service.UDP && w.State != 0:
		return DropState
	}
	*c = director.SyncConn{
		Proto: w.Proto, Template: tmpl, Client: w.CAddr.Unmap(), CPort: w.CPort,
		Virtual: w.VAddr.Unmap(), VPort: w.VPort, Dest: w.DAddr.Unmap(), DPort: w.DPort,
		FWMark: w.FWMark, Timeout: time.Duration(w.Timeout) * time.Second, Resync: w.Resync,
	}
	switch w.Flags & ipvssync.FwdMask {
	case ipvssync.FwdRoute:
		c.Fwd = service.FwdRoute
	case ipvssync.FwdTunnel:
		c.Fwd = service.FwdTunnel
	}
	switch {
	case tmpl && w.State >= 1:
		c.State = conntrack.StateAssured
	case tmpl:
		c.State = conntrack.StateNone
	case w.Proto == service.TCP:
		c.State = conntrack.State(w.State)
	default:
		c.State = conntrack.StateUDP
	}
	return ""
}
