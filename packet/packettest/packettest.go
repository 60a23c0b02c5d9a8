// Package packettest builds frames with gopacket for tests of the packet
// path, and checks their checksums with a plain reference implementation
// independent of package packet's.
package packettest

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Protocols a Frame can carry.
const (
	TCP  = 6
	UDP  = 17
	ICMP = 1 // ICMP for IPv4, ICMPv6 for IPv6: an echo request, or Type/Code/Info with Payload
)

// Frame describes a test frame.
type Frame struct {
	Ether          bool
	VLAN           uint16 // 802.1Q VLAN ID; 0 for none
	SrcMAC, DstMAC net.HardwareAddr
	Src, Dst       netip.Addr // both IPv4 or both IPv6
	TTL            uint8
	IPv4Options    bool // add 8 bytes of IPv4 options (NOP, NOP, NOP, EOL padding)
	ExtHeaders     bool // IPv6: a hop-by-hop, a routing and a destination options header
	MoreFragments  bool
	FragOffset     uint16 // in 8-byte units
	DontFragment   bool   // IPv4: set DF

	Proto            uint8
	SrcPort, DstPort uint16 // TCP/UDP; for ICMP echo, SrcPort is the identifier
	TCPFlags         uint8  // FIN 1, SYN 2, RST 4, PSH 8, ACK 16
	NoUDPChecksum    bool   // send the UDP checksum as 0
	Type, Code       uint8  // ICMP: type and code; 0/0 means an echo request
	Info             uint32 // ICMP: the 4 bytes after the checksum of an error
	Payload          []byte
}

// Default MACs for frames with Ethernet headers.
var (
	ClientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	RouterMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// Bytes serializes f with every length and checksum computed. It panics on
// a serialization error: fixtures are written by tests.
func (f Frame) Bytes() []byte {
	b, err := f.serialize()
	if err != nil {
		panic(fmt.Sprintf("packettest: %v", err))
	}
	return b
}

func (f Frame) serialize() ([]byte, error) {
	var ls []gopacket.SerializableLayer
	v6 := f.Src.Is6()
	ttl := f.TTL
	if ttl == 0 {
		ttl = 64
	}
	if f.Ether {
		src, dst := f.SrcMAC, f.DstMAC
		if src == nil {
			src = ClientMAC
		}
		if dst == nil {
			dst = RouterMAC
		}
		et := layers.EthernetTypeIPv4
		if v6 {
			et = layers.EthernetTypeIPv6
		}
		eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: et}
		ls = append(ls, eth)
		if f.VLAN != 0 {
			eth.EthernetType = layers.EthernetTypeDot1Q
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: f.VLAN, Type: et})
		}
	}
	proto := layers.IPProtocol(f.Proto)
	if f.Proto == ICMP && v6 {
		proto = layers.IPProtocolICMPv6
	}
	var nl gopacket.NetworkLayer
	if v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: ttl, SrcIP: f.Src.AsSlice(), DstIP: f.Dst.AsSlice(), NextHeader: proto}
		nl = ip
		ls = append(ls, ip)
		if f.ExtHeaders {
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
			pad := []byte{0, 0, 0, 0}
			hbh := &layers.IPv6HopByHop{}
			hbh.NextHeader = layers.IPProtocolIPv6Routing
			hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionData: pad}}
			rt := &layers.IPv6Routing{RoutingType: 0}
			rt.NextHeader = layers.IPProtocolIPv6Destination
			dst := &layers.IPv6Destination{}
			dst.NextHeader = proto
			dst.Options = []*layers.IPv6DestinationOption{{OptionType: 1, OptionData: pad}}
			ip.HopByHop = hbh
			ls = append(ls, rt, dst)
		}
		if f.MoreFragments || f.FragOffset != 0 {
			// The fragment header goes last, right before the upper layer.
			fr := &layers.IPv6Fragment{NextHeader: proto, FragmentOffset: f.FragOffset, MoreFragments: f.MoreFragments, Identification: 7}
			if f.ExtHeaders {
				ls[len(ls)-1].(*layers.IPv6Destination).NextHeader = layers.IPProtocolIPv6Fragment
			} else {
				ip.NextHeader = layers.IPProtocolIPv6Fragment
			}
			ls = append(ls, fr)
		}
	} else {
		ip := &layers.IPv4{Version: 4, TTL: ttl, Protocol: proto, SrcIP: f.Src.AsSlice(), DstIP: f.Dst.AsSlice(),
			Id: 0x1234, FragOffset: f.FragOffset}
		if f.MoreFragments {
			ip.Flags = layers.IPv4MoreFragments
		}
		if f.DontFragment {
			ip.Flags |= layers.IPv4DontFragment
		}
		if f.IPv4Options {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1},
				{OptionType: 7, OptionLength: 5, OptionData: []byte{4, 0, 0}}}
		}
		nl = ip
		ls = append(ls, ip)
	}
	fragment := f.FragOffset != 0
	if !fragment {
		switch f.Proto {
		case TCP:
			t := &layers.TCP{SrcPort: layers.TCPPort(f.SrcPort), DstPort: layers.TCPPort(f.DstPort), Seq: 1000, Ack: 2000, Window: 65535,
				FIN: f.TCPFlags&1 != 0, SYN: f.TCPFlags&2 != 0, RST: f.TCPFlags&4 != 0, PSH: f.TCPFlags&8 != 0, ACK: f.TCPFlags&16 != 0}
			_ = t.SetNetworkLayerForChecksum(nl)
			ls = append(ls, t)
		case UDP:
			u := &layers.UDP{SrcPort: layers.UDPPort(f.SrcPort), DstPort: layers.UDPPort(f.DstPort)}
			_ = u.SetNetworkLayerForChecksum(nl)
			ls = append(ls, u)
		case ICMP:
			if v6 {
				c := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(f.Type, f.Code)}
				_ = c.SetNetworkLayerForChecksum(nl)
				ls = append(ls, c)
				if f.Type == 0 {
					c.TypeCode = layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)
					ls = append(ls, &layers.ICMPv6Echo{Identifier: f.SrcPort, SeqNumber: 1})
				} else {
					var info [4]byte
					binary.BigEndian.PutUint32(info[:], f.Info)
					ls = append(ls, gopacket.Payload(info[:]))
				}
			} else {
				c := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(f.Type, f.Code),
					Id: uint16(f.Info >> 16), Seq: uint16(f.Info)}
				if f.Type == 0 {
					c.TypeCode = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)
					c.Id, c.Seq = f.SrcPort, 1
				}
				ls = append(ls, c)
			}
		}
	}
	if len(f.Payload) > 0 {
		ls = append(ls, gopacket.Payload(f.Payload))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if f.NoUDPChecksum && f.Proto == UDP && !fragment {
		// The UDP header is the last 8 bytes before the payload.
		o := len(b) - len(f.Payload) - 8
		b[o+6], b[o+7] = 0, 0
	}
	return b, nil
}

