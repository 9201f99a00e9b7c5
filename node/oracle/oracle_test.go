package oracle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

const testNet = "testnet"

func testParams(oracles ...peer.ID) protocol.Params {
	p := protocol.DefaultParams()
	for _, o := range oracles {
		p.Oracles = append(p.Oracles, o.String())
	}
	p.Quorum = 1
	return p
}

type rig struct {
	key   crypto.PrivKey
	host  host.Host
	check protocol.Checker
	store *store.Store
	pool  *pool.Pool
	pub   *testkit.Published
	o     *Oracle
}

// newRig builds an oracle with key on a fresh host (or h, if given), a store
// in dir and the given params.
func newRig(t testing.TB, key crypto.PrivKey, h host.Host, dir string, p protocol.Params, now func() time.Time) *rig {
	t.Helper()
	if h == nil {
		h = testkit.Host(t, key)
	}
	r := &rig{key: key, host: h, pub: &testkit.Published{}}
	r.check = protocol.Checker{Network: testNet, Params: p}
	r.store = testkit.Store(t, dir)
	var err error
	r.pool, err = pool.New(r.store, r.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.o, err = New(Deps{
		Network: testNet, Check: r.check, Host: h, Key: key, Store: r.store, Pool: r.pool,
		Bank: challenge.Default(), Embed: inference.NewBuiltin().Embed, Publish: r.pub.Publish, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// soleOracle is an oracle that is its network's only one, quorum one, on a
// fresh host and store.
func soleOracle(t testing.TB) *rig {
	t.Helper()
	key := testkit.NewKey(t)
	return newRig(t, key, nil, t.TempDir(), testParams(testkit.ID(t, key)), nil)
}

// start runs the oracle's round loop until it stops or the test ends.
func (r *rig) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.o.Stop(context.Background()) })
}

// stop stops the oracle, failing the test if it does not stop cleanly.
func (r *rig) stop(t testing.TB) {
	t.Helper()
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// verdict is the oracle's verdict on miner at gen and round, failing the
// test if Validate gives none.
func (r *rig) verdict(t testing.TB, miner peer.ID, gen, round uint64) []byte {
	t.Helper()
	env, err := r.o.Validate(context.Background(), miner, gen, round)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// behaviour is how a fake miner answers a challenge.
type behaviour int

const (
	honest     behaviour = iota // answers with the built-in engine
	banana                      // answers "banana" to everything
	wrongKey                    // answers correctly, signed by another key
	silent                      // reads the challenge and never answers
	wrongCount                  // one output too few
)

// fakeMiner answers challenges on its own host.
type fakeMiner struct {
	id         peer.ID
	host       host.Host
	key, other crypto.PrivKey
	engine     *inference.Builtin
	behaviour  atomic.Int32
	challenges atomic.Int32
	received   chan struct{} // gets a value for each challenge read, if not full
	hold       chan struct{} // a silent miner waits on it; closed at cleanup
}

func newFakeMiner(t testing.TB, key crypto.PrivKey, b behaviour) *fakeMiner {
	t.Helper()
	if key == nil {
		key = testkit.NewKey(t)
	}
	m := &fakeMiner{key: key, other: testkit.NewKey(t), engine: inference.NewBuiltin(), received: make(chan struct{}, 16), hold: make(chan struct{})}
	m.host = testkit.Host(t, key)
	t.Cleanup(func() { close(m.hold) }) // runs before the host closes
	m.id = m.host.ID()
	m.behaviour.Store(int32(b))
	testkit.Serve(t, m.host, protocol.ValidateProtocol(testNet), m.answer)
	return m
}

// miner is a fake miner of behaviour b with key (fresh if nil) whose
// address the oracle knows.
func (r *rig) miner(t testing.TB, key crypto.PrivKey, b behaviour) *fakeMiner {
	t.Helper()
	m := newFakeMiner(t, key, b)
	testkit.Know(r.host, m.host)
	return m
}

// answer is the miner's answer to a challenge, as its behaviour makes it.
func (m *fakeMiner) answer(raw []byte) ([]byte, error) {
	ch, err := protocol.Open[pb.Challenge](raw)
	if err != nil {
		return nil, err
	}
	m.challenges.Add(1)
	select {
	case m.received <- struct{}{}:
	default:
	}
	b := behaviour(m.behaviour.Load())
	if b == silent {
		// The oracle has closed its side; hold ours open until the test ends.
		<-m.hold
		return nil, errors.New("silent")
	}
	ans := &pb.Answer{Network: testNet, ChallengeDigest: protocol.Digest(raw), Miner: []byte(m.id), Model: inference.BuiltinModel}
	for _, task := range ch.Msg.Tasks {
		start := time.Now()
		out := "banana"
		if b != banana {
			resp, err := m.engine.Generate(context.Background(), inference.GenerateRequest{
				Messages: []inference.Message{{Role: "user", Content: task.Prompt}},
			})
			if err != nil {
				return nil, err
			}
			out = resp.Text
		}
		ans.Outputs = append(ans.Outputs, out)
		ans.LatenciesMs = append(ans.LatenciesMs, uint32(time.Since(start).Milliseconds()))
	}
	if b == wrongCount {
		ans.Outputs = ans.Outputs[1:]
	}
	key := m.key
	if b == wrongKey {
		key = m.other
	}
	return protocol.Seal(ans, key)
}

func TestNotAnOracle(t *testing.T) {
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, testkit.NewKey(t)))
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	m := r.miner(t, nil, honest)
	addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
	r.start(t)
	r.stop(t)
	if _, err := r.o.Validate(context.Background(), m.id, 1, 1); err == nil {
		t.Error("Validate by a node outside the oracle set succeeded")
	}
	if m.challenges.Load() != 0 || r.o.Stats() != (Stats{}) {
		t.Errorf("a node outside the oracle set validated: %+v", r.o.Stats())
	}
}

func TestNewChecksDeps(t *testing.T) {
	key := testkit.NewKey(t)
	h := testkit.Host(t, key)
	p := testParams(h.ID())
	check := protocol.Checker{Network: testNet, Params: p}
	s := testkit.Store(t, "")
	pl, err := pool.New(s, check, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := Deps{Network: testNet, Check: check, Host: h, Key: key, Store: s, Pool: pl, Bank: challenge.Default(),
		Publish: func(context.Context, []byte) error { return nil }}
	if _, err := New(good); err != nil {
		t.Fatalf("New: %v", err)
	}
	otherKey := good
	otherKey.Key = testkit.NewKey(t)
	noPublish := good
	noPublish.Publish = nil
	otherNet := good
	otherNet.Network = "other"
	for name, d := range map[string]Deps{"key of another peer": otherKey, "no publish": noPublish, "checker of another network": otherNet} {
		if _, err := New(d); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestValidatePasses(t *testing.T) {
	r := soleOracle(t)
	m := r.miner(t, nil, honest)

	env := r.verdict(t, m.id, 3, 42)
	s := testkit.Open[pb.Attestation](t, env)
	if err := r.check.Attestation(s); err != nil {
		t.Fatalf("checker refuses the attestation: %v", err)
	}
	a := s.Msg
	switch {
	case s.Signer != r.host.ID() || !bytes.Equal(a.Oracle, []byte(r.host.ID())):
		t.Errorf("signed by %s, oracle field %x", s.Signer, a.Oracle)
	case !bytes.Equal(a.Miner, []byte(m.id)) || a.Generation != 3 || a.Round != 42:
		t.Errorf("about %x gen %d round %d", a.Miner, a.Generation, a.Round)
	case !a.Pass || a.ScoreMilli != 1000:
		t.Errorf("verdict pass=%v score=%d, want a pass at 1000", a.Pass, a.ScoreMilli)
	case a.Model != inference.BuiltinModel:
		t.Errorf("model %q", a.Model)
	case len(a.ChallengeDigest) != 32:
		t.Errorf("challenge digest of %d bytes", len(a.ChallengeDigest))
	case a.ExpiresMs-a.IssuedMs != r.check.Params.AttestationLifetime.Std().Milliseconds():
		t.Errorf("lifetime %d ms", a.ExpiresMs-a.IssuedMs)
	}
	if pubs := r.pub.All(); len(pubs) != 1 || !bytes.Equal(pubs[0], env) {
		t.Errorf("published %d envelopes, want exactly the attestation", len(pubs))
	}
	if st := r.o.Stats(); st != (Stats{Validations: 1, Passed: 1, Signed: 1}) {
		t.Errorf("stats %+v", st)
	}
	if m.challenges.Load() != 1 {
		t.Errorf("miner saw %d challenges", m.challenges.Load())
	}
}

func TestValidateFails(t *testing.T) {
	r := soleOracle(t)

	gone := r.miner(t, nil, honest)
	gone.host.Close() // known addresses, nobody listening

	listening := func(b behaviour) peer.ID {
		m := r.miner(t, nil, b)
		return m.id
	}
	cases := []struct {
		name  string
		miner peer.ID
	}{
		{"banana", listening(banana)},
		{"signed by another key", listening(wrongKey)},
		{"wrong number of outputs", listening(wrongCount)},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := r.verdict(t, c.miner, 1, uint64(i))
			s := testkit.Open[pb.Attestation](t, env)
			if err := r.check.Attestation(s); err != nil {
				t.Fatalf("checker refuses the attestation: %v", err)
			}
			if s.Msg.Pass || !bytes.Equal(s.Msg.Miner, []byte(c.miner)) {
				t.Errorf("pass=%v for %x, want a failing verdict on %s", s.Msg.Pass, s.Msg.Miner, c.miner)
			}
			if c.name == "banana" && (s.Msg.ScoreMilli != 0 || s.Msg.Model != inference.BuiltinModel) {
				t.Errorf("banana: score %d model %q", s.Msg.ScoreMilli, s.Msg.Model)
			}
			if c.name != "banana" && (s.Msg.ScoreMilli != 0 || s.Msg.Model != "") {
				t.Errorf("score %d model %q, want 0 and no model", s.Msg.ScoreMilli, s.Msg.Model)
			}
		})
	}
	// A miner we cannot reach gets no verdict: our routing may not know it
	// yet, and without passes it never becomes available anyway.
	for i, id := range []peer.ID{gone.id, testkit.ID(t, testkit.NewKey(t))} {
		if env, err := r.o.Validate(context.Background(), id, 1, uint64(100+i)); err == nil || env != nil {
			t.Errorf("unreachable miner %d: verdict %x, err %v; want no verdict", i, env, err)
		}
	}
	if st := r.o.Stats(); st.Failed != 3 || st.Signed != 3 {
		t.Errorf("stats %+v", st)
	}
	if n := len(r.pub.All()); n != 3 {
		t.Errorf("published %d, want 3", n)
	}
}

func TestShutdownGivesNoVerdict(t *testing.T) {
	r := soleOracle(t)
	m := r.miner(t, nil, silent)

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-m.received
		cancel()
	}()
	env, err := r.o.Validate(ctx, m.id, 1, 1)
	if !errors.Is(err, context.Canceled) || env != nil {
		t.Fatalf("Validate = %d bytes, %v; want no verdict and context.Canceled", len(env), err)
	}
	if _, err := r.store.Get(signedKey(m.id, 1, 1)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a verdict was stored: %v", err)
	}
	if n := len(r.pub.All()); n != 0 {
		t.Errorf("published %d", n)
	}
}

func TestNeverTwoVerdicts(t *testing.T) {
	key := testkit.NewKey(t)
	dir := t.TempDir()
	h := testkit.Host(t, key)
	p := testParams(testkit.ID(t, key))
	r := newRig(t, key, h, dir, p, nil)
	m := newFakeMiner(t, nil, honest)
	testkit.Know(h, m.host)

	first := r.verdict(t, m.id, 1, 7)
	if !testkit.Open[pb.Attestation](t, first).Msg.Pass {
		t.Fatal("the honest miner failed")
	}
	m.behaviour.Store(int32(banana))
	again := r.verdict(t, m.id, 1, 7)
	if !bytes.Equal(first, again) {
		t.Fatal("a second verdict for the same (miner, generation, round)")
	}
	if n := len(r.pub.All()); n != 1 {
		t.Errorf("published %d times, want once", n)
	}

	// Restart: close the store, reopen it, and a new oracle on it.
	r.stop(t)
	if err := r.store.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := newRig(t, key, h, dir, p, nil)
	after := r2.verdict(t, m.id, 1, 7)
	if !bytes.Equal(first, after) {
		t.Fatal("a second verdict after a restart")
	}
	if n := len(r2.pub.All()); n != 0 {
		t.Errorf("published the stored verdict %d times after the restart", n)
	}
	if got := m.challenges.Load(); got != 1 {
		t.Errorf("the miner was challenged %d times", got)
	}

	// Another round is another verdict, and the miner now fails.
	next := r2.verdict(t, m.id, 1, 8)
	if bytes.Equal(next, first) || testkit.Open[pb.Attestation](t, next).Msg.Pass {
		t.Error("round 8 should get a new, failing verdict")
	}
}

// Concurrent validations of one (miner, generation, round) race to the
// store; one verdict wins and every call returns it.
func TestConcurrentValidationsAgree(t *testing.T) {
	r := soleOracle(t)
	m := r.miner(t, nil, honest)

	const n = 6
	envs := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			env, err := r.o.Validate(context.Background(), m.id, 2, 5)
			if err != nil {
				t.Error(err)
			}
			envs[i] = env
		})
	}
	wg.Wait()
	for i := range envs {
		if !bytes.Equal(envs[i], envs[0]) {
			t.Fatalf("call %d returned another verdict", i)
		}
	}
	if pubs := r.pub.All(); len(pubs) != 1 || !bytes.Equal(pubs[0], envs[0]) {
		t.Errorf("published %d, want the one verdict once", len(pubs))
	}
	if st := r.o.Stats(); st.Signed != 1 {
		t.Errorf("stats %+v, want one signature", st)
	}
}

