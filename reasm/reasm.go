// Package reasm reassembles IPv6 datagrams from their fragments (RFC 8200
// section 4.5), and IPv4 ones (RFC 791, Add4), for a director that
// balances datagrams whole, as IPVS does with the kernel's reassembly. The
// kernel reassembles IPv4 for packet sockets (PACKET_FANOUT_FLAG_DEFRAG)
// but not IPv6, and neither for a TUN device.
//
// A Table belongs to one packet worker and is not safe for concurrent
// use. Its memory is bounded and allocated as datagrams first need it,
// then reused: no allocation per fragment after that.
package reasm

import (
	"encoding/binary"
	"errors"
	"time"
)

// Config bounds a Table. Zero fields take the defaults.
type Config struct {
	// MaxDatagrams in progress at once; a new one takes the place of the
	// oldest. Default 32.
	MaxDatagrams int
	// MaxBytes of fragment data held at once; past it the oldest
	// datagrams are dropped. Default 1 MiB.
	MaxBytes int
	// Timeout after a datagram's first fragment arrived; default 60 s,
	// RFC 8200's.
	Timeout time.Duration
}

// Reasons Add drops a fragment (and with it the datagram, when one it
// belongs to can no longer be completed).
var (
	ErrMalformed = errors.New("malformed fragment")             // length not a multiple of 8, past 65535, header cut short
	ErrOverlap   = errors.New("overlapping fragments")          // RFC 5722: the whole datagram is dropped
	ErrTooLarge  = errors.New("reassembled datagram too large") // for out, or an unfragmentable part over maxHead
)

// maxHead bounds the unfragmentable part kept from the first fragment: the
// IPv6 header and the extension headers before the fragment header.
const maxHead = 512

const maxPayload = 65535 // IPv6 payload length field

type datagram struct {
	used     bool
	v4       bool
	src, dst [16]byte
	id       uint32
	started  int64 // ns, when the first fragment (in time) arrived
	head     []byte
	headLen  int // 0 until the fragment at offset 0 arrived
	nhAt     int // offset in head of the Next Header byte that named the fragment header
	nh       uint8
	data     []byte   // the fragmentable part, at its offsets
	units    []uint64 // bitmap of the 8-byte units received
	total    int      // length of the fragmentable part, -1 until the last fragment arrived
	got      int      // bytes of it received
	maxEnd   int      // the highest end of a fragment received, in bytes
	maxFrag  int      // longest fragment seen, as an IPv6 packet
}

// Table holds the datagrams being reassembled.
type Table struct {
	cfg   Config
	dgs   []datagram
	bytes int
}

