// Package testnet starts local Ephemera networks: homes generated for every
// node, a bootstrap started first and the rest pointed at it. The same
// orchestration drives real processes (the `ephemera testnet` command and
// testnet/run.sh) and in-process nodes (multi-node tests), through Launcher.
package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Spec is the shape of a testnet.
type Spec struct {
	Network string
	// Host is the IP every node's libp2p addresses bind to, so that other
	// machines can join; "" is 127.0.0.1. APIs stay on loopback.
	Host       string
	Bootstraps int
	Oracles    int
	Miners     int
	Routers    int
}

// DefaultSpec is the testnet of the README: 1 bootstrap, 3 oracles, 5 miners, 1 router.
func DefaultSpec() Spec {
	return Spec{Network: node.DefaultNetwork, Bootstraps: 1, Oracles: 3, Miners: 5, Routers: 1}
}

// Validate rejects a testnet that cannot form.
func (s Spec) Validate() error {
	if s.Bootstraps < 1 {
		return errors.New("a testnet needs at least one bootstrap node")
	}
	if s.Oracles < 0 || s.Miners < 0 || s.Routers < 0 {
		return errors.New("node counts cannot be negative")
	}
	if total := s.Bootstraps + s.Oracles + s.Miners + s.Routers; total > 200 {
		return fmt.Errorf("%d nodes is more than one machine should run as processes (at most 200)", total)
	}
	if s.Host != "" {
		return checkHost(s.Host)
	}
	return nil
}

// checkHost accepts an IP address that this machine has.
func checkHost(host string) error {
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("--host %q is not an IP address", host)
	}
	if ip.IsUnspecified() {
		return fmt.Errorf("--host %s: give the address others dial, not a wildcard", host)
	}
	if ip.IsLinkLocalUnicast() {
		return fmt.Errorf("--host %s is link-local, which other machines cannot dial without its interface; give a routable address", host)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("--host: this machine's addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return nil
		}
	}
	return fmt.Errorf("--host %s is not an address of this machine (`ip addr` lists them)", host)
}

// listen is the multiaddrs every node listens on: TCP and QUIC on the
// host's IP, each on a port of its own choosing.
func (s Spec) listen() []string {
	proto, host := "ip4", "127.0.0.1"
	if ip := net.ParseIP(s.Host); ip != nil {
		host = ip.String()
		if ip.To4() == nil {
			proto = "ip6"
		}
	}
	return []string{"/" + proto + "/" + host + "/tcp/0", "/" + proto + "/" + host + "/udp/0/quic-v1"}
}

// member is one planned node: its name, roles and home.
type member struct {
	name  string
	roles []node.Role
	home  node.Home
}

func (s Spec) members(dir string) []member {
	var out []member
	add := func(role node.Role, n int) {
		for i := range n {
			name := fmt.Sprintf("%s-%d", role, i)
			out = append(out, member{name: name, roles: []node.Role{role}, home: node.Home{Dir: filepath.Join(dir, name)}})
		}
	}
	add(node.RoleBootstrap, s.Bootstraps)
	add(node.RoleOracle, s.Oracles)
	add(node.RoleMiner, s.Miners)
	add(node.RoleRouter, s.Routers)
	return out
}

// Node is a running member of a testnet, wherever it runs.
type Node interface {
	// Runtime is what the node published once it was up: peer ID, addresses, API.
	Runtime() node.Runtime
	// Stop stops the node gracefully within ctx.
	Stop(ctx context.Context) error
}

// Launcher starts a node from an initialised home.
type Launcher interface {
	Launch(ctx context.Context, name string, home node.Home) (Node, error)
}

// Testnet is a running local network.
type Testnet struct {
	Dir   string
	Spec  Spec
	nodes []running
	// Definition is the network's, as DIR/network.toml holds it.
	Definition protocol.Definition
}

// running is a member that was launched.
type running struct {
	member
	Node
}

