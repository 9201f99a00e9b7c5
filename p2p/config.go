package p2p

import (
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
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
	// MaxConns caps all connections in the resource manager; MaxMemoryMB caps its memory.
	MaxConns    int `toml:"max_conns"`
	MaxMemoryMB int `toml:"max_memory_mb"`
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
		MaxConns:          512,
		MaxMemoryMB:       256,
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
	if c.MaxConns < c.ConnHighWater {
		return fmt.Errorf("p2p.max_conns: %d, must be at least conn_high_water (%d)", c.MaxConns, c.ConnHighWater)
	}
	if c.MaxMemoryMB < 32 {
		return fmt.Errorf("p2p.max_memory_mb: %d, must be at least 32", c.MaxMemoryMB)
	}
	return nil
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
