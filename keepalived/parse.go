package keepalived

import (
	"fmt"
	"io/fs"
	"net/netip"
	"strings"

	"uvs/service"
)

// parser reads statements from the token stream. A statement is a keyword,
// its arguments up to the end of the line or a brace, and optionally a
// block in braces, which may open on the next line.
type parser struct {
	toks   []token
	i      int
	warns  []Warning
	once   map[string]bool // unknown keywords reported, by block and keyword
	f      *File
	vss    []*vsDraft
	params map[string]bool // parameters defined ($NAME=VALUE)
}

func parse(fsys fs.FS, name, show, root string) (*File, []Warning, error) {
	p := &parser{once: map[string]bool{}, f: &File{Groups: map[string]*Group{}}}
	l := &lexer{fsys: fsys, root: root, warn: p.warn, params: map[string]bool{}}
	if err := l.file(source{name: name, show: show}, nil, Pos{}); err != nil {
		return nil, nil, err
	}
	p.toks, p.params = l.toks, l.params
	if err := p.top(); err != nil {
		return nil, nil, err
	}
	for _, d := range p.vss {
		if err := p.finish(d); err != nil {
			return nil, nil, err
		}
		p.f.VirtualServers = append(p.f.VirtualServers, d.vs)
	}
	// Build the table once so that a File Parse returns always gives one:
	// what ipvsadm or the kernel would refuse is an error here, at its line.
	if _, err := p.f.Config(); err != nil {
		return nil, nil, err
	}
	return p.f, p.warns, nil
}

func (p *parser) warn(pos Pos, msg string) {
	p.warns = append(p.warns, Warning{Pos: pos, Msg: msg})
}

// stmt is one statement.
type stmt struct {
	key   token
	args  []token
	block bool // a '{' followed; the block's statements are next
}

func (s stmt) name() string { return s.key.text }
func (s stmt) pos() Pos     { return s.key.pos }

// next reads the next statement of the block opened by open, or at top
// level when open is nil. It returns false at the block's '}' (consumed)
// or at the end of the top level.
func (p *parser) next(open *stmt) (stmt, bool, error) {
	if p.i >= len(p.toks) {
		if open == nil {
			return stmt{}, false, nil
		}
		return stmt{}, false, errorf(open.pos(), "%s: '{' is not closed", open.name())
	}
	t := p.toks[p.i]
	switch {
	case t.isClose() && open == nil:
		return stmt{}, false, errorf(t.pos, "unexpected '}'")
	case t.isClose():
		p.i++
		return stmt{}, false, nil
	case t.isOpen():
		return stmt{}, false, errorf(t.pos, "unexpected '{'")
	}
	s := stmt{key: t}
	for p.i++; p.i < len(p.toks); p.i++ {
		a := p.toks[p.i]
		if a.first || a.isOpen() || a.isClose() {
			break
		}
		s.args = append(s.args, a)
	}
	if p.i < len(p.toks) && p.toks[p.i].isOpen() {
		s.block = true
		p.i++
	}
	return s, true, nil
}

// skip passes over the rest of s's block, nested blocks included.
func (p *parser) skip(s stmt) error {
	for depth := 1; depth > 0; p.i++ {
		if p.i >= len(p.toks) {
			return errorf(s.pos(), "%s: '{' is not closed", s.name())
		}
		switch t := p.toks[p.i]; {
		case t.first && conditional(t) && p.lineHasBrace(p.i):
			// Whether the line counts depends on the config-id: the
			// braces cannot be matched without it.
			return errorf(t.pos, "%s: conditional configuration is not supported", t.text)
		case t.isOpen():
			depth++
		case t.isClose():
			depth--
		}
	}
	return nil
}

// lineHasBrace reports whether the line starting at token i has a brace.
func (p *parser) lineHasBrace(i int) bool {
	for j := i; j < len(p.toks) && (j == i || !p.toks[j].first); j++ {
		if p.toks[j].isOpen() || p.toks[j].isClose() {
			return true
		}
	}
	return false
}

