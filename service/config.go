//lint:file-ignore ST1005 these errors are printed verbatim as the kernel's answers, capitalised as ipvsadm prints them

package service

import (
	"errors"
	"net/netip"
	"slices"
)

// The kernel's answers to a rejected change, worded as ipvsadm prints them.
var (
	ErrServiceExists = errors.New("Service already exists")
	ErrNoService     = errors.New("No such service")
	ErrNoServiceDef  = errors.New("Service not defined") // adding a server to a missing service
	ErrDestExists    = errors.New("Destination already exists")
	ErrNoDest        = errors.New("No such destination")
	ErrNoScheduler   = errors.New("Scheduler or persistence engine not found")
	ErrRange         = errors.New("Numerical result out of range")
)

// Config is the whole rule table. Published Configs are immutable: edit a
// Clone.
type Config struct {
	Services []*Service // in the order they were added
	Timeouts Timeouts
}

// NewConfig returns an empty table with the default timeouts.
func NewConfig() *Config { return &Config{Timeouts: DefaultTimeouts} }

// Clone returns a copy whose services and dests may be changed without
// touching c. Live state (Stats, DestState) is shared, as it should be.
func (c *Config) Clone() *Config {
	n := &Config{Timeouts: c.Timeouts, Services: make([]*Service, len(c.Services))}
	for i, s := range c.Services {
		cs := *s
		cs.Dests = make([]*Dest, len(s.Dests))
		for j, d := range s.Dests {
			cd := *d
			cs.Dests[j] = &cd
		}
		n.Services[i] = &cs
	}
	return n
}

// Service returns the service with key k, or nil.
func (c *Config) Service(k Key) *Service {
	for _, s := range c.Services {
		if s.Key == k {
			return s
		}
	}
	return nil
}

// Sorted returns the services in ipvsadm's listing order.
func (c *Config) Sorted() []*Service {
	out := slices.Clone(c.Services)
	slices.SortStableFunc(out, func(a, b *Service) int {
		switch {
		case a.Key.Less(b.Key):
			return -1
		case b.Key.Less(a.Key):
			return 1
		}
		return 0
	})
	return out
}

// SortedDests returns s's real servers in ipvsadm's listing order: by
// address, then port.
func (s *Service) SortedDests() []*Dest {
	out := slices.Clone(s.Dests)
	slices.SortStableFunc(out, func(a, b *Dest) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}

// AddService adds s (without dests). Its Stats are created here.
func (c *Config) AddService(s *Service) error {
	if c.Service(s.Key) != nil {
		return ErrServiceExists
	}
	ns := *s
	ns.Dests = nil
	ns.Stats = new(Stats)
	c.Services = append(c.Services, &ns)
	return nil
}

// EditService replaces the options of the service with s's key; its dests
// and counters stay.
func (c *Config) EditService(s *Service) error {
	old := c.Service(s.Key)
	if old == nil {
		return ErrNoService
	}
	dests, stats := old.Dests, old.Stats
	*old = *s
	old.Dests, old.Stats = dests, stats
	return nil
}

// DeleteService removes the service and its real servers. The removed
// servers' state is marked gone so that their connections stop.
func (c *Config) DeleteService(k Key) error {
	i := slices.IndexFunc(c.Services, func(s *Service) bool { return s.Key == k })
	if i < 0 {
		return ErrNoService
	}
	c.Services = slices.Delete(c.Services, i, i+1)
	return nil
}

// Clear removes every service.
func (c *Config) Clear() { c.Services = nil }

// AddDest adds d to the service with key k, at the head of its list as the
// kernel does. A new DestState is created.
func (c *Config) AddDest(k Key, d *Dest) error {
	s := c.Service(k)
	if s == nil {
		return ErrNoServiceDef
	}
	if s.Dest(d.Addr, d.Port) != nil {
		return ErrDestExists
	}
	if d.LThresh > d.UThresh && d.UThresh != 0 {
		return ErrRange
	}
	nd := *d
	nd.DestState = newDestState()
	s.Dests = append([]*Dest{&nd}, s.Dests...)
	return nil
}

// EditDest changes the options of an existing real server; its live state
// and place in the list stay.
func (c *Config) EditDest(k Key, d *Dest) error {
	s := c.Service(k)
	if s == nil {
		return ErrNoService
	}
	old := s.Dest(d.Addr, d.Port)
	if old == nil {
		return ErrNoDest
	}
	if d.LThresh > d.UThresh && d.UThresh != 0 {
		return ErrRange
	}
	st := old.DestState
	*old = *d
	old.DestState = st
	return nil
}

// DeleteDest removes a real server from the service with key k.
func (c *Config) DeleteDest(k Key, addr netip.Addr, port uint16) error {
	s := c.Service(k)
	if s == nil {
		return ErrNoService
	}
	i := slices.IndexFunc(s.Dests, func(d *Dest) bool { return d.Addr == addr && d.Port == port })
	if i < 0 {
		return ErrNoDest
	}
	s.Dests = slices.Delete(slices.Clone(s.Dests), i, i+1)
	return nil
}

// Dests returns every DestState in c, for finding which ones a new snapshot
// dropped.
func (c *Config) destStates() map[*DestState]struct{} {
	m := make(map[*DestState]struct{})
	for _, s := range c.Services {
		for _, d := range s.Dests {
			m[d.DestState] = struct{}{}
		}
	}
	return m
}

// Removed returns the real servers' states that are in old but not in c:
// the servers a change deleted. The caller marks them gone once c is
// published.
func (c *Config) Removed(old *Config) []*DestState {
	if old == nil {
		return nil
	}
	keep := c.destStates()
	var out []*DestState
	for st := range old.destStates() {
		if _, ok := keep[st]; !ok {
			out = append(out, st)
		}
	}
	return out
}

// Carry returns want with the live state of cur carried over: a service
// that is in both keeps its counters, a real server that is in both keeps
// its connection counts and counters. Used to replace the whole table (a
// rules-file reload) without losing what is running.
func Carry(cur, want *Config) *Config {
	next := want.Clone()
	for _, s := range next.Services {
		old := cur.Service(s.Key)
		if old == nil {
			if s.Stats == nil {
				s.Stats = new(Stats)
			}
			for _, d := range s.Dests {
				if d.DestState == nil {
					d.DestState = newDestState()
				}
			}
			continue
		}
		s.Stats = old.Stats
		for _, d := range s.Dests {
			if od := old.Dest(d.Addr, d.Port); od != nil {
				d.DestState = od.DestState
			} else if d.DestState == nil {
				d.DestState = newDestState()
			}
		}
	}
	return next
}
