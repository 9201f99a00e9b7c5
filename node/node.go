// Package node composes a running Ephemera node from its parts: the home
// directory, the Badger store, the libp2p host and DHT, gossip and the API.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/ui"
	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/names"
	"github.com/ephemera-network/ephemera/node/miner"
	"github.com/ephemera-network/ephemera/node/observe"
	"github.com/ephemera-network/ephemera/node/oracle"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// sigCacheSize bounds the verified-signature cache: a few attestations per
// miner per generation.
const sigCacheSize = 16384

// Options are what a node needs besides its home and configuration.
type Options struct {
	Version string
	Logger  *slog.Logger
	// Backend, when set, is the inference engine instead of the one the
	// configuration names: for embedding the node, and for tests.
	Backend inference.Backend
	// HostOptions are extra libp2p options for the host, such as a
	// simulated network's transport; NoNATService is for such a network
	// too (see p2p.Options).
	HostOptions  []libp2p.Option
	NoNATService bool
	// StoreOptions tune the node's store, such as store.Compact for a
	// process that runs hundreds of nodes.
	StoreOptions []store.Option
	// ObserveReserve, if set, is told of every reservation a router role
	// attempts: what it got, how long it took, and the error if none.
	ObserveReserve func(res router.Reservation, took time.Duration, err error)
}

// Node is one running Ephemera peer.
type Node struct {
	home    Home
	cfg     Config
	opts    Options
	version string
	log     *slog.Logger

	lock     *HomeLock
	store    *store.Store
	key      crypto.PrivKey
	reg      *prometheus.Registry
	host     *p2p.Host
	gossip   *gossip.Gossip
	api      *api.Server
	metrics  *api.Server
	check    protocol.Checker
	pool     *pool.Pool
	topics   map[string]*gossip.Topic
	topicsMu sync.RWMutex
	miner    *miner.Miner
	oracle   *oracle.Oracle
	router   *router.Router
	sessions *session.Manager
	observer *observe.Observer
	started  time.Time
	starts   uint64
	netID    string // the network's namespace on the wire: name/hash prefix
	netHash  string
	watch    *networkWatch

	cancel context.CancelFunc // ends the node's background work
	stops  []func(context.Context) error
}

// New prepares a node; nothing is opened until Start.
func New(home Home, cfg Config, opts Options) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	def := cfg.Definition()
	return &Node{home: home, cfg: cfg, opts: opts, version: opts.Version, log: log, topics: map[string]*gossip.Topic{},
		netID: def.ID(), netHash: def.Hash()}, nil
}

