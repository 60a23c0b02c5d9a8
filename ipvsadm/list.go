package ipvsadm

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"uvs/rate"
	"uvs/service"
)

// header is the first line of a full listing: the kernel IPVS version and
// connection table size ipvsadm reads back.
const header = "IP Virtual Server version 1.2.1 (size=4096)\n"

// list runs the list and save commands against cfg.
func (r *runner) list(cfg *service.Config, c *command, w io.Writer) error {
	if c.kind == cmdSave {
		c.rule = true
		r.listAll(cfg, c, w)
		return nil
	}
	switch {
	case c.has(optConnection):
		r.listConns(c, w)
	case c.has(optService):
		s := cfg.Service(c.key())
		if s == nil {
			return &exit{code: 1, msg: service.ErrNoService.Error()}
		}
		r.title(c, w)
		r.entry(s, c, w)
	case c.has(optTimeout):
		t := cfg.Timeouts
		fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n", int64(t.TCP.Seconds()), int64(t.TCPFin.Seconds()), int64(t.UDP.Seconds()))
	case c.has(optDaemon):
		r.listDaemons(w)
	default:
		r.listAll(cfg, c, w)
	}
	return nil
}

func (r *runner) listAll(cfg *service.Config, c *command, w io.Writer) {
	if !c.rule {
		io.WriteString(w, header)
	}
	svcs := cfg.Services
	if !c.noSort {
		svcs = cfg.Sorted()
	}
	r.title(c, w)
	for _, s := range svcs {
		r.entry(s, c, w)
	}
}

