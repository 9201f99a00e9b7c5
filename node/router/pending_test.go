package router

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// pendingClaim seals a claim for m as claim() does and stores it under
// pend/<id> in the store in dir, as claim() does before the claim leaves.
// The store is closed again: the router that wrote it is gone.
func pendingClaim(t *testing.T, n *testNet, key crypto.PrivKey, dir string, m *fakeMiner, gen uint64, userSession string) (string, []byte) {
	t.Helper()
	self := testkit.ID(t, key)
	session, _ := randomBytes(16)
	nonce, _ := randomBytes(16)
	lease := n.Params.Lease.Std()
	cl := &pb.Claim{
		Network: testNetwork, Session: hex.EncodeToString(session), Router: []byte(self), Miner: []byte(m.id),
		Generation: gen, LeaseMs: uint32(lease.Milliseconds()), Nonce: nonce,
		ExpiresMs: protocol.Ms(time.Now().Add(n.Params.ClaimLifetime.Std())), Model: "m1",
	}
	env := testkit.Seal(t, cl, key)
	b, err := json.Marshal(pending{Claim: env, Miner: m.id.String(), Session: userSession, Model: "m1", LeaseMs: lease.Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	s := testkit.Store(t, dir)
	if err := s.Put(pendKey(cl.Session), b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return cl.Session, env
}

// sendDirect hands a request to the fake miner as if it had come over the
// reserve protocol, and returns the miner's reply.
func (m *fakeMiner) sendDirect(t *testing.T, raw []byte) []byte {
	t.Helper()
	_, reply, err := m.request(raw)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// restartRouter starts a router with key over the store in dir whose host
// knows the miner's address from the start, as its first settle needs.
func restartRouter(t *testing.T, n *testNet, key crypto.PrivKey, dir string, m *fakeMiner) *testRouter {
	t.Helper()
	h := testkit.Host(t, key)
	testkit.Know(h, m.host)
	return startRouter(t, n, h, nil, key, dir, m)
}

func (tr *testRouter) hasPending(t *testing.T, id string) bool {
	t.Helper()
	_, err := tr.store.Get(pendKey(id))
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		return false
	}
	t.Fatal(err)
	return false
}

// A router that died after the miner granted its claim but before it
// stored the grant finds the claim on restart, learns the grant by sending
// the claim again, and releases the reservation nobody holds any more.
func TestSettleReleasesLostGrant(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	key, dir := testkit.NewKey(t), t.TempDir()
	id, claim := pendingClaim(t, n, key, dir, m, 1, "user-1")
	grant := m.sendDirect(t, claim)
	if g, err := protocol.Open[pb.Grant](grant); err != nil || g.Msg.Session != id {
		t.Fatalf("the miner did not grant the claim: %v", err)
	}
	if state, gen, session, _ := m.snapshot(); state != pb.MinerState_RESERVED || gen != 1 || session != id {
		t.Fatalf("miner is %s at %d for %q", state, gen, session)
	}

	tr := restartRouter(t, n, key, dir, m)
	testkit.Eventually(t, "the lost grant released", 5*time.Second, func() bool {
		res, ok := tr.Get(id)
		return ok && res.State == StateReleased
	})
	state, gen, _, _ := m.snapshot()
	m.mu.Lock()
	releases := m.releases
	claims := m.claims
	m.mu.Unlock()
	if state != pb.MinerState_VALIDATING || gen != 2 {
		t.Fatalf("miner is %s at %d, want validating at 2", state, gen)
	}
	if len(releases) != 1 || releases[0].Session != id || releases[0].Outcome != pb.Outcome_CANCELLED || releases[0].Generation != 1 {
		t.Fatalf("releases %v", releases)
	}
	if claims != 2 {
		t.Fatalf("the miner saw %d claims, want the original and settle's", claims)
	}
	res, _ := tr.Get(id)
	if res.Session != "user-1" || res.Miner != m.id.String() || res.Generation != 1 || res.Detail != "" {
		t.Fatalf("reservation %+v", res)
	}
	if tr.hasPending(t, id) {
		t.Fatal("the settled claim is still pending")
	}
	if s := tr.stored(t)[id]; s.State != StateReleased {
		t.Fatalf("stored %+v", s)
	}
}

// pendingIDs lists the claims the router's store holds as pending.
func (tr *testRouter) pendingIDs(t *testing.T) []string {
	t.Helper()
	var ids []string
	err := tr.store.Scan([]byte("pend/"), func(k, _ []byte) error {
		ids = append(ids, string(k[len("pend/"):]))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A claim is pending only while its outcome is unknown: a granted claim
// leaves its reservation and no claim, a refused one nothing, and one
// whose miner cannot be reached its claim, for settle.
func TestClaimLeavesPendingOnlyWhenUnsettled(t *testing.T) {
	n := newTestNet(t)
	m, gone := newFakeMiner(t, n), newFakeMiner(t, n)
	tr := newRouter(t, n, m)
	res := tr.reserve(t, "", 0)
	if ids := tr.pendingIDs(t); len(ids) != 0 {
		t.Fatalf("pending after a grant: %v", ids)
	}
	if s, ok := tr.stored(t)[res.ID]; !ok || s.State != StateActive {
		t.Fatalf("stored %+v", s)
	}
	// Refused: another router's view still says available.
	other := newRouter(t, n, m)
	if _, err := other.Reserve(t.Context(), "", 0); !errors.Is(err, ErrNoMiner) {
		t.Fatalf("claim of a reserved miner: %v", err)
	}
	// A refusal's record goes at the next settle, with the others refused
	// by then, in one write.
	if ids := other.pendingIDs(t); len(ids) != 1 {
		t.Fatalf("pending after a refusal, before settle: %v", ids)
	}
	other.settle(t.Context())
	if ids := other.pendingIDs(t); len(ids) != 0 {
		t.Fatalf("pending after a refusal and a settle: %v", ids)
	}
	// Unreachable: the pool view lists a miner that is gone.
	gone.host.Close()
	third := newRouter(t, n, gone)
	if _, err := third.Reserve(t.Context(), "", 0); !errors.Is(err, ErrNoMiner) {
		t.Fatalf("claim of an unreachable miner: %v", err)
	}
	ids := third.pendingIDs(t)
	if len(ids) != 1 || len(third.stored(t)) != 0 {
		t.Fatalf("after an unreachable claim: pending %v, stored %v", ids, third.stored(t))
	}
	var p pending
	raw, err := third.store.Get(pendKey(ids[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &p); err != nil || p.Miner != gone.id.String() || p.LeaseMs != n.Params.Lease.Std().Milliseconds() {
		t.Fatalf("pending %+v: %v", p, err)
	}
	if c, err := protocol.Open[pb.Claim](p.Claim); err != nil || c.Msg.Session != ids[0] || c.Signer != third.host.ID() {
		t.Fatalf("pending claim: %v", err)
	}
}

// A pending claim the miner refuses left it holding nothing: it is dropped.
func TestSettleDropsRefusedClaim(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	key, dir := testkit.NewKey(t), t.TempDir()
	// The claim never reached the miner, which has since moved on a
	// generation: it refuses the claim when settle sends it.
	id, _ := pendingClaim(t, n, key, dir, m, 1, "")
	m.mu.Lock()
	m.gen = 2
	m.record = m.makeRecord()
	m.mu.Unlock()

	tr := restartRouter(t, n, key, dir, m)
	testkit.Eventually(t, "the refused claim dropped", 5*time.Second, func() bool { return !tr.hasPending(t, id) })
	m.mu.Lock()
	claims, grants := m.claims, len(m.grants)
	m.mu.Unlock()
	if claims != 1 || grants != 0 {
		t.Fatalf("%d claims, %d grants", claims, grants)
	}
	if _, ok := tr.Get(id); ok || len(tr.stored(t)) != 0 {
		t.Fatal("a refused claim left a reservation")
	}
	if state, gen, _, _ := m.snapshot(); state != pb.MinerState_AVAILABLE || gen != 2 {
		t.Fatalf("miner is %s at %d", state, gen)
	}
}

// A pending claim to a miner that cannot be reached may have been granted:
// it is kept, and sent again, until the claim's expiry and the longest
// lease have passed; then no grant of it can hold the miner any more.
func TestSettleKeepsUnreachableClaimUntilLeaseMax(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	key, dir := testkit.NewKey(t), t.TempDir()
	id, claim := pendingClaim(t, n, key, dir, m, 1, "")
	c, err := protocol.Open[pb.Claim](claim)
	if err != nil {
		t.Fatal(err)
	}
	m.host.Close() // the miner is gone

	clk := testkit.NewClock(time.Now())
	check := n.check
	check.Now = clk.Now
	tr := newStoppedRouter(t, check, key, dir)
	testkit.Know(tr.host, m.host)
	ctx := t.Context()

	tr.settle(ctx)
	if !tr.hasPending(t, id) {
		t.Fatal("an unreachable claim was dropped at once")
	}
	limit := protocol.Time(c.Msg.ExpiresMs).Add(n.Params.LeaseMax.Std())
	clk.Set(limit.Add(-time.Second))
	tr.settle(ctx)
	if !tr.hasPending(t, id) {
		t.Fatal("an unreachable claim was dropped before its expiry and the longest lease had passed")
	}
	clk.Set(limit.Add(time.Millisecond))
	tr.settle(ctx)
	if tr.hasPending(t, id) {
		t.Fatal("an unreachable claim is kept past its expiry and the longest lease")
	}
	if len(tr.Reservations()) != 0 {
		t.Fatal("an unreachable claim left a reservation")
	}
}

// newStoppedRouter is a router over the store in dir that is not started:
// the test drives settle itself.
func newStoppedRouter(t *testing.T, check protocol.Checker, key crypto.PrivKey, dir string) *testRouter {
	t.Helper()
	h := testkit.Host(t, key)
	s := testkit.Store(t, dir)
	p, err := pool.New(s, check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Deps{Network: testNetwork, Check: check, Host: h, Key: key, Store: s, Pool: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop(context.Background()) })
	return &testRouter{Router: r, key: key, host: h, store: s, pool: p}
}

// settle may have read a pending claim just before the Reserve that sent it
// stored the grant: it must leave that reservation alone, whether the claim's
// record is already gone or, as a store written by an older router may
// hold, still there beside the reservation.
func TestSettleLeavesSettledClaimAlone(t *testing.T) {
	_, m, tr := newPair(t)
	res := tr.reserve(t, "", 0)
	stale := pending{Claim: []byte("read before the grant was stored"), Miner: m.id.String(), LeaseMs: 30000}
	if err := tr.settleOne(t.Context(), res.ID, stale); err != nil {
		t.Fatalf("settle of a settled claim: %v", err)
	}
	b, err := json.Marshal(stale)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.store.Put(pendKey(res.ID), b); err != nil {
		t.Fatal(err)
	}
	if err := tr.settleOne(t.Context(), res.ID, stale); err != nil {
		t.Fatalf("settle of a claim stored beside its reservation: %v", err)
	}
	if got, ok := tr.Get(res.ID); !ok || got.State != StateActive {
		t.Fatalf("reservation after settle: %+v", got)
	}
	if ids := tr.pendingIDs(t); len(ids) != 0 {
		t.Fatalf("pending after settle: %v", ids)
	}
}
