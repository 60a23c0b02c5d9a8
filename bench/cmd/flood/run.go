package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"uvs/bench/floodmeasure"
	"uvs/bench/harness"
	"uvs/lab"
)

// result is one path's measurement, or why there is none (Err).
type result struct {
	path, label, Err string
	*floodmeasure.Result
}

// env is the flood measurement's view of topology t.
func env(t *harness.Topo) floodmeasure.Env {
	return floodmeasure.Env{
		Client:   t.Net.Client,
		Director: t.Net.Director,
		Service:  netip.AddrPortFrom(netip.MustParseAddr(harness.VIP), harness.HTTPPort),
		File:     harness.SmallFile,
		Exclude:  []netip.Addr{netip.MustParseAddr(lab.ClientIP), netip.MustParseAddr(harness.ClientReturnIP)},
	}
}

// runPath measures one path on a topology of its own (a fresh one per
// path: the real servers' half-open connections and SYN-ACK retries of one
// flood must not reach into the next path's measurement).
func runPath(ctx context.Context, c *config, name, label string, log *slog.Logger) (r *result) {
	r = &result{path: name, label: label}
	fail := func(err error) *result {
		r.Err = err.Error()
		return r
	}
	t, err := harness.Build(ctx, prefix, log)
	if err != nil {
		return fail(fmt.Errorf("topology: %w", err))
	}
	defer func() {
		if err := t.Close(); err != nil {
			log.Warn("teardown", "err", err)
		}
	}()
	a, err := startPath(ctx, c, t, name)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := a.stop(); err != nil {
			log.Warn("path stop", "path", name, "err", err)
		}
	}()
	m, err := floodmeasure.Measure(ctx, &c.Config, env(t), a.probe, log.With("path", name))
	if err != nil {
		return fail(fmt.Errorf("%w\n%s", err, a.logs()))
	}
	r.Result = m
	return r
}
