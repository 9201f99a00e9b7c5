package router

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A router whose pool view knows nothing finds the miner through the DHT:
// the model's pool provider, then the miner's availability record.
func TestDiscoveryThroughDHT(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	minerDHT := newDHT(t, m.host)
	t.Cleanup(func() { minerDHT.Close() })
	key := testkit.NewKey(t)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	tr := startRouter(t, n, h, newDHT(t, h), key, t.TempDir()) // no miner known
	if err := m.host.Connect(t.Context(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "routing tables", 5*time.Second, func() bool {
		return minerDHT.RoutingTable().Size() > 0 && tr.d.DHT.RoutingTable().Size() > 0
	})
	if err := minerDHT.PutValue(t.Context(), protocol.AvailabilityKey([]byte(m.id)), m.available().Raw); err != nil {
		t.Fatal(err)
	}
	if err := minerDHT.Provide(t.Context(), protocol.PoolCID(testNetwork, "m1"), true); err != nil {
		t.Fatal(err)
	}
	if len(tr.pool.Available("m1")) != 0 {
		t.Fatal("the pool view knew the miner already")
	}
	res, err := tr.Reserve(t.Context(), "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Miner != m.id.String() {
		t.Fatalf("reserved %s", res.Miner)
	}
}

func TestOrderPrefersTheBetterOfTwo(t *testing.T) {
	good, bad := pool.Miner{ID: "good"}, pool.Miner{ID: "bad"}
	score := func(id peer.ID) float64 {
		if id == "good" {
			return 1
		}
		return 0.1
	}
	for range 50 {
		got := order([]pool.Miner{bad, good}, score)
		if len(got) != 2 || got[0].ID != "good" {
			t.Fatalf("order %v", got)
		}
	}
	// With many, every candidate is kept, and the worst is never first.
	var many []pool.Miner
	for i := range 10 {
		many = append(many, pool.Miner{ID: peer.ID(fmt.Sprint(i))})
	}
	byIndex := func(id peer.ID) float64 { return float64(id[0]) }
	for range 50 {
		got := order(many, byIndex)
		if len(got) != 10 || got[0].ID == "0" {
			t.Fatalf("order %v", got)
		}
	}
}

// A miner whose only connection is relayed, with less left under the
// relay's limit than the lease, is passed over for another; with no other,
// the reservation fails saying why.
func TestRelayLimitPassesOver(t *testing.T) {
	n := newTestNet(t)
	relayed, direct := newFakeMiner(t, n), newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), relayed, direct)
	tr.d.RelayLeft = func(p peer.ID) (time.Duration, bool) {
		if p == relayed.id {
			return 500 * time.Millisecond, true // the default test lease is 2 s
		}
		return 0, false
	}
	res, err := tr.Reserve(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Miner != direct.id.String() {
		t.Fatalf("reserved %s, want the directly reached miner %s", res.Miner, direct.id)
	}
	_, err = tr.Reserve(t.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), "relay whose limit ends the connection") {
		t.Fatalf("second reserve: %v, want ErrNoMiner naming the relay's limit", err)
	}
	if state, _, _, _ := relayed.snapshot(); state == pb.MinerState_RESERVED {
		t.Fatal("the relayed miner was claimed anyway")
	}
}
