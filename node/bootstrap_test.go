package node_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/p2p"
	ma "github.com/multiformats/go-multiaddr"
)

// A node whose bootstrap peer is down keeps retrying with backoff, joins once
// the peer is up, and bootstraps again after losing all its peers.
func TestBootstrapRetriesAndRejoins(t *testing.T) {
	dir := t.TempDir()
	bootHome := node.Home{Dir: filepath.Join(dir, "boot")}
	bootCfg := loopbackConfig()
	bootCfg.Roles = []node.Role{node.RoleBootstrap}
	bootCfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	bootCfg.P2P.DHTMode = p2p.DHTModeServer
	if _, err := node.Init(bootHome, bootCfg, false); err != nil {
		t.Fatal(err)
	}
	// Learn a free port by starting once, then pin the bootstrap node to it.
	boot := start(t, bootHome)
	addr := boot.FullAddrs()[0]
	stop(t, boot)
	port, err := addr.ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	bootCfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/" + port}
	if _, err := node.Init(bootHome, bootCfg, true); err != nil {
		t.Fatal(err)
	}

	minerHome := node.Home{Dir: filepath.Join(dir, "miner")}
	minerCfg := loopbackConfig()
	minerCfg.P2P.Bootstrap = []string{addr.String()}
	minerCfg.P2P.DHTMode = p2p.DHTModeServer
	if _, err := node.Init(minerHome, minerCfg, false); err != nil {
		t.Fatal(err)
	}
	miner := start(t, minerHome)
	defer stop(t, miner)
	time.Sleep(1500 * time.Millisecond) // at least one failed attempt
	if miner.Health() == nil {
		t.Fatal("healthy with its only bootstrap peer down")
	}

	boot = start(t, bootHome)
	waitHealthy(t, miner, "after the bootstrap node came up")

	// Lose every peer, then get the bootstrap node back.
	stop(t, boot)
	for deadline := time.Now().Add(10 * time.Second); miner.Host().PeerCount() > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("miner kept its peer after the bootstrap node stopped")
		}
	}
	boot = start(t, bootHome)
	defer stop(t, boot)
	waitHealthy(t, miner, "after the bootstrap node came back")
}

func waitHealthy(t *testing.T, n *node.Node, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n.Health() != nil {
		select {
		case <-ctx.Done():
			t.Fatalf("not healthy %s: %v", when, n.Health())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