// Sum is a plain RFC 1071 sum of 16-bit words, the reference the fast
// implementation is checked against.
func Sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// Fold folds the carries of s into 16 bits.
func Fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// PseudoHeader is the TCP/UDP/ICMPv6 pseudo-header as bytes (RFC 793,
// RFC 8200 8.1).
func PseudoHeader(src, dst []byte, proto uint8, n int) []byte {
	var b []byte
	b = append(b, src...)
	b = append(b, dst...)
	if len(src) == 4 {
		return append(b, 0, proto, byte(n>>8), byte(n))
	}
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto)
}

// Verify checks every checksum of an IP frame as a receiver would: the
// IPv4 header, the TCP, UDP, ICMP or ICMPv6 checksum (a UDP checksum of 0
// in IPv4 means none), and, for ICMP errors, the header checksum of a
// quoted IPv4 packet. It decodes with gopacket and returns what is wrong.
func Verify(frame []byte, ether bool) error {
	first := layers.LayerTypeIPv4
	if ether {
		first = layers.LayerTypeEthernet
	} else if len(frame) > 0 && frame[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(frame, first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		return fmt.Errorf("gopacket: %v", el.Error())
	}
	var src, dst []byte
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		if Fold(Sum(ip.Contents)) != 0xffff {
			return fmt.Errorf("IPv4 header checksum %#04x does not verify", ip.Checksum)
		}
		src, dst = ip.SrcIP.To4(), ip.DstIP.To4()
		if ip.FragOffset != 0 {
			return nil
		}
	case *layers.IPv6:
		src, dst = ip.SrcIP, ip.DstIP
		if f, ok := pkt.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment); ok && f.FragmentOffset != 0 {
			return nil
		}
	default:
		return fmt.Errorf("no IP layer")
	}
	fragment := false
	if ip4, ok := pkt.NetworkLayer().(*layers.IPv4); ok {
		fragment = ip4.Flags&layers.IPv4MoreFragments != 0
	}
	if pkt.Layer(layers.LayerTypeIPv6Fragment) != nil {
		fragment = true
	}
	for _, l := range pkt.Layers() {
		seg := append(append([]byte(nil), l.LayerContents()...), l.LayerPayload()...)
		switch l := l.(type) {
		case *layers.TCP:
			if fragment {
				return nil // the checksum covers the whole datagram
			}
			if Fold(Sum(append(PseudoHeader(src, dst, 6, len(seg)), seg...))) != 0xffff {
				return fmt.Errorf("TCP checksum %#04x does not verify", l.Checksum)
			}
			return nil
		case *layers.UDP:
			if fragment || (l.Checksum == 0 && len(src) == 4) {
				return nil
			}
			if Fold(Sum(append(PseudoHeader(src, dst, 17, len(seg)), seg...))) != 0xffff {
				return fmt.Errorf("UDP checksum %#04x does not verify", l.Checksum)
			}
			return nil
		case *layers.ICMPv4:
			if Fold(Sum(seg)) != 0xffff {
				return fmt.Errorf("ICMP checksum %#04x does not verify", l.Checksum)
			}
			// A quoted IPv4 header must verify too.
			if q := l.Payload; len(q) >= 20 && q[0]>>4 == 4 && int(q[0]&15)*4 <= len(q) {
				if Fold(Sum(q[:int(q[0]&15)*4])) != 0xffff {
					return fmt.Errorf("quoted IPv4 header checksum does not verify")
				}
			}
			return nil
		case *layers.ICMPv6:
			if Fold(Sum(append(PseudoHeader(src, dst, 58, len(seg)), seg...))) != 0xffff {
				return fmt.Errorf("ICMPv6 checksum %#04x does not verify", l.Checksum)
			}
			return nil
		}
	}
	return nil
}
