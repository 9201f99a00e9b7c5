package protocol_test

import (
	"crypto/ed25519"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// BenchmarkAttestationVerify is what a node pays per gossiped attestation:
// decode the envelope, verify its signature, decode the payload strictly
// and run the stateless checks.
func BenchmarkAttestationVerify(b *testing.B) {
	f := newFixture(b)
	raw := testkit.Seal(b, f.att(0), f.Oracles[0].Key)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := protocol.Open[pb.Attestation](raw)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.check.Attestation(s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "att/s")
}

// BenchmarkAttestationVerifyBaseline is the floor: one Ed25519 verification
// of a message the size of the attestation envelope.
func BenchmarkAttestationVerifyBaseline(b *testing.B) {
	f := newFixture(b)
	raw := testkit.Seal(b, f.att(0), f.Oracles[0].Key)
	seed := [ed25519.SeedSize]byte{1}
	key := ed25519.NewKeyFromSeed(seed[:])
	pub := key.Public().(ed25519.PublicKey)
	msg := make([]byte, len(raw))
	sig := ed25519.Sign(key, msg)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("signature does not verify")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "att/s")
}
