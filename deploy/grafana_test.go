// Package deploy_test checks the monitoring files of deploy/: the Grafana
// dashboard is well formed and every metric it queries is one a real
// testnet's nodes export, with the labels and label values it selects and
// groups by; prometheus.yml and the target file made from a testnet's
// manifest are what Prometheus expects.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

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
