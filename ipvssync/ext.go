package ipvssync

import "encoding/binary"

// Control message types (UVS; see the package comment).
const (
	// ControlResync asks every UVS master that hears it to send its whole
	// connection table.
	ControlResync = 1
)

// ControlLen is a control message's size.
const ControlLen = HeaderLen + 8

var controlMagic = [4]byte{'U', 'V', 'S', 1}

// AppendControl appends a control message of type typ with sync ID syncID
// to dst.
func AppendControl(dst []byte, syncID, typ uint8) []byte {
	var b [ControlLen]byte
	b[1] = syncID
	binary.BigEndian.PutUint16(b[2:], ControlLen)
	b[5] = 1 // version 1, no entries: Linux reads nothing further
	copy(b[8:], controlMagic[:])
	b[12] = typ
	return append(dst, b[:]...)
}

// ParseControl reports whether b is a control message, and its sync ID and
// type.
func ParseControl(b []byte) (syncID, typ uint8, ok bool) {
	if len(b) != ControlLen || binary.BigEndian.Uint16(b[2:]) != ControlLen ||
		b[0] != 0 || b[4] != 0 || b[5] != 1 || b[6] != 0 || b[7] != 0 ||
		[4]byte(b[8:12]) != controlMagic || b[13] != 0 || b[14] != 0 || b[15] != 0 {
		return 0, 0, false
	}
	return b[1], b[12], true
}
