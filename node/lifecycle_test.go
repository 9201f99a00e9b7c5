package node_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// poolView is a node's GET /v1/pool answer.
type poolView []api.PoolMiner

func (v poolView) Count(state string) int {
	n := 0
	for _, m := range v {
		if m.State == state {
			n++
		}
	}
	return n
}

func (v poolView) Find(id string) (api.PoolMiner, bool) {
	for _, m := range v {
		if m.PeerID == id {
			return m, true
		}
	}
	return api.PoolMiner{}, false
}

func (v poolView) String() string {
	s := ""
	for _, m := range v {
		s += fmt.Sprintf("\n  %s %s gen %d oracles %d", m.PeerID, m.State, m.Generation, len(m.Oracles))
	}
	return s
}

// waitPool polls n's pool view until cond holds for every miner in want.
func waitPool(t *testing.T, n *node.Node, what string, timeout time.Duration, cond func(poolView) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond(poolView(n.Pool())) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; pool: %s", what, poolView(n.Pool()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The whole lifecycle across real nodes: every miner validated and
// available; reservations from two routers racing never book a miner twice;
// a released miner is back only after revalidation at the next generation.
func TestLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("16 nodes")
	}
	tn := localnet.Start(t, testnet.Spec{Network: "life", Bootstraps: 1, Oracles: 3, Miners: 10, Routers: 2}, nil)
	miners, routers := localnet.WithRole(tn, node.RoleMiner), localnet.WithRole(tn, node.RoleRouter)
	observer := routers[0]

	for _, r := range routers { // both routers pick from their own view
		waitPool(t, r, "10 available miners", 60*time.Second, func(v poolView) bool {
			return v.Count("available") == 10
		})
	}
	for _, m := range miners {
		if s := m.MinerState(); s.State != pb.MinerState_AVAILABLE || s.Generation != 0 {
			t.Fatalf("miner %s: %s at generation %d", m.ID(), s.State, s.Generation)
		}
	}

	// 100 concurrent claims from two routers over 10 miners.
	var (
		mu      sync.Mutex
		granted = map[string]int{}
		wg      sync.WaitGroup
	)
	for i := range 100 {
		r := routers[i%2].Router()
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := r.Reserve(ctx, "", time.Minute)
			if err != nil {
				return // no miner left: expected for 90 of them
			}
			mu.Lock()
			granted[fmt.Sprintf("%s/%d", res.Miner, res.Generation)]++
			mu.Unlock()
		})
	}
	wg.Wait()
	for k, n := range granted {
		if n != 1 {
			t.Fatalf("%s granted %d times", k, n)
		}
	}
	// A grant that came back after its caller gave up is settled by its
	// router (PROTOCOL §8): what the two routers hold is the whole truth.
	held := func() map[string]int {
		out := map[string]int{}
		for _, rn := range routers {
			for _, res := range rn.Router().Reservations() {
				if res.State == "active" {
					out[fmt.Sprintf("%s/%d", res.Miner, res.Generation)]++
				}
			}
		}
		return out
	}
	testkit.Eventually(t, "every miner reserved once by the two routers", 30*time.Second, func() bool { return len(held()) == 10 })
	for k, n := range held() {
		if n != 1 {
			t.Fatalf("%s is held by %d reservations", k, n)
		}
	}
	// A router whose claims outran gossip and got more than its share (5
	// of 10) loses the excess within seconds: those miners move on to
	// generation 1 (PROTOCOL §8, router over its share), and their router
	// learns of it only when it next renews.
	waitPool(t, observer, "10 miners reserved, or ended over their router's share", 20*time.Second, func(v poolView) bool {
		n := 0
		for _, m := range v {
			if (m.State == "reserved" && m.Generation == 0) || m.Generation == 1 {
				n++
			}
		}
		return n == 10
	})

	// Release one: it must be validated again before it is available, at
	// generation 1. Of the router that holds fewer, so that it is within its
	// share and may claim again, and none of its grants was ended.
	active := func(r *router.Router) (out []router.Reservation) {
		for _, res := range r.Reservations() {
			if res.State == "active" {
				out = append(out, res)
			}
		}
		return out
	}
	r := routers[0].Router()
	if len(active(routers[1].Router())) < len(active(r)) {
		r = routers[1].Router()
	}
	if len(active(r)) == 0 {
		t.Fatal("a router holds no reservation")
	}
	released := active(r)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.Release(ctx, released.ID, pb.Outcome_COMPLETED); err != nil {
		t.Fatal(err)
	}
	minerID, _ := peer.Decode(released.Miner)
	waitPool(t, observer, "the released miner available again at generation 1", 60*time.Second, func(v poolView) bool {
		m, ok := v.Find(minerID.String())
		return ok && m.State == "available" && m.Generation == 1
	})
	// Attestations of generation 0 never count again: a claim at 0 is refused.
	if _, err := r.Reserve(ctx, "", time.Minute); err != nil {
		t.Fatalf("reserving the revalidated miner: %v", err)
	}
}

