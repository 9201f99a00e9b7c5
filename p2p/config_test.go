package p2p_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newPeerID(t *testing.T) peer.ID { return testkit.ID(t, testkit.NewKey(t)) }

func TestDefaultConfigValidates(t *testing.T) {
	cfg := p2p.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if len(cfg.Bootstrap) != 0 {
		t.Errorf("default bootstrap list = %v, want none (never the public IPFS list)", cfg.Bootstrap)
	}
}

func TestValidateAcceptsFullBootstrapAddr(t *testing.T) {
	cfg := p2p.DefaultConfig()
	cfg.Bootstrap = []string{"/ip4/127.0.0.1/tcp/7600/p2p/" + newPeerID(t).String()}
	cfg.DHTMode = p2p.DHTModeServer
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
}

func TestValidateNamesBadField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*p2p.Config)
		want   string // the field the error must name
	}{
		{"listen empty", func(c *p2p.Config) { c.Listen = nil }, "p2p.listen"},
		{"listen udp without quic", func(c *p2p.Config) { c.Listen = []string{"/ip4/127.0.0.1/udp/1"} }, "listen address"},
		{"listen malformed", func(c *p2p.Config) { c.Listen = []string{"/ip4/not-an-ip/tcp/1"} }, "listen address"},
		{"listen not a multiaddr", func(c *p2p.Config) { c.Listen = []string{"127.0.0.1:7600"} }, "listen address"},
		{"bootstrap without p2p", func(c *p2p.Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/7600"} }, "bootstrap address"},
		{"bootstrap malformed", func(c *p2p.Config) { c.Bootstrap = []string{"/dns4"} }, "bootstrap address"},
		{"dht mode", func(c *p2p.Config) { c.DHTMode = "both" }, "p2p.dht_mode"},
		{"dht mode empty", func(c *p2p.Config) { c.DHTMode = "" }, "p2p.dht_mode"},
		{"min peers 0", func(c *p2p.Config) { c.MinPeers = 0 }, "p2p.min_peers"},
		{"conn low 0", func(c *p2p.Config) { c.ConnLowWater = 0 }, "conn_low_water"},
		{"conn low == high", func(c *p2p.Config) { c.ConnLowWater, c.ConnHighWater = 100, 100 }, "conn_high_water"},
		{"conn low > high", func(c *p2p.Config) { c.ConnLowWater, c.ConnHighWater = 200, 100 }, "conn_low_water"},
		{"conn grace negative", func(c *p2p.Config) { c.ConnGrace = duration.Duration(-time.Second) }, "p2p.conn_grace_period"},
		{"max conns < high", func(c *p2p.Config) { c.MaxConns = c.ConnHighWater - 1 }, "p2p.max_conns"},
		{"max memory < 32", func(c *p2p.Config) { c.MaxMemoryMB = 31 }, "p2p.max_memory_mb"},
		{"announce not a multiaddr", func(c *p2p.Config) { c.Announce = []string{"1.2.3.4:7600"} }, "p2p.announce"},
		{"announce udp", func(c *p2p.Config) { c.Announce = []string{"/ip4/1.2.3.4/udp/7600"} }, "p2p.announce"},
		{"announce with p2p", func(c *p2p.Config) {
			c.Announce = []string{"/ip4/1.2.3.4/tcp/7600/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"}
		}, "leave out /p2p/"},
		{"announce wildcard", func(c *p2p.Config) { c.AnnounceExtra = []string{"/ip4/0.0.0.0/tcp/7600"} }, "p2p.announce_extra"},
		{"relay reservations", func(c *p2p.Config) { c.RelayMaxReservations = 0 }, "p2p.relay_max_reservations"},
		{"relay circuits", func(c *p2p.Config) { c.RelayMaxCircuits = 0 }, "p2p.relay_max_circuits"},
		{"relay duration", func(c *p2p.Config) { c.RelayLimitDuration = duration.Duration(time.Second) }, "p2p.relay_limit_duration"},
		{"relay data", func(c *p2p.Config) { c.RelayLimitDataKB = 1 }, "p2p.relay_limit_data_kb"},
		{"bootstrap interval < 1s", func(c *p2p.Config) { c.BootstrapInterval = duration.Duration(999 * time.Millisecond) }, "p2p.bootstrap_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := p2p.DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %q, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestValidateBoundariesPass(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*p2p.Config)
	}{
		{"min peers 1", func(c *p2p.Config) { c.MinPeers = 1 }},
		{"interval exactly 1s", func(c *p2p.Config) { c.BootstrapInterval = duration.Duration(time.Second) }},
		{"low 1 high 2", func(c *p2p.Config) { c.ConnLowWater, c.ConnHighWater = 1, 2 }},
		{"max conns == high", func(c *p2p.Config) { c.MaxConns = c.ConnHighWater }},
		{"max memory 32", func(c *p2p.Config) { c.MaxMemoryMB = 32 }},
		{"zero grace", func(c *p2p.Config) { c.ConnGrace = 0 }},
		{"quic only", func(c *p2p.Config) { c.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1"} }},
		{"tcp ip6", func(c *p2p.Config) { c.Listen = []string{"/ip6/::1/tcp/0"} }},
		{"client mode", func(c *p2p.Config) { c.DHTMode = p2p.DHTModeClient }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := p2p.DefaultConfig()
			tt.mutate(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
		})
	}
}

func TestParseListenAddrs(t *testing.T) {
	addrs, err := p2p.ParseListenAddrs(p2p.DefaultConfig().Listen)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 {
		t.Fatalf("got %d addrs, want 2", len(addrs))
	}
	if got := addrs[1].String(); got != "/ip4/0.0.0.0/udp/7600/quic-v1" {
		t.Errorf("addrs[1] = %s", got)
	}
}

func TestParseBootstrapAddrsGroupsByPeer(t *testing.T) {
	a, b := newPeerID(t), newPeerID(t)
	infos, err := p2p.ParseBootstrapAddrs([]string{
		"/ip4/127.0.0.1/tcp/7600/p2p/" + a.String(),
		"/ip4/127.0.0.1/udp/7600/quic-v1/p2p/" + a.String(),
		"/ip4/10.0.0.2/tcp/7600/p2p/" + b.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("got %d AddrInfos, want 2 (one per peer): %v", len(infos), infos)
	}
	byID := map[peer.ID]peer.AddrInfo{}
	for _, ai := range infos {
		byID[ai.ID] = ai
	}
	if got := len(byID[a].Addrs); got != 2 {
		t.Errorf("peer a has %d addrs, want 2: %v", got, byID[a].Addrs)
	}
	if got := len(byID[b].Addrs); got != 1 {
		t.Errorf("peer b has %d addrs, want 1: %v", got, byID[b].Addrs)
	}
	for _, ai := range infos {
		for _, m := range ai.Addrs {
			if strings.Contains(m.String(), "/p2p/") {
				t.Errorf("addr %s still carries /p2p/", m)
			}
		}
	}
}

func TestParseBootstrapAddrsEmpty(t *testing.T) {
	infos, err := p2p.ParseBootstrapAddrs(nil)
	if err != nil || len(infos) != 0 {
		t.Fatalf("ParseBootstrapAddrs(nil) = %v, %v; want none, nil", infos, err)
	}
}
