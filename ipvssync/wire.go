package ipvssync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Defaults of Linux's sync daemon (ipvsadm's --mcast-group, --mcast-port,
// --mcast-ttl).
var DefaultGroup = netip.AddrFrom4([4]byte{224, 0, 0, 81})

const (
	DefaultPort = 8848
	DefaultTTL  = 1
)

// Sizes on the wire.
const (
	HeaderLen   = 8  // version 1 message header
	HeaderLenV0 = 4  // version 0 message header
	ConnLenV4   = 36 // version 1 IPv4 entry without options
	ConnLenV6   = 72 // version 1 IPv6 entry without options
	ConnLenV0   = 24 // version 0 entry without sequence data
	SeqLen      = 24 // sequence adjustments: two Seq
	MaxPEData   = 255
	MaxPEName   = 16
	// MaxConns is the most entries a message holds: its count is one byte.
	MaxConns = 255
	// MaxMessage is the largest message: the size field's limit.
	MaxMessage = 65535
)

// IPVS's connection flags (IP_VS_CONN_F_*), as Conn.Flags carries them.
const (
	FwdMasq      = 0x0000 // forwarding methods, Flags & FwdMask
	FwdLocal     = 0x0001
	FwdTunnel    = 0x0002
	FwdRoute     = 0x0003
	FwdBypass    = 0x0004
	FwdMask      = 0x0007
	FlagSync     = 0x0020 // learned from a master (a receiver sets it; never sent)
	FlagHashed   = 0x0040 // in the sender's hash table (never sent)
	FlagNoOutput = 0x0080
	FlagInactive = 0x0100 // not established: counts as an inactive connection
	FlagOutSeq   = 0x0200
	FlagInSeq    = 0x0400
	SeqMask      = FlagOutSeq | FlagInSeq
	FlagNoCPort  = 0x0800
	FlagTemplate = 0x1000 // a persistence template, not a connection
	FlagOnePkt   = 0x2000 // one-packet scheduling (never synced)
	// BackupMask are the flags a Linux backup takes from an entry it
	// creates; BackupUpdMask those it takes into an existing one.
	BackupMask    = FwdMask | FlagNoOutput | FlagInactive | SeqMask | FlagNoCPort | FlagTemplate
	BackupUpdMask = FlagInactive | SeqMask
)

// Option types.
const (
	OptSeq      = 1
	OptPEData   = 2
	OptPEName   = 3
	OptOptional = 64 // bit of an option a receiver may skip
	// OptUVS is the UVS option (see the package comment): optional for
	// any receiver, and its low bits name no Linux option.
	OptUVS = OptOptional | 0x20
)

// uvsResync is OptUVS's bit for Conn.Resync.
const uvsResync = 1

// Seq is one direction's TCP sequence adjustment (IPVS's struct ip_vs_seq),
// used by application helpers that change payload lengths (ip_vs_ftp).
type Seq struct {
	Init, Delta, PrevDelta uint32
}

// Conn is one entry: a connection or, with FlagTemplate, a persistence
// template.
type Conn struct {
	V6                  bool
	Proto               uint8
	Flags               uint32
	State               uint16
	CPort, VPort, DPort uint16
	FWMark              uint32
	Timeout             uint32 // seconds; 0 (version 0) leaves it to the receiver
	CAddr, VAddr, DAddr netip.Addr
	HasSeq              bool // InSeq and OutSeq are set (option 1)
	InSeq, OutSeq       Seq
	// PEData and PEName are the persistence engine's data and name. A
	// Reader's point into the message it reads.
	PEData, PEName []byte
	// Resync marks an entry of a full table dump (UVS option).
	Resync bool
}

// wireLen is the entry's size without padding.
func (c *Conn) wireLen() int {
	n := ConnLenV4
	if c.V6 {
		n = ConnLenV6
	}
	if c.HasSeq {
		n += 2 + SeqLen
	}
	if len(c.PEData) > 0 {
		n += 2 + len(c.PEData)
		if len(c.PEName) > 0 {
			n += 2 + len(c.PEName)
		}
	}
	if c.Resync {
		n += 3
	}
	return n
}

