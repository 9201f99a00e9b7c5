package miner

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// other is another miner of r's pool view, available at generation 0 with
// a quorum of passes, as gossip would have brought it.
func (r *rig) other(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k := testkit.NewKey(t)
	id := testkit.ID(t, k)
	atts := r.net.Passes(t, id, 0)
	for _, a := range atts {
		if _, err := r.pool.AddAttestation(testkit.Open[pb.Attestation](t, a)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	rec := testkit.Signed(t, &pb.Availability{
		Network: testNet, Miner: []byte(id), Seq: 1, State: pb.MinerState_AVAILABLE, Generation: 0, Attestations: atts,
		Models: []string{inference.BuiltinModel}, IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(time.Minute)),
	}, k)
	if err := r.pool.AddAvailability(rec); err != nil {
		t.Fatal(err)
	}
	return k, id
}

// grantSeen hands r's pool the grant of miner k to router at generation 0.
func (r *rig) grantSeen(t *testing.T, k, router crypto.PrivKey) {
	t.Helper()
	r.grantSeenAt(t, k, router, time.Now().Add(time.Minute-r.net.check.Params.Lease.Std()), r.net.check.Params.Lease.Std())
}

// grantSeenAt is grantSeen of a grant issued at issued, for lease.
func (r *rig) grantSeenAt(t *testing.T, k, router crypto.PrivKey, issued time.Time, lease time.Duration) {
	t.Helper()
	id := testkit.ID(t, k)
	claim := r.claim(t, claimOpts{router: router, miner: id, gen: 0, session: "s-" + id.String(), leaseMs: uint32(lease.Milliseconds())})
	g := testkit.Signed(t, &pb.Grant{
		Network: testNet, Miner: []byte(id), Router: []byte(testkit.ID(t, router)), Session: "s-" + id.String(),
		LeaseEndMs: protocol.Ms(issued.Add(lease)), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}, k)
	if _, err := r.pool.AddGrant(g); err != nil {
		t.Fatal(err)
	}
}

// The hoarding attack: one router claims every miner it can. In a pool of
// five, at max_router_share 0.5, it holds at most three; the miner refuses
// it a fourth and grants an honest router's claim. Identities that merely
// sign records do not count toward the pool.
func TestRouterShare(t *testing.T) {
	t.Parallel()
	r := shareRig(t)
	hoarder, honest := testkit.NewKey(t), testkit.NewKey(t)
	var others []crypto.PrivKey
	for range 4 {
		k, _ := r.other(t)
		others = append(others, k)
	}
	// Throwaway identities saying they are validating or reserved, with no passes.
	for _, st := range []pb.MinerState{pb.MinerState_VALIDATING, pb.MinerState_RESERVED, pb.MinerState_RESERVED} {
		k := testkit.NewKey(t)
		now := time.Now()
		if err := r.pool.AddAvailability(testkit.Signed(t, &pb.Availability{
			Network: testNet, Miner: []byte(testkit.ID(t, k)), Seq: 1, State: st, Models: []string{inference.BuiltinModel},
			IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(time.Minute)),
		}, k)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range others[:3] {
		r.grantSeen(t, k, hoarder)
	}

	rep := r.claimDirect(t, r.claim(t, claimOpts{router: hoarder, gen: 0}))
	wantRefusal(t, rep, pb.RefusalReason_BUSY)
	if d := rep.refusal.Msg.Detail; !strings.Contains(d, "router holds 3 of the pool's 5 miners; one router may hold 3") {
		t.Errorf("refusal detail %q", d)
	}
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: honest, gen: 0})))
}