// substitutes reports whether keepalived would replace part of text with
// a parameter's value: "${NAME}", "$NAME" for a NAME defined, or a name
// starting with '_' (keepalived's own, such as $_INSTANCE).
func (p *parser) substitutes(text string) bool {
	for i := strings.IndexByte(text, '$'); i >= 0; i = strings.IndexByte(text, '$') {
		text = text[i+1:]
		if n := paramName(text); strings.HasPrefix(text, "{") || n > 0 && (p.params[text[:n]] || text[0] == '_') {
			return true
		}
	}
	return false
}

// conditional reports whether t starts a line of keepalived's conditional
// configuration ("@id ...", "@^id ...") or a sequence or list block
// ("~SEQ(...)"), which need a config-id or expansion this package does
// not do.
func conditional(t token) bool {
	return !t.quoted && (strings.HasPrefix(t.text, "@") || strings.HasPrefix(t.text, "~"))
}

// unknown skips a statement not handled in block in (a keyword, or "" at
// top level), reporting each keyword once per kind of block.
func (p *parser) unknown(in string, s stmt) error {
	switch {
	case conditional(s.key) && (in != "" || s.block || len(s.args) > 0 && strings.HasPrefix(s.args[0].text, "virtual_server")):
		// Inside an LVS block, or around one, skipping would change the
		// services.
		return errorf(s.pos(), "%s: conditional configuration is not supported", s.name())
	case in != "" && p.substitutes(s.name()):
		return errorf(s.pos(), "%s: parameter substitution is not supported", s.name())
	}
	if k := in + "\x00" + s.name(); !p.once[k] {
		p.once[k] = true
		if in == "" {
			p.warn(s.pos(), fmt.Sprintf("%s: not handled, skipped", s.name()))
		} else {
			p.warn(s.pos(), fmt.Sprintf("%s: %s: not handled, skipped", in, s.name()))
		}
	}
	if s.block {
		return p.skip(s)
	}
	return nil
}

// args checks that s has from min to max arguments (max < 0: any) and no
// block, and returns them; extra arguments are ignored with a warning, as
// keepalived ignores them.
func (p *parser) args(s stmt, min, max int) ([]string, error) {
	if s.block {
		return nil, errorf(s.pos(), "%s: unexpected '{'", s.name())
	}
	if len(s.args) < min {
		return nil, errorf(s.pos(), "%s: missing argument", s.name())
	}
	out := make([]string, len(s.args))
	for i, a := range s.args {
		if p.substitutes(a.text) {
			// keepalived would substitute a $PARAMETER defined elsewhere.
			return nil, errorf(s.pos(), "%s: %q: parameter substitution is not supported", s.name(), a.text)
		}
		out[i] = a.text
	}
	if max >= 0 && len(out) > max {
		p.warn(s.pos(), fmt.Sprintf("%s: extra argument %q ignored", s.name(), out[max]))
		out = out[:max]
	}
	return out, nil
}

// arg is the single argument of s.
func (p *parser) arg(s stmt) (string, error) {
	a, err := p.args(s, 1, 1)
	if err != nil {
		return "", err
	}
	return a[0], nil
}

// flag reads a keyword with an optional <BOOL>: bare means on.
func (p *parser) flag(s stmt) (bool, error) {
	a, err := p.args(s, 0, 1)
	switch {
	case err != nil:
		return false, err
	case len(a) == 0:
		return true, nil
	}
	return parseBool(s, a[0])
}

// needBlock checks that s opens a block.
func needBlock(s stmt) error {
	if !s.block {
		return errorf(s.pos(), "%s: missing '{'", s.name())
	}
	return nil
}

func (p *parser) top() error {
	for {
		s, ok, err := p.next(nil)
		if err != nil || !ok {
			return err
		}
		switch s.name() {
		case "virtual_server":
			err = p.virtualServer(s)
		case "virtual_server_group":
			err = p.group(s)
		case "global_defs":
			err = p.globalDefs(s)
		default:
			// global_defs, vrrp_*, static_*, SSL, ...
			err = p.unknown("", s)
		}
		if err != nil {
			return err
		}
	}
}

