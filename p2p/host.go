// Package p2p builds the node's libp2p host and its private Kademlia DHT, and
// keeps the node connected to the network through its bootstrap peers.
package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrAddrInUse is returned when a listen address is taken by another process.
var ErrAddrInUse = errors.New("address already in use")

// ProtocolPrefix is the prefix of every protocol of a network, so two
// networks never answer each other's queries.
func ProtocolPrefix(network string) protocol.ID {
	return protocol.ID("/ephemera/" + network)
}

// Options are what New needs besides the configuration.
type Options struct {
	Network   string
	Key       crypto.PrivKey
	UserAgent string
	// Registerer receives go-libp2p's own metrics; nil disables them.
	Registerer prometheus.Registerer
	// Validators adds DHT record namespaces beside the built-in "pk".
	Validators map[string]record.Validator
	// ProvideValidity is how long provider records stored here live; zero
	// keeps Kademlia's 48 h, far too long for a pool that changes by the minute.
	ProvideValidity time.Duration
	// RecordMaxAge is how long a value record stored here lives, from its
	// arrival, and a third of it how often expired ones are swept; zero
	// keeps Kademlia's 48 h, swept daily. A node sets its longest record
	// lifetime.
	RecordMaxAge time.Duration
	Logger       *slog.Logger
	// HostOptions come after the host's own libp2p options: a simulated
	// network (go-libp2p's x/simlibp2p) puts QUIC on its own packet conns
	// this way. Options that may be set once (resource and connection
	// managers, security, the connection gater) are already taken.
	HostOptions []libp2p.Option
	// ProtocolLimits bound, in the resource manager, the streams of the
	// node's own protocols: how many one peer may open to us at once, and
	// the memory their reads may hold, per peer and in all.
	ProtocolLimits []ProtocolLimit
	// NoNATService turns off answering AutoNAT dial-backs, whose dialer has
	// transports of its own on real sockets: a simulated network, where
	// every node is a DHT server anyway, must not open any.
	NoNATService bool
}

// ProtocolLimit is the resource manager's bound on one protocol's streams.
// Memory is what readers hold with protocol.ReadStream while they read a
// message; zero leaves libp2p's default.
type ProtocolLimit struct {
	ID                   protocol.ID
	InboundStreamsOfPeer int   // streams one peer may have open to us at once
	MemoryOfPeer         int64 // bytes one peer's streams may hold
	Memory               int64 // bytes all the protocol's streams may hold
}

// Host is a libp2p host with the node's DHT on it.
type Host struct {
	host.Host
	DHT *dht.IpfsDHT

	records     *recordStore
	cfg         Config
	gater       *Gater
	relay       *relayv2.Relay            // nil unless relay_service
	built       atomic.Pointer[host.Host] // the libp2p host, for AutoRelay's callback
	reach       reachTracker
	stopReach   context.CancelFunc
	kadProtocol protocol.ID
	bootstrap   *bootstrapper
	log         *slog.Logger
	stopRunner  context.CancelFunc
	done        chan struct{}
}

