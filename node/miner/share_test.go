package miner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// eviction is oracle i's eviction of r's current reservation, signed by
// signer (the oracle itself unless set), as edit changes it.
func (r *rig) eviction(t *testing.T, i int, signer crypto.PrivKey, edit func(*pb.Eviction)) []byte {
	t.Helper()
	s := r.m.State()
	if signer == nil {
		signer = r.net.Keys[i]
	}
	e := &pb.Eviction{
		Network: testNet, Oracle: []byte(testkit.ID(t, r.net.Keys[i])), Miner: []byte(r.id),
		Generation: s.Generation, ClaimDigest: s.ClaimDigest, Router: []byte(s.Router),
		Held: 4, Pool: 5, Limit: uint32(r.net.check.Params.RouterLimit(5)), Rank: 4, IssuedMs: protocol.Ms(time.Now()),
	}
	if edit != nil {
		edit(e)
	}
	return testkit.Signed(t, e, signer).Raw
}

// shareRig is a miner reserved by router with a long lease, on a network
// whose routers may hold half the pool with no floor.
func shareRig(t *testing.T, router crypto.PrivKey) *rig {
	t.Helper()
	n := newNetwork(t)
	n.check.Params.RouterShareFloor = 1
	n.check.Params.LeaseMax = duration.Duration(time.Hour)
	r := openRig(t, n, testkit.NewKey(t), t.TempDir())
	r.start(t)
	r.makeAvailable(t, 0)
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: uint32(time.Hour.Milliseconds())})))
	return r
}

// A router that got more than its share: a quorum of oracles evicts this
// miner, which ends the reservation as a lease end would (the next
// generation, validating again), and then refuses that router's claims
// while it grants another's. One oracle alone, even twice, ends nothing.
func TestEvictionByQuorum(t *testing.T) {
	t.Parallel()
	hoarder, honest := testkit.NewKey(t), testkit.NewKey(t)
	r := shareRig(t, hoarder)
	oracle := func(i int) peer.ID { return testkit.ID(t, r.net.Keys[i]) }

	for range 2 {
		if err := r.m.notice(r.eviction(t, 0, nil, nil), oracle(0)); err != nil {
			t.Fatal(err)
		}
	}
	if s := r.m.State(); s.State != pb.MinerState_RESERVED || r.m.Evictions() != 0 {
		t.Fatalf("after one oracle's eviction: %s, %d evictions", s.State, r.m.Evictions())
	}
	if err := r.m.notice(r.eviction(t, 1, nil, nil), oracle(1)); err != nil {
		t.Fatal(err)
	}
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 1 || r.m.Evictions() != 1 {
		t.Fatalf("after a quorum of evictions: %s at generation %d, %d evictions", s.State, s.Generation, r.m.Evictions())
	}
	// No release goes out: one signed by the miner before its lease end is
	// rejected on gossip. The record of the next generation ends the hold.
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_VALIDATING || rec.Msg.Generation != 1 {
		t.Errorf("record after the eviction: %s at generation %d", rec.Msg.State, rec.Msg.Generation)
	}
	if n := len(r.res.All()); n != 1 {
		t.Errorf("%d messages on the reservations topic, want the grant only", n)
	}

	r.makeAvailable(t, 1)
	rep := r.claimDirect(t, r.claim(t, claimOpts{router: hoarder, gen: 1}))
	wantRefusal(t, rep, pb.RefusalReason_BUSY)
	if d := rep.refusal.Msg.Detail; !strings.Contains(d, "oracles judged this router over its share") {
		t.Errorf("refusal detail %q", d)
	}
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: honest, gen: 1})))
}

// What a miner refuses of the notices about it: an eviction signed by no
// oracle, relayed by a peer that did not sign it, about another
// reservation, or whose numbers say the grant is within its limit; and an
// attestation about another miner.
func TestNoticesRefused(t *testing.T) {
	t.Parallel()
	r := shareRig(t, testkit.NewKey(t))
	oracle0 := testkit.ID(t, r.net.Keys[0])
	outsider := testkit.NewKey(t)
	for _, c := range []struct {
		name   string
		raw    []byte
		from   peer.ID
		reject bool // a protocol rejection, not merely ignored
	}{
		{"signed by a non-oracle", r.eviction(t, 0, outsider, func(e *pb.Eviction) { e.Oracle = []byte(testkit.ID(t, outsider)) }), testkit.ID(t, outsider), true},
		{"relayed", r.eviction(t, 0, nil, nil), testkit.ID(t, r.net.Keys[1]), false},
		{"another reservation", r.eviction(t, 0, nil, func(e *pb.Eviction) { e.ClaimDigest = make([]byte, 32) }), oracle0, false},
		{"within the limit", r.eviction(t, 0, nil, func(e *pb.Eviction) { e.Rank = e.Limit }), oracle0, true},
		{"a wrong limit", r.eviction(t, 0, nil, func(e *pb.Eviction) { e.Limit, e.Held, e.Rank = 1, 4, 4 }), oracle0, true},
		{"stale", r.eviction(t, 0, nil, func(e *pb.Eviction) { e.IssuedMs = protocol.Ms(time.Now().Add(-time.Hour)) }), oracle0, false},
		{"attestation about another miner", r.net.Verdict(t, 0, testkit.ID(t, outsider), 0, 1, true, time.Minute), oracle0, false},
		{"not a notice", testkit.Signed(t, &pb.Renew{Network: testNet}, r.net.Keys[0]).Raw, oracle0, false},
	} {
		err := r.m.notice(c.raw, c.from)
		if err == nil {
			t.Errorf("%s: taken", c.name)
		} else if c.reject && !errors.Is(err, protocol.ErrReject) {
			t.Errorf("%s: %v, want a rejection", c.name, err)
		}
	}
	for i := range 2 { // a quorum of the refused kind changes nothing
		_ = r.m.notice(r.eviction(t, i, nil, func(e *pb.Eviction) { e.ClaimDigest = make([]byte, 32) }), testkit.ID(t, r.net.Keys[i]))
	}
	if s := r.m.State(); s.State != pb.MinerState_RESERVED || r.m.Evictions() != 0 {
		t.Fatalf("after refused notices: %s, %d evictions", s.State, r.m.Evictions())
	}
}

// Oracles send a miner its verdicts on the notice protocol, from their own
// hosts; a peer outside the oracle set gets its stream reset unread.
func TestNoticeStream(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(t)
	round := r.net.check.Params.RoundAt(time.Now())
	send := func(key crypto.PrivKey, raw []byte) error {
		h := testkit.Host(t, key)
		h.Peerstore().AddAddrs(r.id, r.host.Addrs(), time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, _, err := protocol.Send(ctx, h, r.id, protocol.NoticeProtocol(testNet), raw)
		if err != nil {
			return err
		}
		return s.Close()
	}
	outsider := testkit.NewKey(t)
	if err := send(outsider, r.net.Verdict(t, 0, r.id, 0, round, true, time.Minute)); err != nil {
		t.Logf("outsider: %v", err) // reset, perhaps before the write returns
	}
	for i := range 2 {
		if err := send(r.net.Keys[i], r.net.Verdict(t, i, r.id, 0, round, true, time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, r.m, pb.MinerState_AVAILABLE, 0)
	if n := len(r.pool.Attestations(r.id, 0)); n != 2 {
		t.Errorf("%d attestations held, want the oracles' two", n)
	}
}
