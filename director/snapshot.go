package director

import (
	"fmt"
	"net/netip"

	"uvs/conntrack"
	"uvs/scheduler"
	"uvs/service"
)

// snapshot is the packet workers' read-only view of the rule table. It is
// built by the control plane and swapped in whole; workers never lock.
type snapshot struct {
	conf  *service.Config
	byKey map[svcKey]*vsvc
	// byMark are the firewall-mark services (marks.go).
	byMark map[markKey]*vsvc
	// marks says, by family (0 IPv4, 1 IPv6), whether any firewall-mark
	// service exists: then the AF_PACKET director takes new connections
	// from the kernel's copy, after the host's mark rules ran (marks.go).
	marks [2]bool
	all   []*vsvc // every service, in the configuration's order
	byID  []*vsvc // by service ID (conntrack.Conn.Svc)
	// vips are the virtual addresses, answered for in ARP/NDP.
	vips map[conntrack.Addr]bool
	// natRS are the NAT real servers' addresses, whose fragments the
	// workers reassemble with those to a VIP.
	natRS map[conntrack.Addr]bool
	// natPorts are the NAT real servers' addresses, ports (0: any) and
	// protocols: where balanced replies come from.
	natPorts map[svcKey]bool
	// nat lists the same servers, for the host's filters and the fanout
	// program, with the deleted ones whose connections remain (drain.go).
	nat []natServer
	// nh is each real server's next hop by DestState ID (AF_PACKET only).
	nh []*nexthop
	// tunnels holds each tunnelling real server's encapsulation by DestState ID.
	tunnels []*tunnelDest
	// unrouted are the real servers with no route (routes.go), one entry
	// per address.
	unrouted []unroutedDest
	// svcFreeLeft is how many of Director.svcFree compile did not take.
	svcFreeLeft int
}

type svcKey struct {
	addr  conntrack.Addr
	port  uint16
	proto uint8
}

