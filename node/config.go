package node

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
)

// DefaultNetwork is the network a node joins unless told otherwise.
const DefaultNetwork = "devnet"

// DefaultAPIAddr keeps the API on loopback: exposing it is the operator's choice.
const DefaultAPIAddr = "127.0.0.1:7601"

// Config is a node's whole configuration: config.toml, which holds this
// node's own settings, and network.toml, the definition of the network it
// is a member of. Each part owns its own section, defaults and validation.
type Config struct {
	// Network and Params are the network's name and rules, from
	// network.toml. A home made before network.toml existed may still
	// carry them in config.toml.
	Network string          `toml:"network"`
	Params  protocol.Params `toml:"params"`
	// Join is network.toml's advice on joining the network.
	Join JoinAdvice `toml:"-"`

	Roles           []Role            `toml:"roles"`
	ShutdownTimeout duration.Duration `toml:"shutdown_timeout"`
	P2P             p2p.Config        `toml:"p2p"`
	Gossip          gossip.Config     `toml:"gossip"`
	API             APIConfig         `toml:"api"`
	Log             LogConfig         `toml:"log"`
	Inference       InferenceConfig   `toml:"inference"`
	Router          RouterConfig      `toml:"router"`
}

// JoinAdvice is the part of a network's definition that is not a rule:
// where to join and how members run their DHT by default.
type JoinAdvice struct {
	// Bootstrap is dialled beside p2p.bootstrap.
	Bootstrap []string
	// DHTMode applies when p2p.dht_mode is "": auto, server or client.
	DHTMode string
}

// Definition is the definition of the network this node is a member of.
func (c Config) Definition() protocol.Definition {
	return protocol.Definition{Name: c.Network, Bootstrap: slices.Clone(c.Join.Bootstrap), DHTMode: c.Join.DHTMode, Params: c.Params}
}

// WithDefinition makes c a member of def: its name, rules and advice.
func (c Config) WithDefinition(def protocol.Definition) Config {
	c.Network, c.Params = def.Name, def.Params
	c.Join = JoinAdvice{Bootstrap: slices.Clone(def.Bootstrap), DHTMode: def.DHTMode}
	if c.Join.Bootstrap == nil {
		c.Join.Bootstrap = []string{}
	}
	return c
}

// EffectiveP2P is the p2p section the node runs with: the network's
// bootstrap nodes dialled too, and its DHT mode where p2p.dht_mode is "".
func (c Config) EffectiveP2P() p2p.Config {
	p := c.P2P
	p.Bootstrap = slices.Clone(c.Join.Bootstrap)
	for _, a := range c.P2P.Bootstrap {
		if !slices.Contains(p.Bootstrap, a) {
			p.Bootstrap = append(p.Bootstrap, a)
		}
	}
	if p.DHTMode == "" {
		p.DHTMode = c.Join.DHTMode
	}
	if p.DHTMode == "" {
		p.DHTMode = p2p.DHTModeAuto
	}
	return p
}

// InferenceConfig chooses the engine a miner answers with, and the one a
// router compares answers with.
type InferenceConfig struct {
	// Backend is "builtin", the deterministic engine shipped in the binary,
	// or "openai", any OpenAI-compatible server.
	Backend string `toml:"backend"`
	// The OpenAI-compatible server: its base URL (ending in /v1), API key,
	// chat model and embedding model ("" for the chat model).
	BaseURL        string            `toml:"base_url"`
	APIKey         string            `toml:"api_key"`
	Model          string            `toml:"model"`
	EmbeddingModel string            `toml:"embedding_model"`
	Timeout        duration.Duration `toml:"timeout"`
}

