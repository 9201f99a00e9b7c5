package node_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/p2p"
)

const bootstrapPeer = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"

// writeConfig writes body as config.toml in a fresh directory and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), node.ConfigFile)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func customConfig() node.Config {
	cfg := node.DefaultConfig()
	cfg.Network = "testnet-7"
	cfg.Roles = []node.Role{node.RoleBootstrap, node.RoleOracle}
	cfg.ShutdownTimeout = duration.Duration(1500 * time.Millisecond)
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.P2P.Bootstrap = []string{
		"/ip4/10.0.0.1/tcp/7600/p2p/" + bootstrapPeer,
		"/ip4/10.0.0.1/udp/7600/quic-v1/p2p/" + bootstrapPeer,
	}
	cfg.P2P.DHTMode = p2p.DHTModeServer
	cfg.P2P.MinPeers = 2
	cfg.P2P.BootstrapInterval = duration.Duration(90 * time.Second)
	cfg.P2P.ConnLowWater = 10
	cfg.P2P.ConnHighWater = 20
	cfg.P2P.ConnGrace = duration.Duration(time.Minute + 30*time.Second)
	cfg.P2P.MaxConns = 40
	cfg.P2P.MaxMemoryMB = 64
	cfg.P2P.DHTMaxRecords = 500
	cfg.P2P.DHTRecordsPerPeer = 4
	cfg.P2P.Announce = []string{"/ip4/198.51.100.7/udp/7600/quic-v1"}
	cfg.P2P.AnnounceExtra = []string{"/dns4/miner.example/tcp/7600"}
	cfg.P2P.NATPortMap = true
	cfg.P2P.RelayService = true
	cfg.P2P.RelayMaxReservations = 16
	cfg.P2P.RelayMaxCircuits = 2
	cfg.P2P.RelayLimitDuration = duration.Duration(3 * time.Minute)
	cfg.P2P.RelayLimitDataKB = 512
	cfg.Join = node.JoinAdvice{Bootstrap: []string{"/dns4/boot.example/udp/7600/quic-v1/p2p/" + bootstrapPeer}, DHTMode: p2p.DHTModeServer}
	cfg.Gossip.MaxMessageSize = 1 << 20
	cfg.Gossip.ValidatorTimeout = duration.Duration(250 * time.Millisecond)
	cfg.Gossip.ValidatorConcurrency = 8
	cfg.API.Listen = "0.0.0.0:9000"
	cfg.API.Metrics = "127.0.0.1:9100"
	cfg.API.Token = "s3cret"
	cfg.API.AllowedHosts = []string{"node.example.org", "10.0.0.7"}
	cfg.API.MaxStreams, cfg.API.MaxStreamsPerAddr = 64, 8
	cfg.Log.Level = "debug,p2p=info,libp2p.dht=warn"
	cfg.Log.Format = "json"
	cfg.Inference = node.InferenceConfig{Backend: "openai", BaseURL: "http://127.0.0.1:8080/v1", APIKey: "sk-local",
		Model: "llama3.2", EmbeddingModel: "nomic-embed-text", Timeout: duration.Duration(30 * time.Second)}
	cfg.Router = node.RouterConfig{
		MaxSessions: 8, MaxQueuedTasks: 32, QueueTimeout: duration.Duration(20 * time.Second),
		CompletionWait: duration.Duration(3 * time.Second), IdleRelease: duration.Duration(time.Second),
		WarmMaxMiners: 4, WarmMaxTasks: 50, WarmPeriod: duration.Duration(time.Minute), MaxPerToken: 2,
	}
	cfg.Params.Oracles = []string{bootstrapPeer}
	cfg.Params.Quorum = 1
	cfg.Params.OraclesPerRound = 1
	cfg.Params.RoundPeriod = duration.Duration(7 * time.Second)
	cfg.Params.AttestationLifetime = duration.Duration(time.Hour)
	cfg.Params.Lease = duration.Duration(45 * time.Second)
	cfg.Params.LeaseMax = duration.Duration(20 * time.Minute)
	cfg.Params.ClaimLifetime = duration.Duration(5 * time.Second)
	cfg.Params.RevalidationBackoff = duration.Duration(3 * time.Second)
	cfg.Params.RevalidationBackoffMax = duration.Duration(time.Minute)
	cfg.Params.ChallengesPerValidation = 7
	cfg.Params.PassThreshold = 0.5
	cfg.Params.ChallengeBank = "/etc/ephemera/bank.json"
	cfg.Params.RecordLifetime = duration.Duration(time.Minute)
	cfg.Params.ProvideValidity = duration.Duration(45 * time.Second)
	cfg.Params.ClockSkew = duration.Duration(10 * time.Second)
	cfg.Params.PenaltyPeriod = duration.Duration(2 * time.Hour)
	cfg.Params.Routers = []string{bootstrapPeer}
	cfg.Params.MaxRouterShare = 0.25
	cfg.Params.RouterShareFloor = 2
	return cfg
}

func TestRenderLoadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cfg  node.Config
	}{
		{"default", node.DefaultConfig()},
		{"custom", customConfig()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("test config is invalid: %v", err)
			}
			// Init writes both files: config.toml and network.toml.
			home := node.Home{Dir: t.TempDir()}
			if _, err := node.Init(home, tt.cfg, false); err != nil {
				t.Fatal(err)
			}
			got, err := node.LoadConfig(home.ConfigPath())
			if err != nil {
				body, _ := os.ReadFile(home.ConfigPath())
				t.Fatalf("LoadConfig of rendered config: %v\n%s", err, body)
			}
			if !reflect.DeepEqual(got, tt.cfg) {
				body, _ := os.ReadFile(home.ConfigPath())
				def, _ := os.ReadFile(home.DefinitionPath())
				t.Errorf("round trip changed the config\n got %+v\nwant %+v\nrendered:\n%s\n%s", got, tt.cfg, body, def)
			}
		})
	}
}

func TestCustomConfigDiffersFromDefault(t *testing.T) {
	// Guards the round-trip test: a custom config equal to the default would
	// prove nothing about values surviving the file.
	def, cus := reflect.ValueOf(node.DefaultConfig()), reflect.ValueOf(customConfig())
	var walk func(path string, a, b reflect.Value)
	walk = func(path string, a, b reflect.Value) {
		if a.Kind() == reflect.Struct {
			for i := range a.NumField() {
				walk(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
			}
			return
		}
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("customConfig leaves %s at its default", path)
		}
	}
	walk("Config", def, cus)
}

func TestRenderNamesEveryField(t *testing.T) {
	body, err := node.DefaultConfig().Render()
	if err != nil {
		t.Fatal(err)
	}
	sections := splitSections(string(body))
	n := 0
	var walk func(section string, typ reflect.Type)
	walk = func(section string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if key == "" {
				t.Errorf("field %s.%s has no toml tag", typ.Name(), f.Name)
				continue
			}
			if section == "" && (key == "network" || key == "params" || key == "-") {
				continue // the network's definition: network.toml, not config.toml
			}
			if f.Type.Kind() == reflect.Struct {
				if _, ok := sections[key]; !ok {
					t.Errorf("rendered config has no [%s] section", key)
				}
				walk(key, f.Type)
				continue
			}
			n++
			re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` = `)
			if !re.MatchString(sections[section]) {
				name := key
				if section != "" {
					name = section + "." + key
				}
				t.Errorf("rendered config does not name %s (%s.%s)", name, typ.Name(), f.Name)
			}
		}
	}
	walk("", reflect.TypeOf(node.Config{}))
	if n < 20 {
		t.Errorf("walked only %d fields; the reflection walk is broken", n)
	}
}

// splitSections maps each [table] name ("" for the top level) to its text.
func splitSections(s string) map[string]string {
	out := map[string]string{}
	cur := ""
	header := regexp.MustCompile(`^\[([^\]]+)\]\s*$`)
	for line := range strings.SplitSeq(s, "\n") {
		if m := header.FindStringSubmatch(line); m != nil {
			cur = m[1]
			out[cur] += ""
			continue
		}
		out[cur] += line + "\n"
	}
	return out
}

