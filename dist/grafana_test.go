package dist

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"uvs/bgp"
	"uvs/checker"
	"uvs/conntrack"
	"uvs/director"
	"uvs/keepalived"
	"uvs/metrics"
	"uvs/rate"
	"uvs/service"
	"uvs/syncd"
)

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/uvs.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/uvs.json: %v", err)
	}
	return d
}

// fakeSource is a director with one service, one real server and one
// drop reason: enough for the collector to send every metric it has.
type fakeSource struct{ cfg *service.Config }

func (f fakeSource) Config() *service.Config         { return f.cfg }
func (f fakeSource) Rates(*service.Stats) rate.Rates { return rate.Rates{CPS: 1} }
func (f fakeSource) Drops() map[string]uint64        { return map[string]uint64{"no_route": 1} }
func (f fakeSource) ConnCount() int                  { return 1 }

// syncCollector is the sync daemons' collector, no daemon running (every
// series is sent all the same).
func syncCollector() prometheus.Collector {
	return syncd.New(noSync{}, slog.New(slog.DiscardHandler), nil).Collector()
}

// noSync is a director for the sync daemons that has no connection.
type noSync struct{}

func (noSync) StartSyncMaster(*conntrack.SyncPolicy) error { return nil }
func (noSync) StopSyncMaster()                             {}
func (noSync) SyncDrain(func(*director.SyncConn)) int      { return 0 }
func (noSync) SyncWalk(func(*director.SyncConn) bool)      {}
func (noSync) SyncLearn(*director.SyncConn) (conntrack.LearnResult, error) {
	return 0, nil
}
func (noSync) SyncDropped() uint64 { return 0 }

// fakeBGP is a BGP speaker with one peer, up, and one VIP announced.
type fakeBGP struct{}

func (fakeBGP) Peers() []bgp.Peer { return []bgp.Peer{{Addr: netip.MustParseAddr("198.18.1.1")}} }
func (fakeBGP) PeersUp() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("198.18.1.1")}
}
func (fakeBGP) Announced() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("198.18.0.100/32")}
}

// exported returns the series the director's metrics handler serves, by
// name, with their types (its # TYPE lines), as `director run
// --keepalived --bgp-…` serves them (with the health checks' and the BGP
// speaker's collectors), and those of the director's own collector
// (node_ipvs_*, uvs_*), the health checks' (uvs_healthcheck_*) and the
// speaker's (uvs_bgp_*), every one of which the fakes make them send.
func exported(t *testing.T) (served, own map[string]string) {
	t.Helper()
	cfg := service.NewConfig()
	k := service.Key{Proto: service.TCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}
	if err := cfg.AddService(&service.Service{Key: k, Scheduler: "wlc"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.AddDest(k, &service.Dest{Addr: netip.MustParseAddr("198.18.1.2"), Port: 80, Weight: 1, Fwd: service.FwdMasq}); err != nil {
		t.Fatal(err)
	}
	src := fakeSource{cfg}
	chk := startChecker(t)

	srv := httptest.NewServer(metrics.Handler(src, chk.Collector(), bgp.NewCollector(fakeBGP{}), syncCollector()))
	defer srv.Close()
	// The check latency histogram has its first series after the first
	// check, the scripts' counter after the first script.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		served = scrape(t, srv)
		if served["uvs_healthcheck_duration_seconds"] != "" && served["uvs_healthcheck_scripts_total"] != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no uvs_healthcheck_duration_seconds or uvs_healthcheck_scripts_total 10 s after the checks started")
		}
	}

	own = map[string]string{}
	for _, c := range []prometheus.Collector{metrics.NewCollector(src), chk.Collector(), bgp.NewCollector(fakeBGP{}), syncCollector()} {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			own[mf.GetName()] = strings.ToLower(mf.GetType().String())
			n++
		}
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		described := 0
		for range ch {
			described++
		}
		if n != described {
			t.Fatalf("a collector describes %d metrics and sent %d: the fakes miss some", described, n)
		}
	}
	return served, own
}

