package ipvsadm

import (
	"slices"
	"sync"

	"uvs/rate"
	"uvs/service"
)

// schedulers is what the director knows; the fake checks names as it would.
var schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// fakeState is an in-memory director: an atomically swapped config, a
// fixed connection list and fixed rates.
type fakeState struct {
	mu      sync.Mutex
	cfg     *service.Config
	conns   []Conn
	rates   map[*service.Stats]rate.Rates
	zeroed  []*service.Stats
	updates int // successful updates
}

func newFake() *fakeState { return &fakeState{cfg: service.NewConfig()} }

func (f *fakeState) Config() *service.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

func (f *fakeState) Update(fn func(c *service.Config) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cfg.Clone()
	if err := fn(c); err != nil {
		return err
	}
	for _, s := range c.Services {
		if !slices.Contains(schedulers, s.Scheduler) || (s.PE != "" && s.PE != "sip") {
			return service.ErrNoScheduler
		}
	}
	f.cfg = c
	f.updates++
	return nil
}

func (f *fakeState) Conns() []Conn { return f.conns }

func (f *fakeState) Rates(s *service.Stats) rate.Rates { return f.rates[s] }

func (f *fakeState) ZeroRates(s *service.Stats) { f.zeroed = append(f.zeroed, s) }
