package director

import (
	"errors"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// unroutedDest is a real server the director has no route to (or whose
// route leaves by an interface it does not serve). It is accepted, as the
// kernel accepts it: routes come and go, and keepalived adds servers
// before their links are up. Its packets are dropped and counted as
// no_route until a route appears.
type unroutedDest struct {
	addr netip.Addr
	err  error
}

// routeSettle is how long the route watcher waits after a change before
// it publishes the table again, so that a burst of changes costs one.
const routeSettle = 100 * time.Millisecond

// watchRoutes publishes the table again when routes change while a real
// server has none, so that the server is served as soon as one appears,
// without a restart or a rule change.
func (d *Director) watchRoutes() {
	defer d.wg.Done()
	updates := make(chan netlink.RouteUpdate, 64)
	if err := netlink.RouteSubscribe(updates, d.stop); err != nil {
		d.log.Warn("not watching routes: a real server without a route is served only after the next rule change", "err", err)
		return
	}
	var settle <-chan time.Time
	for {
		select {
		case <-d.stop:
			return
		case _, ok := <-updates:
			if !ok {
				return
			}
			if settle == nil && len(d.snap.Load().unrouted) > 0 {
				settle = time.After(routeSettle)
			}
		case <-settle:
			settle = nil
			d.republish()
		}
	}
}

// republish builds and publishes the current rule table again, for what
// the host changed under it (routes).
func (d *Director) republish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.snap.Load().unrouted) == 0 {
		return
	}
	if err := d.publishLocked(d.conf); err != nil {
		d.log.Warn("publish the rule table again after a route change", "err", err)
	}
}

// reportRoutes logs, once each, the real servers that lost their route
// (or never had one) and those that have one again.
func (d *Director) reportRoutes(old, s *snapshot) {
	had := make(map[netip.Addr]bool)
	if old != nil {
		for _, u := range old.unrouted {
			had[u.addr] = true
		}
	}
	now := make(map[netip.Addr]bool)
	for _, u := range s.unrouted {
		now[u.addr] = true
		if !had[u.addr] {
			d.log.Warn("real server has no route; its packets are dropped (no_route) until one appears", "server", u.addr, "err", u.err)
		}
	}
	if old == nil {
		return
	}
	servers := make(map[netip.Addr]bool)
	for _, sv := range s.conf.Services {
		for _, ds := range sv.Dests {
			servers[ds.Addr] = true
		}
	}
	for a := range had {
		if !now[a] && servers[a] {
			d.log.Info("real server has a route now; serving it", "server", a)
		}
	}
}

// isConfigError tells a refusal of the rules (an unsupported setting)
// from a state of the host (no route yet) that does not refuse them.
func isConfigError(err error) bool { return errors.Is(err, ErrUnsupported) }