// NewTable returns an empty table.
func NewTable(cfg Config) *Table {
	if cfg.MaxDatagrams <= 0 {
		cfg.MaxDatagrams = 32
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	return &Table{cfg: cfg, dgs: make([]datagram, cfg.MaxDatagrams)}
}

// InProgress is the number of datagrams waiting for fragments.
func (t *Table) InProgress() int {
	n := 0
	for i := range t.dgs {
		if t.dgs[i].used {
			n++
		}
	}
	return n
}

// Add takes one fragment: pkt is an IPv6 packet from its fixed header on,
// frag the offset in pkt of its fragment header and nhAt that of the Next
// Header byte naming it; now is a monotonic time in nanoseconds. When the
// fragment completes its datagram, Add writes the datagram into out — the
// first fragment's headers without the fragment header, then the whole
// fragmentable part, with the payload length and next header set — and
// returns its length and the longest fragment's length (what the sender's
// path allowed). Otherwise it returns 0: the fragment is kept (err nil) or
// dropped (err says why).
func (t *Table) Add(pkt []byte, frag, nhAt int, now int64, out []byte) (n, maxFrag int, err error) {
	if frag < 40 || frag+8 > len(pkt) || nhAt < 6 || nhAt >= frag || len(pkt) < 40 {
		return 0, 0, ErrMalformed
	}
	fo := int(binary.BigEndian.Uint16(pkt[frag+2:]))
	off, more := fo&^7, fo&1 != 0
	id := binary.BigEndian.Uint32(pkt[frag+4:])
	payload := pkt[frag+8:]
	end := off + len(payload)
	if more && len(payload)%8 != 0 || len(payload) == 0 && more || frag-40+end > maxPayload {
		return 0, 0, ErrMalformed
	}
	if frag > maxHead {
		return 0, 0, ErrTooLarge
	}
	if off == 0 && !more {
		// An atomic fragment (RFC 6946): the datagram is all here.
		return t.emit(out, pkt[:frag], nhAt, pkt[frag], payload, len(pkt))
	}

	d := t.find(false, pkt[8:24], pkt[24:40], id, now)
	return t.add(d, pkt, frag, nhAt, off, end, more, payload, out)
}

// Add4 is Add for an IPv4 packet, pkt from its header on (options
// included; those of the first fragment are kept). The datagram written to
// out has its total length, fragment fields (DF kept) and header checksum
// set.
func (t *Table) Add4(pkt []byte, now int64, out []byte) (n, maxFrag int, err error) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, 0, ErrMalformed
	}
	hl := int(pkt[0]&0x0f) * 4
	tl := int(binary.BigEndian.Uint16(pkt[2:]))
	if hl < 20 || tl < hl || tl > len(pkt) {
		return 0, 0, ErrMalformed
	}
	pkt = pkt[:tl]
	fo := int(binary.BigEndian.Uint16(pkt[6:]))
	off, more := fo&0x1fff*8, fo&0x2000 != 0
	payload := pkt[hl:]
	end := off + len(payload)
	if more && len(payload)%8 != 0 || len(payload) == 0 && more || hl+end > maxPayload {
		return 0, 0, ErrMalformed
	}
	if off == 0 && !more {
		return t.emit4(out, pkt[:hl], payload, len(pkt))
	}
	// RFC 791: a datagram is known by its addresses, protocol and ID.
	id := uint32(pkt[9])<<16 | uint32(binary.BigEndian.Uint16(pkt[4:]))
	d := t.find(true, pkt[12:16], pkt[16:20], id, now)
	return t.add(d, pkt, hl, 0, off, end, more, payload, out)
}

// add puts a fragment of d, [off, end) of its fragmentable part, in place;
// head is the length of the part of pkt kept from the first fragment.
func (t *Table) add(d *datagram, pkt []byte, frag, nhAt, off, end int, more bool, payload, out []byte) (n, maxFrag int, err error) {
	if d.headLen == 0 && off == 0 {
		d.headLen = copy(d.head, pkt[:frag])
		d.nhAt, d.nh = nhAt, pkt[frag]
	}
	if !more {
		if d.total >= 0 && d.total != end || end < d.maxEnd {
			t.drop(d)
			return 0, 0, ErrMalformed
		}
		d.total = end
	} else if d.total >= 0 && end > d.total {
		t.drop(d)
		return 0, 0, ErrMalformed
	}
	switch d.covered(off, end) {
	case all:
		return 0, 0, nil // an exact repeat: nothing new
	case some:
		t.drop(d)
		return 0, 0, ErrOverlap
	}
	d.mark(off, end)
	copy(d.data[off:end], payload)
	d.got += len(payload)
	d.maxEnd = max(d.maxEnd, end)
	d.maxFrag = max(d.maxFrag, len(pkt))
	t.bytes += len(payload)
	t.trim(d)
	if d.headLen == 0 || d.total < 0 || d.got != d.total {
		return 0, 0, nil
	}
	if d.v4 {
		n, maxFrag, err = t.emit4(out, d.head[:d.headLen], d.data[:d.total], d.maxFrag)
	} else {
		n, maxFrag, err = t.emit(out, d.head[:d.headLen], d.nhAt, d.nh, d.data[:d.total], d.maxFrag)
	}
	t.drop(d)
	return n, maxFrag, err
}

// emit writes head (with the byte at nhAt set to nh and the payload length
// fixed) and data into out.
func (t *Table) emit(out, head []byte, nhAt int, nh uint8, data []byte, maxFrag int) (int, int, error) {
	n := len(head) + len(data)
	if n > len(out) || n-40 > maxPayload {
		return 0, 0, ErrTooLarge
	}
	copy(out, head)
	copy(out[len(head):], data)
	out[nhAt] = nh
	binary.BigEndian.PutUint16(out[4:], uint16(n-40))
	return n, maxFrag, nil
}