// Errors.
var (
	// ErrFull: the entry does not fit the message; send it and start
	// another.
	ErrFull = errors.New("sync message full")
	// Malformed messages (Reader).
	ErrShort     = errors.New("message shorter than its header")
	ErrSize      = errors.New("message size field differs from its length")
	ErrTruncated = errors.New("entry runs past the end of the message")
	ErrType      = errors.New("entry of unknown type")
	ErrVersion   = errors.New("entry of unknown version")
	ErrOption    = errors.New("malformed option")
)

// Writer builds version 1 messages. Its buffer is made once; Add and Bytes
// allocate nothing.
type Writer struct {
	buf    []byte
	max    int
	n      int // bytes used, header included
	count  int
	syncID uint8
}

// maxEntry is the largest entry a Writer may have to take whole.
const maxEntry = ConnLenV6 + 2 + SeqLen + 2 + MaxPEData + 2 + MaxPEName + 3

// NewWriter returns a Writer of messages of at most maxLen bytes with sync
// ID syncID. A message always takes one entry, even one larger than maxLen
// (as Linux does with a tiny --sync-maxlen).
func NewWriter(syncID uint8, maxLen int) *Writer {
	maxLen = min(max(maxLen, 1), MaxMessage)
	w := &Writer{buf: make([]byte, max(maxLen, HeaderLen+maxEntry)), max: maxLen, syncID: syncID}
	w.Reset()
	return w
}

// Reset empties the message.
func (w *Writer) Reset() {
	clear(w.buf[:HeaderLen])
	w.n, w.count = HeaderLen, 0
}

// Count is the number of entries in the message.
func (w *Writer) Count() int { return w.count }

// Len is the message's size so far.
func (w *Writer) Len() int { return w.n }

// Bytes is the message, its header filled in, valid until the next Add or
// Reset.
func (w *Writer) Bytes() []byte {
	b := w.buf[:w.n]
	b[0], b[1] = 0, w.syncID
	binary.BigEndian.PutUint16(b[2:], uint16(w.n))
	b[4], b[5], b[6], b[7] = uint8(w.count), 1, 0, 0
	return b
}

// Add appends c. It returns ErrFull when c does not fit the message (which
// holds something: send it, Reset and Add again), and an error for an
// entry that cannot be encoded.
func (w *Writer) Add(c *Conn) error {
	if err := c.check(); err != nil {
		return err
	}
	n := c.wireLen()
	pad := (4 - w.n) & 3
	if w.count > 0 && (w.n+pad+n > w.max || w.count == MaxConns) {
		return ErrFull
	}
	b := w.buf[w.n : w.n+pad+n]
	clear(b[:pad])
	putConn(b[pad:], c, n)
	w.n += pad + n
	w.count++
	return nil
}

// check refuses what the format cannot carry.
func (c *Conn) check() error {
	fam := func(a netip.Addr) bool {
		if c.V6 {
			return a.Is6() && !a.Is4In6()
		}
		return a.Is4()
	}
	switch {
	case !fam(c.CAddr) || !fam(c.VAddr) || !fam(c.DAddr):
		return fmt.Errorf("sync entry: addresses %s, %s, %s are not all of the entry's family (IPv6 %v)", c.CAddr, c.VAddr, c.DAddr, c.V6)
	case len(c.PEData) > MaxPEData:
		return fmt.Errorf("sync entry: persistence data of %d bytes (at most %d)", len(c.PEData), MaxPEData)
	case len(c.PEName) > MaxPEName:
		return fmt.Errorf("sync entry: persistence engine name of %d bytes (at most %d)", len(c.PEName), MaxPEName)
	case len(c.PEName) > 0 && len(c.PEData) == 0:
		return errors.New("sync entry: persistence engine name without data")
	}
	return nil
}

