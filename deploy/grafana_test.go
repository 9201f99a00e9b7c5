// Package deploy_test checks the monitoring files of deploy/: the Grafana
// dashboard is well formed and every metric it queries is one a real
// testnet's nodes export, with the labels and label values it selects and
// groups by; prometheus.yml and the target file made from a testnet's
// manifest are what Prometheus expects.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet"
	"go.yaml.in/yaml/v3"
)

const dashboardPath = "grafana/ephemera.json"

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H, W, X, Y int
}

type dashTarget struct {
	Datasource   *datasourceRef `json:"datasource"`
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
}

type dashPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *gridPos       `json:"gridPos"`
	Targets    []dashTarget   `json:"targets"`
	Panels     []dashPanel    `json:"panels"` // a collapsed row's
}

type dashVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
}

// query is one PromQL expression of the dashboard, where it comes from.
type query struct {
	where  string // panel title and refId, or variable name
	expr   string
	legend string
	parsed promQuery
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if dec.More() {
		t.Fatalf("%s: trailing data after the dashboard", dashboardPath)
	}
	return d
}

// allPanels flattens rows: the panels of a collapsed row follow it.
func allPanels(ps []dashPanel) []dashPanel {
	var out []dashPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

var labelValuesRe = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// dashboardQueries checks the dashboard's structure and returns every
// PromQL expression in it, of panels and of query variables.
func dashboardQueries(t *testing.T, d dashboard) []query {
	t.Helper()
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q: both are needed", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want one of Grafana 10 or 11 (36 to 41)", d.SchemaVersion)
	}
	// Variables: a Prometheus data source, then job and instance.
	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("want a variable datasource of type datasource over prometheus, got %+v", ds)
	}
	var qs []query
	for _, name := range []string{"job", "instance"} {
		v, ok := vars[name]
		if !ok || v.Type != "query" {
			t.Errorf("want a query variable %s, got %+v", name, v)
			continue
		}
		checkDatasource(t, "variable "+name, v.Datasource)
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query: %v", name, err)
			continue
		}
		m := labelValuesRe.FindStringSubmatch(q.Query)
		if m == nil || m[2] != name {
			t.Errorf("variable %s: query %q, want label_values(<metric>, %s)", name, q.Query, name)
			continue
		}
		p, err := parsePromQL(m[1])
		if err != nil || len(p.selectors) != 1 {
			t.Errorf("variable %s: %q: %v, %d selectors", name, m[1], err, len(p.selectors))
			continue
		}
		qs = append(qs, query{where: "variable " + name, expr: m[1], parsed: p})
	}

	ids := map[int]string{}
	var boxes []dashPanel
	for _, p := range allPanels(d.Panels) {
		if p.Title == "" {
			t.Errorf("panel %d (%s) has no title", p.ID, p.Type)
		}
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("panel %q: id %d is not positive or is also %q's", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if g := p.GridPos; g == nil || g.W < 1 || g.H < 1 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v is not within the 24 columns", p.Title, g)
		} else {
			boxes = append(boxes, p)
		}
		if p.Type == "row" {
			continue // a row only groups panels: no data source, no query
		}
		checkDatasource(t, "panel "+p.Title, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			where := fmt.Sprintf("panel %q, target %s", p.Title, tg.RefID)
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId empty or repeated", where)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil {
				checkDatasource(t, where, tg.Datasource)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: no expr", where)
				continue
			}
			pq, err := parsePromQL(tg.Expr)
			if err != nil {
				t.Errorf("%s: %v in\n%s", where, err, tg.Expr)
				continue
			}
			if len(pq.selectors) == 0 {
				t.Errorf("%s: no metric in %q", where, tg.Expr)
			}
			// Every selector follows the job and instance variables.
			for _, s := range pq.selectors {
				var job, inst bool
				for _, m := range s.matchers {
					job = job || m.label == "job" && m.op == "=~" && m.value == "$job"
					inst = inst || m.label == "instance" && m.op == "=~" && m.value == "$instance"
				}
				if !job || !inst {
					t.Errorf("%s: %s lacks job=~\"$job\" or instance=~\"$instance\"", where, s.metric)
				}
			}
			// An aggregated series has only the labels it is grouped by.
			if pq.aggregates && pq.byOnly {
				for _, l := range legendLabels(tg.LegendFormat) {
					if !slices.Contains(pq.grouping, l) {
						t.Errorf("%s: legend names {{%s}}, which the aggregation drops (by %v)", where, l, pq.grouping)
					}
				}
			}
			qs = append(qs, query{where: where, expr: tg.Expr, legend: tg.LegendFormat, parsed: pq})
		}
	}
	// No two panels overlap.
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q %+v and %q %+v overlap", a.Title, *ga, b.Title, *gb)
			}
		}
	}
	return qs
}

