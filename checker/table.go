package checker

import (
	"fmt"
	"log/slog"
	"net/netip"

	"uvs/service"
)

// want is a server's place in a service: absent (nil), or present as d.
type want struct {
	addr netip.AddrPort
	d    *service.Dest
}

// desired returns what v's i-th service should hold of the servers the file
// names for it, in the file's order, the sorry server last:
//
//   - while the quorum is lost and there is a sorry server, the sorry
//     server at its weight and every real server out (at weight 0 with
//     inhibit_on_failure);
//   - otherwise each live real server at its weight (misc_dynamic's if one
//     is in force), each failed one out (at weight 0 with
//     inhibit_on_failure), and the sorry server out (at weight 0 with
//     sorry_server_inhibit).
//
// A sorry server that is also a real server is the sorry server while it
// serves as one, and the real server otherwise.
func desired(v *virtual, i int) []want {
	sorryServes := v.vs.Sorry != nil && !v.quorumUp
	var out []want
	var sorryAt netip.AddrPort
	if v.sorry != nil {
		sorryAt = v.sorry[i].AddrPort()
	}
	for _, r := range v.reals {
		d := r.dests[i]
		if sorryServes && d.AddrPort() == sorryAt {
			continue
		}
		w := want{addr: d.AddrPort()}
		switch {
		case r.up && !sorryServes:
			w.d = withWeight(d, r.weightNow())
		case r.rs.InhibitOnFailure:
			w.d = withWeight(d, 0)
		}
		out = append(out, w)
	}
	if v.sorry != nil {
		d := v.sorry[i]
		switch {
		case sorryServes:
			out = append(out, want{addr: sorryAt, d: withWeight(d, int(d.Weight))})
		case realAt(v, i, sorryAt):
			// The real server's state above stands.
		case v.vs.Sorry.InhibitOnFailure:
			out = append(out, want{addr: sorryAt, d: withWeight(d, 0)})
		default:
			out = append(out, want{addr: sorryAt})
		}
	}
	return out
}

func realAt(v *virtual, i int, at netip.AddrPort) bool {
	for _, r := range v.reals {
		if r.dests[i].AddrPort() == at {
			return true
		}
	}
	return false
}

func withWeight(d *service.Dest, w int) *service.Dest {
	c := *d
	c.DestState = nil
	c.Weight = int32(w)
	return &c
}

// syncVS makes the services of v in cfg hold its servers as desired says,
// touching no other server. A service of v that cfg lacks (deleted with
// ipvsadm) is skipped with a log line when log is not nil, and is an error
// otherwise.
func syncVS(cfg *service.Config, v *virtual, log *slog.Logger) error {
	for i, k := range v.keys {
		s := cfg.Service(k)
		if s == nil {
			if log == nil {
				return fmt.Errorf("service %s: %w", k, service.ErrNoService)
			}
			log.Warn("keepalived: service not in the table (deleted with ipvsadm?): the next reload adds it again", "service", k.String())
			continue
		}
		for _, w := range desired(v, i) {
			cur := s.Dest(w.addr.Addr(), w.addr.Port())
			var err error
			switch {
			case w.d == nil && cur != nil:
				err = cfg.DeleteDest(k, w.addr.Addr(), w.addr.Port())
			case w.d != nil && cur == nil:
				err = cfg.AddDest(k, w.d)
			case w.d != nil && !sameDest(cur, w.d):
				err = cfg.EditDest(k, w.d)
			}
			if err != nil {
				return fmt.Errorf("real server %s of %s: %w", w.addr, k, err)
			}
		}
	}
	return nil
}

// sameDest reports whether a and b have the same options.
func sameDest(a, b *service.Dest) bool {
	return a.Fwd == b.Fwd && a.Weight == b.Weight && a.UThresh == b.UThresh && a.LThresh == b.LThresh &&
		a.TunType == b.TunType && a.TunPort == b.TunPort && a.TunCsum == b.TunCsum
}

// sameService reports whether a and b have the same options (not looking
// at real servers or counters).
func sameService(a, b *service.Service) bool {
	return a.Key == b.Key && a.Scheduler == b.Scheduler && a.Flags == b.Flags && a.Persistent == b.Persistent &&
		a.Timeout == b.Timeout && a.Netmask == b.Netmask && a.OnePacket == b.OnePacket && a.PE == b.PE
}

// cloneService is a copy of s's options for AddService or EditService.
func cloneService(s *service.Service) *service.Service {
	c := *s
	c.Dests, c.Stats = nil, nil
	return &c
}
