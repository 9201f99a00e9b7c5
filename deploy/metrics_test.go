package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

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
	tn := localnet.Start(t, spec, nil)
	statuses, err := tn.WaitHealthy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	localnet.WaitAvailable(t, tn, spec.Miners, time.Minute)

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