func checkDatasource(t *testing.T, where string, ds *datasourceRef) {
	t.Helper()
	if ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
		t.Errorf("%s: datasource %+v, want {prometheus ${datasource}}", where, ds)
	}
}

// The dashboard alone: well formed, and its queries parse.
func TestDashboard(t *testing.T) {
	qs := dashboardQueries(t, loadDashboard(t))
	metrics := map[string]bool{}
	for _, q := range qs {
		for _, s := range q.parsed.selectors {
			metrics[s.metric] = true
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for m := range metrics {
			if !yield(m) {
				return
			}
		}
	})
	t.Logf("%d queries over %d metrics: %s", len(qs), len(names), strings.Join(names, " "))
	if len(names) < 20 {
		t.Errorf("only %d metrics found; the tokenizer is missing some", len(names))
	}
}

func TestPromQLTokenizer(t *testing.T) {
	for _, c := range []struct {
		expr     string
		metrics  []string
		grouping []string
	}{
		{`rate(a_total{job=~"$job"}[$__rate_interval])`, []string{"a_total"}, nil},
		{`sum by (le, phase) (rate(h_bucket{x="}"}[5m:1m] offset 1h))`, []string{"h_bucket"}, []string{"le", "phase"}},
		{`histogram_quantile(0.95, sum without (pod) (rate(h_bucket[1m])))`, []string{"h_bucket"}, []string{"pod"}},
		{`a / on (instance) group_left (version) b{c!~'d'} > bool 1e-3`, []string{"a", "b"}, []string{"instance", "version"}},
		{`topk(10, avg by (peer) (m)) or vector(0) unless {__name__="n", y="z"}`, []string{"m", "n"}, []string{"peer"}},
		{`max(x) * -Inf + NaN - 0x1F`, []string{"x"}, nil},
	} {
		q, err := parsePromQL(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		var got []string
		for _, s := range q.selectors {
			got = append(got, s.metric)
		}
		if !slices.Equal(got, c.metrics) || !slices.Equal(q.grouping, c.grouping) {
			t.Errorf("%s: metrics %v grouping %v, want %v %v", c.expr, got, q.grouping, c.metrics, c.grouping)
		}
	}
	for _, bad := range []string{`sum(rate(x[5m])`, `x{a="b"`, `x{a=b}`, `rate(x[5m)`, `sum by x (y)`, `x ; y`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// scrape is one node's /metrics: label sets by series name.
type scrape map[string][]map[string]string

func fetchMetrics(ctx context.Context, url string) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("GET %s: Content-Type %q, want the text format", url, ct)
	}
	return parseExposition(resp.Body)
}

// parseExposition reads Prometheus's text format: series name, labels; values ignored.
func parseExposition(r io.Reader) (scrape, error) {
	out := scrape{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		name, labels := line[:end], map[string]string{}
		if line[end] == '{' {
			rest := line[end+1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					break
				}
				eq := strings.Index(rest, `="`)
				if eq <= 0 {
					return nil, fmt.Errorf("bad labels in %q", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var v strings.Builder
				i := 0
				for ; i < len(rest) && rest[i] != '"'; i++ {
					if rest[i] == '\\' && i+1 < len(rest) {
						i++
						switch rest[i] {
						case 'n':
							v.WriteByte('\n')
						default:
							v.WriteByte(rest[i])
						}
						continue
					}
					v.WriteByte(rest[i])
				}
				if i == len(rest) {
					return nil, fmt.Errorf("unterminated label value in %q", line)
				}
				labels[key] = v.String()
				rest = rest[i+1:]
			}
		}
		out[name] = append(out[name], labels)
	}
	return out, sc.Err()
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"job", "instance"}

// missing says what of the queries the scraped nodes do not export: a
// metric no node exports, a label a matcher, a grouping or a legend names
// that none of the query's series has, a label value an = matcher asks for
// that no series has.
func missing(qs []query, scrapes map[string]scrape) []string {
	var out []string
	series := func(metric string) []map[string]string {
		var all []map[string]string
		for _, s := range scrapes {
			all = append(all, s[metric]...)
		}
		return all
	}
	hasLabel := func(all []map[string]string, label string) bool {
		return slices.ContainsFunc(all, func(ls map[string]string) bool { _, ok := ls[label]; return ok })
	}
	for _, q := range qs {
		var all []map[string]string
		for _, s := range q.parsed.selectors {
			ss := series(s.metric)
			if len(ss) == 0 {
				out = append(out, fmt.Sprintf("%s: no node exports %s", q.where, s.metric))
				continue
			}
			all = append(all, ss...)
			for _, m := range s.matchers {
				switch {
				case slices.Contains(targetLabels, m.label) || m.label == "__name__":
				case !hasLabel(ss, m.label):
					out = append(out, fmt.Sprintf("%s: %s has no label %s", q.where, s.metric, m.label))
				case m.op == "=" && !strings.Contains(m.value, "$") &&
					!slices.ContainsFunc(ss, func(ls map[string]string) bool { return ls[m.label] == m.value }):
					out = append(out, fmt.Sprintf("%s: no series %s{%s=%q}", q.where, s.metric, m.label, m.value))
				}
			}
		}
		if len(all) == 0 {
			continue
		}
		for _, l := range append(slices.Clone(q.parsed.grouping), legendLabels(q.legend)...) {
			if !slices.Contains(targetLabels, l) && !hasLabel(all, l) {
				out = append(out, fmt.Sprintf("%s: no series of the query has label %s", q.where, l))
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// A real testnet with every role exports every metric the dashboard
// queries, once a reservation and a chat completion have gone through it;
// and the target file made from its manifest points at every node's metrics.
func TestDashboardMetricsExported(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an 8-node testnet")
	}
	qs := dashboardQueries(t, loadDashboard(t))
	if t.Failed() {
		t.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	spec := testnet.Spec{Network: "grafana", Bootstraps: 1, Oracles: 3, Miners: 3, Routers: 1}
	tn, err := testnet.Start(ctx, t.TempDir(), spec, testnet.InProcess{})
	t.Cleanup(func() {
		sctx, done := context.WithTimeout(context.Background(), 30*time.Second)
		defer done()
		if err := tn.Stop(sctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	statuses, err := tn.WaitHealthy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.WaitPool(ctx, "every miner available", func(m []api.PoolMiner) bool {
		return testnet.CountState(m, "available") == spec.Miners
	}); err != nil {
		t.Fatal(err)
	}

	// Activity, so that counters and histograms have series.
	res, err := tn.Reserve(ctx, time.Minute)
	if err != nil {
		t.Fatalf("reserve: %v", err)
	}
	if _, err := tn.Release(ctx, res.ID); err != nil {
		t.Fatalf("release: %v", err)
	}
	chat(ctx, t, tn.RouterURL())

	// Scrape every node through the target file, as Prometheus would.
	urls := map[string]string{}
	if targets, ok := targetFile(t, tn, statuses); ok {
		for _, g := range targets {
			urls[g.Labels["instance"]] = "http://" + g.Targets[0] + "/metrics"
		}
	} else {
		for _, s := range statuses {
			urls[s.Name] = s.APIURL + "/metrics"
		}
	}
	if len(urls) != len(statuses) {
		t.Fatalf("%d targets for %d nodes", len(urls), len(statuses))
	}
	// Series of a finished task may appear a moment after its answer.
	var gaps []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		scrapes := map[string]scrape{}
		for name, u := range urls {
			s, err := fetchMetrics(ctx, u)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			scrapes[name] = s
		}
		if gaps = missing(qs, scrapes); len(gaps) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the nodes do not export what the dashboard queries:\n%s", strings.Join(gaps, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("all %d queries of the dashboard are answered by the %d nodes' metrics", len(qs), len(urls))
}

// chat runs one chat completion through the router.
func chat(ctx context.Context, t *testing.T, router string) {
	t.Helper()
	body := `{"messages":[{"role":"user","content":"What is 2 + 2?"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, router+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var c struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &c) != nil || len(c.Choices) == 0 {
		t.Fatalf("chat completion: HTTP %d: %s", resp.StatusCode, raw)
	}
	if !strings.Contains(c.Choices[0].Message.Content, "4") {
		t.Errorf("chat completion: answer %q to 2 + 2", c.Choices[0].Message.Content)
	}
}

// fileSDGroup is one entry of a Prometheus file_sd target file.
type fileSDGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// targetFile writes the testnet's manifest and runs testnet-targets.sh on
// it, as deploy/README.md says; false if bash or jq is missing here.
func targetFile(t *testing.T, tn *testnet.Testnet, statuses []testnet.Status) ([]fileSDGroup, bool) {
	t.Helper()
	if _, err := exec.LookPath("jq"); err != nil {
		t.Log("jq is not installed: testnet-targets.sh not checked")
		return nil, false
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Log("bash is not installed: testnet-targets.sh not checked")
		return nil, false
	}
	manifest, err := tn.WriteManifest(statuses)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "testnet-targets.sh", manifest).Output()
	if err != nil {
		t.Fatalf("testnet-targets.sh: %v", err)
	}
	groups := checkTargets(t, out)
	if len(groups) != len(statuses) {
		t.Fatalf("testnet-targets.sh: %d targets for %d nodes", len(groups), len(statuses))
	}
	for i, s := range statuses {
		g := groups[i]
		if want := strings.TrimPrefix(s.APIURL, "http://"); g.Targets[0] != want ||
			g.Labels["instance"] != s.Name || g.Labels["role"] != strings.Join(s.Roles, ",") || g.Labels["peer_id"] != s.PeerID {
			t.Errorf("target %+v for node %s at %s", g, s.Name, s.APIURL)
		}
	}
	return groups, true
}

var hostPortRe = regexp.MustCompile(`^[a-zA-Z0-9.\-]+:[0-9]{1,5}$`)

// checkTargets parses a file_sd target file as Prometheus would need it.
func checkTargets(t *testing.T, b []byte) []fileSDGroup {
	t.Helper()
	var groups []fileSDGroup
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&groups); err != nil {
		t.Fatalf("target file: %v\n%s", err, b)
	}
	for _, g := range groups {
		if len(g.Targets) != 1 || !hostPortRe.MatchString(g.Targets[0]) {
			t.Errorf("target file: targets %q, want one host:port", g.Targets)
		}
		for k := range g.Labels {
			if !regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`).MatchString(k) || strings.HasPrefix(k, "__") {
				t.Errorf("target file: label %q is not a valid target label", k)
			}
		}
	}
	return groups
}

// The target script on a manifest of the testnet package's own shape,
// with TARGET_HOST for Prometheus in Docker Desktop.
func TestTargetScript(t *testing.T) {
	for _, tool := range []string{"bash", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	m := testnet.Manifest{Network: "n", Dir: "/tmp/x", Nodes: []testnet.Status{
		{Name: "bootstrap-0", Roles: []string{"bootstrap"}, PeerID: "12D3KooWA", APIURL: "http://127.0.0.1:43291"},
		{Name: "router-0", Roles: []string{"router"}, PeerID: "12D3KooWB", APIURL: "http://127.0.0.1:7601"},
	}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/testnet.json"
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{"": "127.0.0.1:7601", "host.docker.internal": "host.docker.internal:7601"} {
		cmd := exec.Command("bash", "testnet-targets.sh", path)
		cmd.Env = append(os.Environ(), "TARGET_HOST="+host)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("TARGET_HOST=%s: %v", host, err)
		}
		g := checkTargets(t, out)
		if len(g) != 2 || g[1].Targets[0] != want || g[1].Labels["instance"] != "router-0" || g[1].Labels["role"] != "router" {
			t.Errorf("TARGET_HOST=%s: %+v", host, g)
		}
	}
	if err := exec.Command("bash", "testnet-targets.sh").Run(); err == nil {
		t.Error("no argument: no error")
	}
}

// promConfig is the part of Prometheus's configuration prometheus.yml uses;
// any other key is an error, as a misspelt key would be for Prometheus.
type promConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		Scheme        string `yaml:"scheme"`
		Authorization *struct {
			Type            string `yaml:"type"`
			Credentials     string `yaml:"credentials"`
			CredentialsFile string `yaml:"credentials_file"`
		} `yaml:"authorization"`
		FileSDConfigs []struct {
			Files           []string `yaml:"files"`
			RefreshInterval string   `yaml:"refresh_interval"`
		} `yaml:"file_sd_configs"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func parsePromConfig(t *testing.T, b []byte) promConfig {
	t.Helper()
	var c promConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	return c
}

func TestPrometheusConfig(t *testing.T) {
	b, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	c := parsePromConfig(t, b)
	durations := map[string]time.Duration{}
	for name, s := range map[string]string{"scrape_interval": c.Global.ScrapeInterval, "scrape_timeout": c.Global.ScrapeTimeout,
		"evaluation_interval": c.Global.EvaluationInterval} {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Errorf("global.%s %q: %v", name, s, err)
		}
		durations[name] = d
	}
	if durations["scrape_timeout"] > durations["scrape_interval"] {
		t.Errorf("scrape_timeout %s is longer than scrape_interval %s", c.Global.ScrapeTimeout, c.Global.ScrapeInterval)
	}
	jobs := map[string]bool{}
	var fileSD, static bool
	for _, sc := range c.ScrapeConfigs {
		if sc.JobName == "" || jobs[sc.JobName] {
			t.Errorf("job_name %q empty or repeated", sc.JobName)
		}
		jobs[sc.JobName] = true
		if sc.MetricsPath != "/metrics" || sc.Scheme != "" && sc.Scheme != "http" {
			t.Errorf("job %s: metrics_path %q scheme %q, want /metrics over http", sc.JobName, sc.MetricsPath, sc.Scheme)
		}
		for _, f := range sc.FileSDConfigs {
			if !slices.Equal(f.Files, []string{"targets/*.json"}) {
				t.Errorf("job %s: file_sd files %q, want targets/*.json (what testnet-targets.sh writes to)", sc.JobName, f.Files)
			}
			if _, err := time.ParseDuration(f.RefreshInterval); err != nil {
				t.Errorf("job %s: refresh_interval: %v", sc.JobName, err)
			}
			fileSD = true
		}
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				if !hostPortRe.MatchString(tg) {
					t.Errorf("job %s: static target %q is not host:port", sc.JobName, tg)
				}
			}
			static = static || len(s.Targets) > 0
		}
	}
	if !fileSD || !static {
		t.Errorf("want a file_sd_configs job and a static_configs example: file_sd %v, static %v", fileSD, static)
	}
	if _, err := os.Stat("targets"); err != nil {
		t.Errorf("the file_sd directory: %v", err)
	}
	// The commented authorization, uncommented, is a valid bearer token.
	uncomment := regexp.MustCompile(`(?m)^(\s*)# (authorization:.*|  (type|credentials): .*)$`)
	if !uncomment.Match(b) {
		t.Fatal("prometheus.yml shows no commented authorization")
	}
	c = parsePromConfig(t, uncomment.ReplaceAll(b, []byte("$1$2")))
	a := c.ScrapeConfigs[0].Authorization
	if a == nil || a.Type != "Bearer" || a.Credentials == "" {
		t.Errorf("uncommented authorization: %+v, want a Bearer credential", a)
	}
}

// The jq one-liner of README.md gives what testnet-targets.sh gives.
func TestReadmeJQ(t *testing.T) {
	for _, tool := range []string{"bash", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\njq '(\[\.nodes\[\].*?)' \\\n`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md: no jq one-liner over .nodes")
	}
	manifest := testnet.Manifest{Network: "n", Nodes: []testnet.Status{
		{Name: "miner-0", Roles: []string{"miner"}, PeerID: "12D3KooWC", APIURL: "http://127.0.0.1:40001"},
	}}
	b, _ := json.Marshal(manifest)
	path := t.TempDir() + "/testnet.json"
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	fromReadme, err := exec.Command("jq", "-c", string(m[1]), path).Output()
	if err != nil {
		t.Fatalf("README's jq: %v", err)
	}
	fromScript, err := exec.Command("bash", "testnet-targets.sh", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	a, s := checkTargets(t, fromReadme), checkTargets(t, fromScript)
	if fmt.Sprint(a) != fmt.Sprint(s) {
		t.Errorf("README's jq gives %+v, testnet-targets.sh %+v", a, s)
	}
}

// The Grafana provisioning files: a Prometheus data source, and the
// dashboards' directory where README.md mounts deploy/grafana.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string            `yaml:"name"`
			Type      string            `yaml:"type"`
			Access    string            `yaml:"access"`
			URL       string            `yaml:"url"`
			IsDefault bool              `yaml:"isDefault"`
			JSONData  map[string]string `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	var dash struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string `yaml:"name"`
			Folder                string `yaml:"folder"`
			Type                  string `yaml:"type"`
			DisableDeletion       bool   `yaml:"disableDeletion"`
			UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
			AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
			Options               struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	for path, v := range map[string]any{
		"grafana/provisioning/datasources/prometheus.yml": &ds,
		"grafana/provisioning/dashboards/ephemera.yml":    &dash,
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault ||
		ds.Datasources[0].URL != "http://localhost:9090" {
		t.Errorf("datasources: %+v", ds)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if dash.APIVersion != 1 || len(dash.Providers) != 1 || dash.Providers[0].Type != "file" ||
		!bytes.Contains(readme, []byte(`"$PWD/deploy/grafana:`+dash.Providers[0].Options.Path+`:ro"`)) {
		t.Errorf("dashboards provider %+v: README.md does not mount deploy/grafana at its path", dash)
	}
}
