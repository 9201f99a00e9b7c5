package pool_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testNet = "testnet"

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

// env is a pool on a real Badger store, in a network of five oracles
// (quorum three), judged with a clock fixed at the env's creation. The pool
// keeps store TTLs and record expiry on the wall clock, so the fixed time is
// the real time the test started.
type env struct {
	now        time.Time
	check      protocol.Checker
	oracleKeys []crypto.PrivKey
	oracles    []peer.ID
	minerKey   crypto.PrivKey
	miner      peer.ID
	miner2Key  crypto.PrivKey
	miner2     peer.ID
	routerKey  crypto.PrivKey
	router     peer.ID
	otherKey   crypto.PrivKey
	other      peer.ID

	dir   string
	store *store.Store
	pool  *pool.Pool
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{now: time.Now().Truncate(time.Millisecond)}
	params := protocol.DefaultParams()
	params.Quorum = 3
	for _, n := range []string{"oracle0", "oracle1", "oracle2", "oracle3", "oracle4"} {
		k := testKey(tb, n)
		e.oracleKeys = append(e.oracleKeys, k)
		e.oracles = append(e.oracles, idOf(tb, k))
		params.Oracles = append(params.Oracles, idOf(tb, k).String())
	}
	if err := params.Validate(); err != nil {
		tb.Fatal(err)
	}
	e.minerKey, e.miner2Key = testKey(tb, "miner"), testKey(tb, "miner2")
	e.routerKey, e.otherKey = testKey(tb, "router"), testKey(tb, "other")
	e.miner, e.miner2 = idOf(tb, e.minerKey), idOf(tb, e.miner2Key)
	e.router, e.other = idOf(tb, e.routerKey), idOf(tb, e.otherKey)
	now := e.now
	e.check = protocol.Checker{Network: testNet, Params: params, Now: func() time.Time { return now }}
	e.dir = tb.TempDir()
	e.open(tb)
	return e
}

// open opens (or reopens) the store and a pool on it.
func (e *env) open(tb testing.TB) {
	tb.Helper()
	st, err := store.Open(e.dir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	p, err := pool.New(st, e.check, nil)
	if err != nil {
		tb.Fatal(err)
	}
	e.store, e.pool = st, p
}

func (e *env) reopen(tb testing.TB) {
	tb.Helper()
	if err := e.store.Close(); err != nil {
		tb.Fatal(err)
	}
	e.open(tb)
}

func ms(t time.Time) int64 { return protocol.Ms(t) }

func digest32(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// att is a valid passing attestation by oracle i of miner at generation 7, round 100.
func (e *env) att(i int, miner peer.ID, mutate func(*pb.Attestation)) *pb.Attestation {
	issued := e.now.Add(-time.Minute)
	a := &pb.Attestation{
		Network: testNet, Oracle: []byte(e.oracles[i]), Miner: []byte(miner), Generation: 7, Round: 100,
		Model: "llama", ScoreMilli: 900, Pass: true, IssuedMs: ms(issued),
		ExpiresMs: ms(issued.Add(e.check.Params.AttestationLifetime.Std())), ChallengeDigest: digest32("challenge"),
	}
	if mutate != nil {
		mutate(a)
	}
	return a
}

func (e *env) sealAtt(tb testing.TB, i int, miner peer.ID, mutate func(*pb.Attestation)) protocol.Signed[*pb.Attestation] {
	return signed(tb, e.att(i, miner, mutate), e.oracleKeys[i])
}

// avail is a valid record of the miner key's peer: AVAILABLE records carry
// a quorum of attestations for their generation.
func (e *env) avail(tb testing.TB, k crypto.PrivKey, seq, gen uint64, state pb.MinerState, mutate func(*pb.Availability)) protocol.Signed[*pb.Availability] {
	tb.Helper()
	miner := idOf(tb, k)
	issued := e.now.Add(-time.Second)
	a := &pb.Availability{
		Network: testNet, Miner: []byte(miner), Seq: seq, State: state, Generation: gen, Models: []string{"llama"},
		IssuedMs: ms(issued), ExpiresMs: ms(issued.Add(e.check.Params.RecordLifetime.Std())),
	}
	if state == pb.MinerState_AVAILABLE {
		for i := range 3 {
			a.Attestations = append(a.Attestations, e.sealAtt(tb, i, miner, func(a *pb.Attestation) { a.Generation = gen }).Raw)
		}
	}
	if mutate != nil {
		mutate(a)
	}
	return signed(tb, a, k)
}

func (e *env) claim(session string) []byte {
	return mustSeal(&pb.Claim{
		Network: testNet, Session: session, Router: []byte(e.router), Miner: []byte(e.miner), Generation: 7,
		LeaseMs: 30_000, Nonce: []byte("nonce-" + session + "-0123"), ExpiresMs: ms(e.now.Add(5 * time.Second)), Model: "llama",
	}, e.routerKey)
}

// grantAt is the miner's grant of the router's claim for session "s1" at gen.
func (e *env) grantAt(tb testing.TB, gen uint64) protocol.Signed[*pb.Grant] {
	return e.grantEnding(tb, gen, e.now.Add(30*time.Second))
}

// grantEnding is grantAt with its lease ending at end.
func (e *env) grantEnding(tb testing.TB, gen uint64, end time.Time) protocol.Signed[*pb.Grant] {
	claim := mustSeal(&pb.Claim{
		Network: testNet, Session: "s1", Router: []byte(e.router), Miner: []byte(e.miner), Generation: gen,
		LeaseMs: 30_000, Nonce: []byte("nonce-s1-0123456"), ExpiresMs: ms(e.now.Add(5 * time.Second)),
	}, e.routerKey)
	return signed(tb, &pb.Grant{
		Network: testNet, Miner: []byte(e.miner), Router: []byte(e.router), Session: "s1", Generation: gen,
		LeaseEndMs: ms(end), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}, e.minerKey)
}

// grant is the miner's valid grant of the router's claim for session.
func (e *env) grant(tb testing.TB, session string, mutate func(*pb.Grant)) protocol.Signed[*pb.Grant] {
	claim := e.claim(session)
	g := &pb.Grant{
		Network: testNet, Miner: []byte(e.miner), Router: []byte(e.router), Session: session, Generation: 7,
		LeaseEndMs: ms(e.now.Add(30 * time.Second)), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}
	if mutate != nil {
		mutate(g)
	}
	return signed(tb, g, e.minerKey)
}

func (e *env) release(tb testing.TB, gen uint64, outcome pb.Outcome) protocol.Signed[*pb.Release] {
	return signed(tb, &pb.Release{
		Network: testNet, Session: "s1", Signer: []byte(e.router), Miner: []byte(e.miner), Router: []byte(e.router),
		Generation: gen, Outcome: outcome, IssuedMs: ms(e.now),
	}, e.routerKey)
}

func mustSeal[T any, M protocol.Message[T]](m M, k crypto.PrivKey) []byte {
	raw, err := protocol.Seal(m, k)
	if err != nil {
		panic(err)
	}
	return raw
}

// signed seals m with k and opens it again, as gossip delivers it.
func signed[T any, M protocol.Message[T]](tb testing.TB, m M, k crypto.PrivKey) protocol.Signed[M] {
	tb.Helper()
	s, err := protocol.Open[T, M](mustSeal(m, k))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

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
