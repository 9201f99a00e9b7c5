package miner

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

func TestStartValidatesThenAvailable(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	if s := r.m.State(); s.State != pb.MinerState_JOINING {
		t.Fatalf("fresh miner: %s, want JOINING", s.State)
	}
	r.start(t)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 0 {
		t.Fatalf("after Start: %s gen %d, want VALIDATING gen 0", s.State, s.Generation)
	}
	rec := r.waitRecord(t)
	if rec.Msg.State != pb.MinerState_VALIDATING || rec.Signer != r.id {
		t.Fatalf("first record: %s by %s", rec.Msg.State, rec.Signer)
	}
	if err := r.net.check.Availability(rec); err != nil {
		t.Fatalf("validating record: %v", err)
	}

	// One pass is not a quorum.
	round := r.net.check.Params.RoundAt(time.Now())
	a0 := r.attest(t, 0, 0, round, true)
	time.Sleep(400 * time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING {
		t.Fatalf("after one pass: %s", s.State)
	}
	a1 := r.attest(t, 1, 0, round, true)
	waitState(t, r.m, pb.MinerState_AVAILABLE, 0)

	rec = r.waitRecord(t)
	if rec.Msg.State != pb.MinerState_AVAILABLE || rec.Msg.Generation != 0 {
		t.Fatalf("record: %s gen %d", rec.Msg.State, rec.Msg.Generation)
	}
	if err := r.net.check.Availability(rec); err != nil {
		t.Fatalf("available record does not check: %v", err)
	}
	if len(rec.Msg.Attestations) != 2 {
		t.Fatalf("%d attestations in the record, want 2", len(rec.Msg.Attestations))
	}
	for _, a := range [][]byte{a0, a1} {
		if !slices.ContainsFunc(rec.Msg.Attestations, func(b []byte) bool { return bytes.Equal(a, b) }) {
			t.Fatal("an attestation fed to the pool is missing from the record")
		}
	}
	if !slices.Equal(rec.Msg.Models, []string{inference.BuiltinModel}) {
		t.Fatalf("models %v", rec.Msg.Models)
	}

	// No record ever says JOINING, and sequence numbers never repeat.
	seqs := map[uint64][]byte{}
	for _, raw := range r.pools.all() {
		s, err := protocol.Open[pb.Availability](raw)
		if err != nil {
			t.Fatal(err)
		}
		if s.Msg.State == pb.MinerState_JOINING {
			t.Fatal("a JOINING record was published")
		}
		if prev, ok := seqs[s.Msg.Seq]; ok && !bytes.Equal(prev, raw) {
			t.Fatalf("two different records with sequence %d", s.Msg.Seq)
		}
		seqs[s.Msg.Seq] = raw
	}
}

func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	key, dir := testkit.NewKey(t), t.TempDir()
	r := newRig(t, n, key, dir)
	r.start(t)
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	r.host.Close()

	r2 := newRig(t, n, key, dir)
	if s := r2.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 0 {
		t.Fatalf("reloaded: %s gen %d, want VALIDATING gen 0", s.State, s.Generation)
	}

	// Restarted while available with valid attestations: still available.
	r2.start(t)
	atts := r2.makeAvailable(t, 0)
	if err := r2.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r2.store.Close()
	r2.host.Close()
	r3 := newRig(t, n, key, dir)
	r3.start(t)
	if s := r3.m.State(); s.State != pb.MinerState_AVAILABLE || len(s.Attestations) != len(atts) {
		t.Fatalf("restarted available miner: %s with %d attestations", s.State, len(s.Attestations))
	}
	if rec := r3.waitRecord(t); rec.Msg.State != pb.MinerState_AVAILABLE || n.check.Availability(rec) != nil {
		t.Fatalf("record after restart: %s, %v", rec.Msg.State, n.check.Availability(rec))
	}
}