// scrape returns the series srv serves, with their types.
func scrape(t *testing.T, srv *httptest.Server) map[string]string {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	served := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			served[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return served
}

// fakeTable is a rule table for the checker.
type fakeTable struct {
	mu  sync.Mutex
	cfg *service.Config
}

func (f *fakeTable) Update(fn func(*service.Config) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := f.cfg.Clone()
	if err := fn(next); err != nil {
		return err
	}
	f.cfg = next
	return nil
}

// startChecker runs the health checks of a keepalived file whose one
// check runs true(1): no traffic, and a check latency to show. The real
// server starts down (alpha), so its coming up runs notify_up and
// quorum_up (true too), and uvs_healthcheck_scripts_total has a series.
func startChecker(t *testing.T) *checker.Checker {
	t.Helper()
	prog, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1):", err)
	}
	path := filepath.Join(t.TempDir(), "keepalived.conf")
	conf := fmt.Sprintf(`virtual_server 198.18.0.100 80 {
    protocol TCP
    alpha
    quorum_up %[1]s
    quorum_down %[1]s
    real_server 198.18.1.2 80 {
        notify_up %[1]s
        MISC_CHECK {
            misc_path %[1]s
            warmup 0
        }
    }
}
`, prog)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _, err := keepalived.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := checker.New(&fakeTable{cfg: service.NewConfig()}, f, checker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// seriesOf maps a name a query uses to the series it belongs to: itself,
// or for a histogram's (or summary's) _bucket, _sum and _count, the
// histogram.
func seriesOf(name string, types map[string]string) (string, bool) {
	if _, ok := types[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if ok && (types[base] == "histogram" || types[base] == "summary" && suffix != "_bucket") {
			return base, true
		}
	}
	return "", false
}

// TestDashboard: uvs.json is a dashboard Grafana imports (a schema
// version, a Prometheus data source variable that every panel uses,
// panels with queries, on the grid), and every series its queries name is
// one the director exports; every series of the director's own collector
// and of the health checks' has a panel.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 36 || d.Title == "" || d.UID == "" {
		t.Errorf("schemaVersion %d, title %q, uid %q", d.SchemaVersion, d.Title, d.UID)
	}
	dsVar := ""
	var queries []string // every PromQL expression
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			if json.Unmarshal(v.Query, &q) == nil && q == "prometheus" {
				dsVar = v.Name
			}
		case "query":
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
			m := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_]\w*\)$`).FindStringSubmatch(q.Query)
			if m == nil {
				t.Errorf("variable %s: %q is not label_values(SERIES, LABEL)", v.Name, q.Query)
				continue
			}
			queries = append(queries, m[1])
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus data source variable (type datasource, query prometheus)")
	}
	ds := "${" + dsVar + "}"
	checkDS := func(what string, got *datasource) {
		if got == nil || got.Type != "prometheus" || got.UID != ds {
			t.Errorf("%s: data source %+v, want prometheus %s", what, got, ds)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			checkDS("variable "+v.Name, v.Datasource)
		}
	}

	ids := map[int]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			what := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: id missing or used twice", what)
			}
			ids[p.ID] = true
			if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v off Grafana's 24 columns", what, g)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if !slices.Contains([]string{"timeseries", "stat", "table", "heatmap", "state-timeline", "gauge", "bargauge"}, p.Type) {
				t.Errorf("%s: type %q", what, p.Type)
			}
			checkDS(what, p.Datasource)
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", what)
			}
			for _, tg := range p.Targets {
				if tg.RefID == "" || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: a target without refId or expr", what)
				}
				if tg.Datasource != nil {
					checkDS(what+" target "+tg.RefID, tg.Datasource)
				}
				queries = append(queries, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	if len(ids) < 10 {
		t.Errorf("%d panels", len(ids))
	}

	types, own := exported(t)
	for name := range own {
		if types[name] == "" {
			t.Errorf("the handler does not serve %s", name)
		}
	}

	used := map[string]bool{}
	for _, q := range queries {
		names, err := metricNames(q)
		if err != nil {
			t.Errorf("%q: %v", q, err)
		}
		if len(names) == 0 {
			t.Errorf("%q names no series", q)
		}
		for _, n := range names {
			s, ok := seriesOf(n, types)
			if !ok {
				t.Errorf("%q: %s is not a series the director exports", q, n)
			}
			used[s] = true
		}
	}
	for name := range own {
		if !used[name] {
			t.Errorf("the dashboard shows nothing of %s", name)
		}
	}
}

// PromQL words that are not series: operators and modifiers. Functions
// and aggregations are known by the "(", or the by or without, after
// them.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// labelLists are the words followed by a list of label names.
var labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// metricNames returns the series names in a PromQL expression: the
// identifiers that are not followed by "(" or by/without (functions,
// aggregations), not
// PromQL's words, not label names (in {…} matchers or in by (…) and its
// kind) and not numbers or durations; strings, [ranges] and Grafana's
// $variables are skipped. A {…} selector without a name before it is an
// error (its series could be anything).
func metricNames(q string) ([]string, error) {
	var names []string
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	// skipTo returns the index after the close that matches q[i], skipping
	// strings; -1 if there is none.
	skipTo := func(i int, close byte) int {
		for i++; i < len(q); i++ {
			switch c := q[i]; {
			case c == close:
				return i + 1
			case c == '"' || c == '\'' || c == '`':
				if i = skipString(q, i); i < 0 {
					return -1
				}
				i--
			}
		}
		return -1
	}
	nextNonSpace := func(i int) int {
		for i < len(q) && (q[i] == ' ' || q[i] == '\t' || q[i] == '\n') {
			i++
		}
		return i
	}
	afterName := false // the previous token was a series name
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
			continue
		case c == '"' || c == '\'' || c == '`':
			if i = skipString(q, i); i < 0 {
				return names, fmt.Errorf("unterminated string")
			}
		case c == '{':
			if !afterName {
				return names, fmt.Errorf("a selector without a series name at %d", i)
			}
			if i = skipTo(i, '}'); i < 0 {
				return names, fmt.Errorf("unterminated {")
			}
		case c == '[':
			if i = skipTo(i, ']'); i < 0 {
				return names, fmt.Errorf("unterminated [")
			}
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(q) && q[i] == '{' {
				if i = skipTo(i, '}'); i < 0 {
					return names, fmt.Errorf("unterminated ${")
				}
			}
			for i < len(q) && isIdent(q[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			for i < len(q) && (isIdent(q[i]) || q[i] == '.') { // 0.99, 1e3, 5m, 1h30m, 0x1f
				i++
			}
		case isStart(c):
			j := i
			for j < len(q) && isIdent(q[j]) {
				j++
			}
			word, k := q[i:j], nextNonSpace(j)
			i = j
			switch {
			case labelLists[word] && k < len(q) && q[k] == '(':
				if i = skipTo(k, ')'); i < 0 {
					return names, fmt.Errorf("unterminated %s (", word)
				}
			case promqlWords[word]:
			case k < len(q) && q[k] == '(': // a function or an aggregation
			case nextWord(q, k) == "by" || nextWord(q, k) == "without": // sum by (…) (…)
			default:
				names = append(names, word)
				afterName = true
				continue
			}
		default:
			i++
		}
		afterName = false
	}
	return names, nil
}

