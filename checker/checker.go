package checker

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"uvs/healthcheck"
	"uvs/keepalived"
	"uvs/service"
)

// Table is the rule table the checker edits: *director.Director. Update
// applies fn to a copy of the table and publishes it if fn and the host
// changes succeed; nothing changes on error.
type Table interface {
	Update(fn func(*service.Config) error) error
}

// Options are a Checker's settings; the zero value is the defaults.
type Options struct {
	Log *slog.Logger // nil: discarded
	// Do, if set, runs a function in the network namespace where checks
	// and scripts are to be made (testbed's Host.Do); nil: the process's.
	Do func(func() error) error
	// ScriptTimeout is how long a notify or quorum script may run; 0 is
	// DefaultScriptTimeout.
	ScriptTimeout time.Duration
	// DrainTimeout is the longest a real server or virtual server that a
	// reload removed waits for its connections (drain.go); 0 is
	// DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// DefaultScriptTimeout bounds notify_up, notify_down, quorum_up and
// quorum_down scripts. keepalived documents no bound for them; a script
// that hangs must not pile up processes.
const DefaultScriptTimeout = 30 * time.Second

// Checker puts the virtual services of a keepalived file into a Table and
// keeps their real servers there as the health checks say (see the
// package comment).
type Checker struct {
	table Table
	log   *slog.Logger
	mon   *healthcheck.Monitor
	run   *scripts

	mu       sync.Mutex
	vss      []*virtual
	byTarget map[healthcheck.Target]*member
	owned    map[service.Key]bool
	closed   bool

	// Draining (drain.go): what reloads removed, with the time each may
	// wait until.
	drainSrv     map[drainKey]time.Time
	drainSvc     map[service.Key]time.Time
	drainTimeout time.Duration
	stop         chan struct{}
	drainDone    chan struct{}

	tableErrors uint64 // under mu
}

// Check reports whether f can be run: what New and Reload would refuse,
// without a table. The error names the file and line.
func Check(f *keepalived.File) error {
	_, _, err := build(f)
	return err
}

// New adds the virtual services of f to t, with every real server in at
// its weight but those that start down (alpha), and starts their checks.
// A service of f that t already has is an error, and then t is unchanged.
func New(t Table, f *keepalived.File, opt Options) (*Checker, error) {
	vss, warnings, err := build(f)
	if err != nil {
		return nil, err
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.ScriptTimeout <= 0 {
		opt.ScriptTimeout = DefaultScriptTimeout
	}
	if opt.DrainTimeout <= 0 {
		opt.DrainTimeout = DefaultDrainTimeout
	}
	c := &Checker{table: t, log: opt.Log, byTarget: map[healthcheck.Target]*member{}, owned: map[service.Key]bool{},
		drainSrv: map[drainKey]time.Time{}, drainSvc: map[service.Key]time.Time{}, drainTimeout: opt.DrainTimeout,
		stop: make(chan struct{}), drainDone: make(chan struct{})}
	c.run = newScripts(opt.Do, opt.ScriptTimeout, opt.Log)
	for _, w := range warnings {
		c.log.Warn("keepalived: " + w)
	}
	for _, v := range vss {
		for _, r := range v.reals {
			r.up = r.start
		}
		v.liveWeight = liveWeight(v)
		v.quorumUp = v.liveWeight >= v.vs.Quorum
		if !v.quorumUp {
			c.log.Warn("keepalived: quorum not reached at start", "service", serviceName(v.keys),
				"live_weight", v.liveWeight, "quorum", v.vs.Quorum, "sorry_server", sorryName(v))
		}
	}
	err = t.Update(func(cfg *service.Config) error {
		for _, v := range vss {
			for i, k := range v.keys {
				if cfg.Service(k) != nil {
					return fmt.Errorf("%s: virtual_server: the table already has the service %s", v.vs.Pos, k)
				}
				if err := cfg.AddService(cloneService(v.svcs[i])); err != nil {
					return fmt.Errorf("%s: virtual_server %s: %w", v.vs.Pos, k, err)
				}
			}
			if err := syncVS(cfg, v, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.run.close()
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commit(vss)
	go func() {
		defer close(c.drainDone)
		c.drainLoop()
	}()
	c.mon = healthcheck.NewMonitor(c.onEvent, c.log)
	if opt.Do != nil {
		c.mon.RunIn(opt.Do)
	}
	for _, v := range vss {
		for _, r := range v.reals {
			c.mon.Set(r.target, r.specs, r.start)
		}
		c.log.Info("keepalived: virtual server in", "service", serviceName(v.keys), "real_servers", len(v.reals),
			"up", countUp(v), "quorum", v.vs.Quorum, "quorum_up", v.quorumUp)
	}
	return c, nil
}

// commit makes vss the virtual servers in force. c.mu is held.
func (c *Checker) commit(vss []*virtual) {
	c.vss = vss
	c.byTarget = map[healthcheck.Target]*member{}
	c.owned = map[service.Key]bool{}
	for k := range c.drainSvc {
		c.owned[k] = true // until drained
	}
	for _, v := range vss {
		for _, k := range v.keys {
			c.owned[k] = true
		}
		for _, r := range v.reals {
			c.byTarget[r.target] = r
		}
	}
}

// Keys returns the services the checker's file names, in ipvsadm's order:
// those it owns. It must not be called from inside Table.Update (the
// checker changes the table with its own lock held).
func (c *Checker) Keys() []service.Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]service.Key, 0, len(c.owned))
	for k := range c.owned {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b service.Key) int {
		switch {
		case a.Less(b):
			return -1
		case b.Less(a):
			return 1
		}
		return 0
	})
	return keys
}

// onEvent applies a change of a real server's checks.
func (c *Checker) onEvent(ev healthcheck.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.byTarget[ev.Target]
	if c.closed || r == nil {
		return // removed by a reload meanwhile
	}
	v := r.v
	wasUp, wasWeight := r.up, r.weight
	r.up = ev.Up
	r.weight = -1
	if ev.Up {
		r.weight = ev.Weight
	}
	if r.up == wasUp && (!r.up || r.weight == wasWeight) {
		return
	}
	// The quorum first, so that the log says what the table does.
	gained, lost := quorumStep(v)
	switch {
	case r.up && !wasUp:
		c.log.Info("keepalived: real server up: "+c.action(r), "service", serviceName(v.keys),
			"server", r.rs.Addr.String(), "weight", r.weightNow(), "reason", ev.Reason)
		c.run.start("notify_up", r.rs.NotifyUp)
	case !r.up && wasUp:
		c.log.Warn("keepalived: real server down: "+c.action(r), "service", serviceName(v.keys),
			"server", r.rs.Addr.String(), "reason", ev.Reason)
		c.run.start("notify_down", r.rs.NotifyDown)
	default:
		c.log.Info("keepalived: real server weight: "+c.action(r), "service", serviceName(v.keys),
			"server", r.rs.Addr.String(), "weight", r.weightNow(), "reason", ev.Reason)
	}
	err := c.table.Update(func(cfg *service.Config) error { return syncVS(cfg, v, c.log) })
	if err != nil {
		c.tableErrors++
		c.log.Error("keepalived: table change refused; it is made again at the next change of the virtual server",
			"service", serviceName(v.keys), "err", err)
	}
	c.quorumChanged(v, gained, lost)
}

// action says what the table does with r in its present state.
func (c *Checker) action(r *member) string {
	switch {
	case !r.v.quorumUp && r.v.vs.Sorry != nil:
		return "the sorry server serves (quorum lost)"
	case r.up:
		return "in"
	case r.rs.InhibitOnFailure:
		return "weight 0 (inhibit_on_failure)"
	}
	return "out"
}

// quorumStep works out v's quorum after a change: whether it was gained
// or lost.
func quorumStep(v *virtual) (gained, lost bool) {
	v.liveWeight = liveWeight(v)
	q, h := v.vs.Quorum, v.vs.Hysteresis
	switch {
	case v.quorumUp && v.liveWeight < q-h:
		v.quorumUp = false
		v.transDown++
		return false, true
	case !v.quorumUp && v.liveWeight >= q+h:
		v.quorumUp = true
		v.transUp++
		return true, false
	}
	return false, false
}

// quorumChanged logs a quorum transition of v and runs its script.
func (c *Checker) quorumChanged(v *virtual, gained, lost bool) {
	q, h := v.vs.Quorum, v.vs.Hysteresis
	switch {
	case gained:
		c.log.Info("keepalived: quorum gained", "service", serviceName(v.keys), "live_weight", v.liveWeight,
			"quorum", q, "hysteresis", h, "sorry_server", sorryName(v))
		c.run.start("quorum_up", v.vs.QuorumUp)
	case lost:
		c.log.Warn("keepalived: quorum lost", "service", serviceName(v.keys), "live_weight", v.liveWeight,
			"quorum", q, "hysteresis", h, "sorry_server", sorryName(v))
		c.run.start("quorum_down", v.vs.QuorumDown)
	}
}

// liveWeight is the sum of the weights of v's live real servers: what
// the quorum is compared with.
func liveWeight(v *virtual) int {
	n := 0
	for _, r := range v.reals {
		if r.up {
			n += r.weightNow()
		}
	}
	return n
}

func countUp(v *virtual) int {
	n := 0
	for _, r := range v.reals {
		if r.up {
			n++
		}
	}
	return n
}

func sorryName(v *virtual) string {
	if v.vs.Sorry == nil {
		return "none"
	}
	return v.vs.Sorry.Addr.String()
}

// ErrClosed is returned by Reload after Close.
var ErrClosed = errors.New("checker closed")

// Reload makes the table follow f instead of the file before, changing
// only the difference: services no longer in f drain and are deleted
// (drain.go), new ones added, changed ones edited; real servers no longer
// in f drain at weight 0 and are deleted once their established
// connections are over, new ones added, changed ones edited. Real servers whose checkers did not change keep their
// state, and the table keeps the connections and counters of every
// service and real server that stays. When f cannot be run, or the table
// refuses the change, nothing changes and the error says why.
func (c *Checker) Reload(f *keepalived.File) error {
	vss, warnings, err := build(f)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	for _, w := range warnings {
		c.log.Warn("keepalived: " + w)
	}
	old := map[string]*virtual{}
	for _, v := range c.vss {
		old[v.id] = v
	}
	var gained, lost []*virtual
	kept := map[healthcheck.Target]bool{}
	for _, v := range vss {
		ov := old[v.id]
		for _, r := range v.reals {
			r.up = r.start
			if or := c.byTarget[r.target]; ov != nil && or != nil && or.v == ov {
				r.up, r.weight = or.up, or.weight
				kept[r.target] = true
			}
		}
		if ov == nil {
			v.liveWeight = liveWeight(v)
			v.quorumUp = v.liveWeight >= v.vs.Quorum
			continue
		}
		v.quorumUp, v.transUp, v.transDown = ov.quorumUp, ov.transUp, ov.transDown
		// The quorum or the weights may have changed.
		switch g, l := quorumStep(v); {
		case g:
			gained = append(gained, v)
		case l:
			lost = append(lost, v)
		}
	}
	next := map[service.Key]bool{}
	for _, v := range vss {
		for _, k := range v.keys {
			next[k] = true
		}
	}
	// What drains after this reload (drain.go): what drained before and is
	// not named again, and what this reload removes.
	until := time.Now().Add(c.drainTimeout)
	drainSrv, drainSvc := map[drainKey]time.Time{}, map[service.Key]time.Time{}
	for dk, t := range c.drainSrv {
		if !named(vss, dk.svc, &service.Dest{Addr: dk.addr.Addr(), Port: dk.addr.Port()}) {
			drainSrv[dk] = t
		}
	}
	for k, t := range c.drainSvc {
		if !next[k] {
			drainSvc[k] = t
		}
	}
	err = c.table.Update(func(cfg *service.Config) error {
		for _, ov := range c.vss {
			for i, k := range ov.keys {
				if !next[k] {
					s := cfg.Service(k)
					switch {
					case s == nil:
					case anyDrainable(s):
						for _, d := range s.Dests {
							if d.Weight != 0 {
								if err := cfg.EditDest(k, withWeight(d, 0)); err != nil {
									return fmt.Errorf("drain service %s: %w", k, err)
								}
							}
						}
						drainSvc[k] = until
					default:
						if err := cfg.DeleteService(k); err != nil {
							return fmt.Errorf("delete service %s: %w", k, err)
						}
					}
					continue
				}
				// Real and sorry servers of the old file that the new
				// one does not name for k: drained, then deleted.
				for _, d := range servers(ov, i) {
					if named(vss, k, d) || cfg.Service(k) == nil || cfg.Service(k).Dest(d.Addr, d.Port) == nil {
						continue
					}
					if err := c.startDrain(cfg, k, cfg.Service(k).Dest(d.Addr, d.Port), until, drainSrv); err != nil {
						return fmt.Errorf("remove real server %s of %s: %w", d.AddrPort(), k, err)
					}
				}
			}
		}
		for _, v := range vss {
			for i, k := range v.keys {
				s := cfg.Service(k)
				switch {
				case s != nil && !c.owned[k]:
					return fmt.Errorf("%s: virtual_server: the table already has the service %s, not from the keepalived file", v.vs.Pos, k)
				case s == nil:
					if err := cfg.AddService(cloneService(v.svcs[i])); err != nil {
						return fmt.Errorf("%s: virtual_server %s: %w", v.vs.Pos, k, err)
					}
				case !sameService(s, v.svcs[i]):
					if err := cfg.EditService(cloneService(v.svcs[i])); err != nil {
						return fmt.Errorf("%s: virtual_server %s: %w", v.vs.Pos, k, err)
					}
				}
			}
			if err := syncVS(cfg, v, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Nothing changed: the state computed above is dropped. (A
		// quorum evaluated on it moved no counter of the virtual
		// servers in force, which are other objects.)
		return fmt.Errorf("apply the keepalived file: %w", err)
	}
	added, deleted := 0, 0
	for _, v := range vss {
		if old[v.id] == nil {
			added++
		}
	}
	for _, ov := range c.vss {
		stays := false
		for _, v := range vss {
			stays = stays || v.id == ov.id
		}
		if !stays {
			deleted++
		}
		for _, r := range ov.reals {
			if !kept[r.target] {
				c.mon.Remove(r.target)
			}
		}
	}
	for dk := range drainSrv {
		if _, ok := c.drainSrv[dk]; !ok {
			c.log.Info("keepalived: real server draining: weight 0 until its connections end", "service", dk.svc.String(), "server", dk.addr.String())
		}
	}
	for k := range drainSvc {
		if _, ok := c.drainSvc[k]; !ok {
			c.log.Info("keepalived: virtual server draining: weight 0 until its connections end", "service", k.String())
		}
	}
	c.drainSrv, c.drainSvc = drainSrv, drainSvc
	c.commit(vss)
	for _, v := range vss {
		for _, r := range v.reals {
			// The same specs keep a target's state and schedule.
			c.mon.Set(r.target, r.specs, r.start)
		}
	}
	for _, v := range gained {
		c.quorumChanged(v, true, false)
	}
	for _, v := range lost {
		c.quorumChanged(v, false, true)
	}
	c.log.Info("keepalived: reloaded", "virtual_servers", len(vss), "added", added, "deleted", deleted)
	return nil
}

// named reports whether the virtual servers vss name d as a real or sorry
// server of service k.
func named(vss []*virtual, k service.Key, d *service.Dest) bool {
	for _, v := range vss {
		for i, vk := range v.keys {
			if vk != k {
				continue
			}
			for _, n := range servers(v, i) {
				if n.Addr == d.Addr && n.Port == d.Port {
					return true
				}
			}
		}
	}
	return false
}

// servers are the real servers and the sorry server of v in its i-th
// service, at their configured weights.
func servers(v *virtual, i int) []*service.Dest {
	var ds []*service.Dest
	for _, r := range v.reals {
		ds = append(ds, r.dests[i])
	}
	if v.sorry != nil {
		ds = append(ds, v.sorry[i])
	}
	return ds
}

// Close stops the checks and waits for the scripts running. With omega,
// notify_down runs first for every live real server and quorum_down for
// every virtual server with its quorum. The table is left as it is: the
// director stops with it.
func (c *Checker) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.drainDone
	c.mon.Close()
	c.mu.Lock()
	for _, v := range c.vss {
		if !v.vs.Omega {
			continue
		}
		for _, r := range v.reals {
			if r.up {
				c.run.start("notify_down", r.rs.NotifyDown)
			}
		}
		if v.quorumUp {
			c.run.start("quorum_down", v.vs.QuorumDown)
		}
	}
	c.mu.Unlock()
	c.run.close()
}
