package bgp

import (
	"net/netip"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	peerUpDesc = prometheus.NewDesc("uvs_bgp_peer_up",
		"1 while the BGP session with the peer is established, else 0.", []string{"peer"}, nil)
	announcedDesc = prometheus.NewDesc("uvs_bgp_announced_vips",
		"Virtual addresses (/32 or /128) announced over BGP now.", nil, nil)
)

// Status is what the BGP metrics read (a Speaker).
type Status interface {
	Peers() []Peer
	PeersUp() []netip.Addr
	Announced() []netip.Prefix
}

// NewCollector returns the metrics of s: uvs_bgp_peer_up per configured
// peer and uvs_bgp_announced_vips.
func NewCollector(s Status) prometheus.Collector { return collector{s} }

type collector struct{ s Status }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerUpDesc
	ch <- announcedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	up := c.s.PeersUp()
	for _, p := range c.s.Peers() {
		v := 0.0
		if slices.Contains(up, p.Addr) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(peerUpDesc, prometheus.GaugeValue, v, p.Addr.String())
	}
	ch <- prometheus.MustNewConstMetric(announcedDesc, prometheus.GaugeValue, float64(len(c.s.Announced())))
}
