package realserver

import (
	"errors"
	"net/netip"

	"uvs/forward/tun"
)

// sockKind is what a receiving socket delivers, which decides how its
// datagrams are decapsulated.
type sockKind uint8

const (
	// kindRaw4: an IPv4 raw socket delivers the whole outer packet, from
	// its IPv4 header (tun.Decap).
	kindRaw4 sockKind = iota
	// kindRaw6: an IPv6 raw socket delivers only the outer payload
	// (tun.DecapPayload with the socket's protocol).
	kindRaw6
	// kindUDP: a UDP socket on the GUE port delivers the UDP payload.
	kindUDP
)

// reason is why a datagram was dropped.
type reason uint8

const (
	accepted reason = iota
	dropSource
	dropNotVIP
	dropMalformed
	dropNotTunnel
	dropUnsupported
	dropBadChecksum
	dropWriteFailed
	numReasons
)

// reasonNames are the values of the reason label of
// uvs_realserver_dropped_packets_total.
var reasonNames = [numReasons]string{
	dropSource:      "source_not_allowed", // outer source not in --from
	dropNotVIP:      "not_vip",            // inner destination is not a VIP
	dropMalformed:   "malformed",          // truncated, bad lengths, fragment, too big for the buffer
	dropNotTunnel:   "not_tunnel",         // a packet of the protocol that carries no tunnel
	dropUnsupported: "unsupported",        // GRE/GUE features or payloads not taken (tun.ErrUnsupported)
	dropBadChecksum: "bad_checksum",       // outer IPv4 header, UDP, or GRE checksum
	dropWriteFailed: "write_failed",       // the TUN refused the inner packet
}

// filter decides about one datagram: where its inner packet is, or why it
// is dropped. It is read-only once built and shared by the readers.
type filter struct {
	vips    map[netip.Addr]struct{}
	from    map[netip.Addr]struct{} // nil: any source
	guePort uint16
}

func newFilter(vips, from []netip.Addr, guePort uint16) *filter {
	f := &filter{vips: make(map[netip.Addr]struct{}, len(vips)), guePort: guePort}
	for _, a := range vips {
		f.vips[a.Unmap()] = struct{}{}
	}
	if len(from) > 0 {
		f.from = make(map[netip.Addr]struct{}, len(from))
		for _, a := range from {
			f.from[a.Unmap()] = struct{}{}
		}
	}
	return f
}

// decap looks at pkt, one datagram as a socket of kind k (raw sockets:
// of protocol proto) delivered it, sent by src. It returns the offset and
// length of the inner packet within pkt and the tunnel type, or the reason
// to drop it. Nothing is allocated; GUE remote checksum offload writes into
// pkt.
func (f *filter) decap(k sockKind, proto uint8, pkt []byte, src netip.Addr) (inner, n int, typ tun.Type, why reason) {
	if f.from != nil {
		if _, ok := f.from[src.Unmap()]; !ok {
			return 0, 0, 0, dropSource
		}
	}
	var err error
	switch k {
	case kindRaw4:
		var d tun.Decapped
		d, err = tun.Decap(pkt, f.guePort)
		inner, n, typ = d.Inner, d.Len, d.Type
	case kindRaw6:
		inner, n, err = tun.DecapPayload(proto, pkt)
		typ = tun.IPIP
		if proto == protoGRE {
			typ = tun.GRE
		}
	case kindUDP:
		inner, n, err = tun.DecapPayload(protoUDP, pkt)
		typ = tun.GUE
	}
	if err != nil {
		return 0, 0, typ, errReason(err)
	}
	if !f.isVIP(pkt[inner : inner+n]) {
		return 0, 0, typ, dropNotVIP
	}
	return inner, n, typ, accepted
}

// isVIP reports whether the IP packet p (a whole one, as Decap checked) is
// addressed to a VIP.
func (f *filter) isVIP(p []byte) bool {
	var dst netip.Addr
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		dst = netip.AddrFrom4([4]byte(p[16:20]))
	case len(p) >= 40 && p[0]>>4 == 6:
		dst = netip.AddrFrom16([16]byte(p[24:40]))
	default:
		return false
	}
	_, ok := f.vips[dst]
	return ok
}

func errReason(err error) reason {
	switch {
	case errors.Is(err, tun.ErrBadChecksum):
		return dropBadChecksum
	case errors.Is(err, tun.ErrUnsupported):
		return dropUnsupported
	case errors.Is(err, tun.ErrNotTunnel):
		return dropNotTunnel
	}
	return dropMalformed
}

// IP protocol numbers of the tunnels.
const (
	protoIPIP = 4
	protoIPv6 = 41
	protoGRE  = 47
	protoUDP  = 17
)
