package keepalived

import (
	"fmt"
	"net/netip"
	"strings"

	"uvs/service"
)

// finish applies defaults and inheritance to a virtual server read whole,
// and makes the corrections keepalived makes, each with a warning.
func (p *parser) finish(d *vsDraft) error {
	vs := d.vs
	var g *Group
	if vs.Group != "" {
		if g = p.f.Groups[vs.Group]; g == nil {
			return errorf(vs.Pos, "virtual_server group %s: no virtual_server_group %s", vs.Group, vs.Group)
		}
	}
	hasAddr := vs.Addr.IsValid()
	if g != nil {
		for _, m := range g.Members {
			hasAddr = hasAddr || m.FWMark == 0
		}
	}

	switch {
	case vs.FWMark != 0 && d.protocol.ok:
		p.warn(d.protoPos, "protocol: ignored for a fwmark service")
	case hasAddr && !d.protocol.ok:
		// keepalived --config-test: "no protocol set - defaulting to UDP"
		// (the kernel's own default); the page names no default.
		p.warn(vs.Pos, "virtual_server: no protocol given, UDP as keepalived defaults")
		vs.Protocol = service.UDP
	case hasAddr:
		vs.Protocol = d.protocol.v
	}

	// keepalived --config-test: "no scheduler set, setting default 'wlc'".
	vs.Sched = pick("wlc", d.sched)
	for _, f := range []string{"sh-port", "sh-fallback", "mh-port", "mh-fallback"} {
		// keepalived --config-test: "sh-port only applies to sh scheduler".
		if pos, ok := d.flagPos[f]; ok && vs.Sched != f[:2] {
			return errorf(pos, "%s: only for the %s scheduler, not %s", f, f[:2], vs.Sched)
		}
	}
	vs.SchedFlags = modelFlags(vs.Sched, d.schedBits)

	// keepalived.conf(5): lvs_method "default is NAT"; a real server's
	// default is its virtual server's, as is the sorry server's.
	m := pick(method{fwd: service.FwdMasq}, d.method)
	vs.Method, vs.Tunnel = m.fwd, m.tun
	vs.DelayLoop = pick(defaultDelayLoop, d.c.delayLoop)
	vs.InhibitOnFailure = pick(false, d.c.inhibit)
	vs.Alpha = pick(false, d.c.alpha)
	vs.VirtualHost = pick("", d.c.virtualHost)
	if vs.Quorum == 0 {
		vs.Quorum = 1 // quorum: "Defaults to 1"
	}
	for _, r := range d.reals {
		rm := pick(m, r.method)
		r.rs.Method, r.rs.Tunnel = rm.fwd, rm.tun
		r.rs.InhibitOnFailure = pick(false, r.c.inhibit, d.c.inhibit)
		r.rs.Alpha = pick(false, r.c.alpha, d.c.alpha)
		vs.Reals = append(vs.Reals, r.rs)
	}
	if d.sorry != nil {
		sm := pick(m, d.sorryMethod)
		d.sorry.rs.Method, d.sorry.rs.Tunnel = sm.fwd, sm.tun
		d.sorry.rs.InhibitOnFailure = pick(false, d.sorryInhib) // sorry_server_inhibit
		vs.Sorry = d.sorry.rs
	} else if d.sorryInhib.ok || d.sorryMethod.ok {
		p.warn(vs.Pos, "virtual_server: sorry_server_inhibit or sorry_server_lvs_method without sorry_server ignored")
	}

	if err := p.family(d, g); err != nil {
		return err
	}
	p.ports(d, g)

	for _, r := range d.reals {
		for _, c := range r.checkers {
			if err := c.resolve(&r.c, &d.c, r.rs); err != nil {
				return err
			}
			r.rs.Checkers = append(r.rs.Checkers, c.ch)
		}
	}

	// keepalived --config-test: "zero port only valid for persistent
	// services - setting" (persistence with its default timeout); also for
	// a group's addresses without a port.
	zero := vs.Addr.IsValid() && vs.Addr.Port() == 0
	if g != nil {
		for _, m := range g.Members {
			zero = zero || m.FWMark == 0 && m.Port == 0
		}
	}
	if zero && !vs.Persistent {
		p.warn(vs.Pos, "virtual_server: port 0 is only for persistent services: persistence_timeout 360 set, as keepalived does")
		vs.Persistent, vs.Timeout = true, service.DefaultPersistTimeout
	}
	// keepalived --config-test: "one packet scheduling requires UDP -
	// resetting" (fwmark services may have it).
	if vs.OnePacket && hasAddr && vs.Protocol != service.UDP {
		p.warn(vs.Pos, "ops: only for UDP and fwmark services, ignored")
		vs.OnePacket = false
	}
	// keepalived --config-test: "quorum 2 ... exceeds total weight of real
	// servers 1, reducing quorum to 1", then "hysteresis 2 >= quorum 1;
	// setting hysteresis to 0".
	total := 0
	for _, r := range vs.Reals {
		total += r.Weight
	}
	if total > 0 && vs.Quorum > total {
		p.warn(vs.Pos, fmt.Sprintf("quorum %d is above the real servers' total weight %d: %d, as keepalived does", vs.Quorum, total, total))
		vs.Quorum = total
	}
	if vs.Hysteresis >= vs.Quorum && vs.Hysteresis > 0 {
		p.warn(vs.Pos, fmt.Sprintf("hysteresis %d is not below quorum %d: 0, as keepalived does", vs.Hysteresis, vs.Quorum))
		vs.Hysteresis = 0
	}
	return nil
}