// New starts a host listening on cfg.Listen, with TCP and QUIC, Noise and TLS,
// explicit resource limits, a connection manager, a gater that keeps blocked
// peers away (BlockPeer), and a private DHT.
func New(cfg Config, opts Options) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Network == "" {
		return nil, errors.New("p2p: network name is empty")
	}
	listen, _ := ParseListenAddrs(cfg.Listen)
	peers, _ := ParseBootstrapAddrs(cfg.Bootstrap)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	rm, err := newResourceManager(cfg, opts.Registerer, opts.ProtocolLimits)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLowWater, cfg.ConnHighWater, connmgr.WithGracePeriod(cfg.ConnGrace.Std()))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	announce, _ := parseAnnounce("p2p.announce", cfg.Announce)
	extra, _ := parseAnnounce("p2p.announce_extra", cfg.AnnounceExtra)
	hst := &Host{cfg: cfg, log: log, kadProtocol: ProtocolPrefix(opts.Network) + "/kad/1.0.0"}
	gater := NewGater()
	lopts := []libp2p.Option{
		libp2p.Identity(opts.Key),
		libp2p.UserAgent(opts.UserAgent),
		// Listen one address at a time below, so that a port in use is
		// reported by name instead of being skipped.
		libp2p.NoListenAddrs,
		libp2p.ChainOptions(libp2p.Transport(tcp.NewTCPTransport), libp2p.Transport(quic.NewTransport)),
		libp2p.ChainOptions(libp2p.Security(noise.ID, noise.New), libp2p.Security(libp2ptls.ID, libp2ptls.New)),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(gater),
		libp2p.AddrsFactory(announceFactory(announce, extra)),
	}
	if !opts.NoNATService {
		// Answer other nodes' AutoNAT dial-backs, so that nodes in auto DHT
		// mode can learn they are reachable and become DHT servers; and
		// find our own way through NAT.
		lopts = append(lopts, libp2p.EnableNATService())
		lopts = append(lopts, natOptions(cfg, peers, hst)...)
	}
	if opts.Registerer != nil {
		lopts = append(lopts, libp2p.PrometheusRegisterer(opts.Registerer))
	} else {
		lopts = append(lopts, libp2p.DisableMetrics())
	}
	lopts = append(lopts, opts.HostOptions...)
	h, err := libp2p.New(lopts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	hst.Host = h
	hst.built.Store(&h)
	// Room for newcomers when full; the network's bootstraps are never
	// trimmed (the node protects its oracles too, see Protect).
	h.Network().Notify(newSlotKeeper(cm, cfg.MaxConns/2).notifiee())
	for _, p := range peers {
		cm.Protect(p.ID, "bootstrap")
	}
	for _, a := range listen {
		if err := h.Network().Listen(a); err != nil {
			h.Close()
			// libp2p formats the listener's error with %s, so the errno
			// survives only as text.
			if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), syscall.EADDRINUSE.Error()) {
				return nil, fmt.Errorf("listen on %s: %w", a, ErrAddrInUse)
			}
			return nil, fmt.Errorf("listen on %s: %w", a, err)
		}
	}

	hst.records = newRecordStore(h.ID(), cfg.DHTRecordsPerPeer, cfg.DHTMaxRecords)
	if opts.Registerer != nil {
		held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ephemera_dht_records",
			Help: "Value records this node's DHT holds for others and itself, at most p2p.dht_max_records.",
		}, func() float64 { all, _ := hst.records.held(""); return float64(all) })
		if err := opts.Registerer.Register(held); err != nil {
			log.Warn("p2p: the DHT records gauge is not registered", "err", err)
		}
	}
	dopts := []dht.Option{
		dht.ProtocolPrefix(ProtocolPrefix(opts.Network)),
		dht.Mode(dhtMode(cfg.DHTMode)),
		dht.NamespacedValidator("pk", record.PublicKeyValidator{}),
		dht.ValueDatastore(hst.records),
		dht.OnRequestHook(hst.records.hook),
	}
	if opts.RecordMaxAge > 0 {
		dopts = append(dopts, dht.MaxRecordAge(opts.RecordMaxAge),
			dht.ValueGCInterval(max(opts.RecordMaxAge/3, time.Second)))
	}
	if opts.ProvideValidity > 0 {
		dopts = append(dopts, dht.ProviderManagerOpts(records.ProvideValidity(opts.ProvideValidity)))
	}
	for ns, v := range opts.Validators {
		dopts = append(dopts, dht.NamespacedValidator(ns, v))
	}
	kad, err := dht.New(h, dopts...)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("dht: %w", err)
	}
	if cfg.RelayService && !opts.NoNATService {
		if hst.relay, err = startRelay(h, cfg); err != nil {
			kad.Close()
			h.Close()
			return nil, fmt.Errorf("relay service: %w", err)
		}
	}
	hst.DHT, hst.gater = kad, gater
	hst.bootstrap = newBootstrapper(h, kad, peers, cfg, gater, log)
	reachCtx, stopReach := context.WithCancel(context.Background())
	hst.stopReach = stopReach
	if err := hst.reach.run(reachCtx, h); err != nil {
		log.Warn("reachability events unavailable; /v1/network will not show them", "err", err)
	}
	return hst, nil
}

// Start keeps the host connected: it dials the bootstrap peers with backoff
// and bootstraps again whenever the peer count falls below the threshold.
func (h *Host) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h.stopRunner = cancel
	h.done = make(chan struct{})

	go func() {
		defer close(h.done)
		h.bootstrap.run(ctx)
	}()
}

// Close stops the bootstrap loop, the DHT and the host.
func (h *Host) Close() error {
	if h.stopRunner != nil {
		h.stopRunner()
		<-h.done
	}
	h.stopReach()
	var relayErr error
	if h.relay != nil {
		relayErr = h.relay.Close()
	}
	return errors.Join(relayErr, h.DHT.Close(), h.Host.Close())
}

