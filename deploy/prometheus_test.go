package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet"
	"go.yaml.in/yaml/v3"
)

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
