package oracle

import (
	"bytes"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// addMiner feeds p a record of key's miner in state at generation.
func addMiner(t testing.TB, p *pool.Pool, key crypto.PrivKey, state pb.MinerState, gen uint64) {
	t.Helper()
	if err := p.AddAvailability(minerRecord(t, key, 1, state, gen, nil)); err != nil {
		t.Fatal(err)
	}
}

// minerRecord is key's miner's record number seq, in state at generation,
// carrying atts.
func minerRecord(t testing.TB, key crypto.PrivKey, seq uint64, state pb.MinerState, gen uint64, atts [][]byte) protocol.Signed[*pb.Availability] {
	t.Helper()
	now := time.Now()
	return testkit.Signed(t, &pb.Availability{
		Network: testNet, Miner: []byte(testkit.ID(t, key)), Seq: seq, State: state, Generation: gen, Attestations: atts,
		Models: []string{inference.BuiltinModel}, IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(time.Minute)),
	}, key)
}

// penalize makes p hold evidence of a double grant by key's miner.
func penalize(t testing.TB, p *pool.Pool, key crypto.PrivKey) {
	t.Helper()
	grant := func(digest byte) []byte {
		return testkit.Seal(t, &pb.Grant{Network: testNet, Miner: []byte(testkit.ID(t, key)), Generation: 1, ClaimDigest: bytes.Repeat([]byte{digest}, 32)}, key)
	}
	if _, isNew, err := p.AddEvidence(&pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: grant(1), Second: grant(2)}); err != nil || !isNew {
		t.Fatalf("evidence: new=%v err=%v", isNew, err)
	}
}

// The loop validates exactly the validating, unpenalised miners that
// rendezvous hashing assigns to this oracle in the round.
func TestRoundLoopValidatesAssignedMiners(t *testing.T) {
	key := testkit.NewKey(t)
	self := testkit.ID(t, key)
	others := []peer.ID{testkit.ID(t, testkit.NewKey(t)), testkit.ID(t, testkit.NewKey(t))}
	p := testParams(append([]peer.ID{self}, others...)...)
	p.OraclesPerRound = 1
	now := time.Now()
	round := p.RoundAt(now)
	assigned := func(k crypto.PrivKey) bool {
		return slices.Contains(protocol.AssignedOracles(p.OracleIDs(), testkit.ID(t, k), 1, round, p.PerRound()), self)
	}
	// Draw miner keys until there are three of each kind.
	var yes, no []crypto.PrivKey
	for len(yes) < 3 || len(no) < 3 {
		k := testkit.NewKey(t)
		if assigned(k) && len(yes) < 3 {
			yes = append(yes, k)
		} else if !assigned(k) && len(no) < 3 {
			no = append(no, k)
		}
	}

	r := newRig(t, key, nil, t.TempDir(), p, func() time.Time { return now })
	var miners []*fakeMiner
	for _, k := range append(slices.Clone(yes), no...) {
		m := r.miner(t, k, honest)
		miners = append(miners, m)
	}
	for _, k := range append(yes[:2:2], no...) {
		addMiner(t, r.pool, k, pb.MinerState_VALIDATING, 1)
	}
	addMiner(t, r.pool, yes[2], pb.MinerState_VALIDATING, 1)
	penalize(t, r.pool, yes[2]) // assigned, but caught equivocating
	// A cooling-off miner assigned to us would not be validated either.
	var cooling crypto.PrivKey
	for cooling == nil || !assigned(cooling) {
		cooling = testkit.NewKey(t)
	}
	cm := r.miner(t, cooling, honest)
	addMiner(t, r.pool, cooling, pb.MinerState_COOLING_OFF, 1)

	r.start(t)
	testkit.Eventually(t, "two validations", 20*time.Second, func() bool { return r.o.Stats().Signed >= 2 })
	r.stop(t)

	if st := r.o.Stats(); st != (Stats{Validations: 2, Passed: 2, Signed: 2}) {
		t.Errorf("stats %+v", st)
	}
	for i, m := range miners {
		want := int32(0)
		if i < 2 {
			want = 1
		}
		if got := m.challenges.Load(); got != want {
			t.Errorf("miner %d (assigned=%v) challenged %d times, want %d", i, i < 3, got, want)
		}
	}
	if cm.challenges.Load() != 0 {
		t.Error("a cooling-off miner was challenged")
	}
	for _, env := range r.pub.All() {
		if a := testkit.Open[pb.Attestation](t, env).Msg; a.Round != round || a.Generation != 1 {
			t.Errorf("attestation for gen %d round %d, want 1 and %d", a.Generation, a.Round, round)
		}
	}
}