// emit4 writes the IPv4 header head, fixed, and data into out.
func (t *Table) emit4(out, head, data []byte, maxFrag int) (int, int, error) {
	n := len(head) + len(data)
	if n > len(out) || n > maxPayload {
		return 0, 0, ErrTooLarge
	}
	copy(out, head)
	copy(out[len(head):], data)
	binary.BigEndian.PutUint16(out[2:], uint16(n))
	// MF and the offset go, and DF too: the director cannot cut the
	// datagram again for the way out, the kernel will (the kernel's own
	// reassembly keeps DF, but also the fragments' size to cut it to).
	out[6], out[7] = 0, 0
	out[10], out[11] = 0, 0
	var sum uint32
	for i := 0; i+1 < len(head); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(out[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(out[10:], ^uint16(sum))
	return n, maxFrag, nil
}

// ipv4Timeout caps the wait for an IPv4 datagram's fragments, as Linux's
// ipfrag_time: its 16-bit IDs come round sooner than IPv6's.
const ipv4Timeout = 30 * time.Second

func (t *Table) timeout(v4 bool) int64 {
	if v4 {
		return int64(min(t.cfg.Timeout, ipv4Timeout))
	}
	return int64(t.cfg.Timeout)
}

// find returns the datagram of a fragment from src to dst with id (of
// IPv4 when v4), starting one (in a free slot, an expired one, or the
// oldest's) if there is none.
func (t *Table) find(v4 bool, src, dst []byte, id uint32, now int64) *datagram {
	var free, oldest *datagram
	for i := range t.dgs {
		d := &t.dgs[i]
		if !d.used {
			if free == nil {
				free = d
			}
			continue
		}
		if now-d.started > t.timeout(d.v4) {
			t.drop(d)
			if free == nil {
				free = d
			}
			continue
		}
		if d.id == id && d.v4 == v4 && string(d.src[:len(src)]) == string(src) && string(d.dst[:len(dst)]) == string(dst) {
			return d
		}
		if oldest == nil || d.started < oldest.started {
			oldest = d
		}
	}
	d := free
	if d == nil {
		t.drop(oldest)
		d = oldest
	}
	if d.data == nil {
		d.head = make([]byte, maxHead)
		d.data = make([]byte, maxPayload)
		d.units = make([]uint64, (maxPayload/8+64)/64)
	}
	d.used, d.v4, d.id, d.started = true, v4, id, now
	copy(d.src[:], src)
	copy(d.dst[:], dst)
	d.headLen, d.total, d.got, d.maxFrag, d.maxEnd = 0, -1, 0, 0, 0
	return d
}

// drop frees d's slot, keeping its buffers.
func (t *Table) drop(d *datagram) {
	if !d.used {
		return
	}
	t.bytes -= d.got
	clear(d.units)
	d.used = false
}

// trim drops the oldest datagrams other than keep while more than
// MaxBytes are held.
func (t *Table) trim(keep *datagram) {
	for t.bytes > t.cfg.MaxBytes {
		var oldest *datagram
		for i := range t.dgs {
			d := &t.dgs[i]
			if d.used && d != keep && (oldest == nil || d.started < oldest.started) {
				oldest = d
			}
		}
		if oldest == nil {
			return
		}
		t.drop(oldest)
	}
}

type coverage int

const (
	none coverage = iota
	some
	all
)

// covered says how much of [off, end) was received already.
func (d *datagram) covered(off, end int) coverage {
	n, k := 0, 0
	for u := off / 8; u < (end+7)/8; u++ {
		k++
		if d.units[u/64]&(1<<(u%64)) != 0 {
			n++
		}
	}
	switch {
	case n == 0:
		return none
	case n == k:
		return all
	}
	return some
}

func (d *datagram) mark(off, end int) {
	for u := off / 8; u < (end+7)/8; u++ {
		d.units[u/64] |= 1 << (u % 64)
	}
}
