package conntrack

import (
	"sync/atomic"
	"time"
)

// Clock is a coarse monotonic clock for Config.Now. Reading the system
// clock costs about as much as the rest of a lookup; the table only needs
// time to within its 4 ms tick, so a packet loop can refresh a Clock once
// per batch of packets and let every lookup in the batch read it with an
// atomic load.
type Clock struct {
	base time.Time
	ns   atomic.Int64
}

// NewClock returns a Clock set to now.
func NewClock() *Clock {
	c := &Clock{base: time.Now()}
	return c
}

// Tick refreshes the clock from the system's monotonic clock.
func (c *Clock) Tick() { c.ns.Store(int64(time.Since(c.base))) }

// Now is the time of the last Tick, in monotonic nanoseconds.
func (c *Clock) Now() int64 { return c.ns.Load() }
