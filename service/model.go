// Package service is the model of virtual services and their real servers,
// the way IPVS sees them: a Config that the control plane edits and then
// publishes as an immutable snapshot, plus the live per-server state
// (connection counts, counters) that the data path updates.
//
// A Config is never changed after it is published. Editing means Clone,
// change the clone, publish the clone. Dest values carry a pointer to their
// DestState, which is shared between snapshots so that counters and
// connection counts survive rule edits.
package service

import (
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Protocol numbers as in the IP header.
const (
	TCP uint8 = 6
	UDP uint8 = 17
)

// Fwd is a real server's forwarding method.
type Fwd uint8

const (
	FwdMasq   Fwd = iota // -m: NAT
	FwdRoute             // -g: direct routing (ipvsadm's default)
	FwdTunnel            // -i: IP-in-IP
	FwdLocal             // the real server is the director itself
)

// String is the name ipvsadm -L prints in the Forward column.
func (f Fwd) String() string {
	switch f {
	case FwdMasq:
		return "Masq"
	case FwdRoute:
		return "Route"
	case FwdTunnel:
		return "Tunnel"
	case FwdLocal:
		return "Local"
	}
	return "Unknown"
}

// SchedFlags are the -b scheduler flags.
type SchedFlags uint8

const (
	SchedSHFallback SchedFlags = 1 << iota
	SchedSHPort
	SchedMHFallback
	SchedMHPort
)

// Key identifies a virtual service: protocol, address and port, or a
// firewall mark (Proto 0, Addr unset except for its family).
type Key struct {
	Proto  uint8      // TCP or UDP; 0 for a firewall-mark service
	Addr   netip.Addr // unset for fwmark services
	Port   uint16
	FWMark uint32 // > 0 for a firewall-mark service
	V6     bool   // fwmark services: the -6 family; otherwise Addr.Is6()
}

// IsFWMark reports whether k names a firewall-mark service.
func (k Key) IsFWMark() bool { return k.FWMark != 0 }

// Is6 reports whether the service is an IPv6 service.
func (k Key) Is6() bool {
	if k.IsFWMark() {
		return k.V6
	}
	return k.Addr.Is6()
}

// String formats the key as ipvsadm's -S would select it, e.g.
// "-t 198.18.0.100:80", "-u [2001:2::1]:53" or "-f 20".
func (k Key) String() string {
	switch {
	case k.IsFWMark():
		return "-f " + strconv.FormatUint(uint64(k.FWMark), 10)
	case k.Proto == UDP:
		return "-u " + netip.AddrPortFrom(k.Addr, k.Port).String()
	default:
		return "-t " + netip.AddrPortFrom(k.Addr, k.Port).String()
	}
}

// Less orders services as ipvsadm lists them: TCP/IPv4 by address then port,
// then UDP/IPv4, then IPv6 services (TCP, then UDP), then firewall marks.
func (k Key) Less(o Key) bool {
	rank := func(k Key) int {
		switch {
		case k.IsFWMark():
			return 4 + b2i(k.V6)
		case k.Addr.Is6():
			return 2 + b2i(k.Proto == UDP)
		default:
			return b2i(k.Proto == UDP)
		}
	}
	if a, b := rank(k), rank(o); a != b {
		return a < b
	}
	if k.IsFWMark() {
		return k.FWMark < o.FWMark
	}
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c < 0
	}
	return k.Port < o.Port
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// DefaultPersistTimeout is what -p without a value means (the code's 360 s,
// not the man page's 300).
const DefaultPersistTimeout = 360 * time.Second

// Service is one virtual service and its real servers.
type Service struct {
	Key
	Scheduler  string // rr, wrr, wlc, ...
	Flags      SchedFlags
	Persistent bool
	Timeout    time.Duration // persistence timeout when Persistent
	// Netmask is the persistence granularity as a prefix length: 32 (or
	// 128 for IPv6) unless -M gave another. An IPv4 mask that is not a
	// prefix (ipvsadm reads -M 24 as the mask 0.0.0.24) is RawMask4 with
	// the mask in the low 32 bits: see Netmask4 and Mask4.
	Netmask   int
	OnePacket bool   // -o
	PE        string // --pe, "" when unset

	// Dests in the kernel's list order: newest first. ipvsadm sorts for
	// display; schedulers walk this order.
	Dests []*Dest

	// Stats is shared between snapshots of the same service.
	Stats *Stats
}

// RawMask4 marks a Netmask that holds an IPv4 mask which is not a prefix,
// the mask itself in the low 32 bits.
const RawMask4 = 1 << 32

// Netmask4 is IPv4 mask m (host order) as a Netmask: a prefix length when
// it is a prefix, else RawMask4 | m.
func Netmask4(m uint32) int {
	if n := bits.OnesCount32(m); m == 0 || m == ^uint32(0)<<(32-n) {
		return n
	}
	return RawMask4 | int(m)
}

// Mask4 is the IPv4 mask (host order) a Netmask stands for.
func Mask4(n int) uint32 {
	switch {
	case n&RawMask4 != 0:
		return uint32(n)
	case n <= 0:
		return 0
	case n >= 32:
		return ^uint32(0)
	}
	return ^uint32(0) << (32 - n)
}

// DefaultNetmask is the persistence granularity when -M is not given.
func (s *Service) DefaultNetmask() int {
	if s.Is6() {
		return 128
	}
	return 32
}

// Dest returns the real server with the given address and port.
func (s *Service) Dest(addr netip.Addr, port uint16) *Dest {
	for _, d := range s.Dests {
		if d.Addr == addr && d.Port == port {
			return d
		}
	}
	return nil
}

// Dest is a real server of a service.
type Dest struct {
	Addr    netip.Addr
	Port    uint16
	Fwd     Fwd
	Weight  int32
	UThresh uint32 // -x: upper connection threshold, 0 = unset
	LThresh uint32 // -y: lower connection threshold, 0 = unset
	TunType string // "ipip" (default), "gue", "gre"; tunnel servers only
	TunPort uint16
	TunCsum string // "", "nocsum", "csum", "remcsum"

	// State is the live part, shared between snapshots for as long as the
	// real server exists in its service.
	*DestState
}

// AddrPort is the real server's address and port.
func (d *Dest) AddrPort() netip.AddrPort { return netip.AddrPortFrom(d.Addr, d.Port) }

// Available reports whether the real server may take new connections:
// weight above zero and not overloaded (IPVS's IP_VS_DEST_F_OVERLOAD).
func (d *Dest) Available() bool {
	return d.Weight > 0 && !d.Overloaded()
}

// Timeouts are the --set values.
type Timeouts struct {
	TCP, TCPFin, UDP time.Duration
}

// DefaultTimeouts are what a fresh IPVS reads back: 900 120 300.
var DefaultTimeouts = Timeouts{TCP: 900 * time.Second, TCPFin: 120 * time.Second, UDP: 300 * time.Second}

// ParseProto is a helper for messages: "TCP", "UDP" or "FWM".
func (k Key) ProtoName() string {
	switch {
	case k.IsFWMark():
		return "FWM"
	case k.Proto == UDP:
		return "UDP"
	case k.Proto == TCP:
		return "TCP"
	}
	return strings.ToUpper(fmt.Sprint(k.Proto))
}
