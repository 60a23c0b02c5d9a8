package healthcheck

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The labels of node_exporter's IPVS backend series, in its order, so the
// health of a real server joins node_ipvs_backend_weight on all of them.
var backendLabelNames = []string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}

var (
	upDesc = prometheus.NewDesc("uvs_healthcheck_up",
		"Whether the health checks find the real server up (1) or down (0).", backendLabelNames, nil)
	transDesc = prometheus.NewDesc("uvs_healthcheck_transitions_total",
		"Times the real server went up or down since its checks were set.", append(backendLabelNames[:6:6], "to"), nil)
	durationDesc = prometheus.NewDesc("uvs_healthcheck_duration_seconds",
		"Time one attempt of a checker took, by checker (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK).",
		append(backendLabelNames[:6:6], "checker"), nil)
)

// durationBuckets are the upper bounds of the duration histogram: a checker
// against a near server answers in a millisecond or less, a dead one in
// connect_timeout (5 s by default).
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// histogram counts the durations of one checker kind of one target.
type histogram struct {
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

// observe records an attempt of the checker named name. Monitor.mu is held.
func (tg *target) observe(name string, d time.Duration) {
	h := tg.durations[name]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(durationBuckets)+1)}
		tg.durations[name] = h
	}
	s := d.Seconds()
	i := 0
	for i < len(durationBuckets) && s > durationBuckets[i] {
		i++
	}
	h.counts[i]++
	h.sum += s
	h.n++
}

// backendLabels returns the label values of t as the metrics package gives
// node_ipvs_backend_* (its serviceLabels and remoteAddr): fwmark services
// have proto "FWM", local_address "", local_port "0" and local_mark the
// mark as /proc/net/ip_vs prints it (%08X); others have local_mark "".
func backendLabels(t Target) [6]string {
	k := t.Service
	remote, rport := t.Addr.Unmap().String(), strconv.FormatUint(uint64(t.Port), 10)
	if k.IsFWMark() {
		return [6]string{"", "0", remote, rport, "FWM", fmt.Sprintf("%08X", k.FWMark)}
	}
	return [6]string{k.Addr.Unmap().String(), strconv.FormatUint(uint64(k.Port), 10), remote, rport, k.ProtoName(), ""}
}

// Collector returns a prometheus.Collector of the monitor's targets:
//
//	uvs_healthcheck_up                 gauge, 1 up, 0 down
//	uvs_healthcheck_transitions_total  counter, label to="up"|"down"
//	uvs_healthcheck_duration_seconds   histogram of attempt times, label checker
//
// all labelled like node_exporter's IPVS backend series (local_address,
// local_port, remote_address, remote_port, proto, local_mark). A target's
// series start when it is Set and go when it is removed.
func (m *Monitor) Collector() prometheus.Collector { return (*collector)(m) }

type collector Monitor

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- upDesc
	ch <- transDesc
	ch <- durationDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	// Built under the lock, sent after it: a slow scrape must not hold up
	// the attempts that are waiting to record their results.
	var ms []prometheus.Metric
	c.mu.Lock()
	for _, tg := range c.targets {
		l := tg.labels[:]
		up := 0.0
		if tg.up {
			up = 1
		}
		ms = append(ms,
			prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up, l...),
			prometheus.MustNewConstMetric(transDesc, prometheus.CounterValue, float64(tg.transUp), append(l[:6:6], "up")...),
			prometheus.MustNewConstMetric(transDesc, prometheus.CounterValue, float64(tg.transDown), append(l[:6:6], "down")...),
		)
		for name, h := range tg.durations {
			buckets := make(map[float64]uint64, len(durationBuckets))
			var cum uint64
			for i, b := range durationBuckets {
				cum += h.counts[i]
				buckets[b] = cum
			}
			ms = append(ms, prometheus.MustNewConstHistogram(durationDesc, h.n, h.sum, buckets, append(l[:6:6], name)...))
		}
	}
	c.mu.Unlock()
	for _, m := range ms {
		ch <- m
	}
}
