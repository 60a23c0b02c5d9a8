package syncd

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// The daemons' counters for Prometheus, under uvs_sync_: what a dashboard
// watches to see that a backup keeps up with its master.
var (
	syncRunning = prometheus.NewDesc("uvs_sync_daemon_running",
		"1 while the connection sync daemon of this role runs, else 0.", []string{"role"}, nil)
	syncMessages = prometheus.NewDesc("uvs_sync_messages_total",
		"Sync messages sent (master) and received with the backup's sync ID (backup).", []string{"dir"}, nil)
	syncConns = prometheus.NewDesc("uvs_sync_connections_total",
		"Connections and templates sent (dir=out), and learned, updated or kept by a backup (dir=in).", []string{"dir", "result"}, nil)
	syncErrors = prometheus.NewDesc("uvs_sync_send_errors_total",
		"Sync messages the master could not send.", nil, nil)
	syncDropped = prometheus.NewDesc("uvs_sync_dropped_total",
		"Connections not synced, by reason: queue_full (the workers' rings were full) or the backup's reasons.", []string{"reason"}, nil)
	syncResync = prometheus.NewDesc("uvs_sync_resyncs_total",
		"Full-table resyncs: asked for by this director's backup (role=backup), sent by its master (role=master).", []string{"role"}, nil)
)

// Collector returns m's metrics.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Manager }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{syncRunning, syncMessages, syncConns, syncErrors, syncDropped, syncResync} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.Stats()
	master, backup := 0.0, 0.0
	for _, d := range c.m.Daemons() {
		if d.Master {
			master = 1
		} else {
			backup = 1
		}
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(syncRunning, prometheus.GaugeValue, master, "master")
	ch <- prometheus.MustNewConstMetric(syncRunning, prometheus.GaugeValue, backup, "backup")
	counter(syncMessages, s.SentMessages, "out")
	counter(syncMessages, s.ReceivedMessages, "in")
	counter(syncConns, s.SentConns, "out", "sent")
	counter(syncConns, s.Learned, "in", "learned")
	counter(syncConns, s.Updated, "in", "updated")
	counter(syncConns, s.Kept, "in", "kept")
	counter(syncErrors, s.SendErrors)
	counter(syncResync, s.ResyncRequests, "backup")
	counter(syncResync, s.Resyncs, "master")
	counter(syncDropped, s.QueueDropped, "queue_full")
	reasons := make([]string, 0, len(s.Dropped))
	for r := range s.Dropped {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		counter(syncDropped, s.Dropped[r], r)
	}
}