// Over many short rounds, assignments rotate, and a miner this oracle has
// passed is never challenged again by it for that generation.
func TestRoundLoopValidatesEachGenerationOnce(t *testing.T) {
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, key), testkit.ID(t, testkit.NewKey(t)), testkit.ID(t, testkit.NewKey(t)))
	p.OraclesPerRound = 1
	p.RoundPeriod = duration.Duration(100 * time.Millisecond)
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	// As gossip would, deliver our own attestations to our pool.
	r.pub.Then(func(env []byte) {
		s, err := protocol.Open[pb.Attestation](env)
		if err == nil {
			_, err = r.pool.AddAttestation(s)
		}
		if err != nil {
			t.Errorf("pool refuses our attestation: %v", err)
		}
	})
	var miners []*fakeMiner
	for range 4 {
		m := r.miner(t, nil, honest)
		addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
		miners = append(miners, m)
	}
	r.start(t)
	testkit.Eventually(t, "every miner validated", 20*time.Second, func() bool { return r.o.Stats().Passed == len(miners) })
	// A few more rounds, in which nothing should happen.
	start := p.RoundAt(time.Now())
	testkit.Eventually(t, "three more rounds", 20*time.Second, func() bool { return p.RoundAt(time.Now()) >= start+3 })
	r.stop(t)
	for i, m := range miners {
		if got := m.challenges.Load(); got != 1 {
			t.Errorf("miner %d challenged %d times, want once", i, got)
		}
		if got := r.pool.PassingOracles(m.id, 1); len(got) != 1 || got[0] != r.host.ID() {
			t.Errorf("miner %d: passing oracles %v", i, got)
		}
	}
}

// The chaos run's bug: an oracle passes a miner just after it starts, and
// gossip delivers that attestation to no peer. The miner keeps saying it is
// validating; the oracle, hearing so, validates it again in a later round,
// and the new attestation gets the miner its quorum. Every (miner,
// generation, round) still has one verdict, and a miner not heard from since
// the pass is left alone.
func TestLostPassIsReplaced(t *testing.T) {
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, key))
	p.RoundPeriod = duration.Duration(100 * time.Millisecond)
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	m := r.miner(t, nil, honest)
	// The rest of the network: what the miner and every other node see.
	network, err := pool.New(testkit.Store(t, ""), r.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Our own pool gets every attestation we publish, as gossip delivers
	// our messages to our own subscription; the first reaches no peer.
	var sent atomic.Int32
	r.pub.Then(func(env []byte) {
		s, err := protocol.Open[pb.Attestation](env)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := r.pool.AddAttestation(s); err != nil {
			t.Errorf("our pool refuses our attestation: %v", err)
		}
		if sent.Add(1) == 1 {
			return // lost: the mesh has not formed yet
		}
		if _, err := network.AddAttestation(s); err != nil {
			t.Errorf("the network refuses our attestation: %v", err)
		}
	})
	addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
	r.start(t)
	testkit.Eventually(t, "the first pass", 20*time.Second, func() bool { return r.o.Stats().Passed == 1 })

	// Not heard from since: the pass may yet arrive, nothing is done.
	start := p.RoundAt(time.Now())
	testkit.Eventually(t, "four more rounds", 20*time.Second, func() bool { return p.RoundAt(time.Now()) >= start+4 })
	if got := m.challenges.Load(); got != 1 {
		t.Fatalf("a miner not heard from since its pass was challenged %d times", got)
	}

	// The miner re-signs its record, as it does every record_lifetime/3,
	// still validating: it never got the pass.
	seq := uint64(2)
	if err := r.pool.AddAvailability(minerRecord(t, m.key, seq, pb.MinerState_VALIDATING, 1, nil)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the network to hold a pass", 20*time.Second, func() bool { return len(network.PassingOracles(m.id, 1)) >= p.Quorum })
	var atts [][]byte
	for _, a := range network.Attestations(m.id, 1) {
		atts = append(atts, a.Raw)
	}
	seq++
	available := minerRecord(t, m.key, seq, pb.MinerState_AVAILABLE, 1, atts)
	if err := r.check.Availability(available); err != nil {
		t.Fatalf("the miner's record with the new pass: %v", err)
	}
	if err := r.pool.AddAvailability(available); err != nil {
		t.Fatal(err)
	}
	challenged := m.challenges.Load()
	start = p.RoundAt(time.Now())
	testkit.Eventually(t, "three more rounds", 20*time.Second, func() bool { return p.RoundAt(time.Now()) >= start+3 })
	r.stop(t)
	if got := m.challenges.Load(); got != challenged {
		t.Errorf("an available miner was challenged %d more times", got-challenged)
	}

	// One verdict per round, the one in the store, and a pass in each.
	pubs := r.pub.All()
	if len(pubs) < 2 {
		t.Fatalf("published %d attestations, want a second", len(pubs))
	}
	rounds := map[uint64][]byte{}
	for _, env := range pubs {
		a := testkit.Open[pb.Attestation](t, env).Msg
		if prev, ok := rounds[a.Round]; ok && !bytes.Equal(prev, env) {
			t.Fatalf("two verdicts for round %d", a.Round)
		}
		rounds[a.Round] = env
		stored, err := r.store.Get(signedKey(m.id, 1, a.Round))
		if err != nil || !bytes.Equal(stored, env) {
			t.Errorf("round %d: published a verdict the store does not hold (%v)", a.Round, err)
		}
		if !a.Pass || a.Generation != 1 {
			t.Errorf("round %d: pass=%v generation %d", a.Round, a.Pass, a.Generation)
		}
	}
	if st := r.o.Stats(); st.Signed != len(rounds) || int(m.challenges.Load()) != len(rounds) {
		t.Errorf("stats %+v, %d challenges, for %d rounds", st, m.challenges.Load(), len(rounds))
	}
}
