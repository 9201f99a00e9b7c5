package observe

import (
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The signed messages of these tests are built as node/pool's tests build
// theirs: a network of five oracles, quorum three.

const testNet = "testnet"

type env struct {
	*testkit.Network
	check protocol.Checker
	pool  *pool.Pool
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	n := testkit.NewNetwork(tb, testNet, time.Now().Truncate(time.Millisecond))
	e := &env{Network: n, check: n.Checker()}
	var err error
	if e.pool, err = pool.New(testkit.Store(tb, ""), e.check, nil); err != nil {
		tb.Fatal(err)
	}
	return e
}

// att is oracle i's verdict on miner at gen, round 100.
func (e *env) att(tb testing.TB, i int, miner peer.ID, gen uint64, pass bool, scoreMilli uint32) protocol.Signed[*pb.Attestation] {
	return e.SealedAttestation(tb, i, miner, func(a *pb.Attestation) {
		a.Generation, a.Pass, a.ScoreMilli = gen, pass, scoreMilli
	})
}

// avail is the miner's record; an AVAILABLE one carries three passing attestations.
func (e *env) avail(tb testing.TB, seq, gen uint64, state pb.MinerState) protocol.Signed[*pb.Availability] {
	return e.SealedAvailability(tb, e.Miner, seq, gen, state)
}

// grant is the miner's grant to the router of session at gen.
func (e *env) grant(tb testing.TB, session string, gen uint64) protocol.Signed[*pb.Grant] {
	claim := testkit.Seal(tb, e.Claim(func(c *pb.Claim) {
		c.Session, c.Generation, c.Nonce, c.Model = session, gen, []byte("nonce-"+session+"-0123456"), ""
	}), e.Router.Key)
	return testkit.Signed(tb, e.Grant(claim, func(g *pb.Grant) { g.Session, g.Generation = session, gen }), e.Miner.Key)
}

func (e *env) release(tb testing.TB, session string, gen uint64, outcome pb.Outcome) protocol.Signed[*pb.Release] {
	return testkit.Signed(tb, e.Release(func(r *pb.Release) {
		r.Session, r.Generation, r.Outcome, r.Rating = session, gen, outcome, 0
	}), e.Router.Key)
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
