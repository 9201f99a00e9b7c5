package testkit

import (
	"fmt"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Oracles is an oracle set whose keys the test holds, for tests of roles
// that run on the wall clock (Network is for checks judged at a fixed
// time): Params names the oracles, and Verdict seals their verdicts issued
// now, so a test makes a live miner available without running an oracle.
type Oracles struct {
	Network string
	Keys    []crypto.PrivKey
	Params  protocol.Params
}

// NewOracles is count fresh oracles of network, quorum of them passing a
// miner, in the default params as edit (if not nil) changes them. The
// params must validate.
func NewOracles(tb testing.TB, network string, count, quorum int, edit func(*protocol.Params)) *Oracles {
	tb.Helper()
	o := &Oracles{Network: network, Params: protocol.DefaultParams()}
	for range count {
		k := NewKey(tb)
		o.Keys = append(o.Keys, k)
		o.Params.Oracles = append(o.Params.Oracles, ID(tb, k).String())
	}
	o.Params.Quorum = quorum
	if edit != nil {
		edit(&o.Params)
	}
	if err := o.Params.Validate(); err != nil {
		tb.Fatal(err)
	}
	return o
}

// Checker judges the network's messages on the wall clock.
func (o *Oracles) Checker() protocol.Checker {
	return protocol.Checker{Network: o.Network, Params: o.Params}
}

// Verdict is oracle i's sealed verdict on miner at gen and round, issued
// now and expiring after lifetime: a pass scores 1000, a failure 0. Its
// challenge digest is one of its own, so two verdicts never conflict.
func (o *Oracles) Verdict(tb testing.TB, i int, miner peer.ID, gen, round uint64, pass bool, lifetime time.Duration) []byte {
	tb.Helper()
	now := time.Now()
	score := uint32(0)
	if pass {
		score = 1000
	}
	return Seal(tb, &pb.Attestation{
		Network: o.Network, Oracle: []byte(ID(tb, o.Keys[i])), Miner: []byte(miner), Generation: gen, Round: round,
		Model: inference.BuiltinModel, ScoreMilli: score, Pass: pass, IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(lifetime)),
		ChallengeDigest: Digest32(fmt.Sprintf("%s/%d/%d/%d", miner, i, gen, round)),
	}, o.Keys[i])
}

// Passes are every oracle's passing verdicts on miner at gen in the current
// round, for the attestation lifetime of the params.
func (o *Oracles) Passes(tb testing.TB, miner peer.ID, gen uint64) [][]byte {
	tb.Helper()
	round := o.Params.RoundAt(time.Now())
	out := make([][]byte, len(o.Keys))
	for i := range o.Keys {
		out[i] = o.Verdict(tb, i, miner, gen, round, true, o.Params.AttestationLifetime.Std())
	}
	return out
}
