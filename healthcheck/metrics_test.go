package healthcheck

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"uvs/service"
)

func TestCollector(t *testing.T) {
	dir := t.TempDir()
	ok := writeScript(t, dir, "ok.sh", "exit 0")
	bad := writeScript(t, dir, "bad.sh", "exit 1")
	events := make(chan Event, 10)
	m := NewMonitor(func(ev Event) { events <- ev }, nil)
	t.Cleanup(m.Close)

	misc := func(path string) []Spec {
		return []Spec{{Kind: MiscCheck, MiscPath: path, DelayLoop: time.Hour}}
	}
	tcp := Target{Service: service.Key{Proto: service.TCP, Addr: vip, Port: 80}, Addr: mustAddr(srvIP), Port: 9100}
	fwm := Target{Service: service.Key{FWMark: 0x20}, Addr: mustAddr(srvIP), Port: 9101}
	udp6 := Target{
		Service: service.Key{Proto: service.UDP, Addr: netip.MustParseAddr("2001:2::100"), Port: 53},
		Addr:    netip.MustParseAddr("::ffff:198.18.0.2"), Port: 53,
	}
	m.Set(tcp, misc(ok), false) // alpha: comes up
	m.Set(fwm, misc(bad), true) // goes down
	m.Set(udp6, misc(ok), true) // stays up
	for range 2 {
		select {
		case <-events:
		case <-time.After(eventWait):
			t.Fatal("no event")
		}
	}
	for deadline := time.Now().Add(eventWait); ; time.Sleep(10 * time.Millisecond) {
		if n, _ := m.counts(); n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the checks did not run")
		}
	}

	c := m.Collector()
	const want = `
# HELP uvs_healthcheck_transitions_total Times the real server went up or down since its checks were set.
# TYPE uvs_healthcheck_transitions_total counter
uvs_healthcheck_transitions_total{local_address="",local_mark="00000020",local_port="0",proto="FWM",remote_address="198.18.0.2",remote_port="9101",to="down"} 1
uvs_healthcheck_transitions_total{local_address="",local_mark="00000020",local_port="0",proto="FWM",remote_address="198.18.0.2",remote_port="9101",to="up"} 0
uvs_healthcheck_transitions_total{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.0.2",remote_port="9100",to="down"} 0
uvs_healthcheck_transitions_total{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.0.2",remote_port="9100",to="up"} 1
uvs_healthcheck_transitions_total{local_address="2001:2::100",local_mark="",local_port="53",proto="UDP",remote_address="198.18.0.2",remote_port="53",to="down"} 0
uvs_healthcheck_transitions_total{local_address="2001:2::100",local_mark="",local_port="53",proto="UDP",remote_address="198.18.0.2",remote_port="53",to="up"} 0
# HELP uvs_healthcheck_up Whether the health checks find the real server up (1) or down (0).
# TYPE uvs_healthcheck_up gauge
uvs_healthcheck_up{local_address="",local_mark="00000020",local_port="0",proto="FWM",remote_address="198.18.0.2",remote_port="9101"} 0
uvs_healthcheck_up{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.0.2",remote_port="9100"} 1
uvs_healthcheck_up{local_address="2001:2::100",local_mark="",local_port="53",proto="UDP",remote_address="198.18.0.2",remote_port="53"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "uvs_healthcheck_up", "uvs_healthcheck_transitions_total"); err != nil {
		t.Error(err)
	}

	// One attempt each, in the histogram of its checker.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var hists int
	for _, mf := range mfs {
		if mf.GetName() != "uvs_healthcheck_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			hists++
			h := mt.GetHistogram()
			var checker string
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "checker" {
					checker = lp.GetValue()
				}
			}
			if checker != "MISC_CHECK" || h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 ||
				len(h.GetBucket()) != len(durationBuckets) || h.GetBucket()[len(durationBuckets)-1].GetCumulativeCount() != 1 {
				t.Errorf("duration histogram %v", mt)
			}
		}
	}
	if hists != 3 {
		t.Errorf("%d duration histograms, want 3", hists)
	}

	m.Remove(fwm)
	if n := testutil.CollectAndCount(c, "uvs_healthcheck_up"); n != 2 {
		t.Errorf("%d up series after Remove, want 2", n)
	}
}
