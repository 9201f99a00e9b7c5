// Package sim runs hundreds of full Ephemera nodes in one process over a
// simulated network, under testing/synctest's virtual clock: QUIC on packet
// links with per-pair latency (go-libp2p's x/simlibp2p and
// marcopolo/simnet), or, lighter, Noise and yamux on in-process streams with
// the same latency (memnet.go). Every node is the real thing — its own
// Badger store on disk, libp2p host, private DHT, gossip and roles — only
// the wire is simulated.
//
// The package is driven from tests (synctest needs a *testing.T); see
// sim_test.go and `make sim`.
package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/marcopolo/simnet"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// simPort is the UDP port every simulated node listens on; each has its own IP.
const simPort = 8000

// connLow and connHigh bound each simulated node's connections.
const connLow, connHigh = 16, 32

// Link is how fast a simulated node's access link is, each way.
const linkBitsPerSecond = 100_000_000

// Transport is what carries the simulated nodes' connections.
type Transport string

const (
	// TransportQUIC is the nodes' own QUIC, on simulated packet links.
	TransportQUIC Transport = "quic"
	// TransportMem is in-process streams with the links' delays and
	// bandwidth, secured and multiplexed by the host's upgrader as TCP
	// would be (memnet.go): several times cheaper, for the largest sizes.
	TransportMem Transport = "mem"
)

// Network is a simulated network of full nodes.
type Network struct {
	dir       string
	netName   string
	log       *slog.Logger
	sim       *simnet.Simnet
	transport Transport
	mem       memNet

	mu      sync.Mutex
	nextIdx int
	nodes   []*Member
	oracles []string // the oracle set's peer IDs, in every node's config
	boot    []string // bootstrap multiaddrs

	// watch, if set, is called with each member as soon as it has started;
	// onReserve, if set, gives each router's reservation hook.
	watch     func(*Member)
	onReserve func(idx int) func(router.Reservation, time.Duration, error)

	// partition, when set, says which side of a split each IP is on;
	// packets between the sides are dropped.
	partition atomic.Pointer[map[string]int]
}

// Member is one node of the simulated network.
type Member struct {
	Name  string
	Role  node.Role
	Index int
	*node.Node
	ip      net.IP
	link    *linkCounters
	Started time.Time
	Stopped time.Time // zero while running
}

// Running reports whether the member is up.
func (m *Member) Running() bool { return m.Stopped.IsZero() }

// NewNetwork prepares an empty network whose homes go under dir, its nodes
// connected by tr (QUIC if empty). Call it inside the synctest bubble: the
// simnet's goroutines must belong to it.
func NewNetwork(dir, network string, tr Transport, log *slog.Logger) *Network {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if tr == "" {
		tr = TransportQUIC
	}
	n := &Network{dir: dir, netName: network, log: log, transport: tr}
	n.sim = &simnet.Simnet{LatencyFunc: n.latency, Logger: log.With("module", "simnet")}
	n.sim.Start()
	return n
}

// latency is one way's delay between two nodes: each node sits 10–50 ms
// from the core (by a hash of its address), so one-way delays are 20–100 ms
// and each pair's is stable.
func (n *Network) latency(p *simnet.Packet) time.Duration {
	return accessDelay(hostOf(p.From)) + accessDelay(hostOf(p.To))
}

// delay is the one-way delay between two members.
func (n *Network) delay(a, b *Member) time.Duration {
	return accessDelay(a.ip.String()) + accessDelay(b.ip.String())
}

// accessDelay is how far the node at ip sits from the core. Both
// transports use it, so a pair's delay is the same on either.
func accessDelay(ip string) time.Duration {
	h := fnv.New32a()
	h.Write([]byte(ip))
	return 10*time.Millisecond + time.Duration(h.Sum32()%41)*time.Millisecond
}

// simIP is the address of the node with index idx.
func simIP(idx int) net.IP { return simnet.IntToPublicIPv4(idx) }