// globalDefs reads global_defs for lvs_sync_daemon; the rest of it is
// skipped, with one warning.
func (p *parser) globalDefs(s stmt) error {
	if !s.block {
		return p.unknown("", s)
	}
	warned := false
	for {
		e, ok, err := p.next(&s)
		if err != nil || !ok {
			return err
		}
		if e.name() == "lvs_sync_daemon" {
			if err := p.syncDaemon(e); err != nil {
				return err
			}
			continue
		}
		if !warned && !p.once["\x00global_defs"] {
			warned = true
			p.once["\x00global_defs"] = true
			p.warn(s.pos(), "global_defs: only lvs_sync_daemon is handled, the rest skipped")
		}
		if e.block {
			if err := p.skip(e); err != nil {
				return err
			}
		}
	}
}

// syncDaemon reads "lvs_sync_daemon INTERFACE [[inst] VRRP_INSTANCE] [id
// SYNC_ID] [maxlen LEN] [port PORT] [ttl TTL] [group ADDR]".
func (p *parser) syncDaemon(s stmt) error {
	a, err := p.args(s, 1, -1)
	if err != nil {
		return err
	}
	if p.f.SyncDaemon != nil {
		return errorf(s.pos(), "lvs_sync_daemon: already given at %s", p.f.SyncDaemon.Pos)
	}
	d := &SyncDaemon{Pos: s.pos(), Interface: a[0]}
	num := func(v string, min, max uint64) (uint64, error) { return parseUint(s, v, min, max) }
	for i := 1; i < len(a); i++ {
		key := a[i]
		known := key == "inst" || key == "id" || key == "maxlen" || key == "port" || key == "ttl" || key == "group"
		if !known {
			if d.Instance != "" {
				return errorf(s.pos(), "lvs_sync_daemon: %q: unknown option", key)
			}
			d.Instance = key // the instance, without "inst" (older syntax)
			continue
		}
		if i+1 >= len(a) {
			return errorf(s.pos(), "lvs_sync_daemon: %s: missing value", key)
		}
		i++
		v := a[i]
		switch key {
		case "inst":
			d.Instance = v
		case "id":
			n, err := num(v, 0, 255)
			if err != nil {
				return err
			}
			d.SyncID = uint8(n)
		case "maxlen":
			n, err := num(v, 1, 65507)
			if err != nil {
				return err
			}
			d.MaxLen = int(n)
		case "port":
			n, err := num(v, 1, 65535)
			if err != nil {
				return err
			}
			d.Port = uint16(n)
		case "ttl":
			n, err := num(v, 1, 255)
			if err != nil {
				return err
			}
			d.TTL = uint8(n)
		case "group":
			g, err := netip.ParseAddr(v)
			if err != nil || !g.IsMulticast() {
				return errorf(s.pos(), "lvs_sync_daemon: group %q is not a multicast address", v)
			}
			d.Group = g
		}
	}
	p.f.SyncDaemon = d
	return nil
}

// group reads a virtual_server_group block.
func (p *parser) group(s stmt) error {
	a, err := p.args(stmt{key: s.key, args: s.args}, 1, 1)
	if err != nil {
		return err
	}
	if err := needBlock(s); err != nil {
		return err
	}
	name := a[0]
	if g := p.f.Groups[name]; g != nil {
		return errorf(s.pos(), "virtual_server_group %s: already defined at %s", name, g.Pos)
	}
	g := &Group{Pos: s.pos(), Name: name}
	for {
		e, ok, err := p.next(&s)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		m, err := p.member(e)
		if err != nil {
			return err
		}
		g.Members = append(g.Members, m)
	}
	if len(g.Members) == 0 {
		return errorf(s.pos(), "virtual_server_group %s: no members", name)
	}
	p.f.Groups[name] = g
	return nil
}

// member reads a group line: "IP|RANGE [PORT]" or "fwmark N [inet|inet6]".
func (p *parser) member(s stmt) (Member, error) {
	m := Member{Pos: s.pos()}
	if s.name() == "fwmark" {
		a, err := p.args(s, 1, 2)
		if err != nil {
			return m, err
		}
		mark, err := parseUint(s, a[0], 1, 1<<32-1)
		if err != nil {
			return m, err
		}
		m.FWMark = uint32(mark)
		if len(a) == 2 {
			if a[1] != "inet" && a[1] != "inet6" {
				return m, errorf(s.pos(), "fwmark: %q is not inet or inet6", a[1])
			}
			m.Family = a[1]
		}
		return m, nil
	}
	// The "keyword" is the address; the port is its argument.
	a, err := p.args(s, 0, 1)
	if err != nil {
		return m, err
	}
	if m.First, m.Last, err = parseRange(s.key.text); err != nil {
		return m, errorf(s.pos(), "virtual_server_group: %v", err)
	}
	if len(a) == 1 {
		port, err := parseUint(stmt{key: token{text: "port", pos: s.pos()}}, a[0], 0, 65535)
		if err != nil {
			return m, err
		}
		m.Port = uint16(port)
	}
	return m, nil
}

