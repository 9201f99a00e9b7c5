package oracle

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/testkit"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"google.golang.org/protobuf/proto"
)

func TestSignOnceKeepsTheStoredVerdict(t *testing.T) {
	key := testkit.NewKey(t)
	r := newRig(t, key, nil, t.TempDir(), testParams(testkit.ID(t, key)), nil)
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
