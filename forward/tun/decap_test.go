package tun_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"uvs/forward/tun"
	"uvs/packet"
	"uvs/packet/packettest"
)

// outerPacket encapsulates a TCP packet of family v with tn and returns
// the outer packet alone.
func outerPacket(t *testing.T, tn *tun.Tunnel, v int) []byte {
	t.Helper()
	buf, start := encap(t, tn, inner(v, packettest.TCP, 0, true, 64))
	return buf[start:]
}

func fixIPv4(b []byte) []byte {
	h := packet.IPv4(b)
	h.SetChecksum(0)
	h.SetChecksum(h.ComputeChecksum())
	return b
}

// insert puts ins at offset at of the outer packet b and grows its length
// field.
func insert(b []byte, at int, ins ...byte) []byte {
	out := append(append(append([]byte(nil), b[:at]...), ins...), b[at:]...)
	if out[0]>>4 == 4 {
		binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
		return fixIPv4(out)
	}
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
	return out
}

func TestDecapRefuses(t *testing.T) {
	ipip4 := func() []byte { return outerPacket(t, tunnel(tun.IPIP, 4, tun.NoCsum), 4) }
	ipip6 := func() []byte { return outerPacket(t, tunnel(tun.IPIP, 6, tun.NoCsum), 6) }
	ipip4in6 := func() []byte { return outerPacket(t, tunnel(tun.IPIP, 6, tun.NoCsum), 4) }
	gre := func(csum tun.Csum) []byte { return outerPacket(t, tunnel(tun.GRE, 4, csum), 4) }
	gue := func(csum tun.Csum) []byte { return outerPacket(t, tunnel(tun.GUE, 4, csum), 4) }
	// Offsets in a GUE packet with an IPv4 outer header.
	const udp, g = 20, 28
	with := func(b []byte, f func(b []byte)) []byte { f(b); return b }
	// gueOpts inserts opts after the GUE header and sets its hlen (in
	// words) and flags.
	gueOpts := func(hlen uint8, flags uint16, opts ...byte) []byte {
		b := insert(gue(tun.NoCsum), g+4, opts...)
		binary.BigEndian.PutUint16(b[udp+4:], uint16(len(b)-udp))
		b[g] = hlen
		binary.BigEndian.PutUint16(b[g+2:], flags)
		return b
	}

	for _, tc := range []struct {
		name string
		pkt  []byte
		port uint16
		want error
	}{
		{"empty", nil, guePort, tun.ErrMalformed},
		{"not IP", with(ipip4(), func(b []byte) { b[0] = 0x55 }), guePort, tun.ErrMalformed},
		{"truncated IPv4 header", ipip4()[:19], guePort, tun.ErrMalformed},
		{"truncated IPv6 header", ipip6()[:39], guePort, tun.ErrMalformed},
		{"IPv4 header length 16", fixIPv4(with(ipip4(), func(b []byte) { b[0] = 0x44 })), guePort, tun.ErrMalformed},
		{"IPv4 total length beyond the buffer", ipip4()[:60], guePort, tun.ErrMalformed},
		{"IPv6 payload length beyond the buffer", ipip6()[:100], guePort, tun.ErrMalformed},
		{"IPv4 header checksum", with(ipip4(), func(b []byte) { b[8]-- }), guePort, tun.ErrBadChecksum},
		{"outer fragment", fixIPv4(with(ipip4(), func(b []byte) { b[6] |= 0x20 })), guePort, tun.ErrFragment},
		{"outer later fragment", fixIPv4(with(ipip4(), func(b []byte) { b[7] = 1 })), guePort, tun.ErrFragment},
		{"TCP", fixIPv4(with(ipip4(), func(b []byte) { b[9] = 6 })), guePort, tun.ErrNotTunnel},
		{"proto 4 carrying IPv6", fixIPv4(with(outerPacket(t, tunnel(tun.IPIP, 4, tun.NoCsum), 6), func(b []byte) { b[9] = 4 })), guePort, tun.ErrMalformed},
		{"proto 41 carrying IPv4", fixIPv4(with(ipip4(), func(b []byte) { b[9] = 41 })), guePort, tun.ErrMalformed},
		{"inner longer than the carrier", with(ipip6(), func(b []byte) { binary.BigEndian.PutUint16(b[4:], uint16(len(b)-41)) }), guePort, tun.ErrMalformed},
		{"inner IPv4 header length 4", with(ipip4in6(), func(b []byte) { b[40] = 0x41 }), guePort, tun.ErrMalformed},
		{"inner IPv4 total length below header", with(ipip4in6(), func(b []byte) { binary.BigEndian.PutUint16(b[42:], 19) }), guePort, tun.ErrMalformed},
		{"IPv6 fragment header", with(insert(ipip6(), 40, 41, 0, 0, 0, 0, 0, 0, 1), func(b []byte) { b[6] = 44 }), guePort, tun.ErrFragment},
		{"IPv6 routing header with segments left", with(insert(ipip6(), 40, 41, 0, 0, 1, 0, 0, 0, 0), func(b []byte) { b[6] = 43 }), guePort, tun.ErrUnsupported},
		{"IPv6 extension header truncated", with(ipip6(), func(b []byte) { b[6] = 60; binary.BigEndian.PutUint16(b[4:], 4) }), guePort, tun.ErrMalformed},

		{"GRE checksum", with(gre(tun.WithCsum), func(b []byte) { b[len(b)-1]++ }), guePort, tun.ErrBadChecksum},
		{"GRE routing", with(gre(tun.NoCsum), func(b []byte) { b[20] |= 0x40 }), guePort, tun.ErrUnsupported},
		{"GRE version 1", with(gre(tun.NoCsum), func(b []byte) { b[21] |= 1 }), guePort, tun.ErrUnsupported},
		{"GRE transparent Ethernet", with(gre(tun.NoCsum), func(b []byte) { b[22], b[23] = 0x65, 0x58 }), guePort, tun.ErrUnsupported},
		{"GRE 0x86DD carrying IPv4", with(gre(tun.NoCsum), func(b []byte) { b[22], b[23] = 0x86, 0xdd }), guePort, tun.ErrMalformed},
		{"GRE key flag without the key", fixIPv4(with(gre(tun.NoCsum)[:24], func(b []byte) { b[20] = 0x20; binary.BigEndian.PutUint16(b[2:], 24) })), guePort, tun.ErrMalformed},
		{"GRE truncated", fixIPv4(with(gre(tun.NoCsum)[:22], func(b []byte) { binary.BigEndian.PutUint16(b[2:], 22) })), guePort, tun.ErrMalformed},

		{"UDP, no GUE port", gue(tun.NoCsum), 0, tun.ErrNotTunnel},
		{"UDP to another port", gue(tun.NoCsum), guePort + 1, tun.ErrNotTunnel},
		{"UDP checksum", with(gue(tun.WithCsum), func(b []byte) { b[len(b)-1]++ }), guePort, tun.ErrBadChecksum},
		{"UDP length beyond the packet", with(gue(tun.NoCsum), func(b []byte) { binary.BigEndian.PutUint16(b[udp+4:], uint16(len(b))) }), guePort, tun.ErrMalformed},
		{"UDP length below 8", with(gue(tun.NoCsum), func(b []byte) { binary.BigEndian.PutUint16(b[udp+4:], 7) }), guePort, tun.ErrMalformed},
		{"UDP truncated", fixIPv4(with(gue(tun.NoCsum)[:26], func(b []byte) { binary.BigEndian.PutUint16(b[2:], 26) })), guePort, tun.ErrMalformed},
		{"GUE version 2", with(gue(tun.NoCsum), func(b []byte) { b[g] = 0x80 }), guePort, tun.ErrUnsupported},
		{"GUE version 3", with(gue(tun.NoCsum), func(b []byte) { b[g] = 0xc0 }), guePort, tun.ErrUnsupported},
		{"GUE variant 1, not IP", with(gue(tun.NoCsum), func(b []byte) { b[g] = 0x50 }), guePort, tun.ErrUnsupported},
		{"GUE control message", with(gue(tun.NoCsum), func(b []byte) { b[g] = 0x20 }), guePort, tun.ErrUnsupported},
		{"GUE unknown flag", with(gue(tun.NoCsum), func(b []byte) { b[g+2] = 0x80 }), guePort, tun.ErrUnsupported},
		{"GUE carrying GRE", with(gue(tun.NoCsum), func(b []byte) { b[g+1] = 47 }), guePort, tun.ErrUnsupported},
		{"GUE carrying IPv6, is IPv4", with(gue(tun.NoCsum), func(b []byte) { b[g+1] = 41 }), guePort, tun.ErrMalformed},
		{"GUE hlen beyond the packet", with(gue(tun.NoCsum), func(b []byte) { b[g] = 0x1f }), guePort, tun.ErrMalformed},
		{"GUE unknown private flag", gueOpts(1, 1, 0x40, 0, 0, 0), guePort, tun.ErrUnsupported},
		{"GUE remcsum outside hlen", gueOpts(1, 1, 0x80, 0, 0, 0), guePort, tun.ErrMalformed},
		{"GUE remcsum field beyond the inner packet", gueOpts(2, 1, 0x80, 0, 0, 0, 0, 20, 0xff, 0), guePort, tun.ErrMalformed},
		{"GUE remcsum field before start", gueOpts(2, 1, 0x80, 0, 0, 0, 0, 20, 0, 10), guePort, tun.ErrMalformed},
		{"GUE remcsum field odd", gueOpts(2, 1, 0x80, 0, 0, 0, 0, 20, 0, 37), guePort, tun.ErrMalformed},
		{"GUE private flags with hlen 0 and no room", gueOpts(0, 1), guePort, tun.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := tc.pkt
			_, err := tun.Decap(pkt, tc.port)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decap: %v, want %v", err, tc.want)
			}
		})
	}
}