// BlockPeer closes every connection with p and refuses new ones, dialled or
// accepted, for d (or until an earlier, longer block ends). Gossip calls it
// on a peer it has graylisted, whose traffic would only be read to be dropped.
func (h *Host) BlockPeer(p peer.ID, d time.Duration) {
	h.gater.Block(p, d)
	if err := h.Network().ClosePeer(p); err != nil {
		h.log.Debug("closing a blocked peer's connections", "peer", p, "err", err)
	}
}

// Protect keeps p's connections from being trimmed, by the connection
// manager or to make room for newcomers; tag names why (oracle, bootstrap).
func (h *Host) Protect(p peer.ID, tag string) { h.ConnManager().Protect(p, tag) }

// BlockPrefix closes every connection with an address in n and refuses new
// ones, dialled or accepted, for d (or until an earlier, longer block ends).
// Gossip calls it on an address or subnet whose peers together sent enough
// REJECTed messages: fresh keys from one place run out.
func (h *Host) BlockPrefix(n netip.Prefix, d time.Duration) {
	h.gater.BlockPrefix(n, d)
	for _, c := range h.Network().Conns() {
		if !h.gater.addrAllowed(c.RemoteMultiaddr()) {
			if err := c.Close(); err != nil {
				h.log.Debug("closing a blocked network's connection", "peer", c.RemotePeer(), "err", err)
			}
		}
	}
}

// BlockedUntil is when p's block ends, and whether p is blocked now.
func (h *Host) BlockedUntil(p peer.ID) (time.Time, bool) { return h.gater.BlockedUntil(p) }

// Bootstraps are the configured bootstrap peers: each with its addresses,
// whether the node is connected to it, and the last dial's error.
func (h *Host) Bootstraps() []BootstrapStatus { return h.bootstrap.statuses() }

// RoutingTableSize is the number of DHT servers this node knows.
func (h *Host) RoutingTableSize() int { return h.DHT.RoutingTable().Size() }

// DHTServing reports whether the DHT answers queries right now. In auto
// mode that changes with reachability, which the DHT's Mode does not show:
// it is read off the protocols the host serves.
func (h *Host) DHTServing() bool {
	return slices.Contains(h.Mux().Protocols(), h.kadProtocol)
}

// ServerPeers is the number of connected peers that serve the DHT.
func (h *Host) ServerPeers() int {
	n := 0
	for _, p := range h.Network().Peers() {
		if ok, _ := h.Peerstore().SupportsProtocols(p, h.kadProtocol); len(ok) > 0 {
			n++
		}
	}
	return n
}

// PeerCount is the number of peers this node has a connection with.
func (h *Host) PeerCount() int { return len(h.Network().Peers()) }

func dhtMode(s string) dht.ModeOpt {
	switch s {
	case DHTModeServer:
		return dht.ModeServer
	case DHTModeClient:
		return dht.ModeClient
	default:
		return dht.ModeAuto
	}
}

// newResourceManager scales libp2p's default limits to the configured memory
// and caps connections explicitly, so one node never takes the whole machine.
func newResourceManager(cfg Config, reg prometheus.Registerer, protos []ProtocolLimit) (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	const fileDescriptors = 4096
	base := scaling.Scale(int64(cfg.MaxMemoryMB)<<20, fileDescriptors)
	conns := rcmgr.LimitVal(cfg.MaxConns)
	partial := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:         conns,
			ConnsInbound:  rcmgr.LimitVal(cfg.MaxConns / 2),
			ConnsOutbound: conns,
			Memory:        rcmgr.LimitVal64(int64(cfg.MaxMemoryMB) << 20),
		},
		Protocol:     map[protocol.ID]rcmgr.ResourceLimits{},
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{},
	}
	for _, p := range protos {
		peerLimits := rcmgr.ResourceLimits{StreamsInbound: rcmgr.LimitVal(p.InboundStreamsOfPeer)}
		if p.MemoryOfPeer > 0 {
			peerLimits.Memory = rcmgr.LimitVal64(p.MemoryOfPeer)
		}
		partial.ProtocolPeer[p.ID] = peerLimits
		if p.Memory > 0 {
			partial.Protocol[p.ID] = rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(p.Memory)}
		}
	}
	limits := partial.Build(base)
	var ropts []rcmgr.Option
	if reg != nil {
		// libp2p.New registers the resource manager's collectors with reg.
		str, err := rcmgr.NewStatsTraceReporter()
		if err != nil {
			return nil, fmt.Errorf("resource manager metrics: %w", err)
		}
		ropts = append(ropts, rcmgr.WithTraceReporter(str))
	} else {
		ropts = append(ropts, rcmgr.WithMetricsDisabled())
	}
	ropts = append(ropts, ownAddrLimits(cfg.Listen)...)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), ropts...)
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}
