// Package scheduler picks the real server for each new connection of a
// virtual service, with the semantics of the Linux IPVS schedulers: rr, wrr,
// lc, wlc, sed, nq, dh, sh, lblc, lblcr, fo, ovf, mh and twos.
//
// A Scheduler holds an immutable snapshot of the service's real servers
// (installed by Update, swapped through an atomic pointer) plus whatever
// position the algorithm keeps: the rr/wrr cursor (one atomic word), the
// dh/sh/mh lookup tables (rebuilt by Update) or the lblc/lblcr caches
// (fixed-size, preallocated). Schedule allocates nothing and never waits
// for the control plane.
//
// Shared rules (IPVS.md, "Schedulers"): a server with weight 0 or the
// overload flag takes no new connections; load is overhead =
// active<<8 + inactive; weighted comparisons cross-multiply and ties go to
// the first server in the kernel's list order, which is newest first.
package scheduler

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"uvs/service"
)

// Flow is what a scheduler may look at of a new connection's first packet.
type Flow struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Scheduler picks real servers for new connections of one service.
type Scheduler interface {
	// Update installs the service's real servers in the kernel's list
	// order (newest first). The control plane calls it on every change; it
	// is safe concurrently with Schedule and keeps the scheduler's position
	// where IPVS keeps it (e.g. the rr/wrr cursor).
	Update(dests []*service.Dest)
	// Schedule picks the real server for a new connection, or nil if none
	// is available. It allocates nothing and takes no lock shared with the
	// control plane.
	Schedule(f *Flow) *service.Dest
}

// Options tune the schedulers that need more than the server list. A nil
// *Options means defaults.
type Options struct {
	// Now is the lblc/lblcr clock; nil means time.Now.
	Now func() time.Time
	// MHTableSize is the mh lookup table size, one of MHTableSizes; 0
	// means 4093, the kernel's default.
	MHTableSize int
	// Rand returns a uniform number in [0, n) for twos; it must be safe
	// for concurrent use. nil means math/rand/v2's Uint64N.
	Rand func(n uint64) uint64
	// CacheSize bounds the lblc/lblcr tables (entries); 0 means 16384, the
	// size at which the kernel starts trimming idle entries.
	CacheSize int
}

// names are the accepted scheduler names, in the order ipvsadm's man page
// lists them.
var names = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// Names returns the accepted scheduler names, for help and validation.
func Names() []string { return slices.Clone(names) }

// New returns a scheduler by IPVS name with the service's -b flags;
// service.ErrNoScheduler for an unknown name.
func New(name string, flags service.SchedFlags, opts *Options) (Scheduler, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Uint64N
	}
	if o.CacheSize <= 0 {
		o.CacheSize = defaultCacheSize
	}
	switch name {
	case "rr":
		return newRR(), nil
	case "wrr":
		return newWRR(), nil
	case "lc":
		return newLoad(pickLC), nil
	case "wlc":
		return newLoad(pickWLC), nil
	case "sed":
		return newLoad(pickSED), nil
	case "nq":
		return newLoad(pickNQ), nil
	case "fo":
		return newLoad(pickFO), nil
	case "ovf":
		return newLoad(pickOVF), nil
	case "twos":
		return newTwos(o.Rand), nil
	case "dh":
		return newDH(), nil
	case "sh":
		return newSH(flags), nil
	case "mh":
		size := o.MHTableSize
		if size == 0 {
			size = DefaultMHTableSize
		}
		if mhIndex(size) < 0 {
			return nil, fmt.Errorf("mh table size %d: not one of %v: %w", size, MHTableSizes, service.ErrRange)
		}
		return newMH(flags, size), nil
	case "lblc":
		return newLBLC(o.Now, o.CacheSize), nil
	case "lblcr":
		return newLBLCR(o.Now, o.CacheSize), nil
	}
	return nil, fmt.Errorf("scheduler %q: %w", name, service.ErrNoScheduler)
}

// available is the shared rule for new connections.
func available(d *service.Dest) bool { return d.Weight > 0 && !d.Overloaded() }

// destsEqual reports whether a list holds the same servers with the same
// settings in the same order as the copies in vals: Update calls that
// change nothing leave the position alone, as the kernel only hears of
// real edits. Copies, because a caller may edit a Dest in place.
func destsEqual(vals []service.Dest, b []*service.Dest) bool {
	if len(vals) != len(b) {
		return false
	}
	for i := range vals {
		if vals[i] != *b[i] {
			return false
		}
	}
	return true
}

// destValues copies the servers' settings.
func destValues(dests []*service.Dest) []service.Dest {
	v := make([]service.Dest, len(dests))
	for i, d := range dests {
		v[i] = *d
	}
	return v
}

// cloneDests copies the list (not the servers), so a caller reusing its
// slice cannot change a published snapshot.
func cloneDests(dests []*service.Dest) []*service.Dest { return slices.Clone(dests) }