func (r *runner) title(c *command, w io.Writer) {
	const prot = "Prot LocalAddress:Port"
	switch {
	case c.rule:
	case c.stats:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n", prot, "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case c.rate:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n", prot, "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case c.thresholds:
		fmt.Fprintf(w, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n", prot, "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case c.persistConn:
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n", prot, "Weight", "PersistConn", "ActiveConn", "InActConn")
	case c.tunInfo:
		io.WriteString(w, "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
	default:
		io.WriteString(w, "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

// addrPort formats an address and port as ipvsadm does: IPv6 in brackets,
// the port by name unless numeric. Addresses are never looked up.
func addrPort(a netip.Addr, port uint16, proto uint8, numeric bool) string {
	p := strconv.Itoa(int(port))
	if !numeric {
		p = portName(port, proto)
	}
	s := a.String()
	if a.Is6() {
		s = "[" + s + "]"
	}
	return s + ":" + p
}

// cut is ipvsadm's truncation of names to fit their columns (IPv4 only).
func cut(s string, n int, v6 bool) string {
	if !v6 && len(s) > n {
		return s[:n]
	}
	return s
}

func (r *runner) entry(s *service.Service, c *command, w io.Writer) {
	var name string
	proto := s.Proto
	switch {
	case s.IsFWMark():
		proto = service.TCP // ipvsadm gives fwmark services TCP, and names ports by it
		switch {
		case c.rule && s.V6:
			name = fmt.Sprintf("-f %d -6", s.FWMark)
		case c.rule:
			name = fmt.Sprintf("-f %d", s.FWMark)
		case s.V6:
			name = fmt.Sprintf("FWM  %d IPv6", s.FWMark)
		default:
			name = fmt.Sprintf("FWM  %d", s.FWMark)
		}
	default:
		v := addrPort(s.Addr, s.Port, s.Proto, c.numeric)
		if c.rule {
			opt := "-t"
			if s.Proto == service.UDP {
				opt = "-u"
			}
			name = opt + " " + v
		} else {
			name = cut(fmt.Sprintf("%-4s %s", s.ProtoName(), v), 33, s.Addr.Is6())
		}
	}
	v6 := s.Is6()
	bitsOf := schedBits(s.Scheduler, s.Flags)

	var b strings.Builder
	switch {
	case c.rule:
		fmt.Fprintf(&b, "-A %s -s %s", name, s.Scheduler)
		if s.Persistent {
			fmt.Fprintf(&b, " -p %d", int64(s.Timeout.Seconds()))
			if m := maskText(s, v6); m != "" {
				b.WriteString(" -M " + m)
			}
		}
		if s.PE != "" {
			b.WriteString(" --pe " + s.PE)
		}
		if s.OnePacket {
			b.WriteString(" -o")
		}
		if bitsOf != 0 {
			b.WriteString(" -b " + schedFlagNames(s.Scheduler, bitsOf))
		}
	case c.stats:
		fmt.Fprintf(&b, "%-33s", name)
		r.counters(&b, statsOf(s.Stats), c.exact)
	case c.rate:
		fmt.Fprintf(&b, "%-33s", name)
		rt := r.rates(s.Stats)
		for _, v := range []uint64{rt.CPS, rt.InPPS, rt.OutPPS, rt.InBPS, rt.OutBPS} {
			largeNum(&b, v, c.exact)
		}
	default:
		b.WriteString(name + " " + s.Scheduler)
		if bitsOf != 0 {
			b.WriteString(" (" + schedFlagNames(s.Scheduler, bitsOf) + ")")
		}
		if s.Persistent {
			fmt.Fprintf(&b, " persistent %d", int64(s.Timeout.Seconds()))
			if m := maskText(s, v6); m != "" {
				b.WriteString(" mask " + m)
			}
			if s.PE != "" {
				b.WriteString(" pe " + s.PE)
			}
		}
		if s.OnePacket {
			b.WriteString(" ops")
		}
	}
	b.WriteByte('\n')

	dests := s.Dests
	if !c.noSort {
		dests = s.SortedDests()
	}
	for _, d := range dests {
		dn := addrPort(d.Addr, d.Port, proto, c.numeric)
		if !c.rule {
			dn = cut(dn, 28, d.Addr.Is6())
		}
		var act, inact, pers uint32
		var st *service.Stats
		if d.DestState != nil {
			act, inact, pers = uint32(d.ActiveConns()), uint32(d.InactConns()), uint32(d.PersistConns())
			st = &d.DestState.Stats
		}
		switch {
		case c.rule:
			fmt.Fprintf(&b, "-a %s -r %s %s -w %d", name, dn, fwdSwitch(d.Fwd), d.Weight)
			if d.Fwd == service.FwdTunnel {
				switch d.TunType {
				case "gue":
					fmt.Fprintf(&b, " --tun-type gue --tun-port %d %s", d.TunPort, tunCsumOpts[csumIndex(d.TunCsum)])
				case "gre":
					fmt.Fprintf(&b, " --tun-type gre %s", tunCsumOpts[csumIndex(d.TunCsum)])
				default:
					b.WriteString(" --tun-type ipip")
				}
			}
			b.WriteByte('\n')
		case c.stats:
			fmt.Fprintf(&b, "  -> %-28s", dn)
			r.counters(&b, statsOf(st), c.exact)
			b.WriteByte('\n')
		case c.rate:
			rt := r.rates(st)
			fmt.Fprintf(&b, "  -> %-28s %8d %8d %8d", dn, rt.CPS, rt.InPPS, rt.OutPPS)
			largeNum(&b, rt.InBPS, c.exact)
			largeNum(&b, rt.OutBPS, c.exact)
			b.WriteByte('\n')
		case c.thresholds:
			fmt.Fprintf(&b, "  -> %-28s %-10d %-10d %-10d %-10d\n", dn, d.UThresh, d.LThresh, act, inact)
		case c.persistConn:
			fmt.Fprintf(&b, "  -> %-28s %-9d %-11d %-10d %-10d\n", dn, d.Weight, pers, act, inact)
		case c.tunInfo:
			fmt.Fprintf(&b, "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n", dn, d.Fwd, tunInfo(d), d.Weight, act, inact)
		default:
			fmt.Fprintf(&b, "  -> %-28s %-7s %-6d %-10d %-10d\n", dn, d.Fwd, d.Weight, act, inact)
		}
	}
	io.WriteString(w, b.String())
}

// maskText is the persistence mask when it is not the default: an IPv6
// prefix length, an IPv4 mask in dotted form (ipvsadm's inet_ntoa).
func maskText(s *service.Service, v6 bool) string {
	if v6 {
		if s.Netmask != 128 {
			return strconv.Itoa(s.Netmask)
		}
		return ""
	}
	m := service.Mask4(s.Netmask)
	if m == ^uint32(0) {
		return ""
	}
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}).String()
}

// schedFlagNames spells scheduler flag bits as ipvsadm does for sched.
func schedFlagNames(sched string, b uint8) string {
	names := [3]string{"flag-1", "flag-2", "flag-3"}
	switch sched {
	case "sh":
		names = [3]string{"sh-fallback", "sh-port", ""}
	case "mh":
		names = [3]string{"mh-fallback", "mh-port", ""}
	}
	var out []string
	for i, n := range names {
		if b&(1<<i) != 0 && n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, ",")
}

func fwdSwitch(f service.Fwd) string {
	switch f {
	case service.FwdMasq:
		return "-m"
	case service.FwdTunnel:
		return "-i"
	}
	return "-g"
}

func csumIndex(s string) int {
	if i := indexOf(tunCsumModel, s); i >= 0 {
		return i
	}
	return 0
}

// tunInfo is the TunnelInfo column of --tun-info.
func tunInfo(d *service.Dest) string {
	if d.Fwd != service.FwdTunnel {
		return "n/a"
	}
	switch d.TunType {
	case "gue":
		return fmt.Sprintf("gue:%d:%s", d.TunPort, tunCsumFlags[csumIndex(d.TunCsum)])
	case "gre":
		return "gre:" + tunCsumFlags[csumIndex(d.TunCsum)]
	}
	return "ipip"
}

func statsOf(s *service.Stats) service.Counters {
	if s == nil {
		return service.Counters{}
	}
	return s.Sum()
}

func (r *runner) rates(s *service.Stats) rate.Rates {
	if s == nil {
		return rate.Rates{}
	}
	return r.st.Rates(s)
}

func (r *runner) counters(b *strings.Builder, c service.Counters, exact bool) {
	for _, v := range []uint64{c.Conns, c.InPkts, c.OutPkts, c.InBytes, c.OutBytes} {
		largeNum(b, v, exact)
	}
}

// largeNum prints a counter in a 9-wide column, scaled to K, M, G or T
// when it would not fit, or whole with --exact.
func largeNum(b *strings.Builder, v uint64, exact bool) {
	switch {
	case exact:
		s := strconv.FormatUint(v, 10)
		fmt.Fprintf(b, "%*s", max(9, len(s)+1), s)
	case v < 100_000_000:
		fmt.Fprintf(b, "%9d", v)
	case v < 1_000_000_000:
		fmt.Fprintf(b, "%8dK", v/1_000)
	case v < 100_000_000_000:
		fmt.Fprintf(b, "%8dM", v/1_000_000)
	case v < 100_000_000_000_000:
		fmt.Fprintf(b, "%8dG", v/1_000_000_000)
	default:
		fmt.Fprintf(b, "%8dT", v/1_000_000_000_000)
	}
}

func (r *runner) listConns(c *command, w io.Writer) {
	io.WriteString(w, "IPVS connection entries\n")
	if c.persistConn {
		fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %-18s %-16s %s\n", "state", "source", "virtual", "destination", "pe name", "pe_data")
	} else {
		fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
	}
	conns := r.st.Conns()
	var b strings.Builder
	for _, cn := range conns {
		proto := "TCP"
		switch cn.Proto {
		case service.UDP:
			proto = "UDP"
		case 0:
			proto = "IP" // a firewall-mark service's persistence template
		}
		secs := int64(cn.Expires.Seconds())
		if secs < 0 {
			secs = 0
		}
		exp := fmt.Sprintf("%02d:%02d", secs/60, secs%60)
		ap := func(a netip.AddrPort) string {
			return addrPort(a.Addr().Unmap(), a.Port(), cn.Proto, c.numeric)
		}
		fmt.Fprintf(&b, "%-3s %-6s %-11s %-18s %-18s %s\n", proto, exp, cn.State, ap(cn.Client), ap(cn.Virtual), ap(cn.Dest))
	}
	io.WriteString(w, b.String())
}

func (r *runner) listDaemons(w io.Writer) {
	sy, ok := r.st.(Syncer)
	if !ok {
		return
	}
	ds := sy.Daemons()
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Master && !ds[j].Master })
	for _, d := range ds {
		typ := "backup"
		if d.Master {
			typ = "master"
		}
		fmt.Fprintf(w, "%s sync daemon (mcast=%s, syncid=%d", typ, d.Interface, d.SyncID)
		if d.MaxLen != 0 {
			fmt.Fprintf(w, ", maxlen=%d", d.MaxLen)
		}
		if d.Group.IsValid() {
			fmt.Fprintf(w, ", group=%s", d.Group)
		}
		if d.Port != 0 {
			fmt.Fprintf(w, ", port=%d", d.Port)
		}
		if d.TTL != 0 {
			fmt.Fprintf(w, ", ttl=%d", d.TTL)
		}
		io.WriteString(w, ")\n")
	}
}
