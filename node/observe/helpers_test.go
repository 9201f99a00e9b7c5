package observe

import (
	"bytes"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The signed messages of these tests are built as node/pool's tests build
// theirs: a network of five oracles, quorum three.

const testNet = "testnet"

func testKey(tb testing.TB, name string) crypto.PrivKey {
	tb.Helper()
	seed := sha256.Sum256([]byte("ephemera observe test key " + name))
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

type env struct {
	now        time.Time
	check      protocol.Checker
	oracleKeys []crypto.PrivKey
	oracles    []peer.ID
	minerKey   crypto.PrivKey
	miner      peer.ID
	routerKey  crypto.PrivKey
	router     peer.ID
	pool       *pool.Pool
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{now: time.Now().Truncate(time.Millisecond)}
	params := protocol.DefaultParams()
	params.Quorum = 3
	for i := range 5 {
		k := testKey(tb, "oracle"+string(rune('0'+i)))
		e.oracleKeys = append(e.oracleKeys, k)
		e.oracles = append(e.oracles, idOf(tb, k))
		params.Oracles = append(params.Oracles, idOf(tb, k).String())
	}
	if err := params.Validate(); err != nil {
		tb.Fatal(err)
	}
	e.minerKey, e.routerKey = testKey(tb, "miner"), testKey(tb, "router")
	e.miner, e.router = idOf(tb, e.minerKey), idOf(tb, e.routerKey)
	now := e.now
	e.check = protocol.Checker{Network: testNet, Params: params, Now: func() time.Time { return now }}
	st, err := store.Open(tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	if e.pool, err = pool.New(st, e.check, nil); err != nil {
		tb.Fatal(err)
	}
	return e
}

func ms(t time.Time) int64 { return protocol.Ms(t) }

func digest32(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func mustSeal[T any, M protocol.Message[T]](m M, k crypto.PrivKey) []byte {
	raw, err := protocol.Seal(m, k)
	if err != nil {
		panic(err)
	}
	return raw
}

func signed[T any, M protocol.Message[T]](tb testing.TB, m M, k crypto.PrivKey) protocol.Signed[M] {
	tb.Helper()
	s, err := protocol.Open[T, M](mustSeal(m, k))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// att is oracle i's verdict on miner at gen, round 100.
func (e *env) att(tb testing.TB, i int, miner peer.ID, gen uint64, pass bool, scoreMilli uint32) protocol.Signed[*pb.Attestation] {
	issued := e.now.Add(-time.Minute)
	return signed(tb, &pb.Attestation{
		Network: testNet, Oracle: []byte(e.oracles[i]), Miner: []byte(miner), Generation: gen, Round: 100,
		Model: "llama", ScoreMilli: scoreMilli, Pass: pass, IssuedMs: ms(issued),
		ExpiresMs: ms(issued.Add(e.check.Params.AttestationLifetime.Std())), ChallengeDigest: digest32("challenge"),
	}, e.oracleKeys[i])
}

// avail is the miner's record; an AVAILABLE one carries three passing attestations.
func (e *env) avail(tb testing.TB, seq, gen uint64, state pb.MinerState) protocol.Signed[*pb.Availability] {
	issued := e.now.Add(-time.Second)
	a := &pb.Availability{
		Network: testNet, Miner: []byte(e.miner), Seq: seq, State: state, Generation: gen, Models: []string{"llama"},
		IssuedMs: ms(issued), ExpiresMs: ms(issued.Add(e.check.Params.RecordLifetime.Std())),
	}
	if state == pb.MinerState_AVAILABLE {
		for i := range 3 {
			a.Attestations = append(a.Attestations, e.att(tb, i, e.miner, gen, true, 900).Raw)
		}
	}
	return signed(tb, a, e.minerKey)
}

// grant is the miner's grant to the router of session at gen.
func (e *env) grant(tb testing.TB, session string, gen uint64) protocol.Signed[*pb.Grant] {
	claim := mustSeal(&pb.Claim{
		Network: testNet, Session: session, Router: []byte(e.router), Miner: []byte(e.miner), Generation: gen,
		LeaseMs: 30_000, Nonce: []byte("nonce-" + session + "-0123456"), ExpiresMs: ms(e.now.Add(5 * time.Second)),
	}, e.routerKey)
	return signed(tb, &pb.Grant{
		Network: testNet, Miner: []byte(e.miner), Router: []byte(e.router), Session: session, Generation: gen,
		LeaseEndMs: ms(e.now.Add(30 * time.Second)), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}, e.minerKey)
}

func (e *env) release(tb testing.TB, session string, gen uint64, outcome pb.Outcome) protocol.Signed[*pb.Release] {
	return signed(tb, &pb.Release{
		Network: testNet, Session: session, Signer: []byte(e.router), Miner: []byte(e.miner), Router: []byte(e.router),
		Generation: gen, Outcome: outcome, IssuedMs: ms(e.now),
	}, e.routerKey)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// accepted fails unless the pool took a message without finding a conflict.
func accepted(tb testing.TB) func(*pb.Evidence, error) {
	return func(ev *pb.Evidence, err error) {
		tb.Helper()
		if err != nil || ev != nil {
			tb.Fatalf("not accepted: evidence %v, err %v", ev, err)
		}
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// eventually polls cond for up to 5 s.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kinds lists events as kind[:state], for comparisons.
func kinds(evs []api.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
		if e.Kind == api.EventState {
			out[i] += ":" + e.From + ">" + e.State
		}
	}
	return out
}
