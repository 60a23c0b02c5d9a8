package scheduler

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"uvs/service"
)

// dh and sh map an address to one of 256 buckets with the kernel's
// hash_32(x, 8) = (x * 0x61C88647 mod 2^32) >> 24, x the address as a
// host-order number (IPv6: the XOR of its four 32-bit words), plus the
// source port with sh-port.
const (
	hashBuckets = 256
	goldenRatio = 0x61C88647
)

func hash8(x uint32) uint32 { return (x * goldenRatio) >> 24 }

// fold is the address as IPVS hashes it.
func fold(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return binary.BigEndian.Uint32(b[:])
	}
	b := a.As16()
	return binary.BigEndian.Uint32(b[0:]) ^ binary.BigEndian.Uint32(b[4:]) ^
		binary.BigEndian.Uint32(b[8:]) ^ binary.BigEndian.Uint32(b[12:])
}

// hasPorts reports whether IPVS reads ports from the protocol's header
// (TCP, UDP, SCTP) for sh-port and mh-port.
func hasPorts(proto uint8) bool { return proto == 6 || proto == 17 || proto == 132 }

type bucketTable [hashBuckets]*service.Dest

// dh: buckets filled by walking the list round robin, one bucket per
// server per turn (weights ignored); the destination address picks the
// bucket; an unavailable server there means no server.
type dh struct{ tab atomic.Pointer[bucketTable] }

func newDH() *dh {
	s := new(dh)
	s.tab.Store(new(bucketTable))
	return s
}

func (s *dh) Update(dests []*service.Dest) {
	t := new(bucketTable)
	if n := len(dests); n > 0 {
		for i := range t {
			t[i] = dests[i%n]
		}
	}
	s.tab.Store(t)
}

func (s *dh) Schedule(f *Flow) *service.Dest {
	d := s.tab.Load()[hash8(fold(f.Dst))]
	if d == nil || !available(d) {
		return nil
	}
	return d
}

// sh: buckets filled by walking the list, each server taking weight
// consecutive buckets (at least one, so a weight-0 server holds a bucket
// and its clients are dropped, or with sh-fallback sent elsewhere).
type sh struct {
	tab            atomic.Pointer[bucketTable]
	fallback, port bool
}

func newSH(flags service.SchedFlags) *sh {
	s := &sh{fallback: flags&service.SchedSHFallback != 0, port: flags&service.SchedSHPort != 0}
	s.tab.Store(new(bucketTable))
	return s
}

func (s *sh) Update(dests []*service.Dest) {
	t := new(bucketTable)
	if len(dests) > 0 {
		i, taken := 0, int32(0)
		for b := range t {
			d := dests[i]
			t[b] = d
			if taken++; taken >= d.Weight {
				i, taken = (i+1)%len(dests), 0
			}
		}
	}
	s.tab.Store(t)
}

func (s *sh) Schedule(f *Flow) *service.Dest {
	t := s.tab.Load()
	x := fold(f.Src)
	if s.port && hasPorts(f.Proto) {
		x += uint32(f.SrcPort)
	}
	h := hash8(x)
	d := t[h]
	if d == nil {
		return nil
	}
	if available(d) {
		return d
	}
	if !s.fallback {
		return nil
	}
	// The kernel probes from the original bucket offset by the hash once
	// more: buckets 2h, 2h+1, ... (mod 256) — all of them, in turn.
	for off := range uint32(hashBuckets) {
		if d := t[(off+2*h)%hashBuckets]; available(d) {
			return d
		}
	}
	return nil
}
