package oracle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"google.golang.org/protobuf/proto"
)

func TestNotAnOracle(t *testing.T) {
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, testkit.NewKey(t)))
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
	key := testkit.NewKey(t)
	h := testkit.Host(t, key)
	p := testParams(h.ID())
	check := protocol.Checker{Network: testNet, Params: p}
	s := testkit.Store(t, t.TempDir())
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

func TestLatencies(t *testing.T) {
	got := latencies([]uint32{10, 900, 0}, 1500*time.Millisecond)
	want := []time.Duration{500 * time.Millisecond, 900 * time.Millisecond, 500 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("latencies = %v, want %v", got, want)
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
