package packet

import "encoding/binary"

// Header views: each type is the header's bytes inside the frame, read and
// written in place. A view must be at least as long as its fixed header;
// Decode has checked that for the views a Parsed hands out.

// EtherType values this package knows.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86dd
)

// IP protocol numbers this package knows.
const (
	ProtoHopByHop = 0
	ProtoICMP     = 1
	ProtoIPIP     = 4 // IPv4 in IP (IPVS tunnels)
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoIPv6     = 41 // IPv6 in IP
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoGRE      = 47
	ProtoDstOpts  = 60
)

// ICMP and ICMPv6 types this package knows.
const (
	ICMPEchoReply       = 0
	ICMPUnreachable     = 3
	ICMPSourceQuench    = 4
	ICMPEchoRequest     = 8
	ICMPTimeExceeded    = 11
	ICMPParamProblem    = 12
	ICMPCodePortUnreach = 3
	ICMPCodeFragNeeded  = 4

	ICMPv6Unreachable     = 1
	ICMPv6PacketTooBig    = 2
	ICMPv6TimeExceeded    = 3
	ICMPv6ParamProblem    = 4
	ICMPv6EchoRequest     = 128
	ICMPv6EchoReply       = 129
	ICMPv6NeighborSolicit = 135
	ICMPv6NeighborAdvert  = 136
	ICMPv6CodePortUnreach = 4
)

// Fixed header lengths.
const (
	EthernetLen = 14
	VLANTagLen  = 4
	ARPLen      = 28 // Ethernet/IPv4 ARP
	IPv4MinLen  = 20
	IPv6Len     = 40
	TCPMinLen   = 20
	UDPLen      = 8
	ICMPLen     = 8 // type, code, checksum and the 4-byte rest of header
)

// Ethernet is an Ethernet II header without a VLAN tag.
type Ethernet []byte

func (e Ethernet) Dst() []byte        { return e[0:6] }
func (e Ethernet) Src() []byte        { return e[6:12] }
func (e Ethernet) Type() uint16       { return binary.BigEndian.Uint16(e[12:]) }
func (e Ethernet) SetType(t uint16)   { binary.BigEndian.PutUint16(e[12:], t) }
func (e Ethernet) SetDst(mac [6]byte) { copy(e[0:6], mac[:]) }
func (e Ethernet) SetSrc(mac [6]byte) { copy(e[6:12], mac[:]) }

// IPv4 is an IPv4 header with its options.
type IPv4 []byte

func (h IPv4) Version() uint8      { return h[0] >> 4 }
func (h IPv4) HeaderLen() int      { return int(h[0]&0xf) * 4 }
func (h IPv4) TOS() uint8          { return h[1] }
func (h IPv4) TotalLen() uint16    { return binary.BigEndian.Uint16(h[2:]) }
func (h IPv4) ID() uint16          { return binary.BigEndian.Uint16(h[4:]) }
func (h IPv4) DontFragment() bool  { return h[6]&0x40 != 0 }
func (h IPv4) MoreFragments() bool { return h[6]&0x20 != 0 }

// FragmentOffset is in bytes.
func (h IPv4) FragmentOffset() int { return int(binary.BigEndian.Uint16(h[6:])&0x1fff) * 8 }
func (h IPv4) TTL() uint8          { return h[8] }
func (h IPv4) Protocol() uint8     { return h[9] }
func (h IPv4) Checksum() uint16    { return binary.BigEndian.Uint16(h[10:]) }
func (h IPv4) Src() []byte         { return h[12:16] }
func (h IPv4) Dst() []byte         { return h[16:20] }

func (h IPv4) SetTotalLen(n uint16) { binary.BigEndian.PutUint16(h[2:], n) }
func (h IPv4) SetTTL(t uint8)       { h[8] = t }
func (h IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[10:], c) }

// ComputeChecksum is the header checksum the header should carry.
func (h IPv4) ComputeChecksum() uint16 {
	n := h.HeaderLen()
	s := Sum(h[:10], 0)
	return ^Fold(Sum(h[12:n], s))
}

// IPv6 is the fixed IPv6 header.
type IPv6 []byte