// family works out a fwmark or group service's address family and reads
// persistence_granularity for it. keepalived.conf(5): non-tunnelled real
// and sorry servers all have the virtual server's family; a fwmark
// service's is ip_family if given, else (if all servers are tunnelled)
// theirs when they agree, else IPv4. keepalived --config-test: a
// granularity without a dot makes a fwmark service IPv6. A group's family
// (for its fwmarks and the granularity) is, failing those, its addresses'
// when they agree.
func (p *parser) family(d *vsDraft, g *Group) error {
	vs := d.vs
	var plain, tun opt[bool] // families of the non-tunnelled and the tunnelled servers
	var plainAt *RealServer
	tunMixed := false
	servers := d.reals
	if d.sorry != nil {
		servers = append(servers[:len(servers):len(servers)], d.sorry)
	}
	for _, r := range servers {
		v6 := r.rs.Addr.Addr().Is6()
		if r.rs.Method == service.FwdTunnel {
			tunMixed = tunMixed || tun.ok && tun.v != v6
			tun.set(v6)
			continue
		}
		if plain.ok && plain.v != v6 {
			return errorf(r.rs.Pos, "%s: %s differs in address family from %s (%s); only TUN servers may", serverKind(d, r), r.rs.Addr.Addr(), plainAt.Addr.Addr(), plainAt.Pos)
		}
		plain.set(v6)
		plainAt = r.rs
	}
	switch {
	case vs.Addr.IsValid():
		vs.IPv6 = vs.Addr.Addr().Is6()
		if d.ipFamily.ok && (d.ipFamily.v == "inet6") != vs.IPv6 {
			return errorf(vs.Pos, "ip_family %s conflicts with the address %s", d.ipFamily.v, vs.Addr.Addr())
		}
	case d.ipFamily.ok:
		vs.IPv6 = d.ipFamily.v == "inet6"
	case d.granularity.ok && vs.FWMark != 0:
		vs.IPv6 = !strings.Contains(d.granularity.v, ".")
	case plain.ok:
		vs.IPv6 = plain.v
	case g != nil && groupFamily(g) != "":
		vs.IPv6 = groupFamily(g) == "inet6"
	case tun.ok && !tunMixed:
		vs.IPv6 = tun.v
	}
	if plain.ok && plain.v != vs.IPv6 && vs.Group == "" {
		return errorf(plainAt.Pos, "%s: %s differs in address family from the virtual server (%s); only TUN servers may", serverKindRS(d, plainAt), plainAt.Addr.Addr(), familyName(vs.IPv6))
	}

	if !d.granularity.ok {
		return nil
	}
	v := d.granularity.v
	if vs.IPv6 {
		// keepalived --config-test: "outside range [1, 128]".
		n, err := parseUint(stmt{key: token{text: "persistence_granularity", pos: d.granPos}}, v, 1, 128)
		if err != nil {
			return errorf(d.granPos, "persistence_granularity: %q is not an IPv6 prefix length from 1 to 128", v)
		}
		vs.Granularity = int(n)
	} else {
		mask, ok := inetAton(v)
		if !ok {
			return errorf(d.granPos, "persistence_granularity: %q is not an IPv4 netmask", v)
		}
		vs.Granularity = service.Netmask4(mask)
	}
	// keepalived's ChangeLog: "Set persistence_timeout default if
	// granularity specified."
	if !vs.Persistent {
		vs.Persistent, vs.Timeout = true, service.DefaultPersistTimeout
	}
	return nil
}