// RouterConfig bounds what a router takes on for its users.
type RouterConfig struct {
	// MaxSessions bounds the sessions open at once.
	MaxSessions int `toml:"max_sessions"`
	// MaxQueuedTasks bounds the tasks waiting for miners; more answer 429.
	MaxQueuedTasks int `toml:"max_queued_tasks"`
	// QueueTimeout is how long a session's task may wait for miners before
	// it fails.
	QueueTimeout duration.Duration `toml:"queue_timeout"`
	// CompletionWait is how long a chat completion may wait for a busy
	// model's miners before it answers 429.
	CompletionWait duration.Duration `toml:"completion_wait"`
	// IdleRelease is how long the sessions behind the chat endpoint keep a
	// miner with no work before giving it back to the pool.
	IdleRelease duration.Duration `toml:"idle_release"`
	// WarmMaxMiners bounds the miners those sessions hold, per model and
	// redundancy; WarmMaxTasks and WarmPeriod bound what one reservation
	// serves before its miner is given back and validated again (the
	// period at most the network's lease_max).
	WarmMaxMiners int               `toml:"warm_max_miners"`
	WarmMaxTasks  int               `toml:"warm_max_tasks"`
	WarmPeriod    duration.Duration `toml:"warm_period"`
	// MaxPerToken bounds the chat completions in flight per API token; 0
	// for no bound.
	MaxPerToken int `toml:"max_per_token"`
}

// APIConfig places the HTTP API and the metrics endpoint.
type APIConfig struct {
	// Listen is host:port of the API; /metrics is served there too. Empty
	// runs no API, as in a simulated network of hundreds of nodes.
	Listen string `toml:"listen"`
	// Metrics is an extra host:port serving only /metrics; empty for none.
	Metrics string `toml:"metrics"`
	// Token, when set, must come as "Authorization: Bearer <token>" with
	// every request but /healthz. Required when Listen is beyond loopback.
	Token string `toml:"token"`
	// AllowedHosts are the names, besides localhost, loopback addresses and
	// Listen's host, that a request's Host header may carry: those a reverse
	// proxy or DNS gives the API. "*" turns the check off.
	AllowedHosts []string `toml:"allowed_hosts"`
	// MaxStreams bounds the event streams (/v1/events) open at once, and
	// apart from them the streaming chat completions; MaxStreamsPerAddr
	// bounds those from one remote address. More are answered 429.
	MaxStreams        int `toml:"max_streams"`
	MaxStreamsPerAddr int `toml:"max_streams_per_addr"`
}

// DefaultAPIConfig is the api section of a config that sets none.
func DefaultAPIConfig() APIConfig {
	streams := api.DefaultStreamLimits()
	return APIConfig{Listen: DefaultAPIAddr, AllowedHosts: []string{}, MaxStreams: streams.Max, MaxStreamsPerAddr: streams.MaxPerAddr}
}

// LogConfig sets how the node logs.
type LogConfig struct {
	// Level is the default level, debug, info, warn or error, optionally
	// followed by per-module levels: "info,p2p=debug,gossip=warn" (see
	// ParseLevel).
	Level  string `toml:"level"`
	Format string `toml:"format"` // text or json
}

// DefaultConfig is what `ephemera init` writes when given no flags.
func DefaultConfig() Config {
	return Config{
		Network:         DefaultNetwork,
		Join:            JoinAdvice{Bootstrap: []string{}},
		Roles:           []Role{RoleMiner},
		ShutdownTimeout: duration.Duration(10 * time.Second),
		P2P:             defaultP2P(),
		Gossip:          gossip.DefaultConfig(),
		API:             DefaultAPIConfig(),
		Log:             LogConfig{Level: "info", Format: "text"},
		Inference:       InferenceConfig{Backend: "builtin", Timeout: duration.Duration(2 * time.Minute)},
		Router:          DefaultRouterConfig(),
		Params:          protocol.DefaultParams(),
	}
}

// defaultP2P leaves the DHT mode to the network's definition.
func defaultP2P() p2p.Config {
	c := p2p.DefaultConfig()
	c.DHTMode = ""
	return c
}

