package pool_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testNet = "testnet"

// env is a pool on a real Badger store, in a network of five oracles
// (quorum three), judged with a clock fixed at the env's creation. The pool
// keeps store TTLs and record expiry on the wall clock, so the fixed time is
// the real time the test started.
type env struct {
	*testkit.Network
	check protocol.Checker

	dir   string
	store *store.Store
	pool  *pool.Pool
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	n := testkit.NewNetwork(tb, testNet, time.Now().Truncate(time.Millisecond))
	e := &env{Network: n, check: n.Checker()}
	e.dir = tb.TempDir()
	e.open(tb)
	return e
}

// open opens (or reopens) the store and a pool on it.
func (e *env) open(tb testing.TB) {
	tb.Helper()
	st, err := store.Open(e.dir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	p, err := pool.New(st, e.check, nil)
	if err != nil {
		tb.Fatal(err)
	}
	e.store, e.pool = st, p
}

func (e *env) reopen(tb testing.TB) {
	tb.Helper()
	if err := e.store.Close(); err != nil {
		tb.Fatal(err)
	}
	e.open(tb)
}

func ms(t time.Time) int64 { return protocol.Ms(t) }

func edits[M any](mutate func(M)) []func(M) {
	if mutate == nil {
		return nil
	}
	return []func(M){mutate}
}

// att is a valid passing attestation by oracle i of miner at generation 7, round 100.
func (e *env) att(i int, miner peer.ID, mutate func(*pb.Attestation)) *pb.Attestation {
	return e.Attestation(i, miner, edits(mutate)...)
}

func (e *env) sealAtt(tb testing.TB, i int, miner peer.ID, mutate func(*pb.Attestation)) protocol.Signed[*pb.Attestation] {
	return e.SealedAttestation(tb, i, miner, edits(mutate)...)
}

// avail is a valid record of the miner key's peer: AVAILABLE records carry
// a quorum of attestations for their generation.
func (e *env) avail(tb testing.TB, k crypto.PrivKey, seq, gen uint64, state pb.MinerState, mutate func(*pb.Availability)) protocol.Signed[*pb.Availability] {
	return e.SealedAvailability(tb, testkit.Party{Key: k, ID: testkit.ID(tb, k)}, seq, gen, state, edits(mutate)...)
}

func (e *env) claim(session string) []byte {
	return mustSeal(e.Claim(func(c *pb.Claim) {
		c.Session, c.Nonce = session, []byte("nonce-"+session+"-0123")
	}), e.Router.Key)
}

// grantAt is the miner's grant of the router's claim for session "s1" at gen.
func (e *env) grantAt(tb testing.TB, gen uint64) protocol.Signed[*pb.Grant] {
	return e.grantEnding(tb, gen, e.Now.Add(30*time.Second))
}

// grantEnding is grantAt with its lease ending at end.
func (e *env) grantEnding(tb testing.TB, gen uint64, end time.Time) protocol.Signed[*pb.Grant] {
	claim := mustSeal(e.Claim(func(c *pb.Claim) { c.Generation, c.Nonce, c.Model = gen, []byte("nonce-s1-0123456"), "" }), e.Router.Key)
	return testkit.Signed(tb, e.Grant(claim, func(g *pb.Grant) { g.Generation, g.LeaseEndMs = gen, ms(end) }), e.Miner.Key)
}

// grant is the miner's valid grant of the router's claim for session.
func (e *env) grant(tb testing.TB, session string, mutate func(*pb.Grant)) protocol.Signed[*pb.Grant] {
	g := e.Grant(e.claim(session), func(g *pb.Grant) { g.Session = session })
	if mutate != nil {
		mutate(g)
	}
	return testkit.Signed(tb, g, e.Miner.Key)
}

func (e *env) release(tb testing.TB, gen uint64, outcome pb.Outcome) protocol.Signed[*pb.Release] {
	return testkit.Signed(tb, e.Release(func(r *pb.Release) { r.Generation, r.Outcome, r.Rating = gen, outcome, 0 }), e.Router.Key)
}

func mustSeal[T any, M protocol.Message[T]](m M, k crypto.PrivKey) []byte {
	raw, err := protocol.Seal(m, k)
	if err != nil {
		panic(err)
	}
	return raw
}

type published struct {
	topic string
	data  []byte
}

// validators builds each topic's envelope validator from the pool's
// judges, as a node does, with a publisher that hands evidence to the
// returned channel.
func validators(tb testing.TB, e *env, fail bool) (map[string]gossip.Validator, chan published) {
	tb.Helper()
	pubs := make(chan published, 64)
	judges := e.pool.Judges(testkit.Key(tb, "node"), func(_ context.Context, topic string, data []byte) error {
		pubs <- published{topic, data}
		if fail {
			return errors.New("no peers")
		}
		return nil
	})
	v := map[string]gossip.Validator{}
	for _, topic := range protocol.Topics {
		var kinds []gossip.Kind
		for _, k := range protocol.TopicKinds[topic] {
			j, ok := judges[k.Domain]
			if !ok {
				tb.Fatalf("no judge of %s, which topic %s carries", k.Domain, topic)
			}
			kinds = append(kinds, gossip.Judged(j.New, j.Take))
		}
		v[topic] = gossip.EnvelopeValidator(kinds...)
	}
	return v, pubs
}

func TestJudges(t *testing.T) {
	for _, failingPublisher := range []bool{false, true} {
		name := "publisher ok"
		if failingPublisher {
			name = "publisher fails"
		}
		t.Run(name, func(t *testing.T) { testJudges(t, failingPublisher) })
	}
}

func testJudges(t *testing.T, failingPublisher bool) {
	e := newEnv(t)
	v, pubs := validators(t, e, failingPublisher)
	node := testkit.ID(t, testkit.Key(t, "node"))

	rec := e.avail(t, e.Miner.Key, 1, 7, pb.MinerState_AVAILABLE, nil)
	att := e.sealAtt(t, 3, e.Miner.ID, nil)
	g1 := e.grant(t, "s1", nil)
	pass0, fail0 := e.sealAtt(t, 0, e.Miner2.ID, nil), e.sealAtt(t, 0, e.Miner2.ID, func(a *pb.Attestation) { a.Pass = false })
	otherEvidence := mustSeal(&pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_VERDICT, First: pass0.Raw, Second: fail0.Raw}, e.Other.Key)
	sameTwice := mustSeal(&pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_VERDICT, First: att.Raw, Second: att.Raw}, e.Other.Key)

	steps := []struct {
		name     string
		topic    string
		data     []byte
		want     string
		offender peer.ID // evidence expected published on the topic
	}{
		{"availability", protocol.TopicPool, rec.Raw, "accept", ""},
		{"availability again", protocol.TopicPool, rec.Raw, "ignore", ""},
		{"forged availability", protocol.TopicPool, mustSeal(rec.Msg, e.Other.Key), "reject", ""},
		{"same seq, other content", protocol.TopicPool, e.avail(t, e.Miner.Key, 1, 7, pb.MinerState_RESERVED, nil).Raw, "reject", ""},
		{"expired availability", protocol.TopicPool, e.avail(t, e.Miner.Key, 2, 7, pb.MinerState_VALIDATING, func(a *pb.Availability) {
			a.ExpiresMs = ms(e.Now)
		}).Raw, "ignore", ""},
		{"attestation on the pool topic", protocol.TopicPool, att.Raw, "reject", ""},
		{"garbage on the pool topic", protocol.TopicPool, []byte("garbage"), "reject", ""},

		{"attestation", protocol.TopicAttestations, att.Raw, "accept", ""},
		{"attestation again", protocol.TopicAttestations, att.Raw, "ignore", ""},
		{"forged attestation", protocol.TopicAttestations, mustSeal(e.att(1, e.Miner.ID, nil), e.Oracles[2].Key), "reject", ""},
		{"attestation of an outsider", protocol.TopicAttestations, mustSeal(e.att(1, e.Miner.ID, func(a *pb.Attestation) { a.Oracle = []byte(e.Other.ID) }), e.Other.Key), "reject", ""},
		{"expired attestation", protocol.TopicAttestations, e.sealAtt(t, 1, e.Miner.ID, func(a *pb.Attestation) {
			a.IssuedMs, a.ExpiresMs = ms(e.Now.Add(-20*time.Minute)), ms(e.Now.Add(-time.Second))
		}).Raw, "ignore", ""},
		{"attestation of an older generation", protocol.TopicAttestations, e.sealAtt(t, 1, e.Miner.ID, func(a *pb.Attestation) { a.Generation = 6 }).Raw, "ignore", ""},
		{"conflicting verdict", protocol.TopicAttestations, e.sealAtt(t, 3, e.Miner.ID, func(a *pb.Attestation) { a.Pass = false }).Raw, "ignore", e.Oracles[3].ID},
		{"evidence someone else found", protocol.TopicAttestations, otherEvidence, "accept", ""},
		{"same evidence again", protocol.TopicAttestations, otherEvidence, "ignore", ""},
		{"evidence of one message twice", protocol.TopicAttestations, sameTwice, "reject", ""},
		{"grant on the attestations topic", protocol.TopicAttestations, g1.Raw, "reject", ""},
		{"empty message", protocol.TopicAttestations, nil, "reject", ""},

		{"grant", protocol.TopicReservations, g1.Raw, "accept", ""},
		{"grant again", protocol.TopicReservations, g1.Raw, "ignore", ""},
		{"forged grant", protocol.TopicReservations, mustSeal(e.grant(t, "s3", nil).Msg, e.Other.Key), "reject", ""},
		{"release", protocol.TopicReservations, e.release(t, 7, pb.Outcome_COMPLETED).Raw, "accept", ""},
		{"release again", protocol.TopicReservations, e.release(t, 7, pb.Outcome_COMPLETED).Raw, "ignore", ""},
		{"release by an outsider", protocol.TopicReservations, mustSeal(&pb.Release{Network: testNet, Session: "s1", Signer: []byte(e.Other.ID),
			Miner: []byte(e.Miner.ID), Router: []byte(e.Router.ID), Generation: 8, Outcome: pb.Outcome_FAILED, IssuedMs: ms(e.Now)}, e.Other.Key), "reject", ""},
		{"double grant", protocol.TopicReservations, e.grant(t, "s2", nil).Raw, "ignore", e.Miner.ID},
		{"availability on the reservations topic", protocol.TopicReservations, rec.Raw, "reject", ""},
	}
	for _, s := range steps {
		res, err := v[s.topic](context.Background(), e.Other.ID, s.data)
		if got := gossip.Outcome(res); got != s.want {
			t.Errorf("%s: %s (%v), want %s", s.name, got, err, s.want)
		}
		if (err == nil) != (res == pubsub.ValidationAccept) {
			t.Errorf("%s: result %s with error %v", s.name, gossip.Outcome(res), err)
		}
		if s.offender == "" {
			continue
		}
		var p published
		select {
		case p = <-pubs:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no evidence published", s.name)
		}
		if p.topic != s.topic {
			t.Errorf("%s: evidence published on %s, want %s", s.name, p.topic, s.topic)
		}
		ev, err := protocol.Open[pb.Evidence](p.data)
		if err != nil {
			t.Fatalf("%s: published evidence: %v", s.name, err)
		}
		if ev.Signer != node {
			t.Errorf("%s: evidence signed by %s, want this node %s", s.name, ev.Signer, node)
		}
		if offender, err := e.check.Evidence(ev.Msg); err != nil || offender != s.offender {
			t.Errorf("%s: evidence against %s (%v), want %s", s.name, offender, err, s.offender)
		}
		if !e.pool.Penalized(s.offender) {
			t.Errorf("%s: offender not penalized", s.name)
		}
		// Another copy of a conflict already held travels no further.
		if res, err := v[s.topic](context.Background(), e.Other.ID, p.data); res != pubsub.ValidationIgnore {
			t.Errorf("%s: published evidence judged again %s (%v), want ignore", s.name, gossip.Outcome(res), err)
		}
	}
	// Evidence found once is published once, and nothing else is published.
	select {
	case p := <-pubs:
		t.Errorf("unexpected publication on %s", p.topic)
	case <-time.After(100 * time.Millisecond):
	}
	if !e.pool.Penalized(e.Oracles[0].ID) {
		t.Error("evidence accepted from gossip did not penalize oracle 0")
	}
	if e.pool.Penalized(e.Oracles[1].ID) || e.pool.Penalized(e.Other.ID) || e.pool.Penalized(e.Router.ID) {
		t.Error("an honest peer was penalized")
	}
	if r := e.pool.Reputation(e.Miner.ID); r.Completed != 1 || r.Equivocations != 1 || r.Score() != 0 {
		t.Errorf("miner reputation %+v", r)
	}
}

