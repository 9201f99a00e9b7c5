package protocol_test

import (
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testNet = "testnet"

// testNow is the fixed clock of every Checker in these tests.
var testNow = time.Date(2031, time.March, 14, 15, 9, 26, 535_000_000, time.UTC)

// fixture is a network of five oracles (quorum three), a miner, a router and
// an outsider, judged at testNow.
type fixture struct {
	*testkit.Network
	check protocol.Checker
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	n := testkit.NewNetwork(tb, testNet, testNow)
	f := &fixture{Network: n, check: n.Checker()}
	return f
}

func (f *fixture) lifetime() time.Duration { return f.check.Params.AttestationLifetime.Std() }
func (f *fixture) skew() time.Duration     { return f.check.Params.ClockSkew.Std() }

func ms(t time.Time) int64 { return protocol.Ms(t) }

// att is a valid passing attestation by oracle i of the miner at generation 7, round 100.
func (f *fixture) att(i int) *pb.Attestation { return f.Attestation(i, f.Miner.ID) }

// sealedAtts seals passing attestations of the miner at generation 7 by the given oracles.
func (f *fixture) sealedAtts(tb testing.TB, oracles ...int) [][]byte {
	var out [][]byte
	for _, i := range oracles {
		out = append(out, f.SealedAttestation(tb, i, f.Miner.ID).Raw)
	}
	return out
}

// avail is a valid AVAILABLE record of the miner at generation 7, attested by a quorum.
func (f *fixture) avail(tb testing.TB) *pb.Availability {
	return f.Availability(tb, f.Miner, 1, 7, pb.MinerState_AVAILABLE)
}

// claim is a valid claim by the router for the miner at generation 7.
func (f *fixture) claim() *pb.Claim { return f.Claim() }

// grant is a valid grant by the miner of the sealed claim.
func (f *fixture) grant(claimRaw []byte) *pb.Grant { return f.Grant(claimRaw) }

// release is a valid release of the reservation, signed by the router.
func (f *fixture) release() *pb.Release { return f.Release() }

// sealRaw seals payload bytes under any domain and payload type, bypassing
// the protocol's own marshalling.
func sealRaw(tb testing.TB, domain string, codec, payload []byte, k crypto.PrivKey) []byte {
	tb.Helper()
	return testkit.SealRecord(tb, &rawRecord{domain: domain, codec: codec, payload: payload}, k)
}

type rawRecord struct {
	domain  string
	codec   []byte
	payload []byte
}

func (r *rawRecord) Domain() string                 { return r.domain }
func (r *rawRecord) Codec() []byte                  { return r.codec }
func (r *rawRecord) MarshalRecord() ([]byte, error) { return r.payload, nil }
func (r *rawRecord) UnmarshalRecord(b []byte) error { r.payload = b; return nil }

// peerOf decodes a binary peer ID field, or "" if it is none.
func peerOf(b []byte) peer.ID {
	id, err := peer.IDFromBytes(b)
	if err != nil {
		return ""
	}
	return id
}
