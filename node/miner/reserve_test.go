package miner

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

func TestClaim(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(t)
	routerKey := testkit.NewKey(t)
	rh := testkit.Host(t, routerKey)

	// While validating.
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	rep := r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: routerKey, gen: 0})))
	wantRefusal(t, rep, pb.RefusalReason_NOT_VALIDATED)
	if rep.refusal.Msg.State != pb.MinerState_VALIDATING {
		t.Fatalf("refusal reports state %s", rep.refusal.Msg.State)
	}

	r.makeAvailable(t, 0)

	// Refusals that leave the miner available.
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 1})), pb.RefusalReason_WRONG_GENERATION)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, expires: time.Now().Add(-time.Second)})), pb.RefusalReason_EXPIRED_CLAIM)
	wantRefusal(t, r.claimDirect(t, []byte("garbage")), pb.RefusalReason_BAD_SIGNATURE)
	tampered := r.claim(t, claimOpts{router: routerKey, gen: 0})
	tampered[len(tampered)-1] ^= 0xff
	wantRefusal(t, r.claimDirect(t, tampered), pb.RefusalReason_BAD_SIGNATURE)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, miner: testkit.ID(t, testkit.NewKey(t))})), pb.RefusalReason_BAD_CLAIM)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, network: "othernet"})), pb.RefusalReason_BAD_CLAIM)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, leaseMs: 60_000})), pb.RefusalReason_BAD_CLAIM)
	rep = r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: routerKey, gen: 7})))
	wantRefusal(t, rep, pb.RefusalReason_WRONG_GENERATION)
	if s := r.m.State(); s.State != pb.MinerState_AVAILABLE {
		t.Fatalf("refusals changed the state to %s", s.State)
	}

	// The claim over a real stream wins.
	claimRaw := r.claim(t, claimOpts{router: routerKey, gen: 0, session: "session-1", leaseMs: 3000})
	before := time.Now()
	rep = r.openReply(t, reserve(t, rh, r, claimRaw))
	g := wantGrant(t, rep)
	cl, err := r.net.check.Grant(*g)
	if err != nil || !bytes.Equal(cl.Raw, claimRaw) {
		t.Fatalf("grant's claim: %v", err)
	}
	if g.Msg.Session != "session-1" || g.Msg.Generation != 0 || !bytes.Equal(g.Msg.ClaimDigest, protocol.Digest(claimRaw)) ||
		!bytes.Equal(g.Msg.Router, []byte(testkit.ID(t, routerKey))) {
		t.Fatalf("grant fields: %+v", g.Msg)
	}
	if end := protocol.Time(g.Msg.LeaseEndMs); end.Before(before.Add(2900*time.Millisecond)) || end.After(time.Now().Add(3100*time.Millisecond)) {
		t.Fatalf("lease ends at %v, want ~3s from now", end)
	}
	s := r.m.State()
	if s.State != pb.MinerState_RESERVED || s.Session != "session-1" || s.Router != testkit.ID(t, routerKey) || !bytes.Equal(s.Grant, rep.raw) {
		t.Fatalf("state after grant: %+v", s)
	}
	testkit.Eventually(t, "grant gossiped", 2*time.Second, func() bool { return r.res.Has(rep.raw) })
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_RESERVED || len(rec.Msg.Attestations) != 0 {
		t.Fatalf("record: %s with %d attestations", rec.Msg.State, len(rec.Msg.Attestations))
	}

	// Idempotent: the same envelope again, directly and over a stream.
	if again := r.claimDirect(t, claimRaw); !bytes.Equal(again.raw, rep.raw) {
		t.Fatal("the same claim got a different grant")
	}
	if again := reserve(t, rh, r, claimRaw); !bytes.Equal(again, rep.raw) {
		t.Fatal("the same claim over a stream got a different grant")
	}

	// Anyone else is refused.
	other := testkit.NewKey(t)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: other, gen: 0})), pb.RefusalReason_BUSY)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, session: "session-2"})), pb.RefusalReason_BUSY)
	wantRefusal(t, r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: other, gen: 0}))), pb.RefusalReason_BUSY)
	if s2 := r.m.State(); !bytes.Equal(s2.Grant, rep.raw) || s2.Seq != s.Seq {
		t.Fatal("refused claims changed the committed state")
	}
}

