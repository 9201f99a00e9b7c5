package pool_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

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
