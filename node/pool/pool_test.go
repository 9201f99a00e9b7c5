package pool_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestAddAvailability(t *testing.T) {
	e := newEnv(t)
	var (
		avail   = pb.MinerState_AVAILABLE
		valid   = pb.MinerState_VALIDATING
		reserve = pb.MinerState_RESERVED
	)
	first := e.avail(t, e.Miner.Key, 1, 7, avail, nil)
	second := e.avail(t, e.Miner.Key, 2, 7, reserve, nil)
	steps := []struct {
		name      string
		rec       protocol.Signed[*pb.Availability]
		want      string
		wantSeq   uint64
		wantState pb.MinerState
	}{
		{"first record", first, "ok", 1, avail},
		{"same record again", first, "ignore", 1, avail},
		{"newer seq replaces", second, "ok", 2, reserve},
		{"older seq ignored", first, "ignore", 2, reserve},
		{"older seq, other content, ignored", e.avail(t, e.Miner.Key, 1, 7, valid, nil), "ignore", 2, reserve},
		{"same seq, same bytes, ignored", second, "ignore", 2, reserve},
		{"same seq, other content, rejected", e.avail(t, e.Miner.Key, 2, 7, valid, nil), "reject", 2, reserve},
		{"same seq, other models, rejected", e.avail(t, e.Miner.Key, 2, 7, reserve, func(a *pb.Availability) {
			a.Models = []string{"mistral"}
		}), "reject", 2, reserve},
		{"generation goes up", e.avail(t, e.Miner.Key, 3, 8, valid, nil), "ok", 3, valid},
		{"generation goes back", e.avail(t, e.Miner.Key, 4, 7, valid, nil), "reject", 3, valid},
		{"forged by another key", testkit.Signed(t, e.avail(t, e.Miner.Key, 9, 9, valid, nil).Msg, e.Other.Key), "reject", 3, valid},
		{"available without quorum", e.avail(t, e.Miner.Key, 9, 8, avail, func(a *pb.Availability) {
			a.Attestations = a.Attestations[:2]
		}), "reject", 3, valid},
		{"expired", e.avail(t, e.Miner.Key, 9, 8, valid, func(a *pb.Availability) { a.ExpiresMs = ms(e.Now) }), "ignore", 3, valid},
		{"another network", e.avail(t, e.Miner.Key, 9, 8, valid, func(a *pb.Availability) { a.Network = "othernet" }), "reject", 3, valid},
		{"skipping sequence numbers is fine", e.avail(t, e.Miner.Key, 10, 8, avail, nil), "ok", 10, avail},
	}
	for _, s := range steps {
		err := e.pool.AddAvailability(s.rec)
		if got := testkit.Class(err); got != s.want {
			t.Errorf("%s: got %s (%v), want %s", s.name, got, err, s.want)
		}
		m, ok := e.pool.Miner(e.Miner.ID)
		if !ok || m.Seq != s.wantSeq || m.State != s.wantState {
			t.Fatalf("%s: miner %v seq %d state %s, want seq %d state %s", s.name, ok, m.Seq, m.State, s.wantSeq, s.wantState)
		}
	}
	m, _ := e.pool.Miner(e.Miner.ID)
	if m.Generation != 8 || !slices.Equal(m.Models, []string{"llama"}) || m.ID != e.Miner.ID {
		t.Errorf("miner %+v", m)
	}
	if want := protocol.Time(steps[len(steps)-1].rec.Msg.ExpiresMs); !m.Expires.Equal(want) {
		t.Errorf("expires %s, want %s", m.Expires, want)
	}
	if len(m.Oracles) != 0 {
		t.Errorf("oracles %v for generation 8 with no attestations held", m.Oracles)
	}
	if _, ok := e.pool.Miner(e.Other.ID); ok {
		t.Error("an unknown miner is known")
	}
}

