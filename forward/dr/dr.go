// Package dr forwards packets for IPVS direct routing (LVS-DR, ipvsadm's
// -g): the IP packet goes on unchanged, destination still the virtual
// address, to the real server's own link-layer address on a network the
// director shares with it. The real server holds the virtual address on a
// loopback interface, so its stack takes the packet and answers the client
// directly; nothing about the packet but its Ethernet header says that it
// passed through the director.
//
// Nothing here allocates; the functions work on the caller's frame.
package dr

import "encoding/binary"

// EtherLen is the length of the Ethernet header PrependEther writes.
const EtherLen = 14

// SetMACs readdresses the Ethernet frame frame to the real server dst, from
// the director's port src. The IP packet, and any 802.1Q tag, are not
// touched. It returns false, changing nothing, for a frame too short to
// hold an Ethernet header.
func SetMACs(frame []byte, src, dst [6]byte) bool {
	if len(frame) < EtherLen {
		return false
	}
	copy(frame[0:6], dst[:])
	copy(frame[6:12], src[:])
	return true
}

// PrependEther writes an Ethernet header, src to dst, in front of the IP
// packet at buf[off:] (version from its first byte), for a packet that
// came without one (read from a TUN device) and leaves through a packet
// socket. It returns where the frame starts, off-EtherLen; ok is false,
// with nothing written, when there is no room or no IP version it knows.
func PrependEther(buf []byte, off int, src, dst [6]byte) (start int, ok bool) {
	if off < EtherLen || off >= len(buf) {
		return 0, false
	}
	var et uint16
	switch buf[off] >> 4 {
	case 4:
		et = 0x0800
	case 6:
		et = 0x86dd
	default:
		return 0, false
	}
	start = off - EtherLen
	e := buf[start:off]
	copy(e[0:6], dst[:])
	copy(e[6:12], src[:])
	binary.BigEndian.PutUint16(e[12:], et)
	return start, true
}