// Validate checks the whole configuration and names the first wrong field.
func (c Config) Validate() error {
	if err := protocol.ValidateNetworkName(c.Network); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if err := c.Definition().Validate(); err != nil {
		return fmt.Errorf("network definition: %w", err)
	}
	if err := ValidateRoles(c.Roles); err != nil {
		return err
	}
	if c.ShutdownTimeout.Std() <= 0 {
		return fmt.Errorf("shutdown_timeout: %s, must be positive", c.ShutdownTimeout)
	}
	if err := c.EffectiveP2P().Validate(); err != nil {
		return err
	}
	if err := c.Gossip.Validate(); err != nil {
		return err
	}
	if err := validateHostPort("api.listen", c.API.Listen, true); err != nil {
		return err
	}
	if err := validateHostPort("api.metrics", c.API.Metrics, true); err != nil {
		return err
	}
	if c.API.Token == "" && c.API.Listen != "" && !loopback(c.API.Listen) {
		return fmt.Errorf("api.token: required when api.listen (%s) is beyond loopback; set it in the config or EPHEMERA_API_TOKEN", c.API.Listen)
	}
	if err := validateAllowedHosts(c.API.AllowedHosts); err != nil {
		return err
	}
	if c.API.MaxStreams < 1 || c.API.MaxStreams > 100000 {
		return fmt.Errorf("api.max_streams: %d, must be from 1 to 100000", c.API.MaxStreams)
	}
	if c.API.MaxStreamsPerAddr < 1 || c.API.MaxStreamsPerAddr > c.API.MaxStreams {
		return fmt.Errorf("api.max_streams_per_addr: %d, must be from 1 to api.max_streams (%d)", c.API.MaxStreamsPerAddr, c.API.MaxStreams)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	if err := c.Inference.Validate(); err != nil {
		return err
	}
	return c.Router.Validate()
}

// Validate checks the inference section.
func (c InferenceConfig) Validate() error {
	switch c.Backend {
	case "builtin":
	case "openai":
		if c.BaseURL == "" || c.Model == "" {
			return errors.New("inference: the openai backend needs base_url and model")
		}
	default:
		return fmt.Errorf("inference.backend: %q is not a known backend (builtin, openai)", c.Backend)
	}
	if c.Timeout.Std() <= 0 {
		return fmt.Errorf("inference.timeout: %s, must be positive", c.Timeout)
	}
	return nil
}

// DefaultRouterConfig is the router section of a config that sets none.
func DefaultRouterConfig() RouterConfig {
	return RouterConfig{
		MaxSessions: 64, MaxQueuedTasks: 256, QueueTimeout: duration.Duration(time.Minute),
		CompletionWait: duration.Duration(15 * time.Second), IdleRelease: duration.Duration(3 * time.Second),
		WarmMaxMiners: 16, WarmMaxTasks: 10000, WarmPeriod: duration.Duration(5 * time.Minute), MaxPerToken: 32,
	}
}

// Validate checks the router section.
func (c RouterConfig) Validate() error {
	switch {
	case c.CompletionWait.Std() < 100*time.Millisecond || c.CompletionWait.Std() > time.Hour:
		return fmt.Errorf("router.completion_wait: %s, must be from 100ms to 1h", c.CompletionWait)
	case c.IdleRelease.Std() < 100*time.Millisecond || c.IdleRelease.Std() > time.Hour:
		return fmt.Errorf("router.idle_release: %s, must be from 100ms to 1h", c.IdleRelease)
	case c.WarmMaxMiners < 1 || c.WarmMaxMiners > 16:
		return fmt.Errorf("router.warm_max_miners: %d, must be from 1 to 16", c.WarmMaxMiners)
	case c.WarmMaxTasks < 1 || c.WarmMaxTasks > 1000000:
		return fmt.Errorf("router.warm_max_tasks: %d, must be from 1 to 1000000", c.WarmMaxTasks)
	case c.WarmPeriod.Std() < time.Second || c.WarmPeriod.Std() > 24*time.Hour:
		return fmt.Errorf("router.warm_period: %s, must be from 1s to 24h", c.WarmPeriod)
	case c.MaxPerToken < 0 || c.MaxPerToken > 100000:
		return fmt.Errorf("router.max_per_token: %d, must be from 0 to 100000", c.MaxPerToken)
	case c.MaxSessions < 1 || c.MaxSessions > 100000:
		return fmt.Errorf("router.max_sessions: %d, must be from 1 to 100000", c.MaxSessions)
	case c.MaxQueuedTasks < 1 || c.MaxQueuedTasks > 1000000:
		return fmt.Errorf("router.max_queued_tasks: %d, must be from 1 to 1000000", c.MaxQueuedTasks)
	case c.QueueTimeout.Std() < time.Second || c.QueueTimeout.Std() > time.Hour:
		return fmt.Errorf("router.queue_timeout: %s, must be from 1s to 1h", c.QueueTimeout)
	}
	return nil
}

// loopback reports whether host:port listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateAllowedHosts checks api.allowed_hosts: host names or addresses
// without scheme, port or path, or "*".
func validateAllowedHosts(hosts []string) error {
	for _, h := range hosts {
		if h == "*" {
			continue
		}
		name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), ".")
		if net.ParseIP(name) != nil {
			continue
		}
		if !validHostName(name) {
			return fmt.Errorf("api.allowed_hosts: %q is not a host name or address (no scheme, port or path), nor \"*\"", h)
		}
	}
	return nil
}