func TestAvailabilityPersisted(t *testing.T) {
	e := newEnv(t)
	r1 := e.avail(t, e.Miner.Key, 5, 7, pb.MinerState_AVAILABLE, nil)
	r2 := e.avail(t, e.Miner2.Key, 1, 3, pb.MinerState_VALIDATING, nil)
	for _, r := range []protocol.Signed[*pb.Availability]{r1, r2} {
		if err := e.pool.AddAvailability(r); err != nil {
			t.Fatal(err)
		}
	}
	// A damaged entry is dropped on load, not fatal.
	if err := e.store.Put([]byte("pool/damaged"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put([]byte("pool/bad-envelope"), []byte(`{"envelope":"AAAA"}`)); err != nil {
		t.Fatal(err)
	}
	before := e.pool.Miners()
	e.reopen(t)
	after := e.pool.Miners()
	if len(after) != 2 {
		t.Fatalf("%d miners after reopening, want 2", len(after))
	}
	for i, m := range after {
		b := before[i]
		if m.ID != b.ID || m.Seq != b.Seq || m.State != b.State || m.Generation != b.Generation ||
			!bytes.Equal(m.Record, b.Record) || !m.Expires.Equal(b.Expires) || !m.LastSeen.Equal(b.LastSeen) {
			t.Errorf("miner %d changed across reopening:\n got %+v\nwant %+v", i, m, b)
		}
	}
	if bytes.Compare([]byte(after[0].ID), []byte(after[1].ID)) >= 0 {
		t.Error("Miners is not ordered by peer ID")
	}
	// The reloaded record still guards against going back.
	if err := e.pool.AddAvailability(r1); testkit.Class(err) != "ignore" {
		t.Errorf("re-adding the persisted record: %v", err)
	}
	if err := e.pool.AddAvailability(e.avail(t, e.Miner.Key, 5, 7, pb.MinerState_RESERVED, nil)); testkit.Class(err) != "reject" {
		t.Errorf("same seq, other content after reopening: %v", err)
	}
	if got := e.pool.Available("llama"); len(got) != 1 || got[0].ID != e.Miner.ID {
		t.Errorf("available after reopening: %v", got)
	}
}

func TestAddAttestation(t *testing.T) {
	e := newEnv(t)
	if err := e.pool.AddAvailability(e.avail(t, e.Miner.Key, 1, 7, pb.MinerState_VALIDATING, nil)); err != nil {
		t.Fatal(err)
	}
	pass0 := e.sealAtt(t, 0, e.Miner.ID, nil)
	steps := []struct {
		name        string
		att         protocol.Signed[*pb.Attestation]
		want        string
		wantEv      peer.ID // the offender, if evidence is returned
		wantPassing []peer.ID
		wantHeld    int
	}{
		{"valid", pass0, "ok", "", e.OracleIDs()[:1], 1},
		{"duplicate", pass0, "ignore", "", e.OracleIDs()[:1], 1},
		{"failing verdict of another oracle", e.sealAtt(t, 1, e.Miner.ID, func(a *pb.Attestation) { a.Pass = false }), "ok", "", e.OracleIDs()[:1], 2},
		{"older generation than the record", e.sealAtt(t, 2, e.Miner.ID, func(a *pb.Attestation) { a.Generation = 6 }), "ignore", "", e.OracleIDs()[:1], 2},
		{"conflicting verdict", e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) { a.Pass, a.ScoreMilli = false, 200 }), "ok", e.Oracles[0].ID, e.OracleIDs()[:1], 2},
		{"same verdict re-signed later", e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) { a.IssuedMs += 1000; a.ExpiresMs += 1000 }), "ignore", "", e.OracleIDs()[:1], 2},
		{"same oracle, next round", e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) { a.Round = 101 }), "ok", "", e.OracleIDs()[:1], 3},
		{"forged", testkit.Signed(t, e.att(2, e.Miner.ID, nil), e.Oracles[3].Key), "reject", "", e.OracleIDs()[:1], 3},
		{"unknown oracle", testkit.Signed(t, e.att(2, e.Miner.ID, func(a *pb.Attestation) { a.Oracle = []byte(e.Other.ID) }), e.Other.Key), "reject", "", e.OracleIDs()[:1], 3},
		{"expired", e.sealAtt(t, 2, e.Miner.ID, func(a *pb.Attestation) {
			a.IssuedMs, a.ExpiresMs = ms(e.Now.Add(-20*time.Minute)), ms(e.Now.Add(-time.Second))
		}), "ignore", "", e.OracleIDs()[:1], 3},
		{"from the future", e.sealAtt(t, 2, e.Miner.ID, func(a *pb.Attestation) {
			a.IssuedMs = ms(e.Now.Add(time.Hour))
			a.ExpiresMs = a.IssuedMs + 60_000
		}), "ignore", "", e.OracleIDs()[:1], 3},
		{"another network", e.sealAtt(t, 2, e.Miner.ID, func(a *pb.Attestation) { a.Network = "othernet" }), "reject", "", e.OracleIDs()[:1], 3},
		{"second passing oracle", e.sealAtt(t, 2, e.Miner.ID, nil), "ok", "", []peer.ID{e.Oracles[0].ID, e.Oracles[2].ID}, 4},
	}
	for _, s := range steps {
		ev, err := e.pool.AddAttestation(s.att)
		if got := testkit.Class(err); got != s.want {
			t.Errorf("%s: got %s (%v), want %s", s.name, got, err, s.want)
		}
		switch {
		case s.wantEv == "" && ev != nil:
			t.Errorf("%s: unexpected evidence", s.name)
		case s.wantEv != "":
			if ev == nil {
				t.Fatalf("%s: no evidence", s.name)
			}
			offender, err := e.check.Evidence(ev)
			if err != nil || offender != s.wantEv {
				t.Errorf("%s: evidence against %s (%v), want %s", s.name, offender, err, s.wantEv)
			}
			if ev.Kind != pb.EvidenceKind_DOUBLE_VERDICT || !bytes.Equal(ev.First, pass0.Raw) || !bytes.Equal(ev.Second, s.att.Raw) {
				t.Errorf("%s: evidence %v does not pair the held and the new attestation", s.name, ev.Kind)
			}
		}
		if got := e.pool.PassingOracles(e.Miner.ID, 7); !sameSet(got, s.wantPassing) {
			t.Errorf("%s: passing oracles %v, want %v", s.name, got, s.wantPassing)
		}
		if got := len(e.pool.Attestations(e.Miner.ID, 7)); got != s.wantHeld {
			t.Errorf("%s: %d attestations held, want %d", s.name, got, s.wantHeld)
		}
	}
	m, _ := e.pool.Miner(e.Miner.ID)
	if !sameSet(m.Oracles, []peer.ID{e.Oracles[0].ID, e.Oracles[2].ID}) {
		t.Errorf("miner's oracles %v", m.Oracles)
	}
	r := e.pool.Reputation(e.Miner.ID)
	if r.Passes != 3 || r.Fails != 1 {
		t.Errorf("miner reputation %+v, want 3 passes and 1 fail", r)
	}
	if r := e.pool.Reputation(e.Oracles[0].ID); r.Verdicts != 2 {
		t.Errorf("oracle 0 gave %d verdicts, want 2", r.Verdicts)
	}
	// Attestations of a miner not known yet are kept, and so is a newer generation.
	for _, a := range []protocol.Signed[*pb.Attestation]{e.sealAtt(t, 0, e.Miner2.ID, nil), e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) { a.Generation = 8 })} {
		if ev, err := e.pool.AddAttestation(a); err != nil || ev != nil {
			t.Errorf("attestation of generation %d of %x: %v", a.Msg.Generation, a.Msg.Miner, err)
		}
	}
	if got := e.pool.PassingOracles(e.Miner2.ID, 7); !sameSet(got, e.OracleIDs()[:1]) {
		t.Errorf("unknown miner's oracles %v", got)
	}
}

