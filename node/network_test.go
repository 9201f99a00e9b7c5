package node_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/p2p"
)

// initBootstrap makes the home of a bootstrap node, a DHT server, in dir.
func initBootstrap(t *testing.T, dir string) node.Home {
	t.Helper()
	home := node.Home{Dir: filepath.Join(dir, "boot")}
	cfg := loopbackConfig()
	cfg.Roles = []node.Role{node.RoleBootstrap}
	cfg.P2P.DHTMode = p2p.DHTModeServer
	if _, err := node.Init(home, cfg, false); err != nil {
		t.Fatal(err)
	}
	return home
}

func startLogged(t *testing.T, home node.Home, w *logging.Buffer) *node.Node {
	t.Helper()
	cfg, err := node.LoadConfig(home.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(home, cfg, node.Options{Version: "test", Logger: slog.New(slog.NewTextHandler(w, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// A newcomer fetches the network's definition from a bootstrap node; one on
// another definition of the same name is parted with cleanly on both sides,
// said once in the log, and unhealthy with the reason.
func TestNetworkDefinitionJoinAndPart(t *testing.T) {
	dir := t.TempDir()
	var bootLog logging.Buffer
	boot := startLogged(t, initBootstrap(t, dir), &bootLog)
	defer stop(t, boot)
	bootAddr := boot.FullAddrs()[0].String()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	def, from, err := node.FetchDefinition(ctx, []string{bootAddr})
	if err != nil {
		t.Fatal(err)
	}
	if def.Hash() != boot.NetworkHash() || from != bootAddr {
		t.Fatalf("fetched hash %s from %s; the bootstrap's is %s", def.Hash(), from, boot.NetworkHash())
	}
	if len(def.Bootstrap) != 1 || def.Bootstrap[0] != bootAddr {
		t.Fatalf("fetched bootstrap list %v, want the address that answered", def.Bootstrap)
	}

	// The same name, another oracle set: another network.
	wrong := def
	wrong.Params.Oracles = []string{bootstrapPeer}
	wrong.Params.Quorum = 1
	misHome := node.Home{Dir: filepath.Join(dir, "misfit")}
	misCfg := loopbackConfig().WithDefinition(wrong)
	misCfg.P2P.DHTMode = p2p.DHTModeServer
	if _, err := node.Init(misHome, misCfg, false); err != nil {
		t.Fatal(err)
	}
	var misLog logging.Buffer
	mis := startLogged(t, misHome, &misLog)
	defer stop(t, mis)
	if mis.NetworkHash() == boot.NetworkHash() {
		t.Fatal("another oracle set kept the hash")
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		err := mis.Health()
		if err != nil && strings.Contains(err.Error(), "is on network "+boot.NetworkHash()) &&
			strings.Contains(bootLog.String(), "parted with a peer of another network") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clean parting: misfit health %v\nbootstrap log:\n%s", err, bootLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	line := bootLog.String()
	if !strings.Contains(line, boot.NetworkHash()) || !strings.Contains(line, mis.NetworkHash()) || !strings.Contains(line, mis.ID().String()) {
		t.Errorf("the bootstrap's log does not name the peer and both hashes:\n%s", line)
	}
	if !strings.Contains(misLog.String(), "bootstrap node is on another network") {
		t.Errorf("the misfit did not say its bootstrap disagrees:\n%s", misLog.String())
	}
	time.Sleep(3 * time.Second) // past the grace; the misfit's bootstrapper retries meanwhile
	if _, blocked := boot.Host().BlockedUntil(mis.ID()); !blocked {
		t.Error("the bootstrap does not refuse the misfit")
	}
	if n := strings.Count(bootLog.String(), "parted with a peer of another network"); n != 1 {
		t.Errorf("the bootstrap logged the parting %d times, want once", n)
	}
	if boot.Host().PeerCount() != 0 {
		t.Errorf("the bootstrap still has %d peers", boot.Host().PeerCount())
	}
}

// A DHT server whose only peers are DHT clients (a bootstrap among nodes
// behind NAT) is healthy with an empty routing table; the clients, which
// know a server, are healthy too.
func TestHealthyServerAmongClients(t *testing.T) {
	dir := t.TempDir()
	boot := start(t, initBootstrap(t, dir))
	defer stop(t, boot)
	clientHome := node.Home{Dir: filepath.Join(dir, "client")}
	clientCfg := loopbackConfig()
	clientCfg.P2P.Bootstrap = []string{boot.FullAddrs()[0].String()}
	clientCfg.P2P.DHTMode = p2p.DHTModeClient
	if _, err := node.Init(clientHome, clientCfg, false); err != nil {
		t.Fatal(err)
	}
	client := start(t, clientHome)
	defer stop(t, client)
	waitHealthy(t, client, "with a DHT server as its bootstrap")
	waitHealthy(t, boot, "with only a DHT client as its peer")
	if n := boot.Host().RoutingTableSize(); n != 0 {
		t.Fatalf("the bootstrap's routing table holds %d peers; a client must not be in it", n)
	}
}
