package scheduler

import (
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"uvs/service"
)

// mh is Maglev hashing built as Linux IPVS builds it (ip_vs_mh on 64-bit
// kernels; IPVS.md, "mh in detail"), so a UVS director and a kernel
// director with the same ordered server list send each client to the same
// server:
//
//   - key(x, k) is SipHash-1-3 of the 4 little-endian bytes of the 32-bit
//     x under the key (k, k), truncated to 32 bits (the kernel's hsiphash);
//     x = offset + port + address as host-order numbers, mod 2^32, an IPv6
//     address folded by XOR of its four words. The keys are mhKey1 and
//     mhKey2.
//   - The table has a prime size M (DefaultMHTableSize, or one of
//     MHTableSizes, the kernel's CONFIG_IP_VS_MH_TAB_INDEX choices). Each
//     server gets offset = key(port + address, mhKey1) mod M and
//     skip = key(port + address, mhKey2) mod (M-1) + 1.
//   - Servers take turns in list order (newest first), each claiming the
//     next free slot of its permutation offset, offset+skip, ... ; a server
//     takes (w/g)>>shift slots per turn (at least one), w its last positive
//     weight, g the gcd of those, shift = max(0, bits(max w/g) - (i+8)/2)
//     with i the size's index in MHTableSizes (6 bits for 4093: weights
//     100, 1, 1 take turns 50:1:1). A server added with weight 0 has no
//     last weight and is left out.
//   - A client's slot is key(source address [+ source port with mh-port],
//     mhKey1) mod M. A server set to weight 0 keeps its slots, so
//     quiescing moves no other client; its clients are dropped, or with
//     mh-fallback the slots key(v + (s+i) mod M, mhKey1) mod M for
//     i = 0, 1, ... are tried, s the first slot and v the client's value,
//     until an available server (chosen) or an empty slot (none).
//
// testdata/kernel-6.1.out and kernel-6.1-mh.out hold a real 6.1 kernel's
// choices (IPv4 and IPv6, mh-port, mh-fallback, weight edits, deletions);
// TestKernelHashing and TestKernelMH replay every one.
type mh struct {
	mu             sync.Mutex                   // serialises Update; never taken by Schedule
	last           map[*service.DestState]int32 // last positive weight of each server
	size           int
	fallback, port bool
	cur            atomic.Pointer[mhTable]
}

type mhTable struct {
	dests []*service.Dest
	slots []*service.Dest // nil entries: no server with a positive last weight
}

