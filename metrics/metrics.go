// Package metrics exposes the director's state to Prometheus under the
// names and labels of node_exporter's IPVS collector, so that dashboards
// built for a kernel director work unchanged, plus uvs_* extras that
// node_exporter cannot give: per-server counters and rates, the size of the
// connection table and dropped packets by reason.
//
// Everything is read from a Source at scrape time; the data path is not
// touched and nothing is cached between scrapes except the running totals
// described on NewCollector.
package metrics

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"uvs/rate"
	"uvs/service"
)

// Source is what the collector reads at scrape time. Every method may be
// called from the scraping goroutine while the director runs.
type Source interface {
	// Config is the published rule table, nil before the first one.
	Config() *service.Config
	// Rates returns the rate estimates of s (zero when s is not tracked).
	Rates(s *service.Stats) rate.Rates
	// Drops returns dropped packets by reason since start; the collector
	// only reads the map.
	Drops() map[string]uint64
	// ConnCount is the number of entries in the connection table,
	// persistence templates included (what ipvsadm -Lc would list).
	ConnCount() int
}

// Labels of the per-server metrics, in node_exporter's order.
var backendLabels = []string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// Help strings of the node_ipvs_* metrics are node_exporter's own, so a
// scrape reads the same as one of node_exporter.
var (
	connsDesc    = desc("node_ipvs_connections_total", "The total number of connections made.")
	inPktsDesc   = desc("node_ipvs_incoming_packets_total", "The total number of incoming packets.")
	outPktsDesc  = desc("node_ipvs_outgoing_packets_total", "The total number of outgoing packets.")
	inBytesDesc  = desc("node_ipvs_incoming_bytes_total", "The total amount of incoming data.")
	outBytesDesc = desc("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data.")

	activeDesc = desc("node_ipvs_backend_connections_active", "The current active connections by local and remote address.", backendLabels...)
	inactDesc  = desc("node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address.", backendLabels...)
	weightDesc = desc("node_ipvs_backend_weight", "The current backend weight by local and remote address.", backendLabels...)

	beConnsDesc    = desc("uvs_backend_connections_total", "Connections scheduled to the real server since it was added or last zeroed.", backendLabels...)
	beInPktsDesc   = desc("uvs_backend_incoming_packets_total", "Packets from clients forwarded to the real server since it was added or last zeroed.", backendLabels...)
	beOutPktsDesc  = desc("uvs_backend_outgoing_packets_total", "Packets from the real server forwarded to clients since it was added or last zeroed.", backendLabels...)
	beInBytesDesc  = desc("uvs_backend_incoming_bytes_total", "Bytes from clients forwarded to the real server since it was added or last zeroed.", backendLabels...)
	beOutBytesDesc = desc("uvs_backend_outgoing_bytes_total", "Bytes from the real server forwarded to clients since it was added or last zeroed.", backendLabels...)

	beCPSDesc    = desc("uvs_backend_connections_per_second", "New connections per second to the real server, IPVS's 8-second moving average (ipvsadm --rate CPS).", backendLabels...)
	beInPPSDesc  = desc("uvs_backend_incoming_packets_per_second", "Packets per second from clients to the real server, IPVS's moving average (ipvsadm --rate InPPS).", backendLabels...)
	beOutPPSDesc = desc("uvs_backend_outgoing_packets_per_second", "Packets per second from the real server to clients, IPVS's moving average (ipvsadm --rate OutPPS).", backendLabels...)
	beInBPSDesc  = desc("uvs_backend_incoming_bytes_per_second", "Bytes per second from clients to the real server, IPVS's moving average (ipvsadm --rate InBPS).", backendLabels...)
	beOutBPSDesc = desc("uvs_backend_outgoing_bytes_per_second", "Bytes per second from the real server to clients, IPVS's moving average (ipvsadm --rate OutBPS).", backendLabels...)

	tableDesc = desc("uvs_connections", "Entries in the connection table, persistence templates included.")
	dropDesc  = desc("uvs_dropped_packets_total", "Packets the director dropped, by reason.", "reason")
)

var allDescs = []*prometheus.Desc{
	connsDesc, inPktsDesc, outPktsDesc, inBytesDesc, outBytesDesc,
	activeDesc, inactDesc, weightDesc,
	beConnsDesc, beInPktsDesc, beOutPktsDesc, beInBytesDesc, beOutBytesDesc,
	beCPSDesc, beInPPSDesc, beOutPPSDesc, beInBPSDesc, beOutBPSDesc,
	tableDesc, dropDesc,
}

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src Source

	// The node_ipvs_* totals are kept here, fed with what each service's
	// counters gained since the previous scrape, so that they never go
	// backwards when a service is deleted or zeroed.
	mu     sync.Mutex
	gen    uint64
	seen   map[*service.Stats]*seenStats
	totals service.Counters
}

type seenStats struct {
	last service.Counters
	gen  uint64
}