func (h IPv6) Version() uint8         { return h[0] >> 4 }
func (h IPv6) PayloadLen() uint16     { return binary.BigEndian.Uint16(h[4:]) }
func (h IPv6) NextHeader() uint8      { return h[6] }
func (h IPv6) HopLimit() uint8        { return h[7] }
func (h IPv6) Src() []byte            { return h[8:24] }
func (h IPv6) Dst() []byte            { return h[24:40] }
func (h IPv6) SetPayloadLen(n uint16) { binary.BigEndian.PutUint16(h[4:], n) }
func (h IPv6) SetHopLimit(t uint8)    { h[7] = t }

// TCP is a TCP header with its options.
type TCP []byte

func (h TCP) SrcPort() uint16      { return binary.BigEndian.Uint16(h[0:]) }
func (h TCP) DstPort() uint16      { return binary.BigEndian.Uint16(h[2:]) }
func (h TCP) Seq() uint32          { return binary.BigEndian.Uint32(h[4:]) }
func (h TCP) Ack() uint32          { return binary.BigEndian.Uint32(h[8:]) }
func (h TCP) HeaderLen() int       { return int(h[12]>>4) * 4 }
func (h TCP) Flags() uint8         { return h[13] }
func (h TCP) Checksum() uint16     { return binary.BigEndian.Uint16(h[16:]) }
func (h TCP) SetSrcPort(p uint16)  { binary.BigEndian.PutUint16(h[0:], p) }
func (h TCP) SetDstPort(p uint16)  { binary.BigEndian.PutUint16(h[2:], p) }
func (h TCP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[16:], c) }

// TCP flag bits.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
)

// UDP is a UDP header.
type UDP []byte

func (h UDP) SrcPort() uint16      { return binary.BigEndian.Uint16(h[0:]) }
func (h UDP) DstPort() uint16      { return binary.BigEndian.Uint16(h[2:]) }
func (h UDP) Length() uint16       { return binary.BigEndian.Uint16(h[4:]) }
func (h UDP) Checksum() uint16     { return binary.BigEndian.Uint16(h[6:]) }
func (h UDP) SetSrcPort(p uint16)  { binary.BigEndian.PutUint16(h[0:], p) }
func (h UDP) SetDstPort(p uint16)  { binary.BigEndian.PutUint16(h[2:], p) }
func (h UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[6:], c) }

// ICMP is an ICMP or ICMPv6 header: the two share the first 8 bytes' layout.
type ICMP []byte

func (h ICMP) Type() uint8          { return h[0] }
func (h ICMP) Code() uint8          { return h[1] }
func (h ICMP) Checksum() uint16     { return binary.BigEndian.Uint16(h[2:]) }
func (h ICMP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[2:], c) }

// ID is the identifier of an echo request or reply.
func (h ICMP) ID() uint16 { return binary.BigEndian.Uint16(h[4:]) }

// MTU is the next-hop MTU of an ICMP "fragmentation needed" (16 bits at
// offset 6, RFC 1191).
func (h ICMP) MTU() uint16 { return binary.BigEndian.Uint16(h[6:]) }

// MTUv6 is the MTU of an ICMPv6 "packet too big" (32 bits at offset 4).
func (h ICMP) MTUv6() uint32 { return binary.BigEndian.Uint32(h[4:]) }

// ARP is an Ethernet/IPv4 ARP packet.
type ARP []byte

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

func (a ARP) HardwareType() uint16 { return binary.BigEndian.Uint16(a[0:]) }
func (a ARP) ProtocolType() uint16 { return binary.BigEndian.Uint16(a[2:]) }
func (a ARP) HardwareLen() uint8   { return a[4] }
func (a ARP) ProtocolLen() uint8   { return a[5] }
func (a ARP) Op() uint16           { return binary.BigEndian.Uint16(a[6:]) }
func (a ARP) SenderMAC() []byte    { return a[8:14] }
func (a ARP) SenderIP() []byte     { return a[14:18] }
func (a ARP) TargetMAC() []byte    { return a[18:24] }
func (a ARP) TargetIP() []byte     { return a[24:28] }