func TestLatencies(t *testing.T) {
	got := latencies([]uint32{10, 900, 0}, 1500*time.Millisecond)
	want := []time.Duration{500 * time.Millisecond, 900 * time.Millisecond, 500 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("latencies = %v, want %v", got, want)
	}
}

func TestSignOnceKeepsTheStoredVerdict(t *testing.T) {
	r := soleOracle(t)
	miner := testkit.ID(t, testkit.NewKey(t))
	k := signedKey(miner, 1, 1)
	att := func(pass bool) *pb.Attestation {
		return &pb.Attestation{Network: testNet, Oracle: []byte(r.host.ID()), Miner: []byte(miner), Generation: 1, Round: 1, Pass: pass}
	}
	first, fresh, err := r.o.signOnce(k, att(true))
	if err != nil || !fresh {
		t.Fatalf("first signOnce: fresh=%v err=%v", fresh, err)
	}
	second, fresh, err := r.o.signOnce(k, att(false))
	if err != nil || fresh || !bytes.Equal(first, second) {
		t.Fatalf("second signOnce: fresh=%v err=%v same=%v", fresh, err, bytes.Equal(first, second))
	}
}

func benchAttestation(b *testing.B) (*pb.Attestation, crypto.PrivKey) {
	key := testkit.NewKey(b)
	now := time.Now()
	return &pb.Attestation{
		Network: testNet, Oracle: []byte(testkit.ID(b, key)), Miner: []byte(testkit.ID(b, testkit.NewKey(b))), Generation: 7, Round: 123456,
		Model: inference.BuiltinModel, ScoreMilli: 1000, Pass: true, IssuedMs: protocol.Ms(now),
		ExpiresMs: protocol.Ms(now.Add(30 * time.Minute)), ChallengeDigest: bytes.Repeat([]byte{7}, 32),
	}, key
}

// BenchmarkAttestationSign seals an attestation: deterministic marshalling,
// the envelope's domain-separated signature and the envelope's encoding.
func BenchmarkAttestationSign(b *testing.B) {
	att, key := benchAttestation(b)
	for b.Loop() {
		if _, err := protocol.Seal(att, key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestationSignBaseline is a plain Ed25519 signature of the same
// marshalled attestation.
func BenchmarkAttestationSignBaseline(b *testing.B) {
	att, key := benchAttestation(b)
	raw, err := key.Raw()
	if err != nil {
		b.Fatal(err)
	}
	priv := ed25519.PrivateKey(raw)
	msg, err := proto.MarshalOptions{Deterministic: true}.Marshal(att)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		_ = ed25519.Sign(priv, msg)
	}
}