// vsDraft is a virtual server being read: what was given, before defaults
// and inheritance are applied.
type vsDraft struct {
	vs          *VirtualServer
	c           common
	protocol    opt[uint8]
	protoPos    Pos
	sched       opt[string]
	schedBits   uint8 // flag-1..3 as ipvsadm's -b bits
	flagPos     map[string]Pos
	method      opt[method]
	ipFamily    opt[string]
	granularity opt[string]
	granPos     Pos
	sorryInhib  opt[bool]
	sorryMethod opt[method]
	sorry       *rsDraft
	reals       []*rsDraft
}

// method is an lvs_method: the forwarding method and tunnel options.
type method struct {
	fwd service.Fwd
	tun Tunnel
}

// rsDraft is a real server being read.
type rsDraft struct {
	rs       *RealServer
	c        common
	method   opt[method]
	port     bool // a port was given
	checkers []*checkerDraft
}

// virtualServer reads a virtual_server block.
func (p *parser) virtualServer(s stmt) error {
	vs := &VirtualServer{Pos: s.pos(), Granularity: -1}
	d := &vsDraft{vs: vs, flagPos: map[string]Pos{}}
	hs := stmt{key: s.key, args: s.args}
	a, err := p.args(hs, 1, -1)
	if err != nil {
		return err
	}
	switch a[0] {
	case "fwmark":
		if a, err = p.args(hs, 2, 2); err != nil {
			return err
		}
		mark, err := parseUint(stmt{key: token{text: "fwmark", pos: s.pos()}}, a[1], 1, 1<<32-1)
		if err != nil {
			return err
		}
		vs.FWMark = uint32(mark)
	case "group":
		if a, err = p.args(hs, 2, 2); err != nil {
			return err
		}
		vs.Group = a[1]
	default:
		if a, err = p.args(hs, 1, 2); err != nil {
			return err
		}
		addr, err := parseAddr(hs, a[0])
		if err != nil {
			return err
		}
		var port uint64
		if len(a) == 2 {
			if port, err = parseUint(stmt{key: token{text: "port", pos: s.pos()}}, a[1], 0, 65535); err != nil {
				return err
			}
		}
		vs.Addr = netip.AddrPortFrom(addr, uint16(port))
	}
	if err := needBlock(s); err != nil {
		return err
	}
	for {
		e, ok, err := p.next(&s)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := p.vsKeyword(d, e); err != nil {
			return err
		}
	}
	p.vss = append(p.vss, d)
	return nil
}