func TestFailuresCoolOffThenNewGeneration(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	if fq := r.net.check.Params.FailureQuorum(); fq != 2 {
		t.Fatalf("failure quorum %d, want 2", fq)
	}
	round := r.net.check.Params.RoundAt(time.Now())
	r.attest(t, 0, 0, round, false)
	time.Sleep(400 * time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING {
		t.Fatalf("after one failure: %s", s.State)
	}
	r.attest(t, 1, 0, round, false)
	waitState(t, r.m, pb.MinerState_COOLING_OFF, 0)
	s := r.m.State()
	if s.Failures != 1 || s.CoolUntil.IsZero() {
		t.Fatalf("cooling off: failures %d, cool until %v", s.Failures, s.CoolUntil)
	}
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_COOLING_OFF {
		t.Fatalf("record says %s", rec.Msg.State)
	}

	// After the backoff, a new generation.
	waitState(t, r.m, pb.MinerState_VALIDATING, 1)

	// Passing verdicts on generation 0 (a later round) count for nothing now.
	r.attest(t, 0, 0, round+1, true)
	r.attest(t, 1, 0, round+1, true)
	r.attest(t, 2, 0, round+1, true)
	time.Sleep(600 * time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 1 {
		t.Fatalf("after generation-0 passes: %s gen %d, want VALIDATING gen 1", s.State, s.Generation)
	}

	// Generation 1 passes.
	r.makeAvailable(t, 1)
	if s := r.m.State(); s.Failures != 0 {
		t.Fatalf("failures %d after becoming available", s.Failures)
	}
	rec := r.waitRecord(t)
	if rec.Msg.Generation != 1 || r.net.check.Availability(rec) != nil {
		t.Fatalf("record gen %d: %v", rec.Msg.Generation, r.net.check.Availability(rec))
	}
}

func TestBackoffDoubles(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	for gen, want := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond} {
		round := r.net.check.Params.RoundAt(time.Now())
		r.attest(t, 0, uint64(gen), round, false)
		r.attest(t, 2, uint64(gen), round, false)
		waitState(t, r.m, pb.MinerState_COOLING_OFF, uint64(gen))
		s := r.m.State()
		if s.Failures != gen+1 || s.CoolUntil.Sub(s.Since) != want {
			t.Fatalf("failure %d: failures %d, backoff %s, want %s", gen+1, s.Failures, s.CoolUntil.Sub(s.Since), want)
		}
		waitState(t, r.m, pb.MinerState_VALIDATING, uint64(gen+1))
	}
}

// TestRestartAvailableWithExpiredAttestations: a miner that comes back
// AVAILABLE after its attestations expired must not announce a record the
// network rejects; it validates again, and fresh attestations make it
// available again.
func TestRestartAvailableWithExpiredAttestations(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	key, dir := testkit.NewKey(t), t.TempDir()
	r := newRig(t, n, key, dir)
	r.start(t)
	round := n.check.Params.RoundAt(time.Now())
	r.attestFor(t, 0, 0, round, true, 1200*time.Millisecond)
	r.attestFor(t, 1, 0, round, true, 1200*time.Millisecond)
	waitState(t, r.m, pb.MinerState_AVAILABLE, 0)
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	r.host.Close()
	time.Sleep(1300 * time.Millisecond) // down while the attestations expire

	r2 := newRig(t, n, key, dir)
	r2.start(t)
	rec := r2.waitRecord(t)
	if err := n.check.Availability(rec); err != nil {
		t.Fatalf("record announced at restart (%s) is invalid: %v", rec.Msg.State, err)
	}
	wantRefusal(t, r2.claimDirect(t, r2.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	r2.makeAvailable(t, 0)
	for _, raw := range r2.pools.all() {
		s, err := protocol.Open[pb.Availability](raw)
		if err != nil || n.check.Availability(s) != nil {
			t.Fatalf("an invalid record was published: %v / %v", err, n.check.Availability(s))
		}
	}
}