// TestRejectedAttestationsNotStored: nothing of a refused attestation is
// kept: a valid one for the same (oracle, miner, generation, round) is then
// news, neither a duplicate nor a conflict.
func TestRejectedAttestationsNotStored(t *testing.T) {
	bad := []struct {
		name   string
		oracle int // the oracle whose slot the bad one would occupy
		build  func(e *env) protocol.Signed[*pb.Attestation]
		want   string
	}{
		{"forged", 0, func(e *env) protocol.Signed[*pb.Attestation] {
			return testkit.Signed(t, e.att(1, e.Miner.ID, func(a *pb.Attestation) { a.Pass = false }), e.Oracles[0].Key)
		}, "reject"},
		{"unknown oracle", 0, func(e *env) protocol.Signed[*pb.Attestation] {
			return testkit.Signed(t, e.att(0, e.Miner.ID, func(a *pb.Attestation) { a.Oracle, a.Pass = []byte(e.Other.ID), false }), e.Other.Key)
		}, "reject"},
		{"expired", 0, func(e *env) protocol.Signed[*pb.Attestation] {
			return e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) {
				a.Pass, a.IssuedMs, a.ExpiresMs = false, ms(e.Now.Add(-20*time.Minute)), ms(e.Now.Add(-time.Millisecond))
			})
		}, "ignore"},
		{"future", 0, func(e *env) protocol.Signed[*pb.Attestation] {
			return e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) {
				a.Pass, a.IssuedMs = false, ms(e.Now.Add(e.check.Params.ClockSkew.Std()+time.Second))
				a.ExpiresMs = a.IssuedMs + 60_000
			})
		}, "ignore"},
		{"score over 1000", 0, func(e *env) protocol.Signed[*pb.Attestation] {
			return e.sealAtt(t, 0, e.Miner.ID, func(a *pb.Attestation) { a.ScoreMilli = 1001 })
		}, "reject"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var events int
			e.pool.Subscribe(func(pool.Event) { events++ })
			a := tt.build(e)
			ev, err := e.pool.AddAttestation(a)
			if got := testkit.Class(err); got != tt.want || ev != nil {
				t.Fatalf("got %s (%v), evidence %v; want %s", got, err, ev != nil, tt.want)
			}
			if got := e.pool.PassingOracles(e.Miner.ID, 7); len(got) != 0 {
				t.Errorf("passing oracles %v", got)
			}
			if r := e.pool.Reputation(e.Miner.ID); r != (pool.Reputation{}) {
				t.Errorf("reputation changed: %+v", r)
			}
			if events != 0 {
				t.Errorf("%d events", events)
			}
			ev, err = e.pool.AddAttestation(e.sealAtt(t, tt.oracle, e.Miner.ID, nil))
			if err != nil || ev != nil {
				t.Errorf("valid attestation after the refused one: %v, evidence %v", err, ev != nil)
			}
		})
	}
}