// putConn writes c, n bytes, into b.
func putConn(b []byte, c *Conn, n int) {
	be := binary.BigEndian
	b[0] = 0
	if c.V6 {
		b[0] = 1
	}
	b[1] = c.Proto
	be.PutUint16(b[2:], uint16(n)) // version 0 in the top bits
	be.PutUint32(b[4:], c.Flags&^(FlagHashed|FlagSync))
	be.PutUint16(b[8:], c.State)
	be.PutUint16(b[10:], c.CPort)
	be.PutUint16(b[12:], c.VPort)
	be.PutUint16(b[14:], c.DPort)
	be.PutUint32(b[16:], c.FWMark)
	be.PutUint32(b[20:], c.Timeout)
	p := 24
	for _, a := range [3]netip.Addr{c.CAddr, c.VAddr, c.DAddr} {
		if c.V6 {
			a16 := a.As16()
			p += copy(b[p:], a16[:])
		} else {
			a4 := a.As4()
			p += copy(b[p:], a4[:])
		}
	}
	if c.HasSeq {
		b[p], b[p+1] = OptSeq, SeqLen
		p += 2
		for _, s := range [2]Seq{c.InSeq, c.OutSeq} {
			be.PutUint32(b[p:], s.Init)
			be.PutUint32(b[p+4:], s.Delta)
			be.PutUint32(b[p+8:], s.PrevDelta)
			p += 12
		}
	}
	if len(c.PEData) > 0 {
		b[p], b[p+1] = OptPEData, uint8(len(c.PEData))
		p += 2 + copy(b[p+2:], c.PEData)
		if len(c.PEName) > 0 {
			b[p], b[p+1] = OptPEName, uint8(len(c.PEName))
			p += 2 + copy(b[p+2:], c.PEName)
		}
	}
	if c.Resync {
		b[p], b[p+1], b[p+2] = OptUVS, 1, uvsResync
	}
}

// Header is a message's header.
type Header struct {
	Version int // 0 or 1
	SyncID  uint8
	Size    int
	Count   int
}

// Reader decodes one message at a time. It allocates nothing.
type Reader struct {
	b       []byte
	h       Header
	off     int // next entry
	i       int // entries read
	skipped int
	err     error
}

// Reset starts reading message b: it checks the header as Linux does and
// returns ErrShort or ErrSize for a message to drop whole.
func (r *Reader) Reset(b []byte) error {
	*r = Reader{b: b}
	if len(b) < HeaderLenV0 {
		r.err = ErrShort
		return r.err
	}
	size := int(binary.BigEndian.Uint16(b[2:]))
	if size != len(b) {
		r.err = fmt.Errorf("%w: %d bytes, size field %d", ErrSize, len(b), size)
		return r.err
	}
	r.h = Header{SyncID: b[1], Size: size}
	if len(b) >= HeaderLen && b[0] == 0 && b[5] == 1 && b[6] == 0 && b[7] == 0 {
		r.h.Version, r.h.Count, r.off = 1, int(b[4]), HeaderLen
	} else {
		r.h.Version, r.h.Count, r.off = 0, int(b[0]), HeaderLenV0
	}
	return nil
}

// Header is the message's header (after a successful Reset).
func (r *Reader) Header() Header { return r.h }

// Err is what ended the message early, nil if it was read to its end.
func (r *Reader) Err() error { return r.err }

// Skipped counts the entries skipped because they have an option the
// reader does not know and may not skip (Linux skips them too).
func (r *Reader) Skipped() int { return r.skipped }

// Next decodes the next entry into c and reports whether there was one. At
// false, Err says whether the message ended early. c's PEData and PEName
// point into the message.
func (r *Reader) Next(c *Conn) bool {
	for r.err == nil && r.i < r.h.Count {
		r.i++
		var skip bool
		if r.h.Version == 0 {
			r.err = r.nextV0(c)
		} else {
			skip, r.err = r.nextV1(c)
		}
		if r.err != nil {
			return false
		}
		if skip {
			r.skipped++
			continue
		}
		return true
	}
	return false
}

