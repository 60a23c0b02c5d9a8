package director

import (
	"uvs/conntrack"
	"uvs/service"
)

// persistent schedules through the service's persistence template: a
// client (masked with -M) that came before goes to the same real server
// for as long as the template lives, as long as that server still exists
// in the service (a quiesced one still counts, as in IPVS by default).
func (w *worker) persistent(v *vsvc) *service.Dest {
	sv := v.svc
	k := &w.tk
	if v.mark {
		// One template per client and mark, whatever the address and
		// port, as IPVS keys firewall-mark templates.
		*k = conntrack.TemplateKey{FWMark: sv.FWMark}
	} else {
		*k = conntrack.TemplateKey{Proto: sv.Proto, VAddr: w.tp.Dst, VPort: sv.Port}
	}
	k.Client = maskAddr(w.tp.Src, sv.Netmask, !sv.Key.Is6())
	var tp conntrack.Template
	if ref, ok := w.d.ct.LookupTemplate(k, &tp); ok {
		for _, ds := range sv.Dests {
			if ds.ID() == tp.Dest && !ds.Gone() {
				w.tmpl = ref
				return ds
			}
		}
	}
	ds := v.sched.Schedule(&w.flow)
	if ds == nil {
		return nil
	}
	tp = conntrack.Template{Svc: v.id, Dest: ds.ID(), DAddr: conntrack.AddrFrom(ds.Addr), DPort: ds.Port, Timeout: sv.Timeout}
	ref, err := w.d.ct.InsertTemplate(k, &tp)
	if err != nil {
		w.d.full.Add(1)
		return nil
	}
	w.tmpl = ref
	return ds
}

// maskAddr keeps the first bits of a (a prefix length of the address's
// own family) and clears the rest; for an IPv4 mask that is no prefix it
// is a & mask, bit by bit, as IPVS masks clients.
func maskAddr(a conntrack.Addr, bits int, v4 bool) conntrack.Addr {
	if v4 && bits&service.RawMask4 != 0 {
		m := uint32(bits)
		a[12] &= byte(m >> 24)
		a[13] &= byte(m >> 16)
		a[14] &= byte(m >> 8)
		a[15] &= byte(m)
		return a
	}
	if v4 {
		bits += 96
	}
	if bits <= 0 || bits >= 128 {
		return a
	}
	for i := range a {
		switch lo := i * 8; {
		case lo >= bits:
			a[i] = 0
		case lo+8 > bits:
			a[i] &= byte(0xff << (8 - (bits - lo)))
		}
	}
	return a
}
