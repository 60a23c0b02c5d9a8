package checker

import (
	"fmt"
	"net/netip"
	"strings"

	"uvs/healthcheck"
	"uvs/keepalived"
	"uvs/service"
)

// virtual is a virtual_server block as the checker runs it.
type virtual struct {
	vs   *keepalived.VirtualServer
	id   string        // what keeps it the same across a reload
	keys []service.Key // the services it stands for (several for a group)
	svcs []*service.Service
	// sorry is the sorry server per key, nil when there is none.
	sorry []*service.Dest
	reals []*member

	quorumUp   bool
	transUp    uint64 // quorum transitions
	transDown  uint64
	liveWeight int
}

// member is a real_server of a virtual server.
type member struct {
	v      *virtual
	rs     *keepalived.RealServer
	dests  []*service.Dest // per key of v, at the configured weight
	target healthcheck.Target
	specs  []healthcheck.Spec
	start  bool // up at start

	up     bool
	weight int // misc_dynamic's weight while up; -1 the configured one
}

// weightNow is the weight r serves with while up.
func (r *member) weightNow() int {
	if r.weight >= 0 {
		return r.weight
	}
	return int(r.dests[0].Weight)
}

// vsID is a virtual server's identity (keepalived 2.0.19's ChangeLog: "A
// virtual server is identified by its IP address, protocol and port, or
// the firewall mark and address family"); a group's is its name and
// protocol.
func vsID(vs *keepalived.VirtualServer) string {
	switch {
	case vs.Group != "":
		return fmt.Sprintf("group %s proto %d", vs.Group, vs.Protocol)
	case vs.FWMark != 0:
		return fmt.Sprintf("fwmark %d ipv6 %v", vs.FWMark, vs.IPv6)
	}
	return fmt.Sprintf("%d %v", vs.Protocol, vs.Addr)
}

// build turns f into the virtual servers the checker runs, checking
// everything a table change could refuse; warnings are what the checker
// does not do of f.
func build(f *keepalived.File) (vss []*virtual, warnings []string, err error) {
	cfg, err := f.Config()
	if err != nil {
		return nil, nil, err
	}
	for _, vs := range f.VirtualServers {
		keys, err := f.Keys(vs)
		if err != nil {
			return nil, nil, err
		}
		v := &virtual{vs: vs, id: vsID(vs), keys: keys}
		for _, k := range keys {
			s := cfg.Service(k)
			if s == nil {
				return nil, nil, fmt.Errorf("%s: virtual_server %s: not in the table the file describes", vs.Pos, k)
			}
			opts := *s
			opts.Dests, opts.Stats = nil, nil
			v.svcs = append(v.svcs, &opts)
			if vs.Sorry != nil {
				d, err := keepalived.Dest(vs, k, vs.Sorry)
				if err != nil {
					return nil, nil, fmt.Errorf("sorry_server: %w", err)
				}
				v.sorry = append(v.sorry, d)
			}
		}
		for _, rs := range vs.Reals {
			r := &member{v: v, rs: rs, weight: -1}
			for _, k := range keys {
				d, err := keepalived.Dest(vs, k, rs)
				if err != nil {
					return nil, nil, err
				}
				r.dests = append(r.dests, d)
			}
			// One target per real server of a virtual server, as keepalived
			// checks it once whatever the group; the metrics name the
			// first service.
			r.target = healthcheck.Target{Service: keys[0], Addr: r.dests[0].Addr, Port: r.dests[0].Port}
			alpha := rs.Alpha
			for _, ch := range rs.Checkers {
				s, warn := spec(ch, r.dests[0].Port)
				for _, w := range warn {
					warnings = append(warnings, fmt.Sprintf("%s: %s: %s", ch.Pos, ch.Kind, w))
				}
				r.specs = append(r.specs, s)
				// A checker's own alpha starts it, and so its server, down.
				alpha = alpha || ch.Alpha
			}
			r.start = !alpha
			if alpha && len(rs.Checkers) == 0 {
				warnings = append(warnings, fmt.Sprintf("%s: real_server %s: alpha without checkers: it never comes up", rs.Pos, rs.Addr))
			}
			v.reals = append(v.reals, r)
		}
		vss = append(vss, v)
	}
	return vss, warnings, nil
}

// spec is the healthcheck.Spec of checker ch of a real server whose port
// in the first service is port (connect_port's default when the file gives
// the real server none, as for a group or fwmark service).
func spec(ch *keepalived.Checker, port uint16) (s healthcheck.Spec, warnings []string) {
	kind, ok := healthcheck.ParseKind(ch.Kind)
	if !ok {
		// The parser hands over only the kinds it handles.
		return healthcheck.Spec{}, []string{"not a checker kind the health checks run"}
	}
	s = healthcheck.Defaults(kind, ch.DelayLoop)
	s.ConnectTimeout = ch.ConnectTimeout
	s.Retry = ch.Retry
	s.DelayBeforeRetry = ch.DelayBeforeRetry
	s.Warmup = ch.Warmup
	s.DelayLoop = ch.DelayLoop
	s.BindTo = ch.BindTo
	if kind != healthcheck.MiscCheck {
		p := ch.ConnectPort
		if p == 0 {
			p = port
		}
		s.Addr = netip.AddrPortFrom(ch.ConnectIP, p)
		if p == 0 {
			warnings = append(warnings, "no port to check (give connect_port): it fails")
		}
	}
	if ch.BindPort != 0 {
		warnings = append(warnings, "bind_port ignored: the system chooses the source port")
	}
	for _, u := range ch.URLs {
		hu := healthcheck.URL{Path: u.Path, Digest: u.Digest, VirtualHost: u.VirtualHost}
		for _, c := range u.StatusCodes {
			hu.StatusCodes = append(hu.StatusCodes, healthcheck.StatusRange{Lo: c.Min, Hi: c.Max})
		}
		s.URLs = append(s.URLs, hu)
	}
	s.VirtualHost = ch.VirtualHost
	s.TLS = kind == healthcheck.SSLGet
	s.EnableSNI = ch.EnableSNI
	if kind == healthcheck.MiscCheck {
		s.MiscPath = ch.Misc.Command
		s.MiscTimeout = ch.MiscTimeout
		s.MiscDynamic = ch.MiscDynamic
		if ch.Misc.User != "" {
			warnings = append(warnings, "user ignored: MISC_CHECK runs as the director's user")
		}
	}
	if kind == healthcheck.DNSCheck {
		s.DNSType, s.DNSName = ch.DNSType, ch.DNSName
	}
	if err := s.Validate(); err != nil {
		warnings = append(warnings, fmt.Sprintf("it fails every attempt: %v", err))
	}
	return s, warnings
}

// serviceName names a service in logs: ipvsadm's selector, "-t 198.18.0.1:80".
func serviceName(keys []service.Key) string {
	if len(keys) == 1 {
		return keys[0].String()
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.String()
	}
	return strings.Join(names, ", ")
}