func (r *Reader) nextV1(c *Conn) (skip bool, err error) {
	be := binary.BigEndian
	b, p := r.b, r.off
	if p+ConnLenV4 > len(b) {
		return false, fmt.Errorf("%w: entry %d at %d", ErrTruncated, r.i, p)
	}
	vs := be.Uint16(b[p+2:])
	size := int(vs & 0x0fff)
	end := p + size
	if end > len(b) {
		return false, fmt.Errorf("%w: entry %d at %d of %d bytes", ErrTruncated, r.i, p, size)
	}
	if vs>>12 != 0 {
		return false, fmt.Errorf("%w: entry %d version %d", ErrVersion, r.i, vs>>12)
	}
	// As Linux: bit 0 means IPv6 whatever the other bits; otherwise
	// the type must be 0.
	v6 := b[p]&1 != 0
	base := ConnLenV4
	switch {
	case v6:
		base = ConnLenV6
	case b[p] != 0:
		return false, fmt.Errorf("%w: entry %d type %d", ErrType, r.i, b[p])
	}
	if size < base {
		return false, fmt.Errorf("%w: entry %d of %d bytes, type %d", ErrTruncated, r.i, size, b[p])
	}
	e := b[p:end]
	*c = Conn{
		V6: v6, Proto: e[1], Flags: be.Uint32(e[4:]), State: be.Uint16(e[8:]),
		CPort: be.Uint16(e[10:]), VPort: be.Uint16(e[12:]), DPort: be.Uint16(e[14:]),
		FWMark: be.Uint32(e[16:]), Timeout: be.Uint32(e[20:]),
	}
	if c.V6 {
		c.CAddr = netip.AddrFrom16([16]byte(e[24:40]))
		c.VAddr = netip.AddrFrom16([16]byte(e[40:56]))
		c.DAddr = netip.AddrFrom16([16]byte(e[56:72]))
	} else {
		c.CAddr = netip.AddrFrom4([4]byte(e[24:28]))
		c.VAddr = netip.AddrFrom4([4]byte(e[28:32]))
		c.DAddr = netip.AddrFrom4([4]byte(e[32:36]))
	}
	var seen uint8
	for q := base; q < len(e); {
		if q+2 > len(e) {
			return false, fmt.Errorf("%w: entry %d: option header past the end", ErrOption, r.i)
		}
		typ, n := e[q], int(e[q+1])
		q += 2
		if n == 0 || q+n > len(e) {
			return false, fmt.Errorf("%w: entry %d: option %d of %d bytes", ErrOption, r.i, typ, n)
		}
		data := e[q : q+n]
		q += n
		bit := uint8(0)
		switch typ &^ OptOptional {
		case OptSeq:
			if n != SeqLen {
				return false, fmt.Errorf("%w: entry %d: sequence option of %d bytes", ErrOption, r.i, n)
			}
			bit = 1
			c.HasSeq = true
			c.InSeq = Seq{be.Uint32(data), be.Uint32(data[4:]), be.Uint32(data[8:])}
			c.OutSeq = Seq{be.Uint32(data[12:]), be.Uint32(data[16:]), be.Uint32(data[20:])}
		case OptPEData:
			bit = 2
			c.PEData = data // at most 255: its length is a byte
		case OptPEName:
			if n > MaxPEName {
				return false, fmt.Errorf("%w: entry %d: persistence engine name of %d bytes", ErrOption, r.i, n)
			}
			bit = 4
			c.PEName = data
		default:
			if typ == OptUVS {
				c.Resync = data[0]&uvsResync != 0
			} else if typ&OptOptional == 0 {
				skip = true // a mandatory option we do not know
			}
		}
		if seen&bit != 0 {
			return false, fmt.Errorf("%w: entry %d: option %d twice", ErrOption, r.i, typ)
		}
		seen |= bit
	}
	r.off = p + (size+3)&^3
	return skip, nil
}

func (r *Reader) nextV0(c *Conn) error {
	be := binary.BigEndian
	b, p := r.b, r.off
	if p+ConnLenV0 > len(b) {
		return fmt.Errorf("%w: version 0 entry %d at %d", ErrTruncated, r.i, p)
	}
	e := b[p:]
	*c = Conn{
		Proto: e[1], CPort: be.Uint16(e[2:]), VPort: be.Uint16(e[4:]), DPort: be.Uint16(e[6:]),
		CAddr: netip.AddrFrom4([4]byte(e[8:12])), VAddr: netip.AddrFrom4([4]byte(e[12:16])),
		DAddr: netip.AddrFrom4([4]byte(e[16:20])),
		Flags: uint32(be.Uint16(e[20:])), State: be.Uint16(e[22:]),
	}
	p += ConnLenV0
	if c.Flags&SeqMask != 0 {
		if p+SeqLen > len(b) {
			return fmt.Errorf("%w: version 0 entry %d: sequence data past the end", ErrTruncated, r.i)
		}
		// Version 0 copies the sender's structs as they are in its memory:
		// little-endian on the machines that run IPVS.
		le := binary.LittleEndian
		s := b[p:]
		c.HasSeq = true
		c.InSeq = Seq{le.Uint32(s), le.Uint32(s[4:]), le.Uint32(s[8:])}
		c.OutSeq = Seq{le.Uint32(s[12:]), le.Uint32(s[16:]), le.Uint32(s[20:])}
		p += SeqLen
	}
	r.off = p
	return nil
}