func TestLoadConfigDefinition(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, node.ConfigFile)
	defPath := filepath.Join(dir, "network.toml")
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(cfgPath, "[p2p]\nbootstrap = [\"/ip4/10.0.0.2/tcp/1/p2p/"+bootstrapPeer+"\"]\n")
	write(defPath, "name = \"lan\"\nbootstrap = [\"/ip4/10.0.0.1/tcp/1/p2p/"+bootstrapPeer+"\"]\ndht_mode = \"server\"\n[params]\nquorum = 1\n")
	cfg, err := node.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network != "lan" || cfg.Params.Quorum != 1 {
		t.Fatalf("network %q quorum %d: network.toml not read", cfg.Network, cfg.Params.Quorum)
	}
	p := cfg.EffectiveP2P()
	if p.DHTMode != p2p.DHTModeServer || len(p.Bootstrap) != 2 {
		t.Fatalf("effective p2p: dht %q, bootstrap %v; want the definition's mode and both lists", p.DHTMode, p.Bootstrap)
	}
	// The config's own DHT mode wins over the network's advice.
	write(cfgPath, "[p2p]\ndht_mode = \"client\"\n")
	if cfg, err = node.LoadConfig(cfgPath); err != nil || cfg.EffectiveP2P().DHTMode != p2p.DHTModeClient {
		t.Fatalf("config's dht_mode: %v, %v", err, cfg.EffectiveP2P().DHTMode)
	}
	// Rules in two places would be two networks in one home.
	for _, body := range []string{"network = \"lan\"\n", "[params]\nquorum = 1\n"} {
		write(cfgPath, body)
		if _, err := node.LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), "belong in "+defPath) {
			t.Errorf("config.toml with %q beside network.toml: err %v", body, err)
		}
	}
	write(cfgPath, "")
	write(defPath, "name = \"lan\"\n[params]\nquorum = 0\n")
	if _, err := node.LoadConfig(cfgPath); err == nil || !strings.Contains(err.Error(), defPath) || !strings.Contains(err.Error(), "params.quorum") {
		t.Errorf("bad network.toml: err %v, want its path and the field", err)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, node.ConfigFile)
	_, err := node.LoadConfig(path)
	if err == nil {
		t.Fatal("LoadConfig of a missing file succeeded")
	}
	for _, want := range []string{"ephemera init", "--home " + dir, path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"bad toml", "network = \"devnet\"\n\nroles = [\"miner\"\n", []string{"line 3"}},
		{"bad toml value", "network = \"devnet\"\nnetwork2 = devnet\n", []string{"line 2"}},
		{"unknown key in section", "[p2p]\nlisten_addr = []\n", []string{"p2p.listen_addr", "unknown"}},
		{"unknown top-level key", "netwerk = \"devnet\"\n", []string{"netwerk"}},
		{"unknown section", "[rpc]\nlisten = \"127.0.0.1:1\"\n", []string{"rpc"}},
		{"network upper case", "network = \"UPPER\"\n", []string{"network", "UPPER"}},
		{"network empty", "network = \"\"\n", []string{"network"}},
		{"log level", "[log]\nlevel = \"loud\"\n", []string{"log.level", "loud"}},
		{"log module level", "[log]\nlevel = \"info,p2p=loud\"\n", []string{"log.level", "p2p=loud", "loud"}},
		{"log level syntax", "[log]\nlevel = \"info,p2p\"\n", []string{"log.level", "p2p"}},
		{"log level twice", "[log]\nlevel = \"info,debug\"\n", []string{"log.level", "two default levels"}},
		{"log format", "[log]\nformat = \"xml\"\n", []string{"log.format", "xml"}},
		{"api listen", "[api]\nlisten = \"nope\"\n", []string{"api.listen", "nope"}},
		{"api listen hostname", "[api]\nlisten = \"example.com:80\"\n", []string{"api.listen"}},
		{"api metrics", "[api]\nmetrics = \"127.0.0.1:99999\"\n", []string{"api.metrics"}},
		{"roles unknown", "roles = [\"miner\", \"baker\"]\n", []string{"roles", "baker"}},
		{"roles empty", "roles = []\n", []string{"roles"}},
		{"shutdown timeout zero", "shutdown_timeout = \"0s\"\n", []string{"shutdown_timeout"}},
		{"p2p dht mode", "[p2p]\ndht_mode = \"always\"\n", []string{"p2p.dht_mode"}},
		{"p2p bootstrap", "[p2p]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\n", []string{"bootstrap"}},
		{"gossip size", "[gossip]\nmax_message_size = 10\n", []string{"gossip.max_message_size"}},
		{"bad duration", "shutdown_timeout = \"soon\"\n", []string{"shutdown_timeout", "line 1", "soon"}},
		{"duration as number", "[gossip]\nvalidator_timeout = 5\n", []string{"gossip.validator_timeout", "line 2"}},
		{"wrong type", "[p2p]\nmin_peers = \"x\"\n", []string{"p2p.min_peers", "line 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.body)
			_, err := node.LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig succeeded on\n%s", tt.body)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, want := range append([]string{path}, tt.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
		})
	}
}

