package scheduler

import (
	"net/netip"

	"uvs/service"
)

var (
	testKey  = service.Key{Proto: service.TCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}
	testKey6 = service.Key{Proto: service.TCP, Addr: netip.MustParseAddr("2001:2::100"), Port: 80}
)

// lab is a service under test, edited through service.Config as the
// control plane would, with the scheduler updated after every change.
type lab struct {
	t     tb
	key   service.Key // testKey, or testKey6 with IPv6 real servers
	cfg   *service.Config
	sched Scheduler
}

// tb is what lab needs of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
}

func newLab(t tb, name string, flags service.SchedFlags, opts *Options) *lab {
	t.Helper()
	return newLabKey(t, testKey, name, flags, opts)
}

// newLab6 is newLab for an IPv6 service with real servers 2001:2:0:1::n.
func newLab6(t tb, name string, flags service.SchedFlags, opts *Options) *lab {
	t.Helper()
	return newLabKey(t, testKey6, name, flags, opts)
}

func newLabKey(t tb, key service.Key, name string, flags service.SchedFlags, opts *Options) *lab {
	t.Helper()
	s, err := New(name, flags, opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := service.NewConfig()
	if err := cfg.AddService(&service.Service{Key: key, Scheduler: name, Flags: flags}); err != nil {
		t.Fatal(err)
	}
	return &lab{t: t, key: key, cfg: cfg, sched: s}
}

func (l *lab) svc() *service.Service { return l.cfg.Service(l.key) }

// edit changes a clone of the table and publishes it, as the control
// plane does.
func (l *lab) edit(f func(c *service.Config) error) {
	l.t.Helper()
	c := l.cfg.Clone()
	if err := f(c); err != nil {
		l.t.Fatal(err)
	}
	l.cfg = c
	l.sync()
}
func (l *lab) sync() { l.sched.Update(l.svc().Dests) }

// rs is the address of real server n: 198.18.1.n.
func rs(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(n)}) }

// rs6 is the address of IPv6 real server n: 2001:2:0:1::n.
func rs6(n int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, 0, 0, 1, 15: byte(n)})
}

// rsAddr is real server n of the lab's family.
func (l *lab) rsAddr(n int) netip.Addr {
	if l.key.Addr.Is6() {
		return rs6(n)
	}
	return rs(n)
}

// add adds real server n (198.18.1.n:80, or [2001:2:0:1::n]:80) with
// weight w.
func (l *lab) add(n int, w int32) *service.Dest {
	l.t.Helper()
	l.edit(func(c *service.Config) error {
		return c.AddDest(l.key, &service.Dest{Addr: l.rsAddr(n), Port: 80, Fwd: service.FwdMasq, Weight: w})
	})
	return l.dest(n)
}

func (l *lab) dest(n int) *service.Dest { return l.svc().Dest(l.rsAddr(n), 80) }

func (l *lab) setWeight(n int, w int32) {
	l.t.Helper()
	d := *l.dest(n)
	d.Weight = w
	l.edit(func(c *service.Config) error { return c.EditDest(l.key, &d) })
}

func (l *lab) del(n int) {
	l.t.Helper()
	l.edit(func(c *service.Config) error { return c.DeleteDest(l.key, l.rsAddr(n), 80) })
}

// name is the server's number (the last byte of its address), 0 for none.
func name(d *service.Dest) int {
	if d == nil {
		return 0
	}
	return int(d.Addr.As16()[15])
}

// picks schedules n new connections from one flow and names the servers.
func (l *lab) picks(n int) []int {
	out := make([]int, n)
	f := &Flow{Proto: service.TCP, Src: netip.MustParseAddr("198.18.0.2"), Dst: l.key.Addr, SrcPort: 40000, DstPort: 80}
	for i := range out {
		out[i] = name(l.sched.Schedule(f))
	}
	return out
}

func (l *lab) pickFrom(src netip.Addr, sport uint16) int {
	return name(l.sched.Schedule(&Flow{Proto: service.TCP, Src: src, Dst: l.key.Addr, SrcPort: sport, DstPort: 80}))
}