// Partition splits the network: packets between a node in side and one
// outside it are dropped until Heal.
func (n *Network) Partition(side []*Member) {
	m := map[string]int{}
	for _, x := range side {
		m[simIP(x.Index).String()] = 1
	}
	n.partition.Store(&m)
}

// Heal ends a partition.
func (n *Network) Heal() { n.partition.Store(nil) }

func (n *Network) blocked(from, to net.Addr) bool {
	m := n.partition.Load()
	if m == nil {
		return false
	}
	return (*m)[hostOf(from)] != (*m)[hostOf(to)]
}

func hostOf(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.IP.String()
	}
	h, _, _ := net.SplitHostPort(a.String())
	return h
}

// linkCounters count what a node's link carries.
type linkCounters struct {
	sentPackets, sentBytes atomic.Uint64
	recvPackets, recvBytes atomic.Uint64
	// conns counts the connections the node opened or accepted: when it
	// runs far above what the connection limits hold, the nodes are
	// trimming and redialling, which costs the simulation handshakes.
	conns atomic.Uint64
}

// countingConn is a node's packet conn on the simnet. It counts what the
// node sends and receives, and drops what a partition forbids.
type countingConn struct {
	*simnet.SimConn
	net *Network
	*linkCounters
}

func (c *countingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.net.blocked(c.LocalAddr(), addr) {
		return len(p), nil // lost on the way, as on a cut link
	}
	c.sentPackets.Add(1)
	c.sentBytes.Add(uint64(len(p)))
	return c.SimConn.WriteTo(p, addr)
}

func (c *countingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	k, addr, err := c.SimConn.ReadFrom(p)
	if err == nil {
		c.recvPackets.Add(1)
		c.recvBytes.Add(uint64(k))
	}
	return k, addr, err
}

// Traffic is what one node's link carried.
type Traffic struct {
	SentPackets, SentBytes, RecvPackets, RecvBytes uint64
}

// Traffic reads the member's link counters. On the mem transport a packet
// is a TCP segment's worth of a write.
func (m *Member) Traffic() Traffic {
	l := m.link
	return Traffic{l.sentPackets.Load(), l.sentBytes.Load(), l.recvPackets.Load(), l.recvBytes.Load()}
}

// quicOn puts the host's QUIC on the packet conn c (a simulated link), as
// simlibp2p.QUICSimnet does.
func (n *Network) quicOn(c net.PacketConn) libp2p.Option {
	ip := c.LocalAddr().(*net.UDPAddr).IP
	opts := []quicreuse.Option{
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return fixedSource(ip), nil }),
		quicreuse.OverrideListenUDP(func(string, *net.UDPAddr) (net.PacketConn, error) { return c, nil }),
	}
	return libp2p.QUICReuse(func(l fx.Lifecycle, reset quic.StatelessResetKey, token quic.TokenGeneratorKey, _ ...quicreuse.Option) (*quicreuse.ConnManager, error) {
		cm, err := quicreuse.NewConnManager(reset, token, opts...)
		if err != nil {
			return nil, err
		}
		// A conn manager given this way is not closed by the host.
		l.Append(fx.StopHook(cm.Close))
		return cm, nil
	})
}

type fixedSource net.IP

func (s fixedSource) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	return net.IP(s), nil
}

// Plan is the shape of a network.
type Plan struct {
	Bootstraps, Oracles, Miners, Routers int
	// Quorum is how many oracles must pass a miner.
	Quorum int
	// JoinOver spreads the joins of every node but the bootstrap nodes
	// evenly over this much time: oracles first, then routers, then
	// miners, as a network grows. Zero starts them all at once, which
	// costs the simulation a storm of dials, since every newcomer's first
	// DHT refresh meets every other newcomer.
	JoinOver time.Duration
}