// Start writes a home for every node under dir, starts the bootstrap nodes,
// reads their addresses back and starts the others pointed at them. Every
// node listens on 127.0.0.1 with port 0 and runs its DHT in server mode.
// On error, the nodes already started are returned in the Testnet for Stop.
func Start(ctx context.Context, dir string, spec Spec, l Launcher) (*Testnet, error) {
	t := &Testnet{Dir: dir, Spec: spec}
	if err := spec.Validate(); err != nil {
		return t, err
	}
	members := spec.members(dir)
	// Every home gets its key first: the oracles' peer IDs are the oracle set
	// that every node's config names.
	var oracles []string
	for _, m := range members {
		key, err := node.Init(m.home, homeConfig(spec, m.roles, protocol.Definition{Name: spec.Network, Params: protocol.DefaultParams()}), false)
		if err != nil {
			return t, fmt.Errorf("%s: %w", m.name, err)
		}
		if node.HasRole(m.roles, node.RoleOracle) {
			id, err := peer.IDFromPrivateKey(key)
			if err != nil {
				return t, err
			}
			oracles = append(oracles, id.String())
		}
	}
	// The network: its rules name the oracles; its bootstrap list grows as
	// the bootstrap nodes come up, which leaves its hash alone. On one
	// machine or a LAN AutoNAT never finds a node public, so the
	// definition makes every member a DHT server.
	t.Definition = protocol.Definition{Name: spec.Network, Bootstrap: []string{}, DHTMode: p2p.DHTModeServer, Params: protocol.DefaultParams()}
	t.Definition.Params.Oracles = oracles
	t.Definition.Params.Quorum = min(2, max(1, len(oracles)))
	if spec.Routers <= 1 {
		// One router is the network's only client: it may hold the whole
		// pool, as a single-router network should (OPERATING.md).
		t.Definition.Params.MaxRouterShare = 1
	}
	initHome := func(m member) error {
		if _, err := node.Init(m.home, homeConfig(spec, m.roles, t.Definition), true); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		return nil
	}
	launch := func(m member) (Node, error) {
		n, err := l.Launch(ctx, m.name, m.home)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.name, err)
		}
		return n, nil
	}
	// Bootstrap nodes start one by one: each joins those before it.
	for _, m := range members[:spec.Bootstraps] {
		if err := initHome(m); err != nil {
			return t, err
		}
		n, err := launch(m)
		if err != nil {
			return t, err
		}
		t.nodes = append(t.nodes, running{m, n})
		t.Definition.Bootstrap = append(t.Definition.Bootstrap, n.Runtime().Addrs...)
	}
	if err := os.WriteFile(filepath.Join(dir, protocol.DefinitionFile), t.Definition.Render(), 0o644); err != nil {
		return t, err
	}
	// Every home is written before the rest start: a process forked while
	// Init held a home's lock would carry the lock until it execs.
	rest := members[spec.Bootstraps:]
	for _, m := range rest {
		if err := initHome(m); err != nil {
			return t, err
		}
	}
	// The rest start together.
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, m := range rest {
		wg.Go(func() {
			n, err := launch(m)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			t.nodes = append(t.nodes, running{m, n})
		})
	}
	wg.Wait()
	// Keep the table in the members' order, whatever order they came up in.
	slices.SortFunc(t.nodes, func(a, b running) int {
		return slices.IndexFunc(members, func(m member) bool { return m.name == a.name }) -
			slices.IndexFunc(members, func(m member) bool { return m.name == b.name })
	})
	return t, errors.Join(errs...)
}

// homeConfig is the configuration of one testnet node, a member of def.
func homeConfig(spec Spec, roles []node.Role, def protocol.Definition) node.Config {
	cfg := node.DefaultConfig().WithDefinition(def)
	cfg.Roles = roles
	cfg.P2P.Listen = spec.listen()
	cfg.P2P.RelayService = node.HasRole(roles, node.RoleBootstrap)
	cfg.P2P.BootstrapInterval = duration.Duration(5 * time.Second)
	cfg.API.Listen = "127.0.0.1:0"
	return cfg
}

// JoinCommand is what a person on another machine runs to join the
// testnet as a miner.
func (t *Testnet) JoinCommand() string {
	return fmt.Sprintf("ephemera init --home ~/.ephemera --join %s --network-hash %s --roles miner && ephemera run --home ~/.ephemera",
		strings.Join(t.Definition.Bootstrap, ","), t.Definition.Hash())
}

// Nodes are the running nodes, bootstrap nodes first.
func (t *Testnet) Nodes() []Node {
	out := make([]Node, len(t.nodes))
	for i, r := range t.nodes {
		out[i] = r.Node
	}
	return out
}

// Member is a running node with the name and roles the testnet gave it.
type Member struct {
	Name  string
	Roles []node.Role
	Node  Node
}

// Members are the running nodes with their names and roles, bootstrap nodes
// first.
func (t *Testnet) Members() []Member {
	out := make([]Member, len(t.nodes))
	for i, r := range t.nodes {
		out[i] = Member{Name: r.name, Roles: r.roles, Node: r.Node}
	}
	return out
}

// Status is one row of a testnet's health table.
type Status struct {
	Name    string   `json:"name"`
	Roles   []string `json:"roles"`
	PeerID  string   `json:"peer_id"`
	APIURL  string   `json:"api_url"`
	Addrs   []string `json:"addrs"`
	PID     int      `json:"pid"`
	Home    string   `json:"home"`
	Healthy bool     `json:"healthy"`
	Reason  string   `json:"reason,omitempty"`
}