func TestGrantsAndEvidence(t *testing.T) {
	e := newEnv(t)
	for _, r := range []protocol.Signed[*pb.Availability]{
		e.avail(t, e.Miner.Key, 1, 7, pb.MinerState_AVAILABLE, nil),
		e.avail(t, e.Miner2.Key, 1, 7, pb.MinerState_AVAILABLE, nil),
	} {
		if err := e.pool.AddAvailability(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(e.pool.Available("llama")); !sameSet(got, []peer.ID{e.Miner.ID, e.Miner2.ID}) {
		t.Fatalf("available %v", got)
	}
	gA := e.grant(t, "s1", nil)
	steps := []struct {
		name   string
		g      protocol.Signed[*pb.Grant]
		want   string
		wantEv bool
	}{
		{"first grant", gA, "ok", false},
		{"duplicate", gA, "ignore", false},
		{"same claim re-granted", e.grant(t, "s1", func(g *pb.Grant) { g.LeaseEndMs += 5000 }), "ignore", false},
		{"forged", testkit.Signed(t, e.grant(t, "s2", nil).Msg, e.Other.Key), "reject", false},
		{"claim digest mismatch", e.grant(t, "s2", func(g *pb.Grant) { g.ClaimDigest = testkit.Digest32("x") }), "reject", false},
		{"another generation", e.grant(t, "s2", func(g *pb.Grant) {
			claim := mustSeal(&pb.Claim{Network: testNet, Session: "s2", Router: []byte(e.Router.ID), Miner: []byte(e.Miner.ID),
				Generation: 8, LeaseMs: 1000, Nonce: []byte("12345678"), ExpiresMs: ms(e.Now.Add(time.Second))}, e.Router.Key)
			g.Generation, g.Claim, g.ClaimDigest = 8, claim, protocol.Digest(claim)
		}), "ok", false},
		{"another claim, same generation", e.grant(t, "s2", nil), "ok", true},
	}
	var ev *pb.Evidence
	for _, s := range steps {
		got, err := e.pool.AddGrant(s.g)
		if c := testkit.Class(err); c != s.want || (got != nil) != s.wantEv {
			t.Fatalf("%s: got %s (%v), evidence %v; want %s, evidence %v", s.name, c, err, got != nil, s.want, s.wantEv)
		}
		if got != nil {
			ev = got
		}
	}
	if held, ok := e.pool.Grant(e.Miner.ID, 7); !ok || !bytes.Equal(held.Raw, gA.Raw) {
		t.Error("the first grant is not the one held")
	}
	if _, ok := e.pool.Grant(e.Miner2.ID, 7); ok {
		t.Error("a grant held for a miner that granted nothing")
	}
	if ev.Kind != pb.EvidenceKind_DOUBLE_GRANT || !bytes.Equal(ev.First, gA.Raw) {
		t.Errorf("evidence %v", ev)
	}
	if e.pool.Penalized(e.Miner.ID) {
		t.Fatal("penalized before the evidence is added")
	}

	var events []pool.Event
	e.pool.Subscribe(func(ev pool.Event) { events = append(events, ev) })
	offender, isNew, err := e.pool.AddEvidence(ev)
	if err != nil || !isNew || offender != e.Miner.ID {
		t.Fatalf("AddEvidence: %s, new %v, %v", offender, isNew, err)
	}
	if !e.pool.Penalized(e.Miner.ID) || e.pool.Penalized(e.Miner2.ID) || e.pool.Penalized(e.Router.ID) {
		t.Error("penalties on the wrong peers")
	}
	r := e.pool.Reputation(e.Miner.ID)
	if r.Score() != 0 || r.Equivocations != 1 {
		t.Errorf("offender's reputation %+v, score %v", r, r.Score())
	}
	if got := ids(e.pool.Available("llama")); !slices.Equal(got, []peer.ID{e.Miner2.ID}) {
		t.Errorf("available after the evidence: %v", got)
	}
	if got := ids(e.pool.Available("")); !slices.Equal(got, []peer.ID{e.Miner2.ID}) {
		t.Errorf("available, any model, after the evidence: %v", got)
	}
	if len(e.pool.Miners()) != 2 {
		t.Error("the offender is no longer listed among miners")
	}

	// The same conflict again, in either order: held already, dropped quietly.
	for _, again := range []*pb.Evidence{ev, {Network: testNet, Kind: ev.Kind, First: ev.Second, Second: ev.First}} {
		offender, isNew, err = e.pool.AddEvidence(again)
		if !errors.Is(err, protocol.ErrIgnore) || isNew || offender != e.Miner.ID {
			t.Errorf("repeated evidence: %s, new %v, %v; want ignore", offender, isNew, err)
		}
	}
	if r := e.pool.Reputation(e.Miner.ID); r.Equivocations != 1 {
		t.Errorf("repeated evidence counted again: %+v", r)
	}
	// Not evidence: nothing changes.
	for _, bad := range []*pb.Evidence{
		{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: gA.Raw, Second: gA.Raw},
		{Network: "othernet", Kind: ev.Kind, First: ev.First, Second: ev.Second},
		{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_VERDICT, First: ev.First, Second: ev.Second},
		{},
	} {
		if _, isNew, err := e.pool.AddEvidence(bad); testkit.Class(err) != "reject" || isNew {
			t.Errorf("bad evidence: new %v, %v", isNew, err)
		}
	}
	if len(events) != 1 || events[0].Kind != pool.EventEvidence || events[0].Offender != e.Miner.ID || events[0].Evidence != ev {
		t.Errorf("events %+v, want one evidence event", events)
	}

	// The penalty outlives a restart.
	e.reopen(t)
	if !e.pool.Penalized(e.Miner.ID) || e.pool.Reputation(e.Miner.ID).Score() != 0 {
		t.Error("penalty lost on reopening")
	}
	if got := ids(e.pool.Available("llama")); !slices.Equal(got, []peer.ID{e.Miner2.ID}) {
		t.Errorf("available after reopening: %v", got)
	}
}

func TestAddRelease(t *testing.T) {
	e := newEnv(t)
	// A router's release counts only against a grant it holds.
	for _, gen := range []uint64{7, 8, 10, 11} {
		if _, err := e.pool.AddGrant(e.grantAt(t, gen)); err != nil {
			t.Fatal(err)
		}
	}
	leaseEnd := e.Now.Add(2 * time.Second)
	if _, err := e.pool.AddGrant(e.grantEnding(t, 9, leaseEnd)); err != nil {
		t.Fatal(err)
	}
	early := testkit.Signed(t, &pb.Release{
		Network: testNet, Session: "s1", Signer: []byte(e.Miner.ID), Miner: []byte(e.Miner.ID), Router: []byte(e.Router.ID),
		Generation: 9, Outcome: pb.Outcome_EXPIRED, IssuedMs: ms(e.Now),
	}, e.Miner.Key)
	if err := e.pool.AddRelease(early); testkit.Class(err) != "reject" {
		t.Fatalf("a miner's expiry release before its lease ended: %v, want reject", err)
	}
	byMiner := testkit.Signed(t, &pb.Release{
		Network: testNet, Session: "s1", Signer: []byte(e.Miner.ID), Miner: []byte(e.Miner.ID), Router: []byte(e.Router.ID),
		Generation: 9, Outcome: pb.Outcome_EXPIRED, IssuedMs: ms(leaseEnd),
	}, e.Miner.Key)
	steps := []struct {
		name string
		r    protocol.Signed[*pb.Release]
		want string
		rep  pool.Reputation
	}{
		{"completed", e.release(t, 7, pb.Outcome_COMPLETED), "ok", pool.Reputation{Completed: 1}},
		{"again", e.release(t, 7, pb.Outcome_COMPLETED), "ignore", pool.Reputation{Completed: 1}},
		{"another outcome, same generation", e.release(t, 7, pb.Outcome_FAILED), "ignore", pool.Reputation{Completed: 1}},
		{"failed", e.release(t, 8, pb.Outcome_FAILED), "ok", pool.Reputation{Completed: 1, Failed: 1, Charged: 1}},
		// The router has charged the miner all it may: one session.
		{"expired, by the miner", byMiner, "ok", pool.Reputation{Completed: 1, Failed: 1, Expired: 1, Charged: 1}},
		{"cancelled counts as completed", e.release(t, 10, pb.Outcome_CANCELLED), "ok", pool.Reputation{Completed: 2, Failed: 1, Expired: 1, Charged: 1}},
		{"by an outsider", testkit.Signed(t, &pb.Release{
			Network: testNet, Session: "s1", Signer: []byte(e.Other.ID), Miner: []byte(e.Miner.ID), Router: []byte(e.Router.ID),
			Generation: 11, Outcome: pb.Outcome_FAILED, IssuedMs: ms(e.Now),
		}, e.Other.Key), "reject", pool.Reputation{Completed: 2, Failed: 1, Expired: 1, Charged: 1}},
		{"a router with no grant to match", e.release(t, 12, pb.Outcome_FAILED), "ignore", pool.Reputation{Completed: 2, Failed: 1, Expired: 1, Charged: 1}},
		{"another router against a held grant", testkit.Signed(t, &pb.Release{
			Network: testNet, Session: "s1", Signer: []byte(e.Other.ID), Miner: []byte(e.Miner.ID), Router: []byte(e.Other.ID),
			Generation: 11, Outcome: pb.Outcome_FAILED, IssuedMs: ms(e.Now),
		}, e.Other.Key), "reject", pool.Reputation{Completed: 2, Failed: 1, Expired: 1, Charged: 1}},
		{"garbage miner", testkit.Signed(t, &pb.Release{
			Network: testNet, Session: "s1", Signer: []byte(e.Router.ID), Miner: []byte("nobody"), Router: []byte(e.Router.ID),
			Generation: 11, Outcome: pb.Outcome_FAILED, IssuedMs: ms(e.Now),
		}, e.Router.Key), "reject", pool.Reputation{Completed: 2, Failed: 1, Expired: 1, Charged: 1}},
	}
	for _, s := range steps {
		err := e.pool.AddRelease(s.r)
		if got := testkit.Class(err); got != s.want {
			t.Errorf("%s: got %s (%v), want %s", s.name, got, err, s.want)
		}
		if got := e.pool.Reputation(e.Miner.ID); got != s.rep {
			t.Errorf("%s: reputation %+v, want %+v", s.name, got, s.rep)
		}
	}
	if r := e.pool.Reputation(""); r != (pool.Reputation{}) {
		t.Errorf("a reputation kept for the empty peer ID: %+v", r)
	}
}

func TestReputationScore(t *testing.T) {
	tests := []struct {
		name string
		r    pool.Reputation
		want float64
	}{
		{"fresh", pool.Reputation{}, 0.5},
		{"one pass", pool.Reputation{Passes: 1}, 2.0 / 3},
		{"one fail", pool.Reputation{Fails: 1}, 1.0 / 3},
		{"three passes, one fail", pool.Reputation{Passes: 3, Fails: 1}, 4.0 / 6},
		{"one completed session", pool.Reputation{Completed: 1}, 0.5},
		{"one failed session, charged in full", pool.Reputation{Failed: 1, Charged: 1}, 0.25},
		{"one expired session, charged in full", pool.Reputation{Expired: 1, Charged: 1}, 0.25},
		{"failed sessions count only as charged", pool.Reputation{Failed: 9, Charged: 0.5}, 1.0 / 2 * 1.0 / 1.5},
		{"one rejected answer", pool.Reputation{Faults: 1}, 0.25},
		{"faults weigh like failed sessions", pool.Reputation{Passes: 2, Completed: 3, Faults: 2}, 3.0 / 4 * 4.0 / 6},
		{"mixed", pool.Reputation{Passes: 8, Completed: 3, Failed: 1, Charged: 1}, 9.0 / 10 * 4.0 / 5},
		{"many", pool.Reputation{Passes: 98, Fails: 0, Completed: 99, Expired: 0}, 99.0 / 100},
		{"all bad", pool.Reputation{Fails: 10, Failed: 10, Expired: 10, Charged: 20}, 1.0 / 12 * 1.0 / 21},
		{"verdicts given do not count", pool.Reputation{Verdicts: 100}, 0.5},
		{"equivocation zeroes", pool.Reputation{Passes: 100, Completed: 100, Equivocations: 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.r.Score()
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("score %v, want %v", got, tt.want)
			}
			if got < 0 || got > 1 {
				t.Errorf("score %v out of [0, 1]", got)
			}
		})
	}
}

func TestReputationDamaged(t *testing.T) {
	e := newEnv(t)
	if err := e.store.Put([]byte("rep/"+string(e.Miner.ID)), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if r := e.pool.Reputation(e.Miner.ID); r != (pool.Reputation{}) {
		t.Errorf("damaged reputation read as %+v", r)
	}
	if _, err := e.pool.AddAttestation(e.sealAtt(t, 0, e.Miner.ID, nil)); err != nil {
		t.Fatal(err)
	}
	if r := e.pool.Reputation(e.Miner.ID); r.Passes != 1 {
		t.Errorf("reputation after a fresh start %+v", r)
	}
}

func TestSubscribe(t *testing.T) {
	e := newEnv(t)
	var got, got2 []pool.Event
	e.pool.Subscribe(func(ev pool.Event) { got = append(got, ev) })
	e.pool.Subscribe(func(ev pool.Event) { got2 = append(got2, ev) })

	rec := e.avail(t, e.Miner.Key, 1, 7, pb.MinerState_AVAILABLE, nil)
	att := e.sealAtt(t, 3, e.Miner.ID, nil)
	g1, g2 := e.grant(t, "s1", nil), e.grant(t, "s2", nil)
	rel := e.release(t, 7, pb.Outcome_COMPLETED)
	mustNil := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustNil(e.pool.AddAvailability(rec))
	_ = e.pool.AddAvailability(rec) // ignored: no event
	_, err := e.pool.AddAttestation(att)
	mustNil(err)
	_, _ = e.pool.AddAttestation(att)
	_, err = e.pool.AddGrant(g1)
	mustNil(err)
	ev, err := e.pool.AddGrant(g2) // evidence, no grant event
	mustNil(err)
	mustNil(e.pool.AddRelease(rel))
	_, _, err = e.pool.AddEvidence(ev)
	mustNil(err)
	_, _, _ = e.pool.AddEvidence(ev)

	want := []pool.EventKind{pool.EventAvailability, pool.EventAttestation, pool.EventGrant, pool.EventRelease, pool.EventEvidence}
	var kinds []pool.EventKind
	for _, ev := range got {
		kinds = append(kinds, ev.Kind)
	}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if len(got2) != len(got) {
		t.Errorf("second subscriber saw %d events, first %d", len(got2), len(got))
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"availability", got[0].Availability != nil && bytes.Equal(got[0].Availability.Raw, rec.Raw)},
		{"attestation", got[1].Attestation != nil && bytes.Equal(got[1].Attestation.Raw, att.Raw)},
		{"grant", got[2].Grant != nil && bytes.Equal(got[2].Grant.Raw, g1.Raw)},
		{"release", got[3].Release != nil && bytes.Equal(got[3].Release.Raw, rel.Raw)},
		{"evidence", got[4].Evidence == ev && got[4].Offender == e.Miner.ID},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s event does not carry its message", c.name)
		}
	}
	// Exactly one message field per event.
	for _, ev := range got {
		n := 0
		for _, set := range []bool{ev.Availability != nil, ev.Attestation != nil, ev.Grant != nil, ev.Release != nil, ev.Evidence != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Errorf("event %v carries %d messages", ev.Kind, n)
		}
	}
}

