package checker

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"uvs/service"
)

// The labels of node_exporter's IPVS service series, so the quorum of a
// service joins node_ipvs_* on them.
var serviceLabelNames = []string{"local_address", "local_port", "proto", "local_mark"}

var (
	quorumDesc = prometheus.NewDesc("uvs_healthcheck_quorum_up",
		"Whether the virtual service has its quorum (1): the live real servers' weights add up to it; 0 while the sorry server (if any) serves.",
		serviceLabelNames, nil)
	liveWeightDesc = prometheus.NewDesc("uvs_healthcheck_live_weight",
		"The sum of the weights of the virtual service's live real servers: what is compared with its quorum.",
		serviceLabelNames, nil)
	quorumTransDesc = prometheus.NewDesc("uvs_healthcheck_quorum_transitions_total",
		"Times the virtual service's quorum was gained (to=\"up\") or lost (to=\"down\").",
		append(serviceLabelNames[:4:4], "to"), nil)
	scriptsDesc = prometheus.NewDesc("uvs_healthcheck_scripts_total",
		"notify_up, notify_down, quorum_up and quorum_down scripts run, by how they ended: ok, failed (a non-zero exit, or not started) or timeout.",
		[]string{"script", "result"}, nil)
	tableErrorsDesc = prometheus.NewDesc("uvs_healthcheck_table_errors_total",
		"Changes of real servers the health checks asked for that the rule table refused (each is made again at the virtual service's next change).",
		nil, nil)
)

// Collector returns a prometheus.Collector of the checker: the
// healthcheck.Monitor's series of every real server
// (uvs_healthcheck_up, uvs_healthcheck_transitions_total,
// uvs_healthcheck_duration_seconds), and per virtual service, labelled as
// node_exporter's node_ipvs_* service series (local_address, local_port,
// proto, local_mark):
//
//	uvs_healthcheck_quorum_up                 gauge, 1 quorum, 0 lost
//	uvs_healthcheck_live_weight               gauge
//	uvs_healthcheck_quorum_transitions_total  counter, label to="up"|"down"
//
// and uvs_healthcheck_scripts_total{script,result} and
// uvs_healthcheck_table_errors_total.
func (c *Checker) Collector() prometheus.Collector { return (*collector)(c) }

type collector Checker

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	c.mon.Collector().Describe(ch)
	ch <- quorumDesc
	ch <- liveWeightDesc
	ch <- quorumTransDesc
	ch <- scriptsDesc
	ch <- tableErrorsDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mon.Collector().Collect(ch)
	var ms []prometheus.Metric
	c.mu.Lock()
	for _, v := range c.vss {
		up := 0.0
		if v.quorumUp {
			up = 1
		}
		for _, k := range v.keys {
			l := serviceLabels(k)
			ms = append(ms,
				prometheus.MustNewConstMetric(quorumDesc, prometheus.GaugeValue, up, l[:]...),
				prometheus.MustNewConstMetric(liveWeightDesc, prometheus.GaugeValue, float64(v.liveWeight), l[:]...),
				prometheus.MustNewConstMetric(quorumTransDesc, prometheus.CounterValue, float64(v.transUp), append(l[:], "up")...),
				prometheus.MustNewConstMetric(quorumTransDesc, prometheus.CounterValue, float64(v.transDown), append(l[:], "down")...),
			)
		}
	}
	ms = append(ms, prometheus.MustNewConstMetric(tableErrorsDesc, prometheus.CounterValue, float64(c.tableErrors)))
	c.mu.Unlock()
	for k, n := range (*Checker)(c).run.results() {
		ms = append(ms, prometheus.MustNewConstMetric(scriptsDesc, prometheus.CounterValue, float64(n), k.script, k.result))
	}
	for _, m := range ms {
		ch <- m
	}
}

// serviceLabels are k's labels as node_exporter gives node_ipvs_backend_*
// (and package metrics the director's): fwmark services have proto "FWM",
// local_address "", local_port "0" and local_mark the mark as
// /proc/net/ip_vs prints it (%08X); others have local_mark "".
func serviceLabels(k service.Key) [4]string {
	if k.IsFWMark() {
		return [4]string{"", "0", "FWM", fmt.Sprintf("%08X", k.FWMark)}
	}
	return [4]string{k.Addr.Unmap().String(), strconv.FormatUint(uint64(k.Port), 10), k.ProtoName(), ""}
}