// ports sets the real servers' ports as keepalived and ipvsadm do for a
// service with an address: a missing port is the service's, and DR and TUN
// cannot change the port (IPVS.md; keepalived --config-test: "ports don't
// match - resetting"). For a group, Config does it per member; the
// mismatches are reported here.
func (p *parser) ports(d *vsDraft, g *Group) {
	vs := d.vs
	servers := d.reals
	if d.sorry != nil {
		servers = append(servers[:len(servers):len(servers)], d.sorry)
	}
	for _, r := range servers {
		rs := r.rs
		fixed := rs.Method == service.FwdRoute || rs.Method == service.FwdTunnel
		switch {
		case vs.Addr.IsValid():
			port := vs.Addr.Port()
			if r.port && fixed && rs.Addr.Port() != port {
				p.warn(rs.Pos, fmt.Sprintf("%s: port %d differs from the service's %d: a %s server has the service's port", serverKindRS(d, rs), rs.Addr.Port(), port, fwdName(rs.Method)))
			}
			if !r.port || fixed {
				rs.Addr = netip.AddrPortFrom(rs.Addr.Addr(), port)
			}
		case g != nil && r.port && fixed:
			for _, m := range g.Members {
				if m.FWMark == 0 && m.Port != 0 && m.Port != rs.Addr.Port() {
					p.warn(rs.Pos, fmt.Sprintf("%s: port %d differs from the service's %d (%s): a %s server has the service's port", serverKindRS(d, rs), rs.Addr.Port(), m.Port, m.Pos, fwdName(rs.Method)))
				}
			}
		}
	}
}

// groupFamily is the family of g's addresses, "" if it has none or both.
func groupFamily(g *Group) string {
	fam := ""
	for _, m := range g.Members {
		if m.FWMark != 0 {
			continue
		}
		f := "inet"
		if m.First.Is6() {
			f = "inet6"
		}
		if fam != "" && fam != f {
			return ""
		}
		fam = f
	}
	return fam
}

func serverKind(d *vsDraft, r *rsDraft) string { return serverKindRS(d, r.rs) }

func serverKindRS(d *vsDraft, rs *RealServer) string {
	if d.sorry != nil && d.sorry.rs == rs {
		return "sorry_server"
	}
	return "real_server"
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// fwdName is the lvs_method name of f.
func fwdName(f service.Fwd) string {
	switch f {
	case service.FwdRoute:
		return "DR"
	case service.FwdTunnel:
		return "TUN"
	}
	return "NAT"
}

// modelFlags turns ipvsadm's three scheduler flag bits into the service
// model's flags, as the ipvsadm package does: the first is the scheduler's
// fallback flag, the second its port flag, the third (which neither sh nor
// mh uses) the other one's fallback.
func modelFlags(sched string, b uint8) service.SchedFlags {
	fb, port, third := service.SchedSHFallback, service.SchedSHPort, service.SchedMHFallback
	if sched == "mh" {
		fb, port, third = service.SchedMHFallback, service.SchedMHPort, service.SchedSHFallback
	}
	var f service.SchedFlags
	if b&1 != 0 {
		f |= fb
	}
	if b&2 != 0 {
		f |= port
	}
	if b&4 != 0 {
		f |= third
	}
	return f
}