func TestLoadConfigPartialKeepsDefaults(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		mutate func(*node.Config)
	}{
		{"network only", "network = \"x\"\n", func(c *node.Config) { c.Network = "x" }},
		{"empty file", "", func(c *node.Config) {}},
		{"one nested key", "[p2p]\nmin_peers = 9\n", func(c *node.Config) { c.P2P.MinPeers = 9 }},
		{"shorter listen list", "[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n", func(c *node.Config) {
			c.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		}},
		{"duration", "[gossip]\nvalidator_timeout = \"1m30s\"\n", func(c *node.Config) {
			c.Gossip.ValidatorTimeout = duration.Duration(90 * time.Second)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := node.LoadConfig(writeConfig(t, tt.body))
			if err != nil {
				t.Fatal(err)
			}
			want := node.DefaultConfig()
			tt.mutate(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadConfigDoesNotAlterDefaults(t *testing.T) {
	if _, err := node.LoadConfig(writeConfig(t, "roles = [\"oracle\"]\n[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/1\"]\n")); err != nil {
		t.Fatal(err)
	}
	def := node.DefaultConfig()
	if !reflect.DeepEqual(def.Roles, []node.Role{node.RoleMiner}) || def.P2P.Listen[0] != "/ip4/0.0.0.0/tcp/7600" {
		t.Errorf("loading a config changed DefaultConfig: %+v", def)
	}
}

func TestValidateHostPort(t *testing.T) {
	tests := []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:7601", true},
		{"0.0.0.0:0", true},
		{"localhost:80", true},
		{"[::1]:80", true},
		{":7601", true},
		{"127.0.0.1", false},
		{"127.0.0.1:http", false},
		{"127.0.0.1:-1", false},
		{"127.0.0.1:65536", false},
		{"host.example:80", false},
		{"", true}, // no API
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.API.Listen = tt.listen
			cfg.API.Token = "t" // a listener beyond loopback needs one
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Errorf("Validate with api.listen %q = %v, want ok=%v", tt.listen, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "api.listen") {
				t.Errorf("error %q does not name api.listen", err)
			}
		})
	}
}

func TestAPITokenRequiredBeyondLoopback(t *testing.T) {
	tests := []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:7601", true},
		{"localhost:7601", true},
		{"[::1]:7601", true},
		{"0.0.0.0:7601", false},
		{":7601", false},
		{"192.168.1.4:7601", false},
		{"", true}, // no API, nothing to guard
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.API.Listen = tt.listen
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate with api.listen %q and no token = %v, want ok=%v", tt.listen, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "api.token") {
				t.Errorf("error %q does not name api.token", err)
			}
			cfg.API.Token = "t"
			if err := cfg.Validate(); err != nil {
				t.Errorf("with a token: %v", err)
			}
		})
	}
}