func FuzzGossipValidators(f *testing.F) {
	e := newEnv(f)
	v, pubs := validators(f, e, false)
	go func() {
		for range pubs {
		}
	}()
	att := e.sealAtt(f, 0, e.Miner.ID, nil)
	g1, g2 := e.grant(f, "s1", nil), e.grant(f, "s2", nil)
	seeds := [][]byte{
		e.avail(f, e.Miner.Key, 1, 7, pb.MinerState_AVAILABLE, nil).Raw,
		att.Raw,
		e.sealAtt(f, 0, e.Miner.ID, func(a *pb.Attestation) { a.Pass = false }).Raw,
		g1.Raw, g2.Raw,
		e.release(f, 7, pb.Outcome_COMPLETED).Raw,
		mustSeal(&pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: g1.Raw, Second: g2.Raw}, e.Other.Key),
		nil, {}, []byte("junk"), {0x0a, 0x00}, bytes.Repeat([]byte{0xff}, 32),
	}
	for i := range protocol.Topics {
		for _, s := range seeds {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, topic uint8, data []byte) {
		name := protocol.Topics[int(topic)%len(protocol.Topics)]
		res, err := v[name](context.Background(), e.Other.ID, data)
		switch res {
		case pubsub.ValidationAccept, pubsub.ValidationReject, pubsub.ValidationIgnore:
		default:
			t.Fatalf("result %d", res)
		}
		if (err == nil) != (res == pubsub.ValidationAccept) {
			t.Fatalf("result %s with error %v", gossip.Outcome(res), err)
		}
	})
}
