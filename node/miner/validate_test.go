package miner

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
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
	raw, err := protocol.Seal(ch, key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestValidateAnswers(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	bank := challenge.Default()
	tasks := bank.Pick(mrand.New(mrand.NewPCG(1, 2)), 8)
	oracle := r.net.oracles[0]
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
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	tasks := challenge.Default().Pick(mrand.New(mrand.NewPCG(3, 4)), 2)
	oracle := r.net.oracles[0]
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
		{"signed by another oracle", oh, newChallenge(t, r.net.oracles[1], r.id, 0, tasks)},
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