func (p *parser) vsKeyword(d *vsDraft, s stmt) error {
	vs := d.vs
	if ok, err := p.common(&d.c, s, levelVS); ok || err != nil {
		return err
	}
	var err error
	switch s.name() {
	case "lvs_sched", "lb_algo":
		var v string
		if v, err = p.arg(s); err == nil {
			if !validSched(v) {
				return errorf(s.pos(), "%s: unknown scheduler %q", s.name(), v)
			}
			d.sched.set(v)
		}
	case "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback":
		if _, err = p.args(s, 0, 0); err == nil {
			d.schedBits |= schedFlagBits[s.name()]
			d.flagPos[s.name()] = s.pos()
		}
	case "ops":
		vs.OnePacket, err = p.flag(s)
	case "lvs_method", "lb_kind":
		var m method
		if m, err = p.method(s); err == nil {
			d.method.set(m)
		}
	case "persistence_engine":
		var v string
		if v, err = p.arg(s); err == nil {
			// keepalived.conf(5): "currently only sip supported".
			if v != "sip" {
				return errorf(s.pos(), "persistence_engine: %q is not sip", v)
			}
			vs.PE = v
		}
	case "persistence_timeout":
		var a []string
		if a, err = p.args(s, 0, 1); err == nil {
			vs.Persistent, vs.Timeout = true, service.DefaultPersistTimeout // bare: IPVS.md, 360 s
			if len(a) == 1 {
				// keepalived --config-test: "outside range [1, 2678400]" (31 days, as ipvsadm).
				var v uint64
				if v, err = parseUint(s, a[0], 1, 2678400); err == nil {
					vs.Timeout = seconds(v)
				}
			}
		}
	case "persistence_granularity":
		var v string
		if v, err = p.arg(s); err == nil {
			d.granularity.set(v)
			d.granPos = s.pos()
		}
	case "protocol":
		var v string
		if v, err = p.arg(s); err == nil {
			// keepalived accepts the names in any case.
			switch strings.ToUpper(v) {
			case "TCP":
				d.protocol.set(service.TCP)
			case "UDP":
				d.protocol.set(service.UDP)
			case "SCTP":
				return errorf(s.pos(), "protocol SCTP is not supported")
			default:
				return errorf(s.pos(), "protocol: %q is not TCP, UDP or SCTP", v)
			}
			d.protoPos = s.pos()
		}
	case "ip_family":
		var v string
		if v, err = p.arg(s); err == nil {
			if v != "inet" && v != "inet6" {
				return errorf(s.pos(), "ip_family: %q is not inet or inet6", v)
			}
			d.ipFamily.set(v)
		}
	case "quorum":
		var v uint64
		// keepalived --config-test: "Quorum 0 must be in [1, 4294967295]".
		if v, err = parseUintArg(p, s, 1, 1<<32-1); err == nil {
			vs.Quorum = int(v)
		}
	case "hysteresis":
		var v uint64
		if v, err = parseUintArg(p, s, 0, 1<<32-1); err == nil {
			vs.Hysteresis = int(v)
		}
	case "quorum_up":
		vs.QuorumUp, err = p.script(s)
	case "quorum_down":
		vs.QuorumDown, err = p.script(s)
	case "omega":
		vs.Omega, err = p.flag(s)
	case "sorry_server":
		if d.sorry != nil {
			return errorf(s.pos(), "sorry_server: given twice (first at %s)", d.sorry.rs.Pos)
		}
		var r *rsDraft
		if r, err = p.server(s, 2); err == nil {
			d.sorry = r
		}
	case "sorry_server_inhibit":
		var v bool
		if v, err = p.flag(s); err == nil {
			d.sorryInhib.set(v)
		}
	case "sorry_server_lvs_method":
		var m method
		if m, err = p.method(s); err == nil {
			d.sorryMethod.set(m)
		}
	case "real_server":
		if err = needBlock(s); err != nil {
			return err
		}
		var r *rsDraft
		if r, err = p.server(stmt{key: s.key, args: s.args}, 2); err != nil {
			return err
		}
		if err = p.realServer(r, s); err == nil {
			d.reals = append(d.reals, r)
		}
	default:
		// ha_suspend, smtp_alert, snmp_name, ...
		return p.unknown("virtual_server", s)
	}
	return err
}

// server reads "IP [PORT]" of a real_server or sorry_server line.
func (p *parser) server(s stmt, maxArgs int) (*rsDraft, error) {
	a, err := p.args(s, 1, maxArgs)
	if err != nil {
		return nil, err
	}
	addr, err := parseAddr(s, a[0])
	if err != nil {
		return nil, err
	}
	r := &rsDraft{rs: &RealServer{Pos: s.pos(), Weight: 1}} // weight 1: keepalived.conf(5)
	var port uint64
	if len(a) == 2 {
		if port, err = parseUint(stmt{key: token{text: "port", pos: s.pos()}}, a[1], 0, 65535); err != nil {
			return nil, err
		}
		r.port = true
	}
	r.rs.Addr = netip.AddrPortFrom(addr, uint16(port))
	return r, nil
}

