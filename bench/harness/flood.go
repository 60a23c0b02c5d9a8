package harness

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"uvs/bench/floodmeasure"
	"uvs/lab"
)

// The flood workload's settings besides the flood itself (Options'
// FloodRate, FloodDuration): the legitimate traffic of bench/cmd/flood's
// defaults, a shorter lead-in, and no 10-second reading after the flood.
const (
	DefaultFloodRate     = 30000 // SYN/s
	DefaultFloodDuration = 10 * time.Second
	FloodKeepalive       = 20 // established keep-alive connections
	FloodNewRate         = 20 // legitimate new connections per second
	FloodPre             = 3 * time.Second
	FloodAfter           = 30 * time.Second // at most, waiting for recovery
	FloodSources         = "198.19.0.0/16"  // forged, apart from the lab's subnets
)

// FloodConfig is the flood workload's measurement under o.
func FloodConfig(o *Options) floodmeasure.Config {
	dur := o.FloodDuration
	if dur == 0 {
		dur = DefaultFloodDuration
	}
	count := int64(100_000_000)
	if o.FloodRate > 0 {
		count = max(1, int64(o.FloodRate*dur.Seconds()))
	}
	return floodmeasure.Config{
		Rate: o.FloodRate, Duration: dur, Count: count, Senders: 1,
		Sources:   netip.MustParsePrefix(FloodSources),
		Keepalive: FloodKeepalive, KAInterval: 100 * time.Millisecond, KATimeout: 5 * time.Second,
		NewRate: FloodNewRate, NewTimeout: 2 * time.Second,
		Pre: FloodPre, After: FloodAfter,
	}
}

// floodLoad floods target's HTTP service with SYNs from forged sources
// (bench/synflood, through bench/floodmeasure) while legitimate clients
// use it. The figure is the share of legitimate new connections started
// during the flood that were served; Work is the SYNs sent, in millions.
func floodLoad(ctx context.Context, t *Topo, o *Options, target string) (Sample, error) {
	vip, err := netip.ParseAddr(target)
	if err != nil {
		return Sample{}, err
	}
	c := FloodConfig(o)
	e := floodmeasure.Env{
		Client: t.Net.Client, Director: t.Net.Director,
		Service: netip.AddrPortFrom(vip, HTTPPort),
		File:    SmallFile,
		Exclude: []netip.Addr{netip.MustParseAddr(lab.ClientIP), netip.MustParseAddr(ClientReturnIP)},
	}
	m, err := floodmeasure.Measure(ctx, &c, e, nil, o.Log)
	if err != nil {
		return Sample{}, err
	}
	if m.During.Total == 0 {
		return Sample{}, errors.New("no legitimate new connection started during the flood")
	}
	return Sample{
		Value: 100 * m.During.Frac(), Sent: m.Flood.Sent, Work: float64(m.Flood.Sent) / 1e6,
		KASurvived: m.KASurvived, KATotal: m.KATotal, Recovery: m.Recovery, Recovered: m.Recovered,
	}, nil
}
