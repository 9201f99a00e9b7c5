package p2p

import (
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// DHT modes a node can run its Kademlia DHT in.
const (
	DHTModeAuto   = "auto"   // server when publicly reachable, client otherwise
	DHTModeServer = "server" // always answer DHT queries (bootstrap nodes, local testnets)
	DHTModeClient = "client" // never answer DHT queries
)

// DefaultPort is the TCP and UDP port a node listens on unless told otherwise.
const DefaultPort = 7600

// Config is the network part of a node's configuration.
type Config struct {
	// Listen holds the multiaddrs the host listens on (TCP and QUIC).
	Listen []string `toml:"listen"`
	// Bootstrap holds the full multiaddrs (ending in /p2p/<id>) dialled first.
	Bootstrap []string `toml:"bootstrap"`
	// DHTMode is auto, server or client.
	DHTMode string `toml:"dht_mode"`
	// MinPeers is the connected-peer count below which the node bootstraps again.
	MinPeers int `toml:"min_peers"`
	// BootstrapInterval is how often the node checks its peer count.
	BootstrapInterval duration.Duration `toml:"bootstrap_interval"`
	// ConnLowWater and ConnHighWater bound the connection manager's trimming.
	ConnLowWater  int               `toml:"conn_low_water"`
	ConnHighWater int               `toml:"conn_high_water"`
	ConnGrace     duration.Duration `toml:"conn_grace_period"`
	// DHTMaxRecords caps the DHT value records this node stores for others;
	// DHTRecordsPerPeer caps those one peer may have put.
	DHTMaxRecords     int `toml:"dht_max_records"`
	DHTRecordsPerPeer int `toml:"dht_records_per_peer"`
	// MaxConns caps all connections in the resource manager; MaxMemoryMB caps its memory.
	MaxConns    int `toml:"max_conns"`
	MaxMemoryMB int `toml:"max_memory_mb"`
	// Announce, when set, replaces the listened addresses in what the node
	// tells its peers (a port forward's public address, say);
	// AnnounceExtra adds to them.
	Announce      []string `toml:"announce"`
	AnnounceExtra []string `toml:"announce_extra"`
	// NATPortMap asks the home router for a port mapping (UPnP, NAT-PMP).
	NATPortMap bool `toml:"nat_port_map"`
	// RelayService runs a circuit relay v2 for nodes behind NAT, within
	// the limits below.
	RelayService         bool              `toml:"relay_service"`
	RelayMaxReservations int               `toml:"relay_max_reservations"`
	RelayMaxCircuits     int               `toml:"relay_max_circuits"`
	RelayLimitDuration   duration.Duration `toml:"relay_limit_duration"`
	RelayLimitDataKB     int               `toml:"relay_limit_data_kb"`
}

// DefaultConfig listens on every interface on DefaultPort and has no bootstrap peers:
// Ephemera never falls back to the public IPFS bootstrap list.
func DefaultConfig() Config {
	return Config{
		Listen: []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", DefaultPort),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", DefaultPort),
		},
		Bootstrap:         []string{},
		DHTMode:           DHTModeAuto,
		MinPeers:          4,
		BootstrapInterval: duration.Duration(30 * time.Second),
		ConnLowWater:      64,
		ConnHighWater:     192,
		ConnGrace:         duration.Duration(30 * time.Second),
		DHTMaxRecords:     10000,
		DHTRecordsPerPeer: 16,
		MaxConns:          512,
		MaxMemoryMB:       256,
		Announce:          []string{},
		AnnounceExtra:     []string{},
		// A relayed connection carries the control plane of a miner behind
		// NAT until hole punching replaces it: validation exchanges and
		// claims of a few kB, now and then a session's tasks. libp2p's
		// 2 min and 128 kB would cut a session's first answers; 10 min and
		// 4 MB carry a long session of chat answers, and a relay of 128
		// reservations with 4 circuits each is then bounded at 2 GB.
		RelayMaxReservations: 128,
		RelayMaxCircuits:     4,
		RelayLimitDuration:   duration.Duration(10 * time.Minute),
		RelayLimitDataKB:     4096,
	}
}