// Start brings the node up in dependency order; Stop takes it down in the
// reverse order. If a step fails, what already started is stopped again.
func (n *Node) Start(ctx context.Context) (err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.onStop(func(context.Context) error { cancel(); return nil })
	defer func() {
		if err != nil {
			stopCtx, done := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout.Std())
			defer done()
			_ = n.Stop(stopCtx)
		}
	}()

	// 1. The home: one node per directory.
	if n.lock, err = LockHome(n.home); err != nil {
		return err
	}
	n.onStop(func(context.Context) error { return n.lock.Release() })

	// 2. Identity, then the state that belongs to it.
	if n.key, err = p2p.LoadKey(n.home.KeyPath()); err != nil {
		if errors.Is(err, p2p.ErrNoKey) {
			return fmt.Errorf("%w; run `ephemera init --home %s` first", err, n.home.Dir)
		}
		return err
	}
	if n.store, err = store.Open(n.home.DataPath(), n.log, n.opts.StoreOptions...); err != nil {
		return err
	}
	n.onStop(func(context.Context) error { return n.store.Close() })
	if err = n.checkIdentity(); err != nil {
		return err
	}
	go n.store.RunGC(runCtx, 10*time.Minute)

	// 3. Metrics registry, per node so that many nodes can share a process.
	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// 4. The libp2p host and its private DHT, with our record namespace.
	// Every protocol, topic and message carries the network's ID, which
	// holds its definition's hash: members of two definitions never share one.
	n.check = protocol.Checker{Network: n.netID, Params: n.cfg.Params, Cache: protocol.NewSigCache(sigCacheSize)}
	n.host, err = p2p.New(n.cfg.EffectiveP2P(), p2p.Options{
		Network:         n.netID,
		Key:             n.key,
		UserAgent:       "ephemera/" + n.version,
		Registerer:      n.reg,
		Logger:          n.log.With("module", "p2p"),
		Validators:      map[string]record.Validator{protocol.AvailabilityNamespace: protocol.AvailabilityValidator{Check: n.check}},
		ProvideValidity: n.cfg.Params.ProvideValidity.Std(),
		ProtocolLimits:  streamLimits(n.netID),
		// An availability record lives record_lifetime, and may be issued
		// up to clock_skew ahead of our clock.
		RecordMaxAge: n.cfg.Params.RecordLifetime.Std() + n.cfg.Params.ClockSkew.Std(),
		HostOptions:  n.opts.HostOptions,
		NoNATService: n.opts.NoNATService,
	})
	if err != nil {
		return err
	}
	n.onStop(func(context.Context) error { return n.host.Close() })
	// The oracle set must stay reachable however full the node is.
	for _, o := range n.cfg.Params.OracleIDs() {
		n.host.Protect(o, "oracle")
	}
	n.registerMetrics()
	// Before gossip: a peer of another network is parted with as soon as
	// identify names its hash.
	if n.watch, err = n.startNetworkWatch(runCtx); err != nil {
		return err
	}

	// 5. Gossip, with every topic's validator in place before the first
	// message: the pool view judges what the topics carry.
	var gopts []gossip.Option
	if !n.followsGossip() {
		gopts = append(gopts, gossip.Fanout())
	}
	if n.gossip, err = gossip.New(runCtx, n.host, n.netID, n.cfg.Gossip, n.reg, n.log.With("module", "gossip"), gopts...); err != nil {
		return err
	}
	n.onStop(func(context.Context) error { return n.gossip.Close() })
	// Stopping runs newest first: the background work on runCtx (gossip's
	// loop, store GC, the roles) ends before gossip, host and store close.
	n.onStop(func(context.Context) error { cancel(); return nil })
	if err = n.startPool(runCtx); err != nil {
		return err
	}
	n.startObserver()
	n.onStop(n.stopObserver) // again after the API, to end its event streams first

	// 6. The roles this node holds.
	if err = n.startRoles(runCtx); err != nil {
		return err
	}
	n.reg.MustRegister(newRoleCollector(n))

	// 7. The HTTP API and, if asked for, a separate metrics listener.
	n.started = time.Now()
	if n.cfg.API.Listen != "" {
		if n.api, err = api.Listen(n.cfg.API.Listen, api.Handler(api.Config{
			Source: n, Gatherer: n.reg, Reserver: n.reserverOrNil(), Sessions: n.sessionsOrNil(), Token: n.cfg.API.Token,
			Observer: n.observerAPI(), UI: ui.Handler(), Listen: n.cfg.API.Listen, AllowedHosts: n.cfg.API.AllowedHosts,
			Streams:    api.StreamLimits{Max: n.cfg.API.MaxStreams, MaxPerAddr: n.cfg.API.MaxStreamsPerAddr},
			Registerer: n.reg,
		}), n.log.With("module", "api")); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		n.onStop(n.api.Close)
	}
	n.onStop(n.stopObserver)
	if n.cfg.API.Metrics != "" {
		if n.metrics, err = api.Listen(n.cfg.API.Metrics, api.MetricsHandler(n.reg), n.log.With("module", "metrics")); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		n.onStop(n.metrics.Close)
	}

	// 8. Join the network, then tell tools where to find us.
	n.host.Start(runCtx)
	if err = writeRuntime(n.home, n.Runtime()); err != nil {
		return fmt.Errorf("runtime file: %w", err)
	}
	n.onStop(func(context.Context) error { return os.Remove(n.home.RuntimePath()) })
	n.log.Info("node started", "self", n.host.ID(), "network", n.cfg.Network, "network_hash", n.netHash, "roles", n.cfg.Roles,
		"addrs", n.FullAddrs(), "api", n.Runtime().APIURL, "starts", n.starts)
	return nil
}

