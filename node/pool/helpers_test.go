package pool_test

import (
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testNet = "testnet"

// env is a pool on a real Badger store, in a network of five oracles
// (quorum three), judged with a clock fixed at the env's creation. The pool
// keeps store TTLs and record expiry on the wall clock, so the fixed time is
// the real time the test started.
type env struct {
	*testkit.Network
	check protocol.Checker

	dir   string
	store *store.Store
	pool  *pool.Pool
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	n := testkit.NewNetwork(tb, testNet, time.Now().Truncate(time.Millisecond))
	e := &env{Network: n, check: n.Checker()}
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

func edits[M any](mutate func(M)) []func(M) {
	if mutate == nil {
		return nil
	}
	return []func(M){mutate}
}

// att is a valid passing attestation by oracle i of miner at generation 7, round 100.
func (e *env) att(i int, miner peer.ID, mutate func(*pb.Attestation)) *pb.Attestation {
	return e.Attestation(i, miner, edits(mutate)...)
}

func (e *env) sealAtt(tb testing.TB, i int, miner peer.ID, mutate func(*pb.Attestation)) protocol.Signed[*pb.Attestation] {
	return e.SealedAttestation(tb, i, miner, edits(mutate)...)
}

// avail is a valid record of the miner key's peer: AVAILABLE records carry
// a quorum of attestations for their generation.
func (e *env) avail(tb testing.TB, k crypto.PrivKey, seq, gen uint64, state pb.MinerState, mutate func(*pb.Availability)) protocol.Signed[*pb.Availability] {
	return e.SealedAvailability(tb, testkit.Party{Key: k, ID: testkit.ID(tb, k)}, seq, gen, state, edits(mutate)...)
}

func (e *env) claim(session string) []byte {
	return mustSeal(e.Claim(func(c *pb.Claim) {
		c.Session, c.Nonce = session, []byte("nonce-"+session+"-0123")
	}), e.Router.Key)
}

// grantAt is the miner's grant of the router's claim for session "s1" at gen.
func (e *env) grantAt(tb testing.TB, gen uint64) protocol.Signed[*pb.Grant] {
	return e.grantEnding(tb, gen, e.Now.Add(30*time.Second))
}

// grantEnding is grantAt with its lease ending at end.
func (e *env) grantEnding(tb testing.TB, gen uint64, end time.Time) protocol.Signed[*pb.Grant] {
	claim := mustSeal(e.Claim(func(c *pb.Claim) { c.Generation, c.Nonce, c.Model = gen, []byte("nonce-s1-0123456"), "" }), e.Router.Key)
	return testkit.Signed(tb, e.Grant(claim, func(g *pb.Grant) { g.Generation, g.LeaseEndMs = gen, ms(end) }), e.Miner.Key)
}

// grant is the miner's valid grant of the router's claim for session.
func (e *env) grant(tb testing.TB, session string, mutate func(*pb.Grant)) protocol.Signed[*pb.Grant] {
	g := e.Grant(e.claim(session), func(g *pb.Grant) { g.Session = session })
	if mutate != nil {
		mutate(g)
	}
	return testkit.Signed(tb, g, e.Miner.Key)
}

func (e *env) release(tb testing.TB, gen uint64, outcome pb.Outcome) protocol.Signed[*pb.Release] {
	return testkit.Signed(tb, e.Release(func(r *pb.Release) { r.Generation, r.Outcome, r.Rating = gen, outcome, 0 }), e.Router.Key)
}

func mustSeal[T any, M protocol.Message[T]](m M, k crypto.PrivKey) []byte {
	raw, err := protocol.Seal(m, k)
	if err != nil {
		panic(err)
	}
	return raw
}
