package p2p

import (
	"context"
	"testing"

	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A node whose inbound slots are all taken still admits a newcomer: the
// least valuable inbound connection (untagged, oldest) makes room at once,
// and a protected peer is never the one.
func TestFullNodeAdmitsNewcomer(t *testing.T) {
	cfg := testConfig()
	cfg.ConnLowWater, cfg.ConnHighWater, cfg.MaxConns = 4, 16, 40 // 20 inbound slots
	node := startHost(t, cfg, Options{})
	ctx := context.Background()
	dial := func(h host.Host) error {
		return h.Connect(ctx, peer.AddrInfo{ID: node.ID(), Addrs: node.Addrs()})
	}

	oracle := testkit.Host(t, nil)
	node.Protect(oracle.ID(), "oracle")
	if err := dial(oracle); err != nil {
		t.Fatal(err)
	}
	// Fill every inbound slot, as 247 fresh connections filled 256.
	var filler []host.Host
	for range 19 {
		h := testkit.Host(t, nil)
		filler = append(filler, h)
		if err := dial(h); err != nil {
			t.Fatal(err)
		}
	}
	newcomer := testkit.Host(t, nil)
	if err := dial(newcomer); err != nil {
		t.Fatalf("a full node refused a newcomer: %v", err)
	}
	waitUntil(t, "room to be kept under the cap", func() bool { return inbound(node) <= 20-2 })
	for _, p := range []peer.ID{newcomer.ID(), oracle.ID()} {
		if node.Network().Connectedness(p) != network.Connected {
			t.Fatalf("%s was trimmed to make room", p)
		}
	}
	// The oldest fillers went first.
	if node.Network().Connectedness(filler[0].ID()) == network.Connected {
		t.Fatal("the oldest untagged connection was kept while newer ones were trimmed")
	}
}

func inbound(h *Host) int {
	n := 0
	for _, c := range h.Network().Conns() {
		if c.Stat().Direction == network.DirInbound {
			n++
		}
	}
	return n
}
