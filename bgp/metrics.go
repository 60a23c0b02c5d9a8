package bgp

import "github.com/prometheus/client_golang/prometheus"

var (
	peerUpDesc = prometheus.NewDesc("uvs_bgp_peer_up",
		"1 while the BGP session with the peer is established, else 0.", []string{"peer"}, nil)
	announcedDesc = prometheus.NewDesc("uvs_bgp_announced_vips",
		"Virtual addresses (/32 or /128) announced over BGP now.", nil, nil)
)

// Collector returns the speaker's metrics: uvs_bgp_peer_up per configured
// peer and uvs_bgp_announced_vips.
func (s *Speaker) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Speaker }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerUpDesc
	ch <- announcedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.peerMu.Lock()
	for _, p := range s.cfg.Peers {
		v := 0.0
		if s.up[p.Addr] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, v, p.Addr.String())
	}
	s.peerMu.Unlock()
	s.mu.Lock()
	n := len(s.announced)
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(announcedDesc, prometheus.GaugeValue, float64(n))
}