// nextWord returns the word of letters at q[k:].
func nextWord(q string, k int) string {
	j := k
	for j < len(q) && (q[j] >= 'a' && q[j] <= 'z' || q[j] == '_') {
		j++
	}
	return q[k:j]
}

// skipString returns the index after the string that starts at q[i], or
// -1; \ escapes in "…" and '…', not in `…`.
func skipString(q string, i int) int {
	quote := q[i]
	for i++; i < len(q); i++ {
		switch q[i] {
		case '\\':
			if quote != '`' {
				i++
			}
		case quote:
			return i + 1
		}
	}
	return -1
}

// TestMetricNames: the tokenizer that TestDashboard relies on.
func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		q    string
		want []string
		bad  bool
	}{
		{`node_ipvs_connections_total`, []string{"node_ipvs_connections_total"}, false},
		{`sum by (instance, reason) (rate(uvs_dropped_packets_total{instance=~"$instance", reason!="by"}[$__rate_interval]))`,
			[]string{"uvs_dropped_packets_total"}, false},
		{`sum(rate(a_total[5m])) without (job) / on (instance) group_left (reason) b offset 1h`, []string{"a_total", "b"}, false},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket{x="}{\"", y='z'}[1h30m])))`, []string{"h_bucket"}, false},
		{`count(up == 0) or vector(0)`, []string{"up"}, false},
		{`1e3 * rec:rule:rate5m + .5 > bool ${threshold}`, []string{"rec:rule:rate5m"}, false},
		{`x and y unless z`, []string{"x", "y", "z"}, false},
		{`a{l="v"} * 8`, []string{"a"}, false},
		{`sum by(instance)(rate (c_total [5m]))`, []string{"c_total"}, false},
		{`{__name__="hidden"}`, nil, true},
		{`sum(rate({job="x"}[5m]))`, nil, true},
		{`a{l="v"`, []string{"a"}, true},
	} {
		got, err := metricNames(c.q)
		if (err != nil) != c.bad || !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, %v; want %q, error %v", c.q, got, err, c.want, c.bad)
		}
	}
}
