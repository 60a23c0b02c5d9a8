package keepalived

import (
	"errors"
	"fmt"
	"math"
	"net/netip"

	"uvs/service"
)

// Keys returns the services vs stands for: one, or for a group one per
// address of its ranges and one per fwmark, in the group's order.
func (f *File) Keys(vs *VirtualServer) ([]service.Key, error) {
	switch {
	case vs.Group != "":
		g := f.Groups[vs.Group]
		if g == nil {
			return nil, errorf(vs.Pos, "virtual_server group %s: no virtual_server_group %s", vs.Group, vs.Group)
		}
		var keys []service.Key
		for _, m := range g.Members {
			if m.FWMark != 0 {
				v6 := m.Family == "inet6" || m.Family == "" && vs.IPv6
				keys = append(keys, service.Key{FWMark: m.FWMark, V6: v6})
				continue
			}
			if !m.First.IsValid() || m.First.Is4() != m.Last.Is4() || m.Last.Less(m.First) {
				return nil, errorf(m.Pos, "virtual_server_group %s: %v-%v is not an address range", g.Name, m.First, m.Last)
			}
			for a, n := m.First, 1; ; a, n = a.Next(), n+1 {
				if n > maxRange {
					return nil, errorf(m.Pos, "virtual_server_group %s: %v-%v is more than %d addresses", g.Name, m.First, m.Last, maxRange)
				}
				keys = append(keys, service.Key{Proto: vs.Protocol, Addr: a, Port: m.Port})
				if a == m.Last {
					break
				}
			}
		}
		return keys, nil
	case vs.FWMark != 0:
		return []service.Key{{FWMark: vs.FWMark, V6: vs.IPv6}}, nil
	case vs.Addr.IsValid():
		return []service.Key{{Proto: vs.Protocol, Addr: vs.Addr.Addr(), Port: vs.Addr.Port()}}, nil
	}
	return nil, errorf(vs.Pos, "virtual_server: no address, fwmark or group")
}

// Config returns the rule table f describes, as ipvsadm would build it: a
// service per key of every virtual server, each with every real server at
// its configured weight (health checks decide later who stays). Sorry
// servers are not in it. What ipvsadm or the kernel would refuse is an
// error naming the line.
func (f *File) Config() (*service.Config, error) {
	cfg := service.NewConfig()
	where := map[service.Key]Pos{}
	for _, vs := range f.VirtualServers {
		keys, err := f.Keys(vs)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if err := addService(cfg, vs, k, where); err != nil {
				return nil, err
			}
		}
	}
	return cfg, nil
}

// addService adds the service key k of vs and its real servers.
func addService(cfg *service.Config, vs *VirtualServer, k service.Key, where map[service.Key]Pos) error {
	name := keyName(k)
	if at, ok := where[k]; ok {
		return errorf(vs.Pos, "virtual_server: %s is already a service (%s)", name, at)
	}
	where[k] = vs.Pos
	// ipvsadm's own checks (IPVS.md, "ipvsadm commands").
	switch {
	case !validSched(vs.Sched):
		return errorf(vs.Pos, "virtual_server %s: unknown scheduler %q", name, vs.Sched)
	case !k.IsFWMark() && k.Proto != service.TCP && k.Proto != service.UDP:
		return errorf(vs.Pos, "virtual_server %s: protocol %d is not TCP or UDP", name, k.Proto)
	case !k.IsFWMark() && k.Port == 0 && !vs.Persistent:
		return errorf(vs.Pos, "virtual_server %s: port 0 is only for persistent services", name)
	case vs.OnePacket && !k.IsFWMark() && k.Proto != service.UDP:
		return errorf(vs.Pos, "virtual_server %s: ops is only for UDP and fwmark services", name)
	case vs.Persistent && (vs.Timeout < 1e9 || vs.Timeout > 2678400e9):
		return errorf(vs.Pos, "virtual_server %s: persistence_timeout %v is not from 1 s to 31 days", name, vs.Timeout)
	}
	s := &service.Service{
		Key:        k,
		Scheduler:  vs.Sched,
		Flags:      vs.SchedFlags,
		Persistent: vs.Persistent,
		OnePacket:  vs.OnePacket,
		PE:         vs.PE,
	}
	if s.Persistent {
		s.Timeout = vs.Timeout
	}
	s.Netmask = s.DefaultNetmask()
	if vs.Granularity >= 0 {
		// The granularity was read for the virtual server's family.
		if k.Is6() != vs.IPv6 || k.Is6() && vs.Granularity > 128 {
			return errorf(vs.Pos, "virtual_server %s: persistence_granularity is for %s services", name, familyName(vs.IPv6))
		}
		s.Netmask = vs.Granularity
	}
	if err := cfg.AddService(s); err != nil {
		return errorf(vs.Pos, "virtual_server %s: %v", name, err)
	}
	for _, rs := range vs.Reals {
		d, err := dest(vs, k, rs)
		if err != nil {
			return err
		}
		if err := cfg.AddDest(k, d); err != nil {
			if errors.Is(err, service.ErrDestExists) {
				return errorf(rs.Pos, "real_server %s: already a real server of %s", d.AddrPort(), name)
			}
			return errorf(rs.Pos, "real_server %s of %s: %v", d.AddrPort(), name, err)
		}
	}
	return nil
}

