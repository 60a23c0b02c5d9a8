// Package tun encapsulates packets for IPVS tunnel forwarding (ipvsadm -i,
// LVS-TUN) and decapsulates them, on byte slices, in place, allocating
// nothing.
//
// A packet on its way to a real server goes through, in this order:
//
//   - Tunnel.Encap (or EncapPartial for an offloaded checksum) writes the
//     outer header(s) into the headroom just before the inner packet:
//     IPv4 or IPv6, then nothing (IPIP), GRE, or UDP and GUE;
//   - the caller sends buf[start:off+n] towards Tunnel.Dst.
//
// A receiver (a real server in userspace, or a test) calls Decap on the
// outer IP packet, or DecapPayload on what a raw or UDP socket delivers,
// and gets the inner packet's place in the buffer.
//
// What the outer header carries, as IPVS sets it (net/netfilter/ipvs/
// ip_vs_xmit.c: ip_vs_tunnel_xmit, ip_vs_tunnel_xmit_v6,
// ip_vs_prepare_tunneled_skb, ipvs_gue_encap, ipvs_gre_encap):
//
//   - protocol: 4 (IPIP) for an IPv4 inner packet, 41 for IPv6, whatever
//     the outer family; 47 for GRE; 17 for GUE;
//   - TOS / traffic class: the inner packet's, with the ECN field copied
//     except that CE becomes ECT(0) (RFC 6040 normal mode,
//     INET_ECN_encapsulate);
//   - TTL / hop limit: the inner packet's, which IPVS has already
//     decremented (decrement_ttl) — the caller does that here, as for NAT;
//     Tunnel.TTL overrides it;
//   - IPv4 DF: the inner IPv4 packet's DF (with the default
//     net.ipv4.vs.pmtu_disc=1); clear for an IPv6 inner packet, so routers
//     may fragment the outer packet; the IPv4 ID comes from a per-Tunnel
//     counter (IPVS: ip_select_ident);
//   - IPv6 outer: flow label 0.
//
// ipvsadm allows --tun-csum and --tun-remcsum only with GUE and GRE, and
// --tun-remcsum only with GUE (ipvsadm's tunnel_types_v_options); the
// kernel itself ignores the checksum flags for IPIP and treats RemCsum as
// NoCsum for GRE (ipvs_gre_encap only looks at the csum flag). Encap does
// the same; Validate refuses what ipvsadm refuses.
package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
)

// Type is the encapsulation (ipvsadm --tun-type).
type Type uint8

const (
	// IPIP is IP in IP: IPv4-in-IPv4, IPv6-in-IPv6 and the mixed
	// families (4in6, 6in4), protocol 4 or 41.
	IPIP Type = iota
	// GUE is Generic UDP Encapsulation (draft-ietf-intarea-gue), variant
	// 0, to UDP port Tunnel.Port.
	GUE
	// GRE is GRE (RFC 2784) with protocol 0x0800 or 0x86DD.
	GRE
)