// Validate checks every field and names the first one that is wrong.
func (c Config) Validate() error {
	if len(c.Listen) == 0 {
		return errors.New("p2p.listen: at least one listen address is needed")
	}
	if _, err := ParseListenAddrs(c.Listen); err != nil {
		return err
	}
	if _, err := ParseBootstrapAddrs(c.Bootstrap); err != nil {
		return err
	}
	switch c.DHTMode {
	case DHTModeAuto, DHTModeServer, DHTModeClient:
	default:
		return fmt.Errorf("p2p.dht_mode: %q is not one of auto, server, client", c.DHTMode)
	}
	if c.MinPeers < 1 {
		return fmt.Errorf("p2p.min_peers: %d, must be at least 1", c.MinPeers)
	}
	if c.BootstrapInterval.Std() < time.Second {
		return fmt.Errorf("p2p.bootstrap_interval: %s, must be at least 1s", c.BootstrapInterval)
	}
	if c.ConnLowWater < 1 || c.ConnHighWater <= c.ConnLowWater {
		return fmt.Errorf("p2p.conn_low_water %d and conn_high_water %d: need 0 < low < high", c.ConnLowWater, c.ConnHighWater)
	}
	if c.ConnGrace.Std() < 0 {
		return fmt.Errorf("p2p.conn_grace_period: %s is negative", c.ConnGrace)
	}
	if c.DHTMaxRecords < 1 || c.DHTMaxRecords > 10_000_000 {
		return fmt.Errorf("p2p.dht_max_records: %d, must be from 1 to 10000000", c.DHTMaxRecords)
	}
	if c.DHTRecordsPerPeer < 1 || c.DHTRecordsPerPeer > c.DHTMaxRecords {
		return fmt.Errorf("p2p.dht_records_per_peer: %d, must be from 1 to dht_max_records (%d)", c.DHTRecordsPerPeer, c.DHTMaxRecords)
	}
	if c.MaxConns < c.ConnHighWater {
		return fmt.Errorf("p2p.max_conns: %d, must be at least conn_high_water (%d)", c.MaxConns, c.ConnHighWater)
	}
	if c.MaxMemoryMB < 32 {
		return fmt.Errorf("p2p.max_memory_mb: %d, must be at least 32", c.MaxMemoryMB)
	}
	if _, err := parseAnnounce("p2p.announce", c.Announce); err != nil {
		return err
	}
	if _, err := parseAnnounce("p2p.announce_extra", c.AnnounceExtra); err != nil {
		return err
	}
	switch {
	case c.RelayMaxReservations < 1 || c.RelayMaxReservations > 100000:
		return fmt.Errorf("p2p.relay_max_reservations: %d, must be from 1 to 100000", c.RelayMaxReservations)
	case c.RelayMaxCircuits < 1 || c.RelayMaxCircuits > 1024:
		return fmt.Errorf("p2p.relay_max_circuits: %d, must be from 1 to 1024", c.RelayMaxCircuits)
	case c.RelayLimitDuration.Std() < 10*time.Second || c.RelayLimitDuration.Std() > 24*time.Hour:
		return fmt.Errorf("p2p.relay_limit_duration: %s, must be from 10s to 24h", c.RelayLimitDuration)
	case c.RelayLimitDataKB < 16 || c.RelayLimitDataKB > 1<<20:
		return fmt.Errorf("p2p.relay_limit_data_kb: %d, must be from 16 to 1048576", c.RelayLimitDataKB)
	}
	return nil
}

// parseAnnounce parses addresses to announce: TCP or QUIC multiaddrs of
// this node, without /p2p/ (the host adds its own) and without wildcard
// IPs, which say nothing to a peer.
func parseAnnounce(field string, ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a multiaddr: %v", field, s, err)
		}
		if !isTCP(a) && !isQUIC(a) {
			return nil, fmt.Errorf("%s: %q: only /tcp and /udp/.../quic-v1 addresses can be announced", field, s)
		}
		if _, err := a.ValueForProtocol(ma.P_P2P); err == nil {
			return nil, fmt.Errorf("%s: %q: leave out /p2p/<id>; the node adds its own", field, s)
		}
		if manet.IsIPUnspecified(a) {
			return nil, fmt.Errorf("%s: %q: a wildcard address can't be dialled; give the address peers reach", field, s)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseListenAddrs parses listen multiaddrs and accepts only TCP and QUIC ones,
// the two transports the host runs.
func ParseListenAddrs(ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %v", s, err)
		}
		if !isTCP(a) && !isQUIC(a) {
			return nil, fmt.Errorf("listen address %q: only /tcp and /udp/.../quic-v1 are supported", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseBootstrapAddrs parses full multiaddrs of bootstrap peers, grouped by peer.
func ParseBootstrapAddrs(ss []string) ([]peer.AddrInfo, error) {
	addrs := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %v", s, err)
		}
		if _, err := peer.AddrInfoFromP2pAddr(a); err != nil {
			return nil, fmt.Errorf("bootstrap address %q: must end in /p2p/<peer-id>", s)
		}
		addrs = append(addrs, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil {
		return nil, fmt.Errorf("bootstrap addresses: %v", err)
	}
	return infos, nil
}

func isTCP(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_TCP)
	return err == nil
}

func isQUIC(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_QUIC_V1)
	return err == nil
}