// validHostName reports whether s is a DNS name: dot-separated labels of
// letters, digits, '-' and '_'.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func validateHostPort(field, addr string, emptyOK bool) error {
	if addr == "" && emptyOK {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port", field, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s: %q has no valid port", field, addr)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return fmt.Errorf("%s: %q must name an IP address or localhost", field, addr)
	}
	return nil
}

// ParseLevel reads a log level spec: a level (debug, info, warn, error),
// optionally followed by module=level entries, comma-separated:
// "info,p2p=debug,gossip=warn". See logging.ParseSpec.
func ParseLevel(s string) (logging.Spec, error) {
	spec, err := logging.ParseSpec(s)
	if err != nil {
		return spec, fmt.Errorf("log.level: %w", err)
	}
	return spec, nil
}

// LoadConfig reads a home's config.toml at path on top of the defaults,
// and the network.toml beside it. A field the files do not name keeps its
// default; a field this version does not know is an error, since it is
// most likely a typo that would otherwise be silently ignored.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, fmt.Errorf("config %s: no such file; run `ephemera init --home %s` first", path, strings.TrimSuffix(path, "/"+ConfigFile))
	}
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	defPath := filepath.Join(filepath.Dir(path), protocol.DefinitionFile)
	def, hasDef, err := ReadDefinition(defPath)
	if err != nil {
		return cfg, err
	}
	if hasDef {
		cfg = cfg.WithDefinition(def)
	}
	md, err := toml.Decode(string(raw), &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %s", path, oneLine(err))
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		return cfg, fmt.Errorf("config %s: unknown field %q", path, undecoded[0].String())
	}
	if hasDef && (md.IsDefined("network") || md.IsDefined("params")) {
		return cfg, fmt.Errorf("config %s: network and [params] belong in %s, which this home has; remove them from config.toml", path, defPath)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ReadDefinition reads a network.toml, and reports whether there is one.
func ReadDefinition(path string) (protocol.Definition, bool, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return protocol.Definition{}, false, nil
	}
	if err != nil {
		return protocol.Definition{}, false, fmt.Errorf("network definition %s: %w", path, err)
	}
	def, err := protocol.ParseDefinition(raw)
	if err != nil {
		return def, false, fmt.Errorf("network definition %s: %w", path, err)
	}
	return def, true, nil
}

// oneLine keeps only the first line of a multi-line parser error.
func oneLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

//go:embed config.toml.tmpl
var configTemplate string

var configTmpl = template.Must(template.New("config").Funcs(template.FuncMap{
	"q":    strconv.Quote,
	"list": tomlList,
}).Parse(configTemplate))

// Render writes cfg as a commented config.toml that names every field.
func (c Config) Render() ([]byte, error) {
	var b bytes.Buffer
	if err := configTmpl.Execute(&b, c); err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return b.Bytes(), nil
}

func tomlList(v any) string {
	var items []string
	switch xs := v.(type) {
	case []string:
		for _, x := range xs {
			items = append(items, strconv.Quote(x))
		}
	case []Role:
		for _, x := range xs {
			items = append(items, strconv.Quote(string(x)))
		}
	}
	return "[" + strings.Join(items, ", ") + "]"
}
