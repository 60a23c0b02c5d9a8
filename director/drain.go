package director

import (
	"time"

	"uvs/conntrack"
	"uvs/service"
)

// natServer is a NAT real server as the host filters see it: where
// balanced replies come from.
type natServer struct {
	addr  conntrack.Addr
	port  uint16 // 0: any
	proto uint8
}

// drainingServer is a deleted NAT real server whose connections are still
// in the table. Its packets are dropped (counted as server_gone), as IPVS
// drops a deleted server's packets while its entries last; and its replies
// stay diverted from the kernel, which would otherwise forward them to the
// client untranslated, from the server's own address.
type drainingServer struct {
	natServer
	st *service.DestState
}

// drained reports whether the server has no connection left.
func (ds drainingServer) drained() bool {
	return ds.st.ActiveConns()+ds.st.InactConns() == 0
}

// drainList returns the servers to keep diverted with the table next: the
// ones already draining that still have connections, and the NAT servers
// next removes from the current table that have some. Called with d.mu
// held.
func (d *Director) drainList(next *service.Config) []drainingServer {
	var out []drainingServer
	for _, ds := range d.draining {
		if !ds.drained() {
			out = append(out, ds)
		}
	}
	removed := make(map[*service.DestState]bool)
	for _, st := range next.Removed(d.conf) {
		removed[st] = true
	}
	for _, sv := range d.conf.Services {
		for _, ds := range sv.Dests {
			if ds.Fwd != service.FwdMasq || !removed[ds.DestState] {
				continue
			}
			dr := drainingServer{natServer{conntrack.AddrFrom(ds.Addr), ds.Port, sv.Proto}, ds.DestState}
			if !dr.drained() {
				out = append(out, dr)
			}
		}
	}
	return out
}

// pruneDrained publishes the table again once a draining server has no
// connection left, so that its address stops being diverted.
func (d *Director) pruneDrained() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ds := range d.draining {
		if ds.drained() {
			if err := d.publishLocked(d.conf); err != nil {
				d.log.Warn("stop diverting a deleted server's replies", "err", err)
			}
			return
		}
	}
}

// goneServer is a deleted real server whose registry ID is still held.
type goneServer struct {
	st    *service.DestState
	since time.Time
}

// releaseGone frees the registry IDs of deleted servers that nothing refers
// to any more: no connection or template (their counts are exact), and
// deleted at least releaseAfter ago, longer than a worker keeps a copy of
// an entry. So the registry, and the snapshot's tables indexed by ID, stay
// the size of the servers that exist.
func (d *Director) releaseGone() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	keep := d.gone[:0]
	for _, g := range d.gone {
		st := g.st
		if st.ActiveConns()+st.InactConns()+st.PersistConns() == 0 && now.Sub(g.since) >= d.releaseAfter {
			d.reg.Release(st)
			continue
		}
		keep = append(keep, g)
	}
	clear(d.gone[len(keep):])
	d.gone = keep
}