func (t Type) String() string {
	switch t {
	case IPIP:
		return "ipip"
	case GUE:
		return "gue"
	case GRE:
		return "gre"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Csum says whether GUE and GRE carry a checksum of their own.
type Csum uint8

const (
	NoCsum   Csum = iota // ipvsadm --tun-nocsum (the default)
	WithCsum             // ipvsadm --tun-csum: the outer UDP or the GRE checksum
	RemCsum              // ipvsadm --tun-remcsum: GUE remote checksum offload, with the UDP checksum
)

func (c Csum) String() string {
	switch c {
	case NoCsum:
		return "nocsum"
	case WithCsum:
		return "csum"
	case RemCsum:
		return "remcsum"
	}
	return fmt.Sprintf("Csum(%d)", uint8(c))
}

// Header lengths.
const (
	ipv4Len   = 20
	ipv6Len   = 40
	udpLen    = 8
	gueLen    = 4
	greLen    = 4
	greCsumLn = 4 // checksum and reserved1

	// RemCsumOptionLen is what the remote checksum offload option adds
	// to a GUE header: the private flags word and the start/offset word
	// (GUE_LEN_PRIV + GUE_PLEN_REMCSUM).
	RemCsumOptionLen = 8

	// MaxOverhead is the most any Tunnel prepends: IPv6, UDP, GUE and
	// the remote checksum option. Headroom of this size fits every
	// Tunnel.
	MaxOverhead = ipv6Len + udpLen + gueLen + RemCsumOptionLen
)

// IP protocol numbers of the carriers.
const (
	protoIPIP = 4
	protoUDP  = 17
	protoIPv6 = 41
	protoGRE  = 47
)

// Tunnel is one real server's encapsulation, built once by the control
// plane (not per packet). It must not be copied after its first Encap: it
// holds the IPv4 identification counter.
type Tunnel struct {
	Type Type
	// Src and Dst are the outer source (the director's address toward
	// the server) and destination (the real server); their family is
	// the outer family.
	Src, Dst netip.Addr
	Port     uint16 // GUE: destination UDP port (ipvsadm --tun-port)
	Csum     Csum
	// TTL is the outer TTL or hop limit. 0 copies the inner packet's,
	// as IPVS does.
	TTL uint8

	id atomic.Uint32 // IPv4 identification
}

// Overhead is the number of bytes Encap prepends: the outer IPv4 (20) or
// IPv6 (40) header, plus 8 UDP and 4 GUE for GUE, or 4 GRE (8 with the
// checksum). EncapPartial prepends RemCsumOptionLen more for a GUE tunnel
// with RemCsum.
func (t *Tunnel) Overhead() int {
	return t.ipLen() + t.tunLen(false)
}

// MTUFor is the largest inner packet that fits a link of MTU linkMTU once
// encapsulated: what IPVS puts in the "fragmentation needed" or "packet
// too big" it sends back (__ip_vs_get_out_rt). IPVS refuses to tunnel when
// it is below 68 (IPv4 outer) or 1280 (IPv6 outer).
func (t *Tunnel) MTUFor(linkMTU int) int {
	return linkMTU - t.Overhead()
}

func (t *Tunnel) ipLen() int {
	if t.Dst.Is4() {
		return ipv4Len
	}
	return ipv6Len
}

// tunLen is the length of the headers between the outer IP header and the
// inner packet.
func (t *Tunnel) tunLen(remcsum bool) int {
	switch t.Type {
	case GUE:
		if remcsum {
			return udpLen + gueLen + RemCsumOptionLen
		}
		return udpLen + gueLen
	case GRE:
		if t.Csum == WithCsum {
			return greLen + greCsumLn
		}
		return greLen
	}
	return 0
}

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("tun: invalid tunnel")

// Validate checks t the way ipvsadm and IPVS check a tunnel destination:
// both addresses valid and of one family, a known type, a GUE port, and
// only the checksum options the type takes (none for IPIP, no RemCsum for
// GRE). Encap itself only needs the addresses and the type.
func (t *Tunnel) Validate() error {
	switch {
	case !t.Src.IsValid() || !t.Dst.IsValid():
		return fmt.Errorf("%w: source %v or destination %v missing", ErrConfig, t.Src, t.Dst)
	case t.Src.Is4() != t.Dst.Is4():
		return fmt.Errorf("%w: source %v and destination %v are of different families", ErrConfig, t.Src, t.Dst)
	case t.Src.Zone() != "" || t.Dst.Zone() != "":
		return fmt.Errorf("%w: zoned address", ErrConfig)
	case t.Type > GRE:
		return fmt.Errorf("%w: unknown type %v", ErrConfig, t.Type)
	case t.Csum > RemCsum:
		return fmt.Errorf("%w: unknown checksum option %v", ErrConfig, t.Csum)
	case t.Type == GUE && t.Port == 0:
		return fmt.Errorf("%w: gue needs a port", ErrConfig)
	case t.Type != GUE && t.Port != 0:
		return fmt.Errorf("%w: a port is for gue only", ErrConfig)
	case t.Type == IPIP && t.Csum != NoCsum:
		return fmt.Errorf("%w: ipip takes no checksum option", ErrConfig)
	case t.Type == GRE && t.Csum == RemCsum:
		return fmt.Errorf("%w: remcsum is for gue only", ErrConfig)
	}
	return nil
}