// Validate rejects a plan that cannot form.
func (p Plan) Validate() error {
	switch {
	case p.Bootstraps < 1:
		return errors.New("sim: a network needs at least one bootstrap node")
	case p.Oracles < 1 || p.Miners < 1 || p.Routers < 1:
		return errors.New("sim: a network needs oracles, miners and routers")
	case p.Quorum < 1 || p.Quorum > p.Oracles:
		return fmt.Errorf("sim: quorum %d is not between 1 and the %d oracles", p.Quorum, p.Oracles)
	case p.JoinOver < 0:
		return fmt.Errorf("sim: join_over %v is negative", p.JoinOver)
	}
	return nil
}

// Total is how many nodes the plan runs at once.
func (p Plan) Total() int { return p.Bootstraps + p.Oracles + p.Miners + p.Routers }

// Start brings up the plan's nodes: bootstrap nodes first, then the rest,
// together or over p.JoinOver, every one pointed at the bootstrap nodes.
// It returns once every node has started.
func (n *Network) Start(ctx context.Context, p Plan, tune func(*node.Config)) error {
	if err := p.Validate(); err != nil {
		return err
	}
	// The oracle set is in every config, so the oracles' keys come first.
	var oracleHomes []node.Home
	for range p.Oracles {
		h, id, err := n.newHome(node.RoleOracle)
		if err != nil {
			return err
		}
		oracleHomes = append(oracleHomes, h)
		n.oracles = append(n.oracles, id.String())
	}
	tuneAll := func(c *node.Config) {
		c.Params.Quorum = p.Quorum
		if tune != nil {
			tune(c)
		}
	}
	for range p.Bootstraps {
		m, err := n.Launch(ctx, node.RoleBootstrap, tuneAll)
		if err != nil {
			return err
		}
		for _, a := range m.FullAddrs() {
			n.boot = append(n.boot, a.String())
		}
	}
	type joiner struct {
		role node.Role
		home *node.Home
	}
	var joiners []joiner
	for i := range oracleHomes {
		joiners = append(joiners, joiner{node.RoleOracle, &oracleHomes[i]})
	}
	for range p.Routers {
		joiners = append(joiners, joiner{role: node.RoleRouter})
	}
	for range p.Miners {
		joiners = append(joiners, joiner{role: node.RoleMiner})
	}
	gap := p.JoinOver / time.Duration(len(joiners))
	var wg sync.WaitGroup
	errs := make(chan error, len(joiners))
	for i, j := range joiners {
		if i > 0 && gap > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(gap):
			}
			if err := ctx.Err(); err != nil {
				errs <- err
				break
			}
		}
		wg.Go(func() {
			if _, err := n.launch(ctx, j.role, j.home, tuneAll); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// newHome writes a fresh home with a new key for a node of role.
func (n *Network) newHome(role node.Role) (node.Home, peer.ID, error) {
	n.mu.Lock()
	idx := n.nextIdx
	n.nextIdx++
	n.mu.Unlock()
	h := node.Home{Dir: filepath.Join(n.dir, fmt.Sprintf("%s-%d", role, idx))}
	key, err := node.Init(h, node.DefaultConfig(), false)
	if err != nil {
		return h, "", err
	}
	id, err := peer.IDFromPrivateKey(key)
	return h, id, err
}

// Launch starts a new node of role with a fresh identity: a miner joining,
// or a node of the initial plan.
func (n *Network) Launch(ctx context.Context, role node.Role, tune func(*node.Config)) (*Member, error) {
	return n.launch(ctx, role, nil, tune)
}

func (n *Network) launch(ctx context.Context, role node.Role, home *node.Home, tune func(*node.Config)) (*Member, error) {
	if home == nil {
		h, _, err := n.newHome(role)
		if err != nil {
			return nil, err
		}
		home = &h
	}
	n.mu.Lock()
	idx := n.nextIdx
	n.nextIdx++
	n.mu.Unlock()
	name := filepath.Base(home.Dir)

	ip := simIP(idx)
	cfg := n.config(role, ip)
	if tune != nil {
		tune(&cfg)
	}
	if _, err := node.Init(*home, cfg, true); err != nil {
		return nil, err
	}
	link := &linkCounters{}
	udp := &net.UDPAddr{IP: ip, Port: simPort}
	hostOpts := []libp2p.Option{
		// Identify's address discovery stalls synctest (see x/simlibp2p).
		libp2p.DisableIdentifyAddressDiscovery(),
	}
	switch n.transport {
	case TransportMem:
		// The node still listens on QUIC, as p2p.listen requires, on a
		// conn that nobody dials.
		hostOpts = append(hostOpts, n.quicOn(newNullPacketConn(udp)))
		hostOpts = append(hostOpts, n.memOn(idx, link)...)
	default:
		conn := &countingConn{net: n, linkCounters: link}
		n.mu.Lock() // the simnet's endpoint table is not safe for concurrent use
		conn.SimConn = n.sim.NewEndpoint(udp, simnet.NodeBiDiLinkSettings{
			Downlink: simnet.LinkSettings{BitsPerSecond: linkBitsPerSecond},
			Uplink:   simnet.LinkSettings{BitsPerSecond: linkBitsPerSecond},
		})
		n.mu.Unlock()
		hostOpts = append(hostOpts, n.quicOn(conn))
	}
	opts := node.Options{
		Version:      "sim",
		Logger:       n.log.With("node", name),
		HostOptions:  hostOpts,
		NoNATService: true,
		// Hundreds of stores share this process's memory: compact caches
		// and memtables, every commit still synced (store.Compact).
		StoreOptions: []store.Option{store.Compact()},
	}
	if role == node.RoleRouter && n.onReserve != nil {
		opts.ObserveReserve = n.onReserve(idx)
	}
	nd, err := node.New(*home, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := nd.Start(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	nd.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) { link.conns.Add(1) }})
	m := &Member{Name: name, Role: role, Index: idx, Node: nd, ip: ip, link: link, Started: time.Now()}
	if n.watch != nil {
		n.watch(m)
	}
	n.mu.Lock()
	n.nodes = append(n.nodes, m)
	n.mu.Unlock()
	return m, nil
}

// config is the configuration of a simulated node at ip.
func (n *Network) config(role node.Role, ip net.IP) node.Config {
	cfg := node.DefaultConfig()
	cfg.Network = n.netName
	cfg.Roles = []node.Role{role}
	cfg.Params.Oracles = slices.Clone(n.oracles)
	cfg.P2P.Listen = []string{fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, simPort)}
	cfg.P2P.Bootstrap = slices.Clone(n.boot)
	cfg.P2P.DHTMode = p2p.DHTModeServer
	cfg.P2P.BootstrapInterval = duration.Duration(10 * time.Second)
	// Fewer connections than the default 64–192: still above gossipsub's
	// mesh (up to 12 per topic) and Kademlia's buckets fill by dialling on
	// demand, and every open QUIC connection costs the simulation timers
	// and packets on every node, which set how far one machine can scale.
	cfg.P2P.ConnLowWater, cfg.P2P.ConnHighWater = connLow, connHigh
	cfg.P2P.ConnGrace = duration.Duration(5 * time.Second)
	cfg.API.Listen = "" // no sockets in the bubble: synctest cannot wait on them
	return cfg
}

// Stop stops one member gracefully.
func (n *Network) Stop(ctx context.Context, m *Member) error {
	err := m.Node.Stop(ctx)
	n.mu.Lock()
	m.Stopped = time.Now()
	n.mu.Unlock()
	return err
}

// Members lists every member ever started, running or not.
func (n *Network) Members() []*Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.nodes)
}

// Running lists the running members of role ("" for every role).
func (n *Network) Running(role node.Role) []*Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*Member
	for _, m := range n.nodes {
		if m.Stopped.IsZero() && (role == "" || m.Role == role) {
			out = append(out, m)
		}
	}
	return out
}

// Close stops every running node, then the simulated network.
func (n *Network) Close(ctx context.Context) error {
	var errs []error
	running := n.Running("")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range running {
		wg.Go(func() {
			if err := n.Stop(ctx, m); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n.sim.Close()
	return errors.Join(errs...)
}