func TestInferenceAndRouterConfig(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*node.Config)
		field string
	}{
		{"unknown backend", func(c *node.Config) { c.Inference.Backend = "gpt" }, "inference.backend"},
		{"openai without url", func(c *node.Config) { c.Inference.Backend, c.Inference.Model = "openai", "m" }, "base_url"},
		{"openai without model", func(c *node.Config) { c.Inference.Backend, c.Inference.BaseURL = "openai", "http://127.0.0.1:1/v1" }, "model"},
		{"zero timeout", func(c *node.Config) { c.Inference.Timeout = 0 }, "inference.timeout"},
		{"no sessions", func(c *node.Config) { c.Router.MaxSessions = 0 }, "router.max_sessions"},
		{"no queue", func(c *node.Config) { c.Router.MaxQueuedTasks = -1 }, "router.max_queued_tasks"},
		{"queue timeout", func(c *node.Config) { c.Router.QueueTimeout = duration.Duration(time.Millisecond) }, "router.queue_timeout"},
		{"completion wait", func(c *node.Config) { c.Router.CompletionWait = 0 }, "router.completion_wait"},
		{"idle release", func(c *node.Config) { c.Router.IdleRelease = duration.Duration(2 * time.Hour) }, "router.idle_release"},
		{"warm miners", func(c *node.Config) { c.Router.WarmMaxMiners = 17 }, "router.warm_max_miners"},
		{"warm tasks", func(c *node.Config) { c.Router.WarmMaxTasks = 0 }, "router.warm_max_tasks"},
		{"warm period", func(c *node.Config) { c.Router.WarmPeriod = duration.Duration(time.Millisecond) }, "router.warm_period"},
		{"per token", func(c *node.Config) { c.Router.MaxPerToken = -1 }, "router.max_per_token"},
		{"no streams", func(c *node.Config) { c.API.MaxStreams = 0 }, "api.max_streams"},
		{"too many streams", func(c *node.Config) { c.API.MaxStreams = 1 << 20 }, "api.max_streams"},
		{"no streams per address", func(c *node.Config) { c.API.MaxStreamsPerAddr = 0 }, "api.max_streams_per_addr"},
		{"more per address than in all", func(c *node.Config) { c.API.MaxStreams, c.API.MaxStreamsPerAddr = 8, 9 }, "api.max_streams_per_addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Validate = %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

func TestAPIAllowedHostsConfig(t *testing.T) {
	for _, ok := range [][]string{nil, {}, {"*"}, {"node.example.org", "node.example.org."}, {"10.0.0.7", "::1", "[::1]"}, {"my_host", "EXAMPLE.com"}} {
		cfg := node.DefaultConfig()
		cfg.API.AllowedHosts = ok
		if err := cfg.Validate(); err != nil {
			t.Errorf("api.allowed_hosts %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "http://node.example.org", "node.example.org:8080", "node.example.org/v1", "*.example.org", "a..b", "-a.b", "with space", "\x00"} {
		cfg := node.DefaultConfig()
		cfg.API.AllowedHosts = []string{"localhost", bad}
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "api.allowed_hosts: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("api.allowed_hosts %q: Validate = %v, want one line naming api.allowed_hosts", bad, err)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for _, s := range []string{"debug", "info", "warn", "error", "INFO", "info,p2p=debug,gossip=warn", "p2p=debug",
		"warn,libp2p=debug", "info,no-such-module=debug"} {
		if _, err := node.ParseLevel(s); err != nil {
			t.Errorf("ParseLevel(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "loud", "trace", "info,p2p=loud", "info,p2p", "info,,p2p=debug", "info,=debug", "info,p2p=debug,p2p=info"} {
		_, err := node.ParseLevel(s)
		if err == nil || !strings.HasPrefix(err.Error(), "log.level: ") {
			t.Errorf("ParseLevel(%q) = %v, want an error naming log.level", s, err)
		}
	}
}

func TestLogLevelSpec(t *testing.T) {
	spec, err := node.ParseLevel("info,p2p=debug,libp2p.dht=info")
	if err != nil {
		t.Fatal(err)
	}
	for module, want := range map[string]slog.Level{
		"": slog.LevelInfo, "p2p": slog.LevelDebug, "gossip": slog.LevelInfo,
		"libp2p.swarm2": slog.LevelWarn, "libp2p.dht": slog.LevelInfo,
	} {
		if got := spec.Level(module); got != want {
			t.Errorf("level of %q = %v, want %v", module, got, want)
		}
	}
	cfg := node.DefaultConfig()
	cfg.Log.Level = "warn,sessions=debug"
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with log.level %q: %v", cfg.Log.Level, err)
	}
}