func TestReserveStreamGarbageIsReset(t *testing.T) {
	t.Parallel()
	r, rh, ctx := strangerRig(t)
	if b, err := roundTrip(ctx, rh, r.addrInfo(), protocol.ReserveProtocol(testNet), []byte("garbage")); err == nil {
		t.Fatalf("garbage got a reply of %d bytes", len(b))
	}
	// An envelope of a kind the reserve protocol does not carry.
	att := testkit.Seal(t, &pb.Evidence{Network: testNet}, r.net.Keys[0])
	if b, err := roundTrip(ctx, rh, r.addrInfo(), protocol.ReserveProtocol(testNet), att); err == nil {
		t.Fatalf("evidence got a reply of %d bytes", len(b))
	}
}

func TestConcurrentClaimsOneGrant(t *testing.T) {
	t.Parallel()
	r := availableRig(t)
	rh := testkit.Host(t, testkit.NewKey(t))
	if err := rh.Connect(context.Background(), r.addrInfo()); err != nil {
		t.Fatal(err)
	}

	const n = 50
	claims := make([][]byte, n)
	for i := range claims {
		claims[i] = r.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0, session: fmt.Sprintf("s%d", i)})
	}
	replies := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if i%2 == 0 {
				replies[i], errs[i] = r.m.Claim(claims[i])
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			replies[i], errs[i] = roundTrip(ctx, rh, r.addrInfo(), protocol.ReserveProtocol(testNet), claims[i])
		})
	}
	close(start)
	wg.Wait()

	grants, busy := 0, 0
	var winner int
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("claim %d: %v", i, errs[i])
		}
		rep := r.openReply(t, replies[i])
		switch {
		case rep.grant != nil:
			grants++
			winner = i
		case rep.refusal.Msg.Reason == pb.RefusalReason_BUSY:
			busy++
		default:
			t.Fatalf("claim %d refused %s", i, rep.refusal.Msg.Reason)
		}
	}
	if grants != 1 || busy != n-1 {
		t.Fatalf("%d grants and %d BUSY refusals, want 1 and %d", grants, busy, n-1)
	}
	s := r.m.State()
	if s.State != pb.MinerState_RESERVED || s.Session != fmt.Sprintf("s%d", winner) || !bytes.Equal(s.Grant, replies[winner]) {
		t.Fatalf("state %s session %q, winner s%d", s.State, s.Session, winner)
	}
	testkit.Eventually(t, "grant gossiped", 2*time.Second, func() bool { return r.res.Has(replies[winner]) })
	if got := len(r.res.All()); got != 1 {
		t.Fatalf("%d messages gossiped on reservations, want the one grant", got)
	}
}

