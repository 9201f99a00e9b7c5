package miner

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestStartValidatesThenAvailable(t *testing.T) {
	t.Parallel()
	r := newRig(t)
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
	for _, raw := range r.pools.All() {
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
	r := newRig(t)
	n := r.net
	r.start(t)
	r.down(t)

	r2 := r.reopen(t)
	if s := r2.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 0 {
		t.Fatalf("reloaded: %s gen %d, want VALIDATING gen 0", s.State, s.Generation)
	}

	// Restarted while available with valid attestations: still available.
	r2.start(t)
	atts := r2.makeAvailable(t, 0)
	r2.down(t)
	r3 := r2.reopen(t)
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
	r := newRig(t)
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
	r := newRig(t)
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
	r := newRig(t)
	n := r.net
	r.start(t)
	round := n.check.Params.RoundAt(time.Now())
	r.attestFor(t, 0, 0, round, true, 1200*time.Millisecond)
	r.attestFor(t, 1, 0, round, true, 1200*time.Millisecond)
	waitState(t, r.m, pb.MinerState_AVAILABLE, 0)
	r.down(t)
	time.Sleep(1300 * time.Millisecond) // down while the attestations expire

	r2 := r.reopen(t)
	r2.start(t)
	rec := r2.waitRecord(t)
	if err := n.check.Availability(rec); err != nil {
		t.Fatalf("record announced at restart (%s) is invalid: %v", rec.Msg.State, err)
	}
	wantRefusal(t, r2.claimDirect(t, r2.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	r2.makeAvailable(t, 0)
	for _, raw := range r2.pools.All() {
		s, err := protocol.Open[pb.Availability](raw)
		if err != nil || n.check.Availability(s) != nil {
			t.Fatalf("an invalid record was published: %v / %v", err, n.check.Availability(s))
		}
	}
}

// challenge seals a challenge signed by key for miner at gen.
func newChallenge(t testing.TB, key crypto.PrivKey, miner peer.ID, gen uint64, tasks []challenge.Task) []byte {
	t.Helper()
	ch := &pb.Challenge{
		Network: testNet, Oracle: []byte(testkit.ID(t, key)), Miner: []byte(miner), Generation: gen, Round: 1,
		Nonce: []byte("0123456789abcdef"), IssuedMs: protocol.Ms(time.Now()), LatencyBudgetMs: 5000,
	}
	for _, tk := range tasks {
		ch.Tasks = append(ch.Tasks, &pb.Task{Family: tk.Family, Seed: tk.Seed, Prompt: tk.Prompt})
	}
	return testkit.Seal(t, ch, key)
}

func TestValidateAnswers(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(t)
	bank := challenge.Default()
	tasks := bank.Pick(mrand.New(mrand.NewPCG(1, 2)), 8)
	oracle := r.net.Keys[0]
	oh := testkit.Host(t, oracle)
	raw := newChallenge(t, oracle, r.id, 0, tasks)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := roundTrip(ctx, oh, r.addrInfo(), protocol.ValidateProtocol(testNet), raw)
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	ans, err := protocol.Open[pb.Answer](b)
	if err != nil {
		t.Fatal(err)
	}
	a := ans.Msg
	if ans.Signer != r.id || a.Network != testNet || !bytes.Equal(a.Miner, []byte(r.id)) ||
		!bytes.Equal(a.ChallengeDigest, protocol.Digest(raw)) || a.Model != inference.BuiltinModel {
		t.Fatalf("answer header: %+v by %s", a, ans.Signer)
	}
	if len(a.Outputs) != len(tasks) || len(a.LatenciesMs) != len(tasks) {
		t.Fatalf("%d outputs and %d latencies for %d tasks", len(a.Outputs), len(a.LatenciesMs), len(tasks))
	}
	lat := make([]time.Duration, len(a.LatenciesMs))
	for i, ms := range a.LatenciesMs {
		lat[i] = time.Duration(ms) * time.Millisecond
	}
	results, score, pass, err := bank.GradeAll(ctx, tasks, a.Outputs, lat, inference.NewBuiltin().Embed)
	if err != nil {
		t.Fatal(err)
	}
	if !pass || score != 1 {
		for i, res := range results {
			if !res.Pass {
				t.Logf("task %d (%s): %s", i, tasks[i].Family, res.Reason)
			}
		}
		t.Fatalf("answer graded %v, pass %v", score, pass)
	}

	// Available miners answer too (attestations are refreshed across rounds).
	r.makeAvailable(t, 0)
	if _, err := roundTrip(ctx, oh, r.addrInfo(), protocol.ValidateProtocol(testNet), newChallenge(t, oracle, r.id, 0, tasks[:1])); err != nil {
		t.Fatalf("challenge while available: %v", err)
	}
}

func TestValidateRefusesBadChallenges(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.start(t)
	tasks := challenge.Default().Pick(mrand.New(mrand.NewPCG(3, 4)), 2)
	oracle := r.net.Keys[0]
	oh := testkit.Host(t, oracle)
	outsider := testkit.NewKey(t)
	xh := testkit.Host(t, outsider)

	many := make([]challenge.Task, 65)
	for i := range many {
		many[i] = tasks[0]
	}
	cases := []struct {
		name string
		from host.Host
		raw  []byte
	}{
		{"not an oracle", xh, newChallenge(t, outsider, r.id, 0, tasks)},
		{"another miner", oh, newChallenge(t, oracle, testkit.ID(t, testkit.NewKey(t)), 0, tasks)},
		{"wrong generation", oh, newChallenge(t, oracle, r.id, 1, tasks)},
		{"relayed by a non-signer", xh, newChallenge(t, oracle, r.id, 0, tasks)},
		{"signed by another oracle", oh, newChallenge(t, r.net.Keys[1], r.id, 0, tasks)},
		{"no tasks", oh, newChallenge(t, oracle, r.id, 0, nil)},
		{"too many tasks", oh, newChallenge(t, oracle, r.id, 0, many)},
		{"garbage", oh, []byte("garbage")},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := roundTrip(ctx, c.from, r.addrInfo(), protocol.ValidateProtocol(testNet), c.raw)
		cancel()
		if err == nil {
			t.Errorf("%s: got an answer of %d bytes", c.name, len(b))
		}
	}

	// Not while reserved.
	r.makeAvailable(t, 0)
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: testkit.NewKey(t), gen: 0, leaseMs: 5000})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := roundTrip(ctx, oh, r.addrInfo(), protocol.ValidateProtocol(testNet), newChallenge(t, oracle, r.id, 0, tasks)); err == nil {
		t.Error("a reserved miner answered a challenge")
	}
}