// markKey is a firewall-mark service's key: IPv4 and IPv6 services of one
// mark are two services, as in IPVS.
type markKey struct {
	mark uint32
	v6   bool
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// vsvc is a virtual service as the workers use it.
type vsvc struct {
	id    uint32
	mark  bool // a firewall-mark service
	svc   *service.Service
	sched scheduler.Scheduler
	dests []*service.Dest // by position, for templates
}

func (s *snapshot) service(proto uint8, addr conntrack.Addr, port uint16) *vsvc {
	if v := s.byKey[svcKey{addr, port, proto}]; v != nil {
		return v
	}
	// A port-zero (persistent) service takes every port of its address.
	return s.byKey[svcKey{addr, 0, proto}]
}

// natReply reports whether a packet of proto from addr and port may be a
// balanced reply: from a NAT real server's address and port.
func (s *snapshot) natReply(proto uint8, addr conntrack.Addr, port uint16) bool {
	return s.natPorts[svcKey{addr, port, proto}] || s.natPorts[svcKey{addr, 0, proto}]
}

// addNAT records a NAT real server (s.natRS, s.natPorts, s.nat).
func (s *snapshot) addNAT(n natServer) {
	k := svcKey(n)
	if s.natPorts[k] {
		return
	}
	s.natRS[n.addr] = true
	s.natPorts[k] = true
	s.nat = append(s.nat, n)
}

func (s *snapshot) svc(id uint32) *vsvc {
	if int(id) < len(s.byID) {
		return s.byID[id]
	}
	return nil
}

// compile checks c for what this director supports and builds its snapshot.
// Called with d.mu held.
func (d *Director) compile(c *service.Config, drain []drainingServer) (*snapshot, error) {
	s := &snapshot{
		conf:   c,
		byKey:  make(map[svcKey]*vsvc),
		byMark: make(map[markKey]*vsvc),
		vips:   make(map[conntrack.Addr]bool),
	}
	maxID := uint32(0)
	s.svcFreeLeft = len(d.svcFree)
	for _, sv := range c.Services {
		if err := d.check(sv); err != nil {
			return nil, err
		}
		se, ok := d.scheds[sv.Stats]
		if !ok || se.name != sv.Scheduler || se.flags != sv.Flags {
			sch, err := scheduler.New(sv.Scheduler, sv.Flags, nil)
			if err != nil {
				return nil, err
			}
			se = schedEntry{sv.Scheduler, sv.Flags, sch}
		}
		id, ok := d.svcID[sv.Stats]
		if !ok {
			// A deleted service's ID first: taken from svcFree by adopt,
			// once the snapshot is published.
			if s.svcFreeLeft > 0 {
				s.svcFreeLeft--
				id = d.svcFree[s.svcFreeLeft]
			} else {
				d.nextS++
				id = d.nextS
			}
		}
		v := &vsvc{id: id, svc: sv, sched: se.s, dests: sv.Dests, mark: sv.IsFWMark()}
		s.all = append(s.all, v)
		if v.mark {
			s.byMark[markKey{sv.FWMark, sv.V6}] = v
			s.marks[b2i(sv.V6)] = true
		} else {
			a := conntrack.AddrFrom(sv.Addr)
			s.byKey[svcKey{a, sv.Port, sv.Proto}] = v
			s.vips[a] = true
		}
		maxID = max(maxID, id)
	}
	s.byID = make([]*vsvc, maxID+1)
	for _, v := range s.all {
		s.byID[v.id] = v
	}
	s.natRS = make(map[conntrack.Addr]bool)
	s.natPorts = make(map[svcKey]bool)
	for _, v := range s.all {
		// A firewall-mark service takes TCP and UDP alike.
		protos := []uint8{v.svc.Proto}
		if v.mark {
			protos = []uint8{service.TCP, service.UDP}
		}
		for _, ds := range v.svc.Dests {
			d.reg.Register(ds.DestState) // next hops are kept by ID
			if ds.Fwd == service.FwdTunnel {
				td, err := d.tunnelFor(ds, s.vips)
				if err != nil && isConfigError(err) {
					return nil, fmt.Errorf("real server %s: %w", ds.Addr, err)
				}
				if err != nil {
					s.unrouted = append(s.unrouted, unroutedDest{ds.Addr, err})
					continue
				}
				id := ds.ID()
				for int(id) >= len(s.tunnels) {
					s.tunnels = append(s.tunnels, nil)
				}
				s.tunnels[id] = td
			}
			if ds.Fwd == service.FwdMasq {
				for _, proto := range protos {
					s.addNAT(natServer{conntrack.AddrFrom(ds.Addr), ds.Port, proto})
				}
			}
		}
	}
	for _, ds := range drain {
		s.addNAT(ds.natServer)
	}
	return s, nil
}

// adopt records what a published snapshot uses: service IDs, schedulers
// (handed their new server lists only now, so a refused change leaves them
// alone), thresholds and rate tracking. Called with d.mu held.
func (d *Director) adopt(s *snapshot) {
	d.svcFree = d.svcFree[:s.svcFreeLeft]
	for _, v := range s.all {
		sv := v.svc
		d.svcID[sv.Stats] = v.id
		d.scheds[sv.Stats] = schedEntry{sv.Scheduler, sv.Flags, v.sched}
		v.sched.Update(sv.Dests)
		d.est.Track(sv.Stats)
		for _, ds := range sv.Dests {
			ds.SetThresholds(ds.UThresh, ds.LThresh)
			d.est.Track(&ds.Stats)
		}
	}
}

// check refuses what this director cannot do yet, with a message that
// says so, rather than accepting rules it would not honour.
func (d *Director) check(sv *service.Service) error {
	if sv.PE != "" {
		return fmt.Errorf("persistence engine %q: %w", sv.PE, ErrUnsupported)
	}
	for _, ds := range sv.Dests {
		switch ds.Fwd {
		case service.FwdMasq:
		case service.FwdRoute:
		case service.FwdTunnel:
			// IPVS allows the other family for tunnelling servers only.
			continue
		default:
			return fmt.Errorf("real server %s: forwarding method %s: %w", netip.AddrPortFrom(ds.Addr, ds.Port), ds.Fwd, ErrUnsupported)
		}
		if ds.Addr.Is4() == sv.Key.Is6() {
			return fmt.Errorf("real server %s: address family differs from service %s", ds.Addr, sv.Key)
		}
	}
	return nil
}