// The hand-built GUE option cases above need their hlen right; check one
// of them is refused for the reason the name says, not another.
func TestGUEPrivateFlagsParse(t *testing.T) {
	b := outerPacket(t, tunnel(tun.GUE, 4, tun.NoCsum), 4)
	b = insert(b, 32, 0, 0, 0, 0) // private flags, none set
	binary.BigEndian.PutUint16(b[24:], uint16(len(b)-20))
	b[28], b[31] = 1, 1
	d, err := tun.Decap(b, guePort)
	if err != nil || d.Inner != 36 {
		t.Fatalf("Decap = %+v, %v", d, err)
	}
}

func TestDecapAccepts(t *testing.T) {
	in4 := inner(4, packettest.TCP, 0, true, 64)
	t.Run("GRE key and sequence number", func(t *testing.T) {
		b := outerPacket(t, tunnel(tun.GRE, 4, tun.WithCsum), 4)
		b = insert(b, 28, 0, 0, 0, 7, 0, 0, 0, 9)
		b[20] |= 0x30
		binary.BigEndian.PutUint16(b[24:], 0)
		binary.BigEndian.PutUint16(b[24:], packet.Checksum(b[20:], 0))
		d, err := tun.Decap(b, 0)
		if err != nil || d.Type != tun.GRE || d.Inner != 36 || !bytes.Equal(b[d.Inner:d.Inner+d.Len], in4) {
			t.Fatalf("Decap = %+v, %v", d, err)
		}
	})
	t.Run("GRE reserved bits", func(t *testing.T) {
		b := outerPacket(t, tunnel(tun.GRE, 4, tun.NoCsum), 4)
		b[20], b[21] = 0x0f, 0xf8 // strict route, recursion, flags: ignored as Linux does
		if _, err := tun.Decap(b, 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("GUE variant 1", func(t *testing.T) {
		for _, v := range []int{4, 6} {
			in := inner(v, packettest.TCP, 0, true, 64)
			b := outerPacket(t, tunnel(tun.GUE, 6, tun.NoCsum), v)
			b = append(b[:48], b[52:]...) // drop the GUE header
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
			binary.BigEndian.PutUint16(b[44:], uint16(len(b)-40))
			d, err := tun.Decap(b, guePort)
			if err != nil || d.Type != tun.GUE || d.Inner != 48 || !bytes.Equal(b[48:], in) {
				t.Fatalf("IPv%d: Decap = %+v, %v", v, d, err)
			}
		}
	})
	t.Run("IPv6 extension headers", func(t *testing.T) {
		b := outerPacket(t, tunnel(tun.GRE, 6, tun.NoCsum), 4)
		// hop-by-hop -> routing (no segments left) -> destination options
		// (PadN) -> GRE, inserted from the last.
		b = insert(b, 40, 47, 0, 1, 4, 0, 0, 0, 0)
		b = insert(b, 40, 60, 0, 0, 0, 0, 0, 0, 0)
		b = insert(b, 40, 43, 0, 1, 4, 0, 0, 0, 0)
		b[6] = 0
		d, err := tun.Decap(b, 0)
		if err != nil || d.Inner != 68 || !bytes.Equal(b[68:], in4) {
			t.Fatalf("Decap = %+v, %v", d, err)
		}
	})
	t.Run("trailing bytes after the outer packet", func(t *testing.T) {
		b := append(outerPacket(t, tunnel(tun.IPIP, 4, tun.NoCsum), 4), 0, 0, 0, 0)
		d, err := tun.Decap(b, 0)
		if err != nil || d.Len != len(in4) {
			t.Fatalf("Decap = %+v, %v", d, err)
		}
	})
	t.Run("IPv6 UDP checksum zero", func(t *testing.T) {
		b := outerPacket(t, tunnel(tun.GUE, 6, tun.NoCsum), 4)
		if _, err := tun.Decap(b, guePort); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDecapPayloadRefuses(t *testing.T) {
	in4 := inner(4, packettest.TCP, 0, true, 64)
	for _, tc := range []struct {
		name    string
		proto   uint8
		payload []byte
		want    error
	}{
		{"TCP", 6, in4, tun.ErrNotTunnel},
		{"empty IPIP", 4, nil, tun.ErrMalformed},
		{"empty GRE", 47, nil, tun.ErrMalformed},
		{"empty GUE", 17, nil, tun.ErrMalformed},
		{"GUE header only", 17, []byte{0, 4, 0, 0}, tun.ErrMalformed},
		{"IPv6 carrying IPv4", 41, in4, tun.ErrMalformed},
		{"IPv4 truncated", 4, in4[:len(in4)-1], tun.ErrMalformed},
	} {
		if _, _, err := tun.DecapPayload(tc.proto, tc.payload); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