// A router that got more than its share, in a burst of claims faster than
// gossip, cannot renew until it is back within it.
func TestRouterOverShareCannotRenew(t *testing.T) {
	t.Parallel()
	r := shareRig(t)
	hoarder := testkit.NewKey(t)
	var others []crypto.PrivKey
	for range 4 {
		k, _ := r.other(t)
		others = append(others, k)
	}
	for _, k := range others[:2] {
		r.grantSeen(t, k, hoarder)
	}
	// Two of five held: a third is within the limit of three.
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: hoarder, gen: 0, session: "s", leaseMs: 1000})))
	renew := func() *pb.Receipt {
		req := r.renew(t, hoarder, "s", 0, 1000)
		raw, err := r.m.renew(req)
		if err != nil {
			t.Fatal(err)
		}
		return r.openReceipt(t, raw, req)
	}
	if rc := renew(); !rc.Ok {
		t.Fatalf("renewal within the share refused: %s", rc.Detail)
	}
	// A fourth, granted by a miner that had not yet seen the others.
	r.grantSeen(t, others[2], hoarder)
	rc := renew()
	if rc.Ok || !strings.Contains(rc.Detail, fmt.Sprintf("router holds %d of the pool's %d miners; one router may hold %d", 4, 5, 3)) {
		t.Fatalf("renewal over the share: ok=%v %q", rc.Ok, rc.Detail)
	}
	// One of them released: back within its share.
	id := testkit.ID(t, others[2])
	rel := testkit.Signed(t, &pb.Release{
		Network: testNet, Session: "s-" + id.String(), Signer: []byte(testkit.ID(t, hoarder)), Miner: []byte(id),
		Router: []byte(testkit.ID(t, hoarder)), Outcome: pb.Outcome_COMPLETED, IssuedMs: protocol.Ms(time.Now()),
	}, hoarder)
	if err := r.pool.AddRelease(rel); err != nil {
		t.Fatal(err)
	}
	if rc := renew(); !rc.Ok {
		t.Fatalf("renewal back within the share refused: %s", rc.Detail)
	}
}

// A router that got more than its share in a burst, faster than gossip:
// five miners granted it at once where three is its limit. Each miner
// ranks the router's grants it holds by issue time; the one whose grant
// ranks fourth ends its reservation within seconds, as a lease end (the
// next generation, validating again), and the one whose grant ranks first
// keeps it. The leases are long, so no expiry can pass for an eviction.
func TestRouterOverShareEvicted(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	n.check.Params.RouterShareFloor = 1
	n.check.Params.LeaseMax = duration.Duration(time.Hour)
	const lease = 30 * time.Minute
	hoarder := testkit.NewKey(t)
	burst := func(ranked int) *rig {
		r := openRig(t, n, testkit.NewKey(t), t.TempDir())
		r.start(t)
		r.makeAvailable(t, 0)
		var others []crypto.PrivKey
		for range 4 {
			k, _ := r.other(t)
			others = append(others, k)
		}
		wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: hoarder, gen: 0, session: "s", leaseMs: uint32(lease.Milliseconds())})))
		// The other grants of the burst arrive after it: ranked-1 of them
		// issued before this miner's grant, the rest after.
		issued := time.UnixMilli(protocol.GrantIssuedMs(testkit.Open[pb.Grant](t, r.m.State().Grant).Msg))
		for i, k := range others[:3] {
			at := issued.Add(time.Duration(i+1) * time.Millisecond)
			if i < ranked-1 {
				at = issued.Add(-time.Duration(i+1) * time.Millisecond)
			}
			r.grantSeenAt(t, k, hoarder, at, lease)
		}
		return r
	}
	late, early := burst(4), burst(1)

	testkit.Eventually(t, "the miner ranked fourth ends its reservation", 20*time.Second, func() bool {
		s := late.m.State()
		return s.State == pb.MinerState_VALIDATING && s.Generation == 1
	})
	if got := late.m.Evictions(); got != 1 {
		t.Errorf("evictions: %d, want 1", got)
	}
	// No release goes out: one signed by the miner before its lease end is
	// rejected on gossip. The record of the next generation ends the hold.
	if rec := late.waitRecord(t); rec.Msg.State != pb.MinerState_VALIDATING || rec.Msg.Generation != 1 {
		t.Errorf("record after the eviction: %s at generation %d", rec.Msg.State, rec.Msg.Generation)
	}
	if n := len(late.res.All()); n != 1 { // its grant only
		t.Errorf("%d messages on the reservations topic, want the grant only", n)
	}
	// The first-ranked miner judges too, and keeps its reservation.
	since := early.m.State().Since
	testkit.Eventually(t, "the miner ranked first judges its router's share", 20*time.Second, func() bool {
		early.m.mu.Lock()
		defer early.m.mu.Unlock()
		return early.m.share.checked.Sub(since) >= shareGrace
	})
	if s := early.m.State(); s.State != pb.MinerState_RESERVED || s.Generation != 0 || early.m.Evictions() != 0 {
		t.Fatalf("the miner within the limit: %s at generation %d, %d evictions", s.State, s.Generation, early.m.Evictions())
	}
}

// shareRig is an available miner on a network whose routers may hold half
// the pool, with no floor.
func shareRig(t *testing.T) *rig {
	t.Helper()
	n := newNetwork(t)
	n.check.Params.RouterShareFloor = 1
	r := openRig(t, n, testkit.NewKey(t), t.TempDir())
	r.start(t)
	r.makeAvailable(t, 0)
	return r
}
