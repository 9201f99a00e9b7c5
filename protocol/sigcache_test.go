package protocol_test

import (
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// The cache verifies each envelope's signature once and counts it; a
// forged copy is verified, counted and refused, and never cached.
func TestSigCacheCountsVerifications(t *testing.T) {
	k := testkit.NewKey(t)
	raw := testkit.Seal(t, &pb.Attestation{Network: "n", Oracle: []byte(testkit.ID(t, k))}, k)
	c := protocol.NewSigCache(16)
	for range 3 {
		if _, err := protocol.OpenCached[pb.Attestation](c, raw); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Verified(); got != 1 {
		t.Errorf("verified %d times, want once", got)
	}
	forged := append([]byte(nil), raw...)
	forged[len(forged)-1] ^= 1 // the signature's last byte
	for range 2 {
		if _, err := protocol.OpenCached[pb.Attestation](c, forged); err == nil {
			t.Fatal("a forged envelope opened")
		}
	}
	if got := c.Verified(); got != 3 {
		t.Errorf("verified %d times, want 3", got)
	}
}
