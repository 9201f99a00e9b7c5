package oracle

import (
	"bufio"
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
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"google.golang.org/protobuf/proto"
)

const testNet = "testnet"

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func idOf(t testing.TB, k crypto.PrivKey) peer.ID {
	t.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newHost(t testing.TB, key crypto.PrivKey) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func testParams(oracles ...peer.ID) protocol.Params {
	p := protocol.DefaultParams()
	for _, o := range oracles {
		p.Oracles = append(p.Oracles, o.String())
	}
	p.Quorum = 1
	return p
}

func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// published records what an oracle publishes; onPublish, if set, also runs.
type published struct {
	mu        sync.Mutex
	envs      [][]byte
	onPublish func([]byte)
}

func (p *published) publish(_ context.Context, data []byte) error {
	p.mu.Lock()
	p.envs = append(p.envs, slices.Clone(data))
	f := p.onPublish
	p.mu.Unlock()
	if f != nil {
		f(data)
	}
	return nil
}

func (p *published) all() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.envs)
}

type rig struct {
	key   crypto.PrivKey
	host  host.Host
	check protocol.Checker
	store *store.Store
	pool  *pool.Pool
	pub   *published
	o     *Oracle
}

// newRig builds an oracle with key on a fresh host (or h, if given), a store
// in dir and the given params.
func newRig(t testing.TB, key crypto.PrivKey, h host.Host, dir string, p protocol.Params, now func() time.Time) *rig {
	t.Helper()
	if h == nil {
		h = newHost(t, key)
	}
	r := &rig{key: key, host: h, pub: &published{}}
	r.check = protocol.Checker{Network: testNet, Params: p}
	r.store = openStore(t, dir)
	var err error
	r.pool, err = pool.New(r.store, r.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.o, err = New(Deps{
		Network: testNet, Check: r.check, Host: h, Key: key, Store: r.store, Pool: r.pool,
		Bank: challenge.Default(), Embed: inference.NewBuiltin().Embed, Publish: r.pub.publish, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
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
		key = newKey(t)
	}
	m := &fakeMiner{key: key, other: newKey(t), engine: inference.NewBuiltin(), received: make(chan struct{}, 16), hold: make(chan struct{})}
	m.host = newHost(t, key)
	t.Cleanup(func() { close(m.hold) }) // runs before the host closes
	m.id = m.host.ID()
	m.behaviour.Store(int32(b))
	m.host.SetStreamHandler(protocol.ValidateProtocol(testNet), m.handle)
	return m
}

func (m *fakeMiner) handle(s network.Stream) {
	defer s.Close()
	raw, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
	if err != nil {
		s.Reset()
		return
	}
	ch, err := protocol.Open[pb.Challenge](raw)
	if err != nil {
		s.Reset()
		return
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
		return
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
				s.Reset()
				return
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
	env, err := protocol.Seal(ans, key)
	if err != nil {
		s.Reset()
		return
	}
	_ = protocol.WriteMsg(s, env)
}

// knows tells h where m listens.
func knows(h host.Host, m *fakeMiner) {
	h.Peerstore().AddAddrs(m.id, m.host.Addrs(), peerstore.PermanentAddrTTL)
}

func openAtt(t testing.TB, env []byte) protocol.Signed[*pb.Attestation] {
	t.Helper()
	s, err := protocol.Open[pb.Attestation](env)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestValidatePasses(t *testing.T) {
	key := newKey(t)
	r := newRig(t, key, nil, t.TempDir(), testParams(idOf(t, key)), nil)
	m := newFakeMiner(t, nil, honest)
	knows(r.host, m)

	env, err := r.o.Validate(context.Background(), m.id, 3, 42)
	if err != nil {
		t.Fatal(err)
	}
	s := openAtt(t, env)
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
	if pubs := r.pub.all(); len(pubs) != 1 || !bytes.Equal(pubs[0], env) {
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
	key := newKey(t)
	r := newRig(t, key, nil, t.TempDir(), testParams(idOf(t, key)), nil)

	gone := newFakeMiner(t, nil, honest)
	knows(r.host, gone)
	gone.host.Close() // known addresses, nobody listening

	listening := func(b behaviour) peer.ID {
		m := newFakeMiner(t, nil, b)
		knows(r.host, m)
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
			env, err := r.o.Validate(context.Background(), c.miner, 1, uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			s := openAtt(t, env)
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
	for i, id := range []peer.ID{gone.id, idOf(t, newKey(t))} {
		if env, err := r.o.Validate(context.Background(), id, 1, uint64(100+i)); err == nil || env != nil {
			t.Errorf("unreachable miner %d: verdict %x, err %v; want no verdict", i, env, err)
		}
	}
	if st := r.o.Stats(); st.Failed != 3 || st.Signed != 3 {
		t.Errorf("stats %+v", st)
	}
	if n := len(r.pub.all()); n != 3 {
		t.Errorf("published %d, want 3", n)
	}
}

func TestShutdownGivesNoVerdict(t *testing.T) {
	key := newKey(t)
	r := newRig(t, key, nil, t.TempDir(), testParams(idOf(t, key)), nil)
	m := newFakeMiner(t, nil, silent)
	knows(r.host, m)

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
	if n := len(r.pub.all()); n != 0 {
		t.Errorf("published %d", n)
	}
}

func TestNeverTwoVerdicts(t *testing.T) {
	key := newKey(t)
	dir := t.TempDir()
	h := newHost(t, key)
	p := testParams(idOf(t, key))
	r := newRig(t, key, h, dir, p, nil)
	m := newFakeMiner(t, nil, honest)
	knows(h, m)
	ctx := context.Background()

	first, err := r.o.Validate(ctx, m.id, 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !openAtt(t, first).Msg.Pass {
		t.Fatal("the honest miner failed")
	}
	m.behaviour.Store(int32(banana))
	again, err := r.o.Validate(ctx, m.id, 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) {
		t.Fatal("a second verdict for the same (miner, generation, round)")
	}
	if n := len(r.pub.all()); n != 1 {
		t.Errorf("published %d times, want once", n)
	}

	// Restart: close the store, reopen it, and a new oracle on it.
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := newRig(t, key, h, dir, p, nil)
	after, err := r2.o.Validate(ctx, m.id, 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, after) {
		t.Fatal("a second verdict after a restart")
	}
	if n := len(r2.pub.all()); n != 0 {
		t.Errorf("published the stored verdict %d times after the restart", n)
	}
	if got := m.challenges.Load(); got != 1 {
		t.Errorf("the miner was challenged %d times", got)
	}

	// Another round is another verdict, and the miner now fails.
	next, err := r2.o.Validate(ctx, m.id, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(next, first) || openAtt(t, next).Msg.Pass {
		t.Error("round 8 should get a new, failing verdict")
	}
}

// Concurrent validations of one (miner, generation, round) race to the
// store; one verdict wins and every call returns it.
func TestConcurrentValidationsAgree(t *testing.T) {
	key := newKey(t)
	r := newRig(t, key, nil, t.TempDir(), testParams(idOf(t, key)), nil)
	m := newFakeMiner(t, nil, honest)
	knows(r.host, m)

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
	if pubs := r.pub.all(); len(pubs) != 1 || !bytes.Equal(pubs[0], envs[0]) {
		t.Errorf("published %d, want the one verdict once", len(pubs))
	}
	if st := r.o.Stats(); st.Signed != 1 {
		t.Errorf("stats %+v, want one signature", st)
	}
}

func TestSignOnceKeepsTheStoredVerdict(t *testing.T) {
	key := newKey(t)
	r := newRig(t, key, nil, t.TempDir(), testParams(idOf(t, key)), nil)
	miner := idOf(t, newKey(t))
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
	rec := &pb.Availability{
		Network: testNet, Miner: []byte(idOf(t, key)), Seq: seq, State: state, Generation: gen, Attestations: atts,
		Models: []string{inference.BuiltinModel}, IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(time.Minute)),
	}
	env, err := protocol.Seal(rec, key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.Open[pb.Availability](env)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// penalize makes p hold evidence of a double grant by key's miner.
func penalize(t testing.TB, p *pool.Pool, key crypto.PrivKey) {
	t.Helper()
	grant := func(digest byte) []byte {
		env, err := protocol.Seal(&pb.Grant{Network: testNet, Miner: []byte(idOf(t, key)), Generation: 1, ClaimDigest: bytes.Repeat([]byte{digest}, 32)}, key)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	if _, isNew, err := p.AddEvidence(&pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: grant(1), Second: grant(2)}); err != nil || !isNew {
		t.Fatalf("evidence: new=%v err=%v", isNew, err)
	}
}

// The loop validates exactly the validating, unpenalised miners that
// rendezvous hashing assigns to this oracle in the round.
func TestRoundLoopValidatesAssignedMiners(t *testing.T) {
	key := newKey(t)
	self := idOf(t, key)
	others := []peer.ID{idOf(t, newKey(t)), idOf(t, newKey(t))}
	p := testParams(append([]peer.ID{self}, others...)...)
	p.OraclesPerRound = 1
	now := time.Now()
	round := p.RoundAt(now)
	assigned := func(k crypto.PrivKey) bool {
		return slices.Contains(protocol.AssignedOracles(p.OracleIDs(), idOf(t, k), 1, round, p.PerRound()), self)
	}
	// Draw miner keys until there are three of each kind.
	var yes, no []crypto.PrivKey
	for len(yes) < 3 || len(no) < 3 {
		k := newKey(t)
		if assigned(k) && len(yes) < 3 {
			yes = append(yes, k)
		} else if !assigned(k) && len(no) < 3 {
			no = append(no, k)
		}
	}

	r := newRig(t, key, nil, t.TempDir(), p, func() time.Time { return now })
	var miners []*fakeMiner
	for _, k := range append(slices.Clone(yes), no...) {
		m := newFakeMiner(t, k, honest)
		knows(r.host, m)
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
		cooling = newKey(t)
	}
	cm := newFakeMiner(t, cooling, honest)
	knows(r.host, cm)
	addMiner(t, r.pool, cooling, pb.MinerState_COOLING_OFF, 1)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.o.Start(ctx)
	t.Cleanup(func() { _ = r.o.Stop(context.Background()) })
	waitFor(t, "two validations", func() bool { return r.o.Stats().Signed >= 2 })
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

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
	for _, env := range r.pub.all() {
		if a := openAtt(t, env).Msg; a.Round != round || a.Generation != 1 {
			t.Errorf("attestation for gen %d round %d, want 1 and %d", a.Generation, a.Round, round)
		}
	}
}

// Over many short rounds, assignments rotate, and a miner this oracle has
// passed is never challenged again by it for that generation.
func TestRoundLoopValidatesEachGenerationOnce(t *testing.T) {
	key := newKey(t)
	p := testParams(idOf(t, key), idOf(t, newKey(t)), idOf(t, newKey(t)))
	p.OraclesPerRound = 1
	p.RoundPeriod = duration.Duration(100 * time.Millisecond)
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	// As gossip would, deliver our own attestations to our pool.
	r.pub.onPublish = func(env []byte) {
		s, err := protocol.Open[pb.Attestation](env)
		if err == nil {
			_, err = r.pool.AddAttestation(s)
		}
		if err != nil {
			t.Errorf("pool refuses our attestation: %v", err)
		}
	}
	var miners []*fakeMiner
	for range 4 {
		m := newFakeMiner(t, nil, honest)
		knows(r.host, m)
		addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
		miners = append(miners, m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.o.Start(ctx)
	t.Cleanup(func() { _ = r.o.Stop(context.Background()) })
	waitFor(t, "every miner validated", func() bool { return r.o.Stats().Passed == len(miners) })
	// A few more rounds, in which nothing should happen.
	start := p.RoundAt(time.Now())
	waitFor(t, "three more rounds", func() bool { return p.RoundAt(time.Now()) >= start+3 })
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
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
	key := newKey(t)
	p := testParams(idOf(t, key))
	p.RoundPeriod = duration.Duration(100 * time.Millisecond)
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	m := newFakeMiner(t, nil, honest)
	knows(r.host, m)
	// The rest of the network: what the miner and every other node see.
	network, err := pool.New(openStore(t, t.TempDir()), r.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Our own pool gets every attestation we publish, as gossip delivers
	// our messages to our own subscription; the first reaches no peer.
	var sent atomic.Int32
	r.pub.onPublish = func(env []byte) {
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
	}
	addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.o.Start(ctx)
	t.Cleanup(func() { _ = r.o.Stop(context.Background()) })
	waitFor(t, "the first pass", func() bool { return r.o.Stats().Passed == 1 })

	// Not heard from since: the pass may yet arrive, nothing is done.
	start := p.RoundAt(time.Now())
	waitFor(t, "four more rounds", func() bool { return p.RoundAt(time.Now()) >= start+4 })
	if got := m.challenges.Load(); got != 1 {
		t.Fatalf("a miner not heard from since its pass was challenged %d times", got)
	}

	// The miner re-signs its record, as it does every record_lifetime/3,
	// still validating: it never got the pass.
	seq := uint64(2)
	if err := r.pool.AddAvailability(minerRecord(t, m.key, seq, pb.MinerState_VALIDATING, 1, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the network to hold a pass", func() bool { return len(network.PassingOracles(m.id, 1)) >= p.Quorum })
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
	waitFor(t, "three more rounds", func() bool { return p.RoundAt(time.Now()) >= start+3 })
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := m.challenges.Load(); got != challenged {
		t.Errorf("an available miner was challenged %d more times", got-challenged)
	}

	// One verdict per round, the one in the store, and a pass in each.
	pubs := r.pub.all()
	if len(pubs) < 2 {
		t.Fatalf("published %d attestations, want a second", len(pubs))
	}
	rounds := map[uint64][]byte{}
	for _, env := range pubs {
		a := openAtt(t, env).Msg
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

func TestNotAnOracle(t *testing.T) {
	key := newKey(t)
	p := testParams(idOf(t, newKey(t)))
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	m := newFakeMiner(t, nil, honest)
	knows(r.host, m)
	addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
	r.o.Start(context.Background())
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.o.Validate(context.Background(), m.id, 1, 1); err == nil {
		t.Error("Validate by a node outside the oracle set succeeded")
	}
	if m.challenges.Load() != 0 || r.o.Stats() != (Stats{}) {
		t.Errorf("a node outside the oracle set validated: %+v", r.o.Stats())
	}
}

func TestNewChecksDeps(t *testing.T) {
	key := newKey(t)
	h := newHost(t, key)
	p := testParams(h.ID())
	check := protocol.Checker{Network: testNet, Params: p}
	s := openStore(t, t.TempDir())
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
	otherKey.Key = newKey(t)
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

func TestLatencies(t *testing.T) {
	got := latencies([]uint32{10, 900, 0}, 1500*time.Millisecond)
	want := []time.Duration{500 * time.Millisecond, 900 * time.Millisecond, 500 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("latencies = %v, want %v", got, want)
	}
}

func benchAttestation(b *testing.B) (*pb.Attestation, crypto.PrivKey) {
	key := newKey(b)
	now := time.Now()
	return &pb.Attestation{
		Network: testNet, Oracle: []byte(idOf(b, key)), Miner: []byte(idOf(b, newKey(b))), Generation: 7, Round: 123456,
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