func TestRenew(t *testing.T) {
	t.Parallel()
	r := availableRig(t)
	router := testkit.NewKey(t)
	rh := testkit.Host(t, router)
	g := wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 1000})))
	end0 := protocol.Time(g.Msg.LeaseEndMs)

	time.Sleep(50 * time.Millisecond)
	req := r.renew(t, router, "s", 0, 4000)
	rc := r.openReceipt(t, reserve(t, rh, r, req), req)
	if !rc.Ok {
		t.Fatalf("renew refused: %s", rc.Detail)
	}
	if end := protocol.Time(rc.LeaseEndMs); !end.After(end0.Add(2 * time.Second)) {
		t.Fatalf("lease end %v, not extended past %v", end, end0)
	}
	if s := r.m.State(); s.State != pb.MinerState_RESERVED || protocol.Ms(s.LeaseEnd) != rc.LeaseEndMs || rc.State != pb.MinerState_RESERVED {
		t.Fatalf("state %s lease %v, receipt %d", s.State, s.LeaseEnd, rc.LeaseEndMs)
	}

	// Past the original lease, it still holds.
	time.Sleep(time.Until(end0) + 400*time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("renewed reservation ended early: %s", s.State)
	}

	// Refused renewals: another router, another session, wrong generation, too long.
	endBefore := r.m.State().LeaseEnd
	other := testkit.NewKey(t)
	for name, req := range map[string][]byte{
		"other router":  r.renew(t, other, "s", 0, 4000),
		"other session": r.renew(t, router, "nope", 0, 4000),
		"wrong gen":     r.renew(t, router, "s", 1, 4000),
		"too long":      r.renew(t, router, "s", 0, 60_000),
		"zero lease":    r.renew(t, router, "s", 0, 0),
	} {
		rc := r.openReceipt(t, reserve(t, rh, r, req), req)
		if rc.Ok {
			t.Errorf("%s: renew accepted", name)
		}
	}
	if s := r.m.State(); !s.LeaseEnd.Equal(endBefore) {
		t.Fatalf("refused renewals moved the lease end from %v to %v", endBefore, s.LeaseEnd)
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	r := availableRig(t)
	router := testkit.NewKey(t)
	rh := testkit.Host(t, router)
	wantGrant(t, r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 5000}))))

	// Not the router's, or not this reservation.
	for name, req := range map[string][]byte{
		"unknown session": r.release(t, router, "nope", 0),
		"other router":    r.release(t, testkit.NewKey(t), "s", 0),
		"wrong gen":       r.release(t, router, "s", 3),
	} {
		rc := r.openReceipt(t, reserve(t, rh, r, req), req)
		if rc.Ok {
			t.Fatalf("%s: release accepted", name)
		}
		if s := r.m.State(); s.State != pb.MinerState_RESERVED {
			t.Fatalf("%s: state %s", name, s.State)
		}
	}

	req := r.release(t, router, "s", 0)
	rc := r.openReceipt(t, reserve(t, rh, r, req), req)
	if !rc.Ok || rc.State != pb.MinerState_VALIDATING || rc.Generation != 1 {
		t.Fatalf("receipt: ok %v %s gen %d (%s)", rc.Ok, rc.State, rc.Generation, rc.Detail)
	}
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 1 || s.Grant != nil || s.Session != "" {
		t.Fatalf("after release: %+v", s)
	}
	testkit.Eventually(t, "release gossiped", 2*time.Second, func() bool { return r.res.Has(req) })
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_VALIDATING || rec.Msg.Generation != 1 {
		t.Fatalf("record %s gen %d", rec.Msg.State, rec.Msg.Generation)
	}

	// The same release again: nothing left to release.
	if rc := r.openReceipt(t, reserve(t, rh, r, req), req); rc.Ok {
		t.Fatal("a second release was accepted")
	}
	if s := r.m.State(); s.Generation != 1 {
		t.Fatalf("second release moved the generation to %d", s.Generation)
	}

	// A claim of the old generation: not validated, then the wrong generation.
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	time.Sleep(300 * time.Millisecond) // generation-0 attestations are still in the pool: they must not count
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING {
		t.Fatalf("old attestations made the miner %s", s.State)
	}
	r.makeAvailable(t, 1)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0})), pb.RefusalReason_WRONG_GENERATION)
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: testkit.NewKey(t), gen: 1})))
}

func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	r := availableRig(t)
	router := testkit.NewKey(t)
	g := wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 1000})))
	end := protocol.Time(g.Msg.LeaseEndMs)
	if _, err := r.pool.AddGrant(*g); err != nil { // as gossip brings it
		t.Fatal(err)
	}

	time.Sleep(time.Until(end) - 200*time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("before the lease end: %s", s.State)
	}
	waitState(t, r.m, pb.MinerState_VALIDATING, 1)
	if time.Now().Before(end) {
		t.Fatal("released before the lease end")
	}

	var rel *protocol.Signed[*pb.Release]
	testkit.Eventually(t, "expiry release gossiped", 2*time.Second, func() bool {
		for _, raw := range r.res.All() {
			if s, err := protocol.Open[pb.Release](raw); err == nil {
				rel = &s
				return true
			}
		}
		return false
	})
	if err := r.net.check.Release(*rel); err != nil {
		t.Fatalf("expiry release does not check: %v", err)
	}
	m := rel.Msg
	if rel.Signer != r.id || m.Outcome != pb.Outcome_EXPIRED || m.Session != "s" || m.Generation != 0 ||
		!bytes.Equal(m.Router, []byte(testkit.ID(t, router))) || !bytes.Equal(m.Miner, []byte(r.id)) || !bytes.Equal(m.Signer, []byte(r.id)) {
		t.Fatalf("expiry release: %+v by %s", m, rel.Signer)
	}
	if err := r.pool.AddRelease(*rel); err != nil {
		t.Fatalf("pool refuses the expiry release: %v", err)
	}

	// The router can no longer renew or release it.
	req := r.renew(t, router, "s", 0, 1000)
	if b, err := r.m.reserveRequest(req); err != nil || r.openReceipt(t, b, req).Ok {
		t.Fatalf("renew after expiry: err %v", err)
	}
	req = r.release(t, router, "s", 0)
	if b, err := r.m.reserveRequest(req); err != nil || r.openReceipt(t, b, req).Ok {
		t.Fatalf("release after expiry: err %v", err)
	}
}

