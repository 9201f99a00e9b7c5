package protocol_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// A grant's issue time is its lease end less its claim's lease, and a
// router's grants rank by it, then by miner peer ID.
func TestGrantRank(t *testing.T) {
	router := testkit.NewKey(t)
	grant := func(leaseEndMs int64, leaseMs uint32) *pb.Grant {
		miner := testkit.ID(t, testkit.NewKey(t))
		claim := testkit.Seal(t, &pb.Claim{Network: "n", Session: "s", Router: []byte(testkit.ID(t, router)),
			Miner: []byte(miner), LeaseMs: leaseMs, Nonce: make([]byte, 8)}, router)
		return &pb.Grant{Network: "n", Miner: []byte(miner), LeaseEndMs: leaseEndMs, Claim: claim}
	}
	a := grant(70_000, 60_000) // issued at 10 000
	b := grant(20_000, 10_000) // 10 000 too: the lower miner ID first
	c := grant(11_000, 1_000)  // 10 000 too
	d := grant(12_000, 1_000)  // 11 000
	if got := protocol.GrantIssuedMs(a); got != 10_000 {
		t.Fatalf("issued %d, want 10000", got)
	}
	if got := protocol.GrantIssuedMs(&pb.Grant{LeaseEndMs: 5, Claim: []byte("junk")}); got != math.MaxInt64 {
		t.Fatalf("a grant whose claim does not open: issued %d", got)
	}
	tied := []*pb.Grant{a, b, c}
	lower := 0
	for _, g := range tied[1:] {
		if bytes.Compare(g.Miner, a.Miner) < 0 {
			lower++
		}
	}
	if got := protocol.GrantRank(a, []*pb.Grant{d, b, c, a}); got != 1+lower {
		t.Errorf("rank of a: %d, want %d", got, 1+lower)
	}
	if got := protocol.GrantRank(d, []*pb.Grant{a, b, c}); got != 4 {
		t.Errorf("rank of the latest: %d, want 4", got)
	}
	if got := protocol.GrantRank(d, nil); got != 1 {
		t.Errorf("rank alone: %d, want 1", got)
	}
}