// NewCollector returns a collector that reads src at every scrape.
//
// Counters and zeroing (ipvsadm -Z): the node_ipvs_* totals are the sum
// over services of what their counters gained between scrapes. A service's
// counters that went down were zeroed, and what they show then counts as
// new. The totals therefore never decrease, and keep what deleted services
// had counted, like the kernel's own totals do across deletions. What a
// service counted after the last scrape and before it was deleted or zeroed
// is lost. The first scrape counts everything since the services were
// added. Unlike the kernel's /proc/net/ip_vs_stats, -Z does not reset them.
//
// The uvs_backend_*_total counters are the real servers' counters as they
// are: -Z makes them start again from zero, which Prometheus's rate() and
// increase() read as a counter reset, as they do for node_exporter when the
// kernel zeroes /proc.
func NewCollector(src Source) *Collector {
	return &Collector{src: src, seen: make(map[*service.Stats]*seenStats)}
}

// Describe sends the descriptions of every metric the collector exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads the source and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.src.Config()
	t := c.addTotals(cfg)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(connsDesc, t.Conns)
	counter(inPktsDesc, t.InPkts)
	counter(outPktsDesc, t.OutPkts)
	counter(inBytesDesc, t.InBytes)
	counter(outBytesDesc, t.OutBytes)

	if cfg != nil {
		for _, s := range cfg.Services {
			local := serviceLabels(s.Key)
			for _, d := range s.Dests {
				if d.DestState == nil {
					continue
				}
				l := append(local[:2:2], remoteAddr(d), strconv.FormatUint(uint64(d.Port), 10), local[2], local[3])
				gauge(activeDesc, float64(d.ActiveConns()), l...)
				gauge(inactDesc, float64(d.InactConns()), l...)
				gauge(weightDesc, float64(d.Weight), l...)

				st := d.Stats.Sum()
				counter(beConnsDesc, st.Conns, l...)
				counter(beInPktsDesc, st.InPkts, l...)
				counter(beOutPktsDesc, st.OutPkts, l...)
				counter(beInBytesDesc, st.InBytes, l...)
				counter(beOutBytesDesc, st.OutBytes, l...)

				r := c.src.Rates(&d.Stats)
				gauge(beCPSDesc, float64(r.CPS), l...)
				gauge(beInPPSDesc, float64(r.InPPS), l...)
				gauge(beOutPPSDesc, float64(r.OutPPS), l...)
				gauge(beInBPSDesc, float64(r.InBPS), l...)
				gauge(beOutBPSDesc, float64(r.OutBPS), l...)
			}
		}
	}

	gauge(tableDesc, float64(c.src.ConnCount()))
	for reason, n := range c.src.Drops() {
		counter(dropDesc, n, reason)
	}
}

// addTotals folds what every service counted since the previous scrape into
// the running totals and returns them.
func (c *Collector) addTotals(cfg *service.Config) service.Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if cfg != nil {
		for _, s := range cfg.Services {
			if s.Stats == nil {
				continue
			}
			cur := s.Stats.Sum()
			e := c.seen[s.Stats]
			if e == nil {
				e = &seenStats{}
				c.seen[s.Stats] = e
			}
			if e.gen == c.gen {
				continue // the same Stats twice in one table: count it once
			}
			c.totals.Conns += gain(e.last.Conns, cur.Conns)
			c.totals.InPkts += gain(e.last.InPkts, cur.InPkts)
			c.totals.OutPkts += gain(e.last.OutPkts, cur.OutPkts)
			c.totals.InBytes += gain(e.last.InBytes, cur.InBytes)
			c.totals.OutBytes += gain(e.last.OutBytes, cur.OutBytes)
			e.last, e.gen = cur, c.gen
		}
	}
	// Forget services that are gone, so their Stats can be collected.
	for st, e := range c.seen {
		if e.gen != c.gen {
			delete(c.seen, st)
		}
	}
	return c.totals
}

// gain is how much a counter grew from last to cur; a counter that went
// down was zeroed and all it shows is new.
func gain(last, cur uint64) uint64 {
	if cur < last {
		return cur
	}
	return cur - last
}

// serviceLabels returns local_address, local_port, proto and local_mark of
// a service, as node_exporter derives them from /proc/net/ip_vs.
func serviceLabels(k service.Key) [4]string {
	if k.IsFWMark() {
		// /proc/net/ip_vs prints the mark as %08X.
		return [4]string{"", "0", "FWM", fmt.Sprintf("%08X", k.FWMark)}
	}
	return [4]string{k.Addr.Unmap().String(), strconv.FormatUint(uint64(k.Port), 10), k.ProtoName(), ""}
}

// remoteAddr formats a real server's address as node_exporter does (Go's
// net.IP form: an IPv4-mapped IPv6 address prints as IPv4).
func remoteAddr(d *service.Dest) string { return d.Addr.Unmap().String() }

// Handler serves src's metrics, together with the Go runtime's, the
// process's and those of extra (the health checks', the BGP speaker's), in the Prometheus
// exposition format.
func Handler(src Source, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reg.MustRegister(extra...)
	// ContinueOnError: one bad series must not hide every other metric.
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