// A miner that signs two grants for one generation is caught by every node
// that follows gossip (all but the miners): its reputation drops to zero
// there and no router reserves it again.
func TestEquivocatingMinerCaughtByEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("7 nodes")
	}
	tn := localnet.Start(t, testnet.Spec{Network: "equiv", Bootstraps: 1, Oracles: 3, Miners: 2, Routers: 1}, nil)
	nodes := tn.Nodes()
	miners := localnet.WithRole(tn, node.RoleMiner)
	waitPool(t, inProcess(t, nodes[0]), "2 available miners", 60*time.Second, func(v poolView) bool {
		return v.Count("available") == 2
	})
	cheat := miners[0]
	key, err := p2p.LoadKey(cheat.Home().KeyPath())
	if err != nil {
		t.Fatal(err)
	}
	gen := cheat.MinerState().Generation
	grant := func(session string) []byte {
		rk, _, _ := crypto.GenerateEd25519Key(nil)
		rid, _ := peer.IDFromPrivateKey(rk)
		claim, err := protocol.Seal(&pb.Claim{Network: cheat.NetworkID(), Session: session, Router: []byte(rid), Miner: []byte(cheat.ID()),
			Generation: gen, LeaseMs: 30000, Nonce: []byte("0123456789abcdef"), ExpiresMs: protocol.Ms(time.Now().Add(5 * time.Second))}, rk)
		if err != nil {
			t.Fatal(err)
		}
		g, err := protocol.Seal(&pb.Grant{Network: cheat.NetworkID(), Miner: []byte(cheat.ID()), Router: []byte(rid), Session: session,
			Generation: gen, LeaseEndMs: protocol.Ms(time.Now().Add(30 * time.Second)), ClaimDigest: protocol.Digest(claim), Claim: claim}, key)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Two grants, for two sessions, entering the network at two different nodes.
	if err := inProcess(t, nodes[1]).Publish(ctx, protocol.TopicReservations, grant("session-a")); err != nil {
		t.Fatal(err)
	}
	if err := inProcess(t, nodes[len(nodes)-1]).Publish(ctx, protocol.TopicReservations, grant("session-b")); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if slices.Contains(miners, inProcess(t, n)) {
			continue // a miner follows no topic (PROTOCOL §11)
		}
		waitPool(t, inProcess(t, n), fmt.Sprintf("node %d to zero the cheat's reputation", i), 20*time.Second, func(v poolView) bool {
			m, ok := v.Find(cheat.ID().String())
			return ok && m.Reputation == 0
		})
	}
	r := localnet.WithRole(tn, node.RoleRouter)[0].Router()
	for range 2 {
		res, err := r.Reserve(ctx, "", time.Minute)
		if err == nil && res.Miner == cheat.ID().String() {
			t.Fatal("a router reserved the equivocating miner")
		}
	}
}