// MHTableSizes are the mh table sizes IPVS can be built with.
var MHTableSizes = []int{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// DefaultMHTableSize is the kernel's default (CONFIG_IP_VS_MH_TAB_INDEX 12).
const DefaultMHTableSize = 4093

func mhIndex(size int) int { return slices.Index(MHTableSizes, size) }

// The kernel's fixed SipHash keys (both 64-bit words of each are equal).
const (
	mhKey1 = 2654435761 // slot of a client, offset of a server
	mhKey2 = 2654446892 // skip of a server
)

func newMH(flags service.SchedFlags, size int) *mh {
	s := &mh{
		last:     map[*service.DestState]int32{},
		size:     size,
		fallback: flags&service.SchedMHFallback != 0,
		port:     flags&service.SchedMHPort != 0,
	}
	s.cur.Store(&mhTable{slots: make([]*service.Dest, size)})
	return s
}

func (s *mh) Update(dests []*service.Dest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := make(map[*service.DestState]int32, len(dests))
	servers := make([]MaglevServer, len(dests))
	for i, d := range dests {
		lw := s.last[d.DestState]
		if d.Weight > 0 {
			lw = d.Weight
		}
		last[d.DestState] = lw
		servers[i] = MaglevServer{Addr: fold(d.Addr), Port: d.Port, Weight: lw}
	}
	s.last = last
	t := &mhTable{dests: cloneDests(dests), slots: make([]*service.Dest, s.size)}
	for i, j := range BuildMaglev(servers, s.size) {
		if j >= 0 {
			t.slots[i] = t.dests[j]
		}
	}
	s.cur.Store(t)
}

func (s *mh) Schedule(f *Flow) *service.Dest {
	t := s.cur.Load()
	m := uint32(len(t.slots))
	v := fold(f.Src)
	if s.port && hasPorts(f.Proto) {
		v += uint32(f.SrcPort)
	}
	first := hsiphash32(v, mhKey1) % m
	d := t.slots[first]
	if d == nil {
		return nil
	}
	if available(d) {
		return d
	}
	if !s.fallback {
		return nil
	}
	for k := range m {
		d := t.slots[hsiphash32(v+(first+k)%m, mhKey1)%m]
		if d == nil {
			return nil
		}
		if available(d) {
			return d
		}
	}
	return nil
}

// MaglevServer is what the table builder knows of a real server.
type MaglevServer struct {
	Addr   uint32 // address as IPVS folds it (host order; IPv6 XOR-folded)
	Port   uint16
	Weight int32 // last positive weight; 0 leaves the server out
}

// BuildMaglev returns the mh lookup table of the given prime size for
// servers in list order: each slot holds an index into servers, or -1 when
// no server has a positive weight. It panics if size is not one of
// MHTableSizes.
func BuildMaglev(servers []MaglevServer, size int) []int32 {
	index := mhIndex(size)
	if index < 0 {
		panic("scheduler: mh table size not in MHTableSizes")
	}
	table := make([]int32, size)
	for i := range table {
		table[i] = -1
	}
	var g, hi int32
	for _, sv := range servers {
		if sv.Weight > 0 {
			g = int32(gcd(int64(g), int64(sv.Weight)))
			hi = max(hi, sv.Weight)
		}
	}
	if g == 0 {
		return table
	}
	// Big weights would need big turns; the kernel keeps the largest
	// turn within (index of the size among the primes + 8) / 2 bits.
	shift := max(0, bits.Len32(uint32(hi/g))-(index+8)/2)

	m := uint32(size)
	type perm struct{ next, skip, turns uint32 }
	perms := make([]perm, len(servers))
	for i, sv := range servers {
		v := uint32(sv.Port) + sv.Addr
		p := &perms[i]
		p.next = hsiphash32(v, mhKey1) % m
		p.skip = hsiphash32(v, mhKey2)%(m-1) + 1
		if sv.Weight > 0 {
			p.turns = max(1, uint32(sv.Weight/g)>>shift)
		}
	}
	taken := make([]bool, size)
	filled := 0
	for {
		for i := range perms {
			p := &perms[i]
			for t := uint32(0); t < p.turns; t++ {
				for taken[p.next] {
					p.next += p.skip
					if p.next >= m {
						p.next -= m
					}
				}
				taken[p.next] = true
				table[p.next] = int32(i)
				if filled++; filled == size {
					return table
				}
			}
		}
	}
}

// hsiphash32 is hsiphash4 under the key (k, k), as ip_vs_mh keys it.
func hsiphash32(v uint32, k uint64) uint32 { return hsiphash4(v, k, k) }

// hsiphash4 is SipHash-1-3 (one compression round, three finalisation
// rounds) of the 4 little-endian bytes of v under the key (k0, k1), the
// 64-bit result truncated to 32 bits: the kernel's hsiphash of 4 bytes on
// 64-bit machines. The message is one final block: the 4 bytes, then the
// length 4 in the top byte.
func hsiphash4(v uint32, k0, k1 uint64) uint32 {
	v0 := uint64(0x736f6d6570736575) ^ k0
	v1 := uint64(0x646f72616e646f6d) ^ k1
	v2 := uint64(0x6c7967656e657261) ^ k0
	v3 := uint64(0x7465646279746573) ^ k1
	b := uint64(4)<<56 | uint64(v)
	v3 ^= b
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= b
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return uint32(v0 ^ v1 ^ v2 ^ v3)
}

// sipRound is SipHash's ARX round on the state v0..v3.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}