func TestStateName(t *testing.T) {
	for s, want := range map[pb.MinerState]string{
		pb.MinerState_JOINING: "joining", pb.MinerState_VALIDATING: "validating", pb.MinerState_AVAILABLE: "available",
		pb.MinerState_RESERVED: "reserved", pb.MinerState_COOLING_OFF: "cooling_off",
		pb.MinerState_MINER_STATE_UNSPECIFIED: "unknown", 42: "unknown",
	} {
		if got := pool.StateName(s); got != want {
			t.Errorf("StateName(%d) = %q, want %q", s, got, want)
		}
	}
}

func TestAvailableFilters(t *testing.T) {
	e := newEnv(t)
	recs := []protocol.Signed[*pb.Availability]{
		e.avail(t, e.Miner.Key, 1, 7, pb.MinerState_AVAILABLE, func(a *pb.Availability) { a.Models = []string{"llama", "mistral"} }),
		e.avail(t, e.Miner2.Key, 1, 7, pb.MinerState_RESERVED, nil),
	}
	for _, r := range recs {
		if err := e.pool.AddAvailability(r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		model string
		want  []peer.ID
	}{
		{"", []peer.ID{e.Miner.ID}},
		{"llama", []peer.ID{e.Miner.ID}},
		{"mistral", []peer.ID{e.Miner.ID}},
		{"gpt", nil},
	}
	for _, tt := range tests {
		if got := ids(e.pool.Available(tt.model)); !slices.Equal(got, tt.want) {
			t.Errorf("Available(%q) = %v, want %v", tt.model, got, tt.want)
		}
	}
}

func ids(ms []pool.Miner) []peer.ID {
	var out []peer.ID
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func sameSet(a, b []peer.ID) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// reservation is miner m's session with router at gen as gossip brings it:
// its grant, then its release with outcome.
func (e *env) reservation(t *testing.T, m, router testkit.Party, gen uint64, outcome pb.Outcome) {
	t.Helper()
	session := fmt.Sprintf("s-%s-%d", router.ID, gen)
	claim := mustSeal(e.Claim(func(c *pb.Claim) {
		c.Router, c.Miner, c.Generation, c.Session, c.Nonce, c.Model = []byte(router.ID), []byte(m.ID), gen, session, []byte("nonce-"+session), ""
	}), router.Key)
	g := testkit.Signed(t, e.Grant(claim, func(g *pb.Grant) {
		g.Router, g.Miner, g.Generation, g.Session = []byte(router.ID), []byte(m.ID), gen, session
	}), m.Key)
	if _, err := e.pool.AddGrant(g); err != nil {
		t.Fatal(err)
	}
	r := testkit.Signed(t, e.Release(func(r *pb.Release) {
		r.Signer, r.Router, r.Miner, r.Generation, r.Session, r.Outcome, r.Rating = []byte(router.ID), []byte(router.ID), []byte(m.ID), gen, session, outcome, 0
	}), router.Key)
	if err := e.pool.AddRelease(r); err != nil {
		t.Fatal(err)
	}
}

// The griefing attack: a router reserves a miner and releases it FAILED,
// again and again. It costs a miner at most one failed session, so a miner
// that passes its validations stays above a router's fit line (0.25),
// while an honest router's FAILED release still counts in full.
func TestGriefingRouterIsCapped(t *testing.T) {
	const fit = 0.25
	e := newEnv(t)
	honest, griefer := e.Router, e.Other
	// Both miners passed one validation (a quorum of three).
	for _, m := range []testkit.Party{e.Miner, e.Miner2} {
		for i := range e.Params.Quorum {
			if _, err := e.pool.AddAttestation(e.sealAtt(t, i, m.ID, nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first has a history of sessions the honest router completed.
	gen := uint64(10)
	for range 10 {
		e.reservation(t, e.Miner, honest, gen, pb.Outcome_COMPLETED)
		gen++
	}
	before := e.pool.Reputation(e.Miner.ID).Score()
	for range 9 {
		e.reservation(t, e.Miner, griefer, gen, pb.Outcome_FAILED)
		e.reservation(t, e.Miner2, griefer, gen, pb.Outcome_FAILED)
		gen++
	}
	old, fresh := e.pool.Reputation(e.Miner.ID), e.pool.Reputation(e.Miner2.ID)
	if old.Failed != 9 || fresh.Failed != 9 {
		t.Errorf("failed sessions counted %d and %d, want 9", old.Failed, fresh.Failed)
	}
	if old.Charged > 1 || fresh.Charged > 1 {
		t.Errorf("one router charged %v and %v, more than one session", old.Charged, fresh.Charged)
	}
	// What one failed session in full would leave: 4/5 × 11/12.
	if s := old.Score(); s < before*11/12-1e-12 {
		t.Errorf("an honest miner went from %v to %v", before, s)
	}
	if s := fresh.Score(); s < fit {
		t.Errorf("a new miner fell to %v, below the fit line", s)
	}
	if g := e.pool.Reputation(griefer.ID); g.Ended != 18 || g.EndedBad != 18 {
		t.Errorf("griefer's record %+v", g)
	}

	// The honest router's word still counts in full, against its own cap.
	charged := fresh.Charged
	e.reservation(t, e.Miner2, honest, gen, pb.Outcome_FAILED)
	if got := e.pool.Reputation(e.Miner2.ID).Charged - charged; math.Abs(got-1) > 1e-12 {
		t.Errorf("the honest router's failed session charged %v, want 1", got)
	}
	e.reservation(t, e.Miner2, honest, gen+1, pb.Outcome_FAILED)
	if got := e.pool.Reputation(e.Miner2.ID).Charged - charged; math.Abs(got-1) > 1e-12 {
		t.Errorf("the honest router charged %v in all, more than its cap", got)
	}
}