// Dest returns real server rs of vs, or its sorry server, as service k (one
// of f.Keys(vs)) holds it: its port resolved as ipvsadm resolves it, its
// configured weight. What ipvsadm or the kernel would refuse is an error
// naming the line.
func Dest(vs *VirtualServer, k service.Key, rs *RealServer) (*service.Dest, error) {
	return dest(vs, k, rs)
}

// dest is real server rs of service k.
func dest(vs *VirtualServer, k service.Key, rs *RealServer) (*service.Dest, error) {
	addr, port := rs.Addr.Addr(), rs.Addr.Port()
	// ipvsadm: a missing port is the service's; DR and tunnel servers of a
	// non-fwmark service have the service's port. A fwmark server's port 0
	// means "the packet's own destination port".
	fixed := rs.Method == service.FwdRoute || rs.Method == service.FwdTunnel
	if !k.IsFWMark() && (port == 0 || fixed) {
		port = k.Port
	}
	d := &service.Dest{
		Addr:    addr,
		Port:    port,
		Fwd:     rs.Method,
		UThresh: rs.UThreshold,
		LThresh: rs.LThreshold,
	}
	switch {
	case rs.Method != service.FwdMasq && rs.Method != service.FwdRoute && rs.Method != service.FwdTunnel:
		return nil, errorf(rs.Pos, "real_server %s: forwarding method %v is not NAT, DR or TUN", addr, rs.Method)
	case addr.Is6() != k.Is6() && rs.Method != service.FwdTunnel:
		// keepalived.conf(5) and ipvsadm: "Different address family is
		// allowed only for tunneling servers".
		return nil, errorf(rs.Pos, "real_server %s: %s server of the %s service %s; only TUN servers may differ in address family", addr, familyName(addr.Is6()), familyName(k.Is6()), keyName(k))
	case rs.Weight < 0 || rs.Weight > math.MaxInt32:
		return nil, errorf(rs.Pos, "real_server %s: weight %d is not from 0 to %d", addr, rs.Weight, math.MaxInt32)
	case rs.LThreshold > rs.UThreshold:
		// The kernel refuses it (ERANGE), also with no uthreshold; keepalived
		// does not check.
		return nil, errorf(rs.Pos, "real_server %s: lthreshold %d is above uthreshold %d", addr, rs.LThreshold, rs.UThreshold)
	}
	d.Weight = int32(rs.Weight)
	if rs.Method == service.FwdTunnel {
		t := rs.Tunnel
		if t.Type == "" {
			t.Type = "ipip"
		}
		switch {
		case t.Type != "ipip" && t.Type != "gue" && t.Type != "gre":
			return nil, errorf(rs.Pos, "real_server %s: tunnel type %q is not ipip, gue or gre", addr, t.Type)
		case t.Type == "gue" && t.Port == 0:
			return nil, errorf(rs.Pos, "real_server %s: a gue tunnel needs a port", addr)
		case t.Type != "gue" && t.Port != 0:
			return nil, errorf(rs.Pos, "real_server %s: only a gue tunnel has a port", addr)
		case t.Type == "ipip" && t.Csum != "",
			t.Type == "gre" && t.Csum == "remcsum",
			t.Csum != "" && t.Csum != "nocsum" && t.Csum != "csum" && t.Csum != "remcsum":
			return nil, errorf(rs.Pos, "real_server %s: checksum option %q is not for a %s tunnel", addr, t.Csum, t.Type)
		}
		if t.Type != "ipip" && t.Csum == "" {
			t.Csum = "nocsum"
		}
		d.TunType, d.TunPort, d.TunCsum = t.Type, t.Port, t.Csum
	}
	return d, nil
}

// keyName names a service in messages: "TCP 198.18.0.1:80", "FWM 1 IPv6".
func keyName(k service.Key) string {
	if k.IsFWMark() {
		if k.V6 {
			return fmt.Sprintf("FWM %d IPv6", k.FWMark)
		}
		return fmt.Sprintf("FWM %d", k.FWMark)
	}
	return k.ProtoName() + " " + netip.AddrPortFrom(k.Addr, k.Port).String()
}