// Stop stops every part that started, newest first, within ctx.
func (n *Node) Stop(ctx context.Context) error {
	var errs []error
	for i := len(n.stops) - 1; i >= 0; i-- {
		if err := n.stops[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	n.stops = nil
	return errors.Join(errs...)
}

func (n *Node) onStop(f func(context.Context) error) { n.stops = append(n.stops, f) }

// checkIdentity binds the data directory to the identity on first start and
// refuses a different key later: state such as grants and attestations is
// only meaningful for the peer that signed it.
func (n *Node) checkIdentity() error {
	id, err := peer.IDFromPrivateKey(n.key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	stored, err := n.store.Get(keyPeerID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := n.store.Put(keyPeerID, []byte(id)); err != nil {
			return err
		}
	case err != nil:
		return err
	case peer.ID(stored) != id:
		return fmt.Errorf("identity key %s (peer %s) does not match the data in %s (peer %s)",
			n.home.KeyPath(), id, n.home.DataPath(), peer.ID(stored))
	}
	starts := uint64(0)
	if b, err := n.store.Get(keyStarts); err == nil {
		starts, _ = strconv.ParseUint(string(b), 10, 64)
	}
	n.starts = starts + 1
	return n.store.Put(keyStarts, []byte(strconv.FormatUint(n.starts, 10)))
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host is the node's libp2p host and DHT.
func (n *Node) Host() *p2p.Host { return n.host }

// Store is the node's Badger store.
func (n *Node) Store() *store.Store { return n.store }

// MinerState is the miner role's committed state; zero on other nodes.
func (n *Node) MinerState() miner.State {
	if n.miner == nil {
		return miner.State{}
	}
	return n.miner.State()
}

// FullAddrs are the node's dialable addresses, each ending in /p2p/<id>.
func (n *Node) FullAddrs() []ma.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	return addrs
}

// Home is the node's home directory.
func (n *Node) Home() Home { return n.home }

// Publish gossips data on one of the network's topics (protocol.TopicAttestations,
// protocol.TopicReservations, protocol.TopicPool); the topic's validator judges it first.
func (n *Node) Publish(ctx context.Context, topic string, data []byte) error {
	return n.publish(ctx, topic, data)
}

// Router is the router role, nil on other nodes.
func (n *Node) Router() *router.Router { return n.router }

// Sessions is the router's session manager, nil unless the node is a router.
func (n *Node) Sessions() *session.Manager { return n.sessions }

// Config is the configuration the node runs with.
func (n *Node) Config() Config { return n.cfg }

// Starts is how many times this home has started a node, this start included.
func (n *Node) Starts() uint64 { return n.starts }

// Runtime describes the running node for node.json.
func (n *Node) Runtime() Runtime {
	rt := Runtime{
		PID:         os.Getpid(),
		PeerID:      n.host.ID().String(),
		Network:     n.cfg.Network,
		NetworkHash: n.netHash,
		Roles:       slices.Clone(n.cfg.Roles),
		Addrs:       multiaddrStrings(n.FullAddrs()),
		StartedAt:   n.started.UTC(),
	}
	if n.api != nil {
		rt.APIURL = n.api.URL()
	}
	if n.metrics != nil {
		rt.MetricsURL = n.metrics.URL() + "/metrics"
	}
	return rt
}

// NetworkHash is the hash of the network's definition: its identity.
func (n *Node) NetworkHash() string { return n.netHash }

// NetworkID is the network's namespace on the wire (protocol.Definition.ID).
func (n *Node) NetworkID() string { return n.netID }

// Health is nil when the node can take part in the network: it agrees with
// its bootstrap nodes on the network, has a peer and knows at least one
// DHT server.
func (n *Node) Health() error {
	if err := n.watch.bootstrapDisagreement(); err != nil {
		return err
	}
	if n.host.PeerCount() == 0 {
		return errors.New("no peers connected")
	}
	// A DHT server whose peers are all clients (a bootstrap among nodes
	// behind NAT) answers their queries with an empty table: that is
	// fine. A client with an empty table can find nothing, and a server
	// with server peers has yet to learn of them.
	if n.host.RoutingTableSize() == 0 && (!n.host.DHTServing() || n.host.ServerPeers() > 0) {
		return errors.New("DHT routing table is empty")
	}
	return n.dialable()
}

// Info answers GET /v1/node.
func (n *Node) Info() api.NodeInfo {
	roles := make([]string, len(n.cfg.Roles))
	for i, r := range n.cfg.Roles {
		roles[i] = string(r)
	}
	info := api.NodeInfo{
		PeerID:           n.host.ID().String(),
		Addrs:            multiaddrStrings(n.FullAddrs()),
		Roles:            roles,
		Network:          n.cfg.Network,
		NetworkHash:      n.netHash,
		NetworkID:        n.netID,
		Version:          n.version,
		UptimeSeconds:    time.Since(n.started).Seconds(),
		Peers:            n.host.PeerCount(),
		RoutingTableSize: n.host.RoutingTableSize(),
		DHTMode:          n.dhtMode(),
	}
	if n.miner != nil {
		s := n.miner.State()
		info.State, info.Generation = pool.StateName(s.State), &s.Generation
	}
	return info
}

// Peers answers GET /v1/peers.
func (n *Node) Peers() []api.PeerInfo {
	ps := n.host.Peerstore()
	rt := n.host.DHT.RoutingTable()
	var out []api.PeerInfo
	for _, p := range n.host.Network().Peers() {
		info := api.PeerInfo{PeerID: p.String(), Addrs: []string{}, Direction: "unknown"}
		for _, c := range n.host.Network().ConnsToPeer(p) {
			info.Addrs = append(info.Addrs, c.RemoteMultiaddr().String())
			info.Direction = directionName(c.Stat().Direction)
		}
		info.LatencyMS = float64(ps.LatencyEWMA(p).Microseconds()) / 1000
		if av, err := ps.Get(p, "AgentVersion"); err == nil {
			info.AgentVersion, _ = av.(string)
		}
		info.InRoutingTable = rt.Find(p) != ""
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b api.PeerInfo) int { return strings.Compare(a.PeerID, b.PeerID) })
	if out == nil {
		out = []api.PeerInfo{}
	}
	return out
}

// registerMetrics exports the node's own gauges beside go-libp2p's.
func (n *Node) registerMetrics() {
	n.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ephemera", Name: "peers", Help: "Peers with an open connection.",
		}, func() float64 { return float64(n.host.PeerCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ephemera", Name: "routing_table_size", Help: "DHT servers in the routing table.",
		}, func() float64 { return float64(n.host.RoutingTableSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "ephemera", Name: "build_info", Help: "Always 1; the labels say what runs.",
			ConstLabels: prometheus.Labels{"version": n.version, "network": n.cfg.Network, "network_hash": n.netHash},
		}, func() float64 { return 1 }),
	)
}

// dhtMode is the configured DHT mode and, in auto mode, what it is now.
func (n *Node) dhtMode() string {
	now := p2p.DHTModeClient
	if n.host.DHTServing() {
		now = p2p.DHTModeServer
	}
	if n.cfg.EffectiveP2P().DHTMode == p2p.DHTModeAuto {
		return "auto (" + now + ")"
	}
	return now
}

func directionName(d network.Direction) string { return names.Of(directionNames, d, "unknown") }

var directionNames = map[network.Direction]string{
	network.DirInbound:  "inbound",
	network.DirOutbound: "outbound",
}

func multiaddrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// PoolView is this node's view of the pool, for tools that watch the
// network from inside the process (the simulation).
func (n *Node) PoolView() *pool.Pool { return n.pool }

// GossipCounts are the messages this node received on each topic, by
// validation outcome, and those it published.
func (n *Node) GossipCounts() map[string]gossip.TopicCounts { return n.gossip.Counts() }

// SigChecks counts the signatures this node has verified of the network's
// gossip and of the verdicts and records it judges: one per gossip message
// validated (its envelope), and one per attestation or notice its
// signature cache could not spare. The signatures of its own stream
// exchanges (claims, tasks, answers), which grow with its own work and not
// with the network, are not counted.
func (n *Node) SigChecks() uint64 {
	var total uint64
	for _, c := range n.gossip.Counts() {
		total += c.Accept + c.Reject + c.Ignore
	}
	return total + n.check.Cache.Verified()
}
