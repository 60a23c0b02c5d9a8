package realserver

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"uvs/forward/tun"
)

// Stats are the counters since start, summed over the sockets.
type Stats struct {
	Packets [3]uint64 // inner packets delivered, by tun.Type
	Bytes   [3]uint64 // their bytes (inner IP packets)
	Drops   map[string]uint64
}

// Stats sums the counters of every socket. Every drop reason is present.
func (s *Server) Stats() Stats {
	st := Stats{Drops: make(map[string]uint64, numReasons)}
	for i := range numReasons {
		if i != accepted {
			st.Drops[reasonNames[i]] = 0
		}
	}
	for _, r := range s.readers {
		for t := range st.Packets {
			st.Packets[t] += r.stats.packets[t].Load()
			st.Bytes[t] += r.stats.bytes[t].Load()
		}
		for i := range r.stats.drops {
			if reason(i) != accepted {
				st.Drops[reasonNames[i]] += r.stats.drops[i].Load()
			}
		}
	}
	return st
}

var (
	packetsDesc = prometheus.NewDesc("uvs_realserver_packets_total",
		"Tunnelled packets decapsulated and delivered to the local stack, by tunnel type.", []string{"type"}, nil)
	bytesDesc = prometheus.NewDesc("uvs_realserver_bytes_total",
		"Bytes of the inner IP packets delivered to the local stack, by tunnel type.", []string{"type"}, nil)
	dropsDesc = prometheus.NewDesc("uvs_realserver_dropped_packets_total",
		"Datagrams received on the tunnel sockets and dropped, by reason.", []string{"reason"}, nil)
)

// typeNames are the values of the type label.
var typeNames = [3]string{tun.IPIP: "ipip", tun.GUE: "gue", tun.GRE: "gre"}

type collector struct{ s *Server }

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- bytesDesc
	ch <- dropsDesc
}

// Collect implements prometheus.Collector: every type and reason, zeros
// included, so a series exists from the start.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	for t, name := range typeNames {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(st.Packets[t]), name)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(st.Bytes[t]), name)
	}
	for reason, n := range st.Drops {
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(n), reason)
	}
}

// Collector exports the counters: uvs_realserver_packets_total{type},
// uvs_realserver_bytes_total{type} and
// uvs_realserver_dropped_packets_total{reason}.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

// MetricsHandler serves the counters, with Go's and the process's own.
func (s *Server) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