// Statuses asks every node's /healthz.
func (t *Testnet) Statuses(ctx context.Context) []Status {
	out := make([]Status, len(t.nodes))
	var wg sync.WaitGroup
	for i, n := range t.nodes {
		wg.Go(func() {
			rt := n.Runtime()
			roles := make([]string, len(rt.Roles))
			for j, r := range rt.Roles {
				roles[j] = string(r)
			}
			s := Status{Name: n.name, Roles: roles, PeerID: rt.PeerID, APIURL: rt.APIURL,
				Addrs: rt.Addrs, PID: rt.PID, Home: n.home.Dir}
			s.Healthy, s.Reason = CheckHealth(ctx, rt.APIURL)
			out[i] = s
		})
	}
	wg.Wait()
	return out
}

// CheckHealth asks the node at apiURL for /healthz, for up to 3 s: whether
// it is healthy, and if not, why.
func CheckHealth(ctx context.Context, apiURL string) (bool, string) {
	h, err := client.New(apiURL).WithTimeout(3 * time.Second).Health(ctx)
	var se *client.StatusError
	switch {
	case errors.As(err, &se):
		return false, se.Message
	case errors.Is(err, client.ErrNotAPI):
		return false, err.Error()
	case err != nil:
		return false, "unreachable"
	}
	return h.Status == "ok", h.Reason
}

// WaitHealthy polls every node until all are healthy or ctx ends.
func (t *Testnet) WaitHealthy(ctx context.Context) ([]Status, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var prev []Status
	for {
		st := t.Statuses(ctx)
		if ctx.Err() != nil && prev != nil {
			// ctx ended during this round, failing its requests: the round
			// before says why the nodes were not healthy.
			st = prev
		}
		prev = st
		var sick []string
		for _, s := range st {
			if !s.Healthy {
				sick = append(sick, s.Name+": "+s.Reason)
			}
		}
		if len(sick) == 0 {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%d of %d nodes not healthy: %s", len(sick), len(st), strings.Join(sick, "; "))
		case <-tick.C:
		}
	}
}

// Manifest is testnet.json: everything a tool needs to drive the testnet.
type Manifest struct {
	Network     string `json:"network"`
	NetworkHash string `json:"network_hash"`
	Dir         string `json:"dir"`
	// Definition is the network's network.toml; Join is the command that
	// makes a miner of another machine a member.
	Definition string   `json:"definition"`
	Join       string   `json:"join"`
	Nodes      []Status `json:"nodes"`
}

// WriteManifest writes DIR/testnet.json from the given statuses.
func (t *Testnet) WriteManifest(st []Status) (string, error) {
	b, err := json.MarshalIndent(Manifest{Network: t.Spec.Network, NetworkHash: t.Definition.Hash(), Dir: t.Dir,
		Definition: filepath.Join(t.Dir, protocol.DefinitionFile), Join: t.JoinCommand(), Nodes: st}, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(t.Dir, "testnet.json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// Stop stops every node, the bootstrap nodes last, within ctx.
func (t *Testnet) Stop(ctx context.Context) error {
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	others := t.nodes[min(t.Spec.Bootstraps, len(t.nodes)):]
	for _, n := range others {
		wg.Go(func() {
			if err := n.Stop(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, n := range t.nodes[:min(t.Spec.Bootstraps, len(t.nodes))] {
		if err := n.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Find returns the running node with the given peer ID and its name.
func (t *Testnet) Find(peerID string) (Node, string, bool) {
	for _, r := range t.nodes {
		if r.Runtime().PeerID == peerID {
			return r.Node, r.name, true
		}
	}
	return nil, "", false
}

// Restart launches the node named name again on its home with l, in place
// of the one that ran there (which must have stopped or been killed). It
// listens on the ports it had, as a node with configured ports would: peers
// still holding a QUIC connection to the old process then get a stateless
// reset at once instead of waiting out the idle timeout.
func (t *Testnet) Restart(ctx context.Context, name string, l Launcher) (Node, error) {
	for i, r := range t.nodes {
		if r.name != name {
			continue
		}
		cfg, err := node.LoadConfig(r.home.ConfigPath())
		if err != nil {
			return nil, err
		}
		// Back on the same ports, when the node still says which: a node
		// stopped in this process no longer does (its only address is
		// /p2p/<id>), and keeps its config's.
		var listen []string
		for _, a := range r.Runtime().Addrs {
			if l, _, _ := strings.Cut(a, "/p2p/"); l != "" {
				listen = append(listen, l)
			}
		}
		if len(listen) > 0 {
			cfg.P2P.Listen = listen
		}
		if _, err := node.Init(r.home, cfg, true); err != nil {
			return nil, err
		}
		n, err := l.Launch(ctx, name, r.home)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		t.nodes[i].Node = n
		return n, nil
	}
	return nil, fmt.Errorf("no node named %s", name)
}
