package router

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	routedhost "github.com/libp2p/go-libp2p/p2p/host/routed"
)

func TestForgedGrantRejected(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.forgeKey = testkit.NewKey(t)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	_, err := tr.Reserve(t.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), "signed by") {
		t.Fatalf("forged grant: %v, want ErrNoMiner", err)
	}
	if len(tr.Reservations()) != 0 || len(tr.stored(t)) != 0 {
		t.Fatal("a forged grant was kept")
	}
}

func TestGrantForAnotherClaimRejected(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.autoAvailable = true
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED); err != nil {
		t.Fatal(err)
	}
	tr.know(t, m)
	m.mu.Lock()
	m.replay = res.Grant // a validly signed grant, but for the old claim
	m.mu.Unlock()
	_, err = tr.Reserve(t.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), "another claim") {
		t.Fatalf("replayed grant: %v", err)
	}
	if len(tr.Reservations()) != 1 {
		t.Fatal("a replayed grant was kept")
	}
}

func TestLostGrantIsAskedForAgain(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.dropReplies = 1
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claims != 2 || len(m.grants) != 1 || !bytes.Equal(m.grants[0], res.Grant) {
		t.Fatalf("%d claims, %d grants", m.claims, len(m.grants))
	}
}

// A miner whose addresses the router has never seen is still reached: the
// host a router is given routes, and looks them up in the DHT, here on a
// third node the miner is connected to. The miner serves no DHT, so the
// router cannot learn of it any other way.
func TestMinerOfUnknownAddressesIsDialled(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	boot, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { boot.Close() })
	bootDHT := newDHT(t, boot)
	t.Cleanup(func() { bootDHT.Close() })
	key := testkit.NewKey(t)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	kad := newDHT(t, h)
	tr := startRouter(t, n, routedhost.Wrap(h, kad), kad, key, t.TempDir())
	for _, p := range []host.Host{m.host, h} {
		if err := p.Connect(t.Context(), peer.AddrInfo{ID: boot.ID(), Addrs: boot.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "the router's routing table", 5*time.Second, func() bool { return kad.RoutingTable().Size() > 0 })
	if err := tr.pool.AddAvailability(m.available()); err != nil {
		t.Fatal(err)
	}
	if len(h.Peerstore().Addrs(m.id)) != 0 {
		t.Fatal("the router knew the miner's addresses already")
	}

	res, err := tr.Reserve(t.Context(), "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Miner != m.id.String() {
		t.Fatalf("reserved %s", res.Miner)
	}
}