// realServer reads a real_server block.
func (p *parser) realServer(r *rsDraft, open stmt) error {
	rs := r.rs
	for {
		s, ok, err := p.next(&open)
		if err != nil || !ok {
			return err
		}
		if ok, err := p.common(&r.c, s, levelRS); ok || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		switch s.name() {
		case "weight":
			var v uint64
			// keepalived --config-test: "Real server weight ... is outside range 0-2147483647".
			if v, err = parseUintArg(p, s, 0, 1<<31-1); err == nil {
				rs.Weight = int(v)
			}
		case "lvs_method":
			var m method
			if m, err = p.method(s); err == nil {
				r.method.set(m)
			}
		case "uthreshold":
			var v uint64
			if v, err = parseUintArg(p, s, 0, 1<<32-1); err == nil {
				rs.UThreshold = uint32(v)
			}
		case "lthreshold":
			var v uint64
			if v, err = parseUintArg(p, s, 0, 1<<32-1); err == nil {
				rs.LThreshold = uint32(v)
			}
		case "notify_up":
			rs.NotifyUp, err = p.script(s)
		case "notify_down":
			rs.NotifyDown, err = p.script(s)
		case TCPCheck, HTTPGet, SSLGet, MiscCheck, DNSCheck:
			if err = needBlock(s); err != nil {
				return err
			}
			var c *checkerDraft
			if c, err = p.checker(s); err == nil {
				r.checkers = append(r.checkers, c)
			}
		default:
			// SMTP_CHECK, UDP_CHECK, PING_CHECK, smtp_alert, ...
			err = p.unknown("real_server", s)
		}
		if err != nil {
			return err
		}
	}
}

// method reads lvs_method NAT|DR|TUN [type {ipip|gue port NUM|gre}
// [nocsum|csum|remcsum]] (keepalived.conf(5)); names are upper case, as
// keepalived accepts them.
func (p *parser) method(s stmt) (method, error) {
	a, err := p.args(s, 1, -1)
	if err != nil {
		return method{}, err
	}
	var m method
	switch a[0] {
	case "NAT":
		m.fwd = service.FwdMasq
	case "DR":
		m.fwd = service.FwdRoute
	case "TUN":
		m.fwd, m.tun.Type = service.FwdTunnel, "ipip" // ipip: keepalived.conf(5), "Default tunnel type"
	default:
		return m, errorf(s.pos(), "%s: %q is not NAT, DR or TUN", s.name(), a[0])
	}
	rest := a[1:]
	if m.fwd == service.FwdTunnel && len(rest) > 0 && rest[0] == "type" {
		if len(rest) < 2 {
			return m, errorf(s.pos(), "%s: missing tunnel type", s.name())
		}
		m.tun.Type, rest = rest[1], rest[2:]
		switch m.tun.Type {
		case "ipip":
		case "gue":
			if len(rest) < 2 || rest[0] != "port" {
				return m, errorf(s.pos(), "%s: a gue tunnel needs port NUM", s.name())
			}
			v, err := parseUint(s, rest[1], 1, 65535)
			if err != nil {
				return m, err
			}
			m.tun.Port, rest = uint16(v), rest[2:]
		case "gre":
		default:
			return m, errorf(s.pos(), "%s: tunnel type %q is not ipip, gue or gre", s.name(), m.tun.Type)
		}
		if m.tun.Type != "ipip" {
			m.tun.Csum = "nocsum" // ipvsadm's default for gue and gre
			if len(rest) > 0 {
				switch rest[0] {
				case "nocsum", "csum":
				case "remcsum":
					if m.tun.Type == "gre" {
						return m, errorf(s.pos(), "%s: gre tunnels have no remcsum", s.name())
					}
				default:
					return m, errorf(s.pos(), "%s: %q is not nocsum, csum or remcsum", s.name(), rest[0])
				}
				m.tun.Csum, rest = rest[0], rest[1:]
			}
		}
	}
	if len(rest) > 0 {
		p.warn(s.pos(), fmt.Sprintf("%s: extra argument %q ignored", s.name(), rest[0]))
	}
	return m, nil
}

// script reads SCRIPT [USER [GROUP]] (notify_up, quorum_up, ...).
func (p *parser) script(s stmt) (Script, error) {
	a, err := p.args(s, 1, 3)
	if err != nil {
		return Script{}, err
	}
	sc := Script{Command: a[0]}
	if len(a) > 1 {
		sc.User = a[1]
	}
	if len(a) > 2 {
		sc.Group = a[2]
	}
	return sc, nil
}