func TestCrashKeepsReservation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	n := r.net
	r.start(t)
	r.makeAvailable(t, 0)
	router := testkit.NewKey(t)
	claimRaw := r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 2500})
	rep := r.claimDirect(t, claimRaw)
	g := wantGrant(t, rep)
	before := r.m.State()

	// kill -9 right after the commit: no release, nothing graceful.
	r.down(t)

	r2 := r.reopen(t)
	s := r2.m.State()
	if s.State != pb.MinerState_RESERVED || s.Session != "s" || !bytes.Equal(s.Grant, rep.raw) || s.Generation != 0 ||
		!s.LeaseEnd.Equal(before.LeaseEnd) || s.Seq != before.Seq {
		t.Fatalf("reloaded state: %+v", s)
	}
	r2.start(t)
	if s := r2.m.State(); s.State != pb.MinerState_RESERVED || s.Seq <= before.Seq {
		t.Fatalf("after restart: %s seq %d (was %d)", s.State, s.Seq, before.Seq)
	}
	testkit.Eventually(t, "grant gossiped again", 2*time.Second, func() bool { return r2.res.Has(rep.raw) })
	if rec := r2.waitRecord(t); rec.Msg.State != pb.MinerState_RESERVED || rec.Msg.Seq <= before.Seq {
		t.Fatalf("record after restart: %s seq %d", rec.Msg.State, rec.Msg.Seq)
	}

	// The router retries: same grant, over the restarted host.
	rh := testkit.Host(t, router)
	if again := reserve(t, rh, r2, claimRaw); !bytes.Equal(again, rep.raw) {
		t.Fatal("the retried claim got a different reply than the grant")
	}
	wantRefusal(t, r2.claimDirect(t, r2.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0})), pb.RefusalReason_BUSY)

	// It holds until the lease ends, then releases itself.
	end := protocol.Time(g.Msg.LeaseEndMs)
	time.Sleep(time.Until(end) - 200*time.Millisecond)
	if s := r2.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("before the lease end: %s", s.State)
	}
	waitState(t, r2.m, pb.MinerState_VALIDATING, 1)
	testkit.Eventually(t, "expiry release", 2*time.Second, func() bool {
		return slices.ContainsFunc(r2.res.All(), func(raw []byte) bool {
			s, err := protocol.Open[pb.Release](raw)
			return err == nil && s.Msg.Outcome == pb.Outcome_EXPIRED && s.Msg.Session == "s" && n.check.Release(s) == nil
		})
	})
}

// A reserve request is a few hundred bytes: a frame announcing a megabyte
// has its stream reset as soon as its length arrives, not read.
func TestReserveStreamOversizedFrameReset(t *testing.T) {
	t.Parallel()
	r, rh, ctx := strangerRig(t)
	if err := rh.Connect(ctx, r.addrInfo()); err != nil {
		t.Fatal(err)
	}
	s, err := rh.NewStream(ctx, r.id, protocol.ReserveProtocol(testNet))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	frame := binary.AppendUvarint(nil, protocol.MaxReserveRequestSize+1)
	if _, err := s.Write(append(frame, make([]byte, 512)...)); err != nil {
		t.Fatal(err)
	}
	// Before the miner's own 10 s deadline for the request.
	_ = s.SetReadDeadline(time.Now().Add(8 * time.Second))
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("read %v, want the stream reset", err)
	}
}

// strangerRig is a started miner and a host with no business with it, and
// 10 s to send it what the test sends.
func strangerRig(t *testing.T) (*rig, host.Host, context.Context) {
	t.Helper()
	r := newRig(t)
	r.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return r, testkit.Host(t, testkit.NewKey(t)), ctx
}
