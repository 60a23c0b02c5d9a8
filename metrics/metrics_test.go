package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"uvs/rate"
	"uvs/service"
)

// fakeSource serves a Config and whatever rates, drops and table size the
// test sets.
type fakeSource struct {
	mu    sync.Mutex
	cfg   *service.Config
	rates map[*service.Stats]rate.Rates
	drops map[string]uint64
	conns int
}

func (f *fakeSource) Config() *service.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

func (f *fakeSource) Rates(s *service.Stats) rate.Rates {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rates[s]
}

func (f *fakeSource) Drops() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drops
}

func (f *fakeSource) ConnCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

var (
	webKey  = service.Key{Proto: service.TCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}
	dnsKey  = service.Key{Proto: service.UDP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 53}
	v6Key   = service.Key{Proto: service.TCP, Addr: netip.MustParseAddr("2001:2::100"), Port: 443}
	markKey = service.Key{FWMark: 0xABCDEF01}
	mark6   = service.Key{FWMark: 20, V6: true}
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// testConfig builds a table with a service of each kind; every real server
// gets distinct counts so that a label mix-up shows.
func testConfig(t *testing.T) (*service.Config, *fakeSource) {
	t.Helper()
	cfg := service.NewConfig()
	for _, k := range []service.Key{webKey, dnsKey, v6Key, markKey, mark6} {
		if err := cfg.AddService(&service.Service{Key: k, Scheduler: "wlc"}); err != nil {
			t.Fatalf("add service %v: %v", k, err)
		}
	}
	dests := []struct {
		k    service.Key
		addr string
		port uint16
		w    int32
	}{
		{webKey, "198.18.1.1", 8080, 1},
		{webKey, "198.18.1.2", 8080, 3},
		{dnsKey, "198.18.1.3", 53, 2},
		{v6Key, "2001:2::11", 443, 5},
		{markKey, "198.18.1.4", 0, 7},
		{mark6, "2001:2::12", 0, 0},
	}
	for _, d := range dests {
		if err := cfg.AddDest(d.k, &service.Dest{Addr: mustAddr(d.addr), Port: d.port, Weight: d.w, Fwd: service.FwdMasq}); err != nil {
			t.Fatalf("add dest %s: %v", d.addr, err)
		}
	}
	return cfg, &fakeSource{cfg: cfg, rates: map[*service.Stats]rate.Rates{}}
}

// traffic drives a real server and its service as the data path would:
// conns new connections, in/out packets of 100 bytes each way.
func traffic(cfg *service.Config, k service.Key, addr string, active, inact int32, conns int, in, out uint64) {
	s := cfg.Service(k)
	d := dest(cfg, k, addr)
	d.AddConns(active, inact)
	for i := range conns {
		d.Stats.AddConn(i)
		s.Stats.AddConn(i)
	}
	d.Stats.AddIn(1, in, in*100)
	d.Stats.AddOut(2, out, out*100)
	s.Stats.AddIn(1, in, in*100)
	s.Stats.AddOut(2, out, out*100)
}

func dest(cfg *service.Config, k service.Key, addr string) *service.Dest {
	for _, d := range cfg.Service(k).Dests {
		if d.Addr == mustAddr(addr) {
			return d
		}
	}
	return nil
}

const nodeTotalsHead = `
# HELP node_ipvs_connections_total The total number of connections made.
# TYPE node_ipvs_connections_total counter
# HELP node_ipvs_incoming_bytes_total The total amount of incoming data.
# TYPE node_ipvs_incoming_bytes_total counter
# HELP node_ipvs_incoming_packets_total The total number of incoming packets.
# TYPE node_ipvs_incoming_packets_total counter
# HELP node_ipvs_outgoing_bytes_total The total amount of outgoing data.
# TYPE node_ipvs_outgoing_bytes_total counter
# HELP node_ipvs_outgoing_packets_total The total number of outgoing packets.
# TYPE node_ipvs_outgoing_packets_total counter
`

// TestNodeExporterNames checks the metrics dashboards read: names, help,
// types, labels and values exactly as node_exporter exposes them.
func TestNodeExporterNames(t *testing.T) {
	cfg, src := testConfig(t)
	traffic(cfg, webKey, "198.18.1.1", 2, 1, 3, 10, 8)
	traffic(cfg, webKey, "198.18.1.2", 4, 0, 4, 5, 5)
	traffic(cfg, dnsKey, "198.18.1.3", 0, 6, 6, 6, 6)
	traffic(cfg, v6Key, "2001:2::11", 1, 2, 1, 7, 3)
	traffic(cfg, markKey, "198.18.1.4", 9, 0, 2, 4, 1)

	want := nodeTotalsHead + `
node_ipvs_connections_total 16
node_ipvs_incoming_packets_total 32
node_ipvs_outgoing_packets_total 23
node_ipvs_incoming_bytes_total 3200
node_ipvs_outgoing_bytes_total 2300
# HELP node_ipvs_backend_connections_active The current active connections by local and remote address.
# TYPE node_ipvs_backend_connections_active gauge
node_ipvs_backend_connections_active{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.1",remote_port="8080"} 2
node_ipvs_backend_connections_active{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.2",remote_port="8080"} 4
node_ipvs_backend_connections_active{local_address="198.18.0.100",local_mark="",local_port="53",proto="UDP",remote_address="198.18.1.3",remote_port="53"} 0
node_ipvs_backend_connections_active{local_address="2001:2::100",local_mark="",local_port="443",proto="TCP",remote_address="2001:2::11",remote_port="443"} 1
node_ipvs_backend_connections_active{local_address="",local_mark="ABCDEF01",local_port="0",proto="FWM",remote_address="198.18.1.4",remote_port="0"} 9
node_ipvs_backend_connections_active{local_address="",local_mark="00000014",local_port="0",proto="FWM",remote_address="2001:2::12",remote_port="0"} 0
# HELP node_ipvs_backend_connections_inactive The current inactive connections by local and remote address.
# TYPE node_ipvs_backend_connections_inactive gauge
node_ipvs_backend_connections_inactive{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.1",remote_port="8080"} 1
node_ipvs_backend_connections_inactive{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.2",remote_port="8080"} 0
node_ipvs_backend_connections_inactive{local_address="198.18.0.100",local_mark="",local_port="53",proto="UDP",remote_address="198.18.1.3",remote_port="53"} 6
node_ipvs_backend_connections_inactive{local_address="2001:2::100",local_mark="",local_port="443",proto="TCP",remote_address="2001:2::11",remote_port="443"} 2
node_ipvs_backend_connections_inactive{local_address="",local_mark="ABCDEF01",local_port="0",proto="FWM",remote_address="198.18.1.4",remote_port="0"} 0
node_ipvs_backend_connections_inactive{local_address="",local_mark="00000014",local_port="0",proto="FWM",remote_address="2001:2::12",remote_port="0"} 0
# HELP node_ipvs_backend_weight The current backend weight by local and remote address.
# TYPE node_ipvs_backend_weight gauge
node_ipvs_backend_weight{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.1",remote_port="8080"} 1
node_ipvs_backend_weight{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.2",remote_port="8080"} 3
node_ipvs_backend_weight{local_address="198.18.0.100",local_mark="",local_port="53",proto="UDP",remote_address="198.18.1.3",remote_port="53"} 2
node_ipvs_backend_weight{local_address="2001:2::100",local_mark="",local_port="443",proto="TCP",remote_address="2001:2::11",remote_port="443"} 5
node_ipvs_backend_weight{local_address="",local_mark="ABCDEF01",local_port="0",proto="FWM",remote_address="198.18.1.4",remote_port="0"} 7
node_ipvs_backend_weight{local_address="",local_mark="00000014",local_port="0",proto="FWM",remote_address="2001:2::12",remote_port="0"} 0
`
	err := testutil.CollectAndCompare(NewCollector(src), strings.NewReader(want),
		"node_ipvs_connections_total", "node_ipvs_incoming_packets_total", "node_ipvs_outgoing_packets_total",
		"node_ipvs_incoming_bytes_total", "node_ipvs_outgoing_bytes_total",
		"node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight")
	if err != nil {
		t.Error(err)
	}
}

const backendLabelsWeb1 = `{local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.1.1",remote_port="8080"}`
const backendLabelsMark = `{local_address="",local_mark="ABCDEF01",local_port="0",proto="FWM",remote_address="198.18.1.4",remote_port="0"}`

// TestExtras checks the uvs_* metrics: per-server counters and rates, the
// table size and drops by reason.
func TestExtras(t *testing.T) {
	cfg := service.NewConfig()
	for _, k := range []service.Key{webKey, markKey} {
		if err := cfg.AddService(&service.Service{Key: k, Scheduler: "rr"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cfg.AddDest(webKey, &service.Dest{Addr: mustAddr("198.18.1.1"), Port: 8080, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.AddDest(markKey, &service.Dest{Addr: mustAddr("198.18.1.4"), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{cfg: cfg, rates: map[*service.Stats]rate.Rates{}, conns: 42,
		drops: map[string]uint64{"no_server": 3, "short_tcp_header": 11, "table_full": 0}}
	traffic(cfg, webKey, "198.18.1.1", 1, 0, 5, 20, 15)
	traffic(cfg, markKey, "198.18.1.4", 0, 1, 1, 2, 0)
	src.rates[&dest(cfg, webKey, "198.18.1.1").Stats] = rate.Rates{CPS: 1, InPPS: 10, OutPPS: 9, InBPS: 1000, OutBPS: 900}

	want := `
# HELP uvs_backend_connections_total Connections scheduled to the real server since it was added or last zeroed.
# TYPE uvs_backend_connections_total counter
uvs_backend_connections_total` + backendLabelsWeb1 + ` 5
uvs_backend_connections_total` + backendLabelsMark + ` 1
# HELP uvs_backend_incoming_packets_total Packets from clients forwarded to the real server since it was added or last zeroed.
# TYPE uvs_backend_incoming_packets_total counter
uvs_backend_incoming_packets_total` + backendLabelsWeb1 + ` 20
uvs_backend_incoming_packets_total` + backendLabelsMark + ` 2
# HELP uvs_backend_outgoing_packets_total Packets from the real server forwarded to clients since it was added or last zeroed.
# TYPE uvs_backend_outgoing_packets_total counter
uvs_backend_outgoing_packets_total` + backendLabelsWeb1 + ` 15
uvs_backend_outgoing_packets_total` + backendLabelsMark + ` 0
# HELP uvs_backend_incoming_bytes_total Bytes from clients forwarded to the real server since it was added or last zeroed.
# TYPE uvs_backend_incoming_bytes_total counter
uvs_backend_incoming_bytes_total` + backendLabelsWeb1 + ` 2000
uvs_backend_incoming_bytes_total` + backendLabelsMark + ` 200
# HELP uvs_backend_outgoing_bytes_total Bytes from the real server forwarded to clients since it was added or last zeroed.
# TYPE uvs_backend_outgoing_bytes_total counter
uvs_backend_outgoing_bytes_total` + backendLabelsWeb1 + ` 1500
uvs_backend_outgoing_bytes_total` + backendLabelsMark + ` 0
# HELP uvs_backend_connections_per_second New connections per second to the real server, IPVS's 8-second moving average (ipvsadm --rate CPS).
# TYPE uvs_backend_connections_per_second gauge
uvs_backend_connections_per_second` + backendLabelsWeb1 + ` 1
uvs_backend_connections_per_second` + backendLabelsMark + ` 0
# HELP uvs_backend_incoming_packets_per_second Packets per second from clients to the real server, IPVS's moving average (ipvsadm --rate InPPS).
# TYPE uvs_backend_incoming_packets_per_second gauge
uvs_backend_incoming_packets_per_second` + backendLabelsWeb1 + ` 10
uvs_backend_incoming_packets_per_second` + backendLabelsMark + ` 0
# HELP uvs_backend_outgoing_packets_per_second Packets per second from the real server to clients, IPVS's moving average (ipvsadm --rate OutPPS).
# TYPE uvs_backend_outgoing_packets_per_second gauge
uvs_backend_outgoing_packets_per_second` + backendLabelsWeb1 + ` 9
uvs_backend_outgoing_packets_per_second` + backendLabelsMark + ` 0
# HELP uvs_backend_incoming_bytes_per_second Bytes per second from clients to the real server, IPVS's moving average (ipvsadm --rate InBPS).
# TYPE uvs_backend_incoming_bytes_per_second gauge
uvs_backend_incoming_bytes_per_second` + backendLabelsWeb1 + ` 1000
uvs_backend_incoming_bytes_per_second` + backendLabelsMark + ` 0
# HELP uvs_backend_outgoing_bytes_per_second Bytes per second from the real server to clients, IPVS's moving average (ipvsadm --rate OutBPS).
# TYPE uvs_backend_outgoing_bytes_per_second gauge
uvs_backend_outgoing_bytes_per_second` + backendLabelsWeb1 + ` 900
uvs_backend_outgoing_bytes_per_second` + backendLabelsMark + ` 0
# HELP uvs_connections Entries in the connection table, persistence templates included.
# TYPE uvs_connections gauge
uvs_connections 42
# HELP uvs_dropped_packets_total Packets the director dropped, by reason.
# TYPE uvs_dropped_packets_total counter
uvs_dropped_packets_total{reason="no_server"} 3
uvs_dropped_packets_total{reason="short_tcp_header"} 11
uvs_dropped_packets_total{reason="table_full"} 0
`
	names := []string{
		"uvs_backend_connections_total", "uvs_backend_incoming_packets_total", "uvs_backend_outgoing_packets_total",
		"uvs_backend_incoming_bytes_total", "uvs_backend_outgoing_bytes_total",
		"uvs_backend_connections_per_second", "uvs_backend_incoming_packets_per_second", "uvs_backend_outgoing_packets_per_second",
		"uvs_backend_incoming_bytes_per_second", "uvs_backend_outgoing_bytes_per_second",
		"uvs_connections", "uvs_dropped_packets_total",
	}
	if err := testutil.CollectAndCompare(NewCollector(src), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func totalsText(conns, inPkts, outPkts uint64) string {
	return nodeTotalsHead +
		"node_ipvs_connections_total " + itoa(conns) + "\n" +
		"node_ipvs_incoming_packets_total " + itoa(inPkts) + "\n" +
		"node_ipvs_outgoing_packets_total " + itoa(outPkts) + "\n" +
		"node_ipvs_incoming_bytes_total " + itoa(inPkts*100) + "\n" +
		"node_ipvs_outgoing_bytes_total " + itoa(outPkts*100) + "\n"
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

var totalsNames = []string{"node_ipvs_connections_total", "node_ipvs_incoming_packets_total",
	"node_ipvs_outgoing_packets_total", "node_ipvs_incoming_bytes_total", "node_ipvs_outgoing_bytes_total"}

// TestTotalsNeverDecrease: zeroing a service (ipvsadm -Z) or deleting it
// leaves the node_ipvs_* totals where they were; what comes after adds on.
func TestTotalsNeverDecrease(t *testing.T) {
	cfg, src := testConfig(t)
	c := NewCollector(src)
	check := func(step string, conns, in, out uint64) {
		t.Helper()
		if err := testutil.CollectAndCompare(c, strings.NewReader(totalsText(conns, in, out)), totalsNames...); err != nil {
			t.Errorf("%s: %v", step, err)
		}
	}
	check("empty", 0, 0, 0)
	traffic(cfg, webKey, "198.18.1.1", 1, 0, 3, 10, 8)
	traffic(cfg, dnsKey, "198.18.1.3", 0, 1, 2, 4, 4)
	check("first traffic", 5, 14, 12)
	check("scraped again, nothing new", 5, 14, 12)

	// -Z on the web service, then a little more traffic on it.
	cfg.Service(webKey).Stats.Zero()
	traffic(cfg, webKey, "198.18.1.1", 0, 0, 1, 2, 1)
	check("after zero", 6, 16, 13)

	// A rule edit publishes a new snapshot; counters carry over.
	next := cfg.Clone()
	src.mu.Lock()
	src.cfg = next
	src.mu.Unlock()
	traffic(next, dnsKey, "198.18.1.3", 0, 1, 1, 1, 1)
	check("after clone", 7, 17, 14)

	// Delete the DNS service: its counts stay in the totals.
	if err := next.DeleteService(dnsKey); err != nil {
		t.Fatal(err)
	}
	check("after delete", 7, 17, 14)

	// Re-adding it starts a new service from zero, and it adds on.
	if err := next.AddService(&service.Service{Key: dnsKey, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	next.Service(dnsKey).Stats.AddConn(0)
	check("after re-add", 8, 17, 14)
}

// TestBackendCountersZeroed: the per-server counters are the server's own,
// so -Z restarts them (Prometheus reads a counter reset).
func TestBackendCountersZeroed(t *testing.T) {
	cfg := service.NewConfig()
	if err := cfg.AddService(&service.Service{Key: webKey, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.AddDest(webKey, &service.Dest{Addr: mustAddr("198.18.1.1"), Port: 8080, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	c := NewCollector(&fakeSource{cfg: cfg})
	traffic(cfg, webKey, "198.18.1.1", 0, 0, 4, 0, 0)
	want := func(n string) io.Reader {
		return strings.NewReader(`
# HELP uvs_backend_connections_total Connections scheduled to the real server since it was added or last zeroed.
# TYPE uvs_backend_connections_total counter
uvs_backend_connections_total` + backendLabelsWeb1 + ` ` + n + `
`)
	}
	if err := testutil.CollectAndCompare(c, want("4"), "uvs_backend_connections_total"); err != nil {
		t.Error(err)
	}
	dest(cfg, webKey, "198.18.1.1").Stats.Zero()
	traffic(cfg, webKey, "198.18.1.1", 0, 0, 1, 0, 0)
	if err := testutil.CollectAndCompare(c, want("1"), "uvs_backend_connections_total"); err != nil {
		t.Error(err)
	}
}

// TestNoConfig: before the first table is published there are no servers,
// but the totals, the table size and drops are still there.
func TestNoConfig(t *testing.T) {
	src := &fakeSource{conns: 0, drops: map[string]uint64{"no_service": 2}}
	want := totalsText(0, 0, 0) + `
# HELP uvs_connections Entries in the connection table, persistence templates included.
# TYPE uvs_connections gauge
uvs_connections 0
# HELP uvs_dropped_packets_total Packets the director dropped, by reason.
# TYPE uvs_dropped_packets_total counter
uvs_dropped_packets_total{reason="no_service"} 2
`
	if err := testutil.CollectAndCompare(NewCollector(src), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestLint runs Prometheus's own metric-name linter over everything the
// collector exports.
func TestLint(t *testing.T) {
	_, src := testConfig(t)
	src.drops = map[string]uint64{"no_server": 1}
	problems, err := testutil.CollectAndLint(NewCollector(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestHandler scrapes over HTTP, as Prometheus does.
func TestHandler(t *testing.T) {
	cfg, src := testConfig(t)
	traffic(cfg, v6Key, "2001:2::11", 3, 0, 3, 5, 5)
	extra := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "uvs_test_extra", Help: "An extra collector."}, func() float64 { return 7 })
	srv := httptest.NewServer(Handler(src, extra))
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d:\n%s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the text format", ct)
	}
	for _, line := range []string{
		"node_ipvs_connections_total 3\n",
		`node_ipvs_backend_connections_active{local_address="2001:2::100",local_mark="",local_port="443",proto="TCP",remote_address="2001:2::11",remote_port="443"} 3` + "\n",
		"# TYPE go_goroutines gauge\n",
		"# TYPE process_start_time_seconds gauge\n",
		"uvs_test_extra 7\n",
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
}

// BenchmarkCollect measures one scrape of a table of 100 services with 10
// real servers each. Scrapes are not on the packet path; this is to know
// what a scrape costs, not to hold it to zero allocations.
func BenchmarkCollect(b *testing.B) {
	cfg := service.NewConfig()
	for i := range 100 {
		k := service.Key{Proto: service.TCP, Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), Port: 80}
		if err := cfg.AddService(&service.Service{Key: k, Scheduler: "rr"}); err != nil {
			b.Fatal(err)
		}
		for j := range 10 {
			d := &service.Dest{Addr: netip.AddrFrom4([4]byte{198, 19, byte(i), byte(j)}), Port: 8080, Weight: 1}
			if err := cfg.AddDest(k, d); err != nil {
				b.Fatal(err)
			}
		}
	}
	c := NewCollector(&fakeSource{cfg: cfg, drops: map[string]uint64{"no_server": 1}})
	ch := make(chan prometheus.Metric, 1<<15)
	b.ReportAllocs()
	for b.Loop() {
		c.Collect(ch)
		for len(ch) > 0 {
			<-ch
		}
	}
}

// TestConcurrentScrapes: two Prometheus servers may scrape at once while
// the data path counts; run with -race.
func TestConcurrentScrapes(t *testing.T) {
	cfg, src := testConfig(t)
	c := NewCollector(src)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range 50 {
				if _, err := reg.Gather(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 100 {
		traffic(cfg, webKey, "198.18.1.1", 0, 0, 1, 1, 1)
	}
	wg.Wait()
	if err := testutil.CollectAndCompare(c, strings.NewReader(totalsText(100, 100, 100)), totalsNames...); err != nil {
		t.Error(err)
	}
}
