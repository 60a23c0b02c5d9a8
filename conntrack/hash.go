package conntrack

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
)

// newSeed draws the hash keys. A seeded hash keeps a remote sender from
// choosing tuples that pile up in one shard or one probe chain.
func newSeed() [4]uint64 {
	var s [4]uint64
	seed := maphash.MakeSeed()
	for i := range s {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteByte(byte(i))
		s[i] = h.Sum64() | 1
	}
	return s
}

// mix is a multiply-fold: the 128-bit product's halves xored.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hashEnd hashes a flow's client endpoint. It picks the shard, and it is
// the same for both directions of a connection.
func (t *Table) hashEnd(proto uint8, a *Addr, port uint16) uint64 {
	lo := binary.LittleEndian.Uint64(a[:8])
	hi := binary.LittleEndian.Uint64(a[8:])
	return mix(lo^t.seed[0], hi^t.seed[1]^uint64(port)<<16^uint64(proto))
}

// hashFull extends an endpoint hash with the other endpoint and the
// direction: the key of one index slot.
func (t *Table) hashFull(h uint64, a *Addr, port uint16, d Dir) uint64 {
	lo := binary.LittleEndian.Uint64(a[:8])
	hi := binary.LittleEndian.Uint64(a[8:])
	return mix(h^lo^t.seed[2], hi^t.seed[3]^uint64(port)<<16^uint64(d)<<32)
}

func (t *Table) shardOf(h uint64) *shard {
	return &t.shards[h>>(64-t.shardBits)&(1<<t.shardBits-1)]
}
