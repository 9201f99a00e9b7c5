package protocol_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

const testNet = "testnet"

// testNow is the fixed clock of every Checker in these tests.
var testNow = time.Date(2031, time.March, 14, 15, 9, 26, 535_000_000, time.UTC)

// testKey derives an Ed25519 key from name, so keys (and sealed messages)
// are the same on every run.
func testKey(tb testing.TB, name string) crypto.PrivKey {
	tb.Helper()
	seed := sha256.Sum256([]byte("ephemera test key " + name))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func idOf(tb testing.TB, k crypto.PrivKey) peer.ID {
	tb.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// fixture is a network of five oracles (quorum three), a miner, a router and
// an outsider, judged at testNow.
type fixture struct {
	check      protocol.Checker
	oracleKeys []crypto.PrivKey
	oracles    []peer.ID
	minerKey   crypto.PrivKey
	miner      peer.ID
	routerKey  crypto.PrivKey
	router     peer.ID
	otherKey   crypto.PrivKey
	other      peer.ID
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	f := &fixture{}
	params := protocol.DefaultParams()
	params.Quorum = 3
	for _, n := range []string{"oracle0", "oracle1", "oracle2", "oracle3", "oracle4"} {
		k := testKey(tb, n)
		f.oracleKeys = append(f.oracleKeys, k)
		f.oracles = append(f.oracles, idOf(tb, k))
		params.Oracles = append(params.Oracles, idOf(tb, k).String())
	}
	if err := params.Validate(); err != nil {
		tb.Fatal(err)
	}
	f.minerKey, f.routerKey, f.otherKey = testKey(tb, "miner"), testKey(tb, "router"), testKey(tb, "other")
	f.miner, f.router, f.other = idOf(tb, f.minerKey), idOf(tb, f.routerKey), idOf(tb, f.otherKey)
	f.check = protocol.Checker{Network: testNet, Params: params, Now: func() time.Time { return testNow }}
	return f
}

func (f *fixture) lifetime() time.Duration { return f.check.Params.AttestationLifetime.Std() }
func (f *fixture) skew() time.Duration     { return f.check.Params.ClockSkew.Std() }

func ms(t time.Time) int64 { return protocol.Ms(t) }

func digest32(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// att is a valid passing attestation by oracle i of the miner at generation 7, round 100.
func (f *fixture) att(i int) *pb.Attestation {
	issued := testNow.Add(-time.Minute)
	return &pb.Attestation{
		Network: testNet, Oracle: []byte(f.oracles[i]), Miner: []byte(f.miner), Generation: 7, Round: 100,
		Model: "llama", ScoreMilli: 900, Pass: true, IssuedMs: ms(issued), ExpiresMs: ms(issued.Add(f.lifetime())),
		ChallengeDigest: digest32("challenge"),
	}
}

// sealedAtts seals passing attestations of the miner at generation 7 by the given oracles.
func (f *fixture) sealedAtts(tb testing.TB, oracles ...int) [][]byte {
	var out [][]byte
	for _, i := range oracles {
		out = append(out, seal(tb, f.att(i), f.oracleKeys[i]))
	}
	return out
}

// avail is a valid AVAILABLE record of the miner at generation 7, attested by a quorum.
func (f *fixture) avail(tb testing.TB) *pb.Availability {
	issued := testNow.Add(-time.Second)
	return &pb.Availability{
		Network: testNet, Miner: []byte(f.miner), Seq: 1, State: pb.MinerState_AVAILABLE, Generation: 7,
		Models: []string{"llama"}, Attestations: f.sealedAtts(tb, 0, 1, 2),
		IssuedMs: ms(issued), ExpiresMs: ms(issued.Add(f.check.Params.RecordLifetime.Std())),
	}
}

// claim is a valid claim by the router for the miner at generation 7.
func (f *fixture) claim() *pb.Claim {
	return &pb.Claim{
		Network: testNet, Session: "session-1", Router: []byte(f.router), Miner: []byte(f.miner), Generation: 7,
		LeaseMs: 30_000, Nonce: []byte("nonce-0123456789"), ExpiresMs: ms(testNow.Add(5 * time.Second)), Model: "llama",
	}
}

// grant is a valid grant by the miner of the sealed claim.
func (f *fixture) grant(claimRaw []byte) *pb.Grant {
	return &pb.Grant{
		Network: testNet, Miner: []byte(f.miner), Router: []byte(f.router), Session: "session-1", Generation: 7,
		LeaseEndMs: ms(testNow.Add(30 * time.Second)), ClaimDigest: protocol.Digest(claimRaw), Claim: claimRaw,
	}
}

// release is a valid release of the reservation, signed by the router.
func (f *fixture) release() *pb.Release {
	return &pb.Release{
		Network: testNet, Session: "session-1", Signer: []byte(f.router), Miner: []byte(f.miner), Router: []byte(f.router),
		Generation: 7, Outcome: pb.Outcome_COMPLETED, Rating: 5, IssuedMs: ms(testNow),
	}
}

func seal[T any, M protocol.Message[T]](tb testing.TB, m M, k crypto.PrivKey) []byte {
	tb.Helper()
	raw, err := protocol.Seal(m, k)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

func open[T any, M protocol.Message[T]](tb testing.TB, raw []byte) protocol.Signed[M] {
	tb.Helper()
	s, err := protocol.Open[T, M](raw)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// sealRaw seals payload bytes under any domain and payload type, bypassing
// the protocol's own marshalling.
func sealRaw(tb testing.TB, domain string, codec, payload []byte, k crypto.PrivKey) []byte {
	tb.Helper()
	env, err := record.Seal(&rawRecord{domain: domain, codec: codec, payload: payload}, k)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return raw
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

// class names the error class the checks sort an error into.
func class(err error) string {
	rej, ign := errors.Is(err, protocol.ErrReject), errors.Is(err, protocol.ErrIgnore)
	switch {
	case err == nil:
		return "ok"
	case rej && ign:
		return "both"
	case rej:
		return "reject"
	case ign:
		return "ignore"
	default:
		return "unclassified"
	}
}

// peerOf decodes a binary peer ID field, or "" if it is none.
func peerOf(b []byte) peer.ID {
	id, err := peer.IDFromBytes(b)
	if err != nil {
		return ""
	}
	return id
}
