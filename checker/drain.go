package checker

import (
	"net/netip"
	"time"

	"uvs/service"
)

// Draining. A real server that a reload no longer names is not deleted
// while it has established connections: it stays at weight 0, so that it
// takes no new connection and its open ones finish, and goes when it has
// no active connection left, or when DrainTimeout is up. A virtual server
// the file no longer names drains the same way, all its servers at
// weight 0, and goes when none has an active connection. (Connections
// closing, in TIME_WAIT or FIN_WAIT, and UDP flows are inactive: they are
// not waited for.) A server or service named again before it is gone
// simply returns.

// DefaultDrainTimeout bounds a drain: the TCP timeout of an established
// connection (ipvsadm --set's default), after which an idle one is gone
// from the table anyway.
const DefaultDrainTimeout = 900 * time.Second

// drainTick is how often draining servers are looked at.
const drainTick = time.Second

// configReader is a Table that can be read without a change (the
// director is one): draining servers are watched through it.
type configReader interface {
	Config() *service.Config
}

type drainKey struct {
	svc  service.Key
	addr netip.AddrPort
}

// drainable reports whether d has established connections to wait for.
func drainable(d *service.Dest) bool {
	return d != nil && d.DestState != nil && d.ActiveConns() > 0
}

// startDrain puts real server d of service k (in cfg) at weight 0 and
// records it as draining, or deletes it at once when it has nothing to
// drain. c.mu is held.
func (c *Checker) startDrain(cfg *service.Config, k service.Key, d *service.Dest, until time.Time, drains map[drainKey]time.Time) error {
	if !drainable(d) {
		return cfg.DeleteDest(k, d.Addr, d.Port)
	}
	if d.Weight != 0 {
		if err := cfg.EditDest(k, withWeight(d, 0)); err != nil {
			return err
		}
	}
	drains[drainKey{k, d.AddrPort()}] = until
	return nil
}

// drainLoop deletes drained servers and services until Close.
func (c *Checker) drainLoop() {
	t := time.NewTicker(drainTick)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.mu.Lock()
			if len(c.drainSrv) > 0 || len(c.drainSvc) > 0 {
				c.drainStep(now)
			}
			c.mu.Unlock()
		}
	}
}

// drainStep deletes what is drained or out of time. c.mu is held.
func (c *Checker) drainStep(now time.Time) {
	due := func(cfg *service.Config) (srv []drainKey, svc []service.Key) {
		for dk, until := range c.drainSrv {
			s := cfg.Service(dk.svc)
			if s == nil || s.Dest(dk.addr.Addr(), dk.addr.Port()) == nil ||
				!drainable(s.Dest(dk.addr.Addr(), dk.addr.Port())) || now.After(until) {
				srv = append(srv, dk)
			}
		}
		for k, until := range c.drainSvc {
			s := cfg.Service(k)
			if s == nil || now.After(until) || !anyDrainable(s) {
				svc = append(svc, k)
			}
		}
		return srv, svc
	}
	if r, ok := c.table.(configReader); ok {
		if srv, svc := due(r.Config()); len(srv) == 0 && len(svc) == 0 {
			return // nothing to change: the table is left alone
		}
	}
	var gone []drainKey
	var goneSvc []service.Key
	err := c.table.Update(func(cfg *service.Config) error {
		srv, svc := due(cfg)
		for _, dk := range srv {
			if s := cfg.Service(dk.svc); s != nil && s.Dest(dk.addr.Addr(), dk.addr.Port()) != nil {
				if err := cfg.DeleteDest(dk.svc, dk.addr.Addr(), dk.addr.Port()); err != nil {
					return err
				}
			}
		}
		for _, k := range svc {
			if cfg.Service(k) != nil {
				if err := cfg.DeleteService(k); err != nil {
					return err
				}
			}
		}
		gone, goneSvc = srv, svc
		return nil
	})
	if err != nil {
		c.tableErrors++
		c.log.Error("keepalived: delete drained servers", "err", err)
		return
	}
	for _, dk := range gone {
		c.log.Info("keepalived: real server drained, deleted", "service", dk.svc.String(), "server", dk.addr.String(),
			"timed_out", now.After(c.drainSrv[dk]))
		delete(c.drainSrv, dk)
	}
	for _, k := range goneSvc {
		c.log.Info("keepalived: virtual server drained, deleted", "service", k.String(), "timed_out", now.After(c.drainSvc[k]))
		delete(c.drainSvc, k)
		delete(c.owned, k)
	}
}

func anyDrainable(s *service.Service) bool {
	for _, d := range s.Dests {
		if drainable(d) {
			return true
		}
	}
	return false
}
