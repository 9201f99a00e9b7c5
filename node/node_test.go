package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func loopbackConfig() node.Config {
	cfg := node.DefaultConfig()
	cfg.P2P.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.API.Listen = "127.0.0.1:0"
	return cfg
}

func start(t *testing.T, home node.Home) *node.Node {
	t.Helper()
	cfg, err := node.LoadConfig(home.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(home, cfg, node.Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func stop(t *testing.T, n *node.Node) {
	t.Helper()
	testkit.Stop(t, 10*time.Second, n.Stop)
}

func TestRestartKeepsIdentityAndData(t *testing.T) {
	home := node.Home{Dir: filepath.Join(t.TempDir(), "home")}
	key, err := node.Init(home, loopbackConfig(), false)
	if err != nil {
		t.Fatal(err)
	}
	wantID, _ := peer.IDFromPrivateKey(key)

	n := start(t, home)
	if n.ID() != wantID {
		t.Fatalf("running as %s, key says %s", n.ID(), wantID)
	}
	if err := n.Store().Put([]byte("self/test"), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.ReadRuntime(home); err != nil {
		t.Fatalf("running node wrote no runtime file: %v", err)
	}
	// A second node on the same home is refused while the first runs.
	second, _ := node.New(home, n.Config(), node.Options{})
	if err := second.Start(context.Background()); !errors.Is(err, node.ErrHomeInUse) {
		t.Fatalf("second start on a used home: %v, want ErrHomeInUse", err)
	}
	stop(t, n)
	if _, err := node.ReadRuntime(home); err == nil {
		t.Fatal("runtime file left behind after a clean stop")
	}

	n = start(t, home)
	defer stop(t, n)
	if n.ID() != wantID {
		t.Fatalf("restart changed the peer ID: %s, want %s", n.ID(), wantID)
	}
	if v, err := n.Store().Get([]byte("self/test")); err != nil || string(v) != "kept" {
		t.Fatalf("data after restart: %q, %v", v, err)
	}
	if n.Starts() != 2 {
		t.Fatalf("starts = %d, want 2", n.Starts())
	}
}

func TestForeignKeyIsRefused(t *testing.T) {
	home := node.Home{Dir: filepath.Join(t.TempDir(), "home")}
	if _, err := node.Init(home, loopbackConfig(), false); err != nil {
		t.Fatal(err)
	}
	stop(t, start(t, home))
	// Swap the identity under the data: the node must not adopt data signed by another peer.
	other := node.Home{Dir: filepath.Join(t.TempDir(), "other")}
	if _, err := node.Init(other, loopbackConfig(), false); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(other.KeyPath(), home.KeyPath()); err != nil {
		t.Fatal(err)
	}
	cfg, _ := node.LoadConfig(home.ConfigPath())
	n, _ := node.New(home, cfg, node.Options{})
	err := n.Start(context.Background())
	if err == nil {
		stop(t, n)
		t.Fatal("node started with a key that does not match its data")
	}
	if node.Running(home) {
		t.Fatal("a failed start left the home locked")
	}
}

func TestStoreLockedIsClear(t *testing.T) {
	home := node.Home{Dir: filepath.Join(t.TempDir(), "home")}
	if _, err := node.Init(home, loopbackConfig(), false); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(home.DataPath(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg, _ := node.LoadConfig(home.ConfigPath())
	n, _ := node.New(home, cfg, node.Options{})
	if err := n.Start(context.Background()); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("start with a held store: %v, want ErrLocked", err)
	}
}

func inProcess(t *testing.T, n testnet.Node) *node.Node {
	t.Helper()
	return n.(testnet.InProcessNode).Node
}

// Two nodes that know only the bootstrap node find each other through the DHT.
func TestTwoNodesFindEachOtherThroughBootstrap(t *testing.T) {
	tn := localnet.Start(t, testnet.Spec{Network: "findnet", Bootstraps: 1, Miners: 2}, nil)
	boot, a, b := inProcess(t, tn.Nodes()[0]), inProcess(t, tn.Nodes()[1]), inProcess(t, tn.Nodes()[2])
	// Healthy means connected to the bootstrap: its routing table may not
	// hold b yet, nor a's the bootstrap.
	testkit.Eventually(t, "the bootstrap's routing table to hold b", 20*time.Second, func() bool {
		return boot.Host().DHT.RoutingTable().Find(b.ID()) != "" && a.Host().DHT.RoutingTable().Find(boot.ID()) != ""
	})

	// Forget b entirely, so that only the DHT can tell a where it is.
	a.Host().DHT.RoutingTable().RemovePeer(b.ID())
	a.Host().Network().ClosePeer(b.ID())
	a.Host().Peerstore().ClearAddrs(b.ID())
	a.Host().Peerstore().RemovePeer(b.ID())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := a.Host().DHT.FindPeer(ctx, b.ID())
	if err != nil {
		t.Fatalf("find %s through the DHT: %v", b.ID(), err)
	}
	if err := a.Host().Connect(ctx, info); err != nil {
		t.Fatalf("dial found addresses %v: %v", info.Addrs, err)
	}
	if a.Host().Network().Connectedness(b.ID()) != network.Connected {
		t.Fatal("not connected after dialling")
	}
}

// Twenty nodes form one DHT: a value put by one node is found from every other.
func TestTwentyNodesFormOneDHT(t *testing.T) {
	if testing.Short() {
		t.Skip("20 nodes")
	}
	tn := localnet.Start(t, testnet.Spec{Network: "dht20", Bootstraps: 1, Miners: 19}, nil)
	nodes := tn.Nodes()
	if len(nodes) != 20 {
		t.Fatalf("%d nodes running", len(nodes))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Healthy means connected to a bootstrap; the DHT's tables fill a moment
	// later, and a put from an empty table fails.
	for _, n := range nodes {
		for inProcess(t, n).Host().DHT.RoutingTable().Size() == 0 {
			if ctx.Err() != nil {
				t.Fatal("a routing table stayed empty")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The "pk" namespace holds public keys under /pk/<multihash of peer ID>.
	putter := inProcess(t, nodes[7])
	pub := putter.Host().Peerstore().PubKey(putter.ID())
	raw, err := crypto.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	key := "/pk/" + string(putter.ID())
	if err := putter.Host().DHT.PutValue(ctx, key, raw); err != nil {
		t.Fatalf("put: %v", err)
	}
	for i, n := range nodes {
		if i == 7 {
			continue
		}
		got, err := inProcess(t, n).Host().DHT.GetValue(ctx, key)
		if err != nil {
			t.Fatalf("node %d: get: %v", i, err)
		}
		if string(got) != string(raw) {
			t.Fatalf("node %d: got a different value", i)
		}
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o600)
}
