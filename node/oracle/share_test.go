package oracle

import (
	"bufio"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// noticed collects the notices a miner's host receives.
type noticed struct {
	mu  sync.Mutex
	got [][]byte
}

func (n *noticed) all() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]byte(nil), n.got...)
}

// poolMiner is a miner in r's pool view, available at generation 0 with
// r's pass, on a host of its own that collects the notices sent to it.
func (r *rig) poolMiner(t *testing.T) (crypto.PrivKey, *noticed) {
	t.Helper()
	k := testkit.NewKey(t)
	h := testkit.Host(t, k)
	testkit.Know(r.host, h)
	got := &noticed{}
	h.SetStreamHandler(protocol.NoticeProtocol(testNet), func(s network.Stream) {
		defer s.Close()
		raw, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxNoticeSize)
		if err == nil {
			got.mu.Lock()
			got.got = append(got.got, raw)
			got.mu.Unlock()
		}
	})
	now := time.Now()
	att := testkit.Signed(t, &pb.Attestation{
		Network: testNet, Oracle: []byte(r.host.ID()), Miner: []byte(h.ID()), Round: 1, Pass: true, ScoreMilli: 1000,
		IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(time.Minute)), ChallengeDigest: make([]byte, 32),
	}, r.key)
	if _, err := r.pool.AddAttestation(att); err != nil {
		t.Fatal(err)
	}
	if err := r.pool.AddAvailability(minerRecord(t, k, 1, pb.MinerState_AVAILABLE, 0, [][]byte{att.Raw})); err != nil {
		t.Fatal(err)
	}
	return k, got
}

// grant hands r's pool miner k's grant to router, issued at issued.
func (r *rig) grant(t *testing.T, k, router crypto.PrivKey, issued time.Time) {
	t.Helper()
	const lease = time.Hour
	miner := testkit.ID(t, k)
	claim := testkit.Seal(t, &pb.Claim{
		Network: testNet, Session: "s-" + miner.String(), Router: []byte(testkit.ID(t, router)), Miner: []byte(miner),
		LeaseMs: uint32(lease.Milliseconds()), Nonce: make([]byte, 16), ExpiresMs: protocol.Ms(issued.Add(5 * time.Second)),
	}, router)
	g := testkit.Signed(t, &pb.Grant{
		Network: testNet, Miner: []byte(miner), Router: []byte(testkit.ID(t, router)), Session: "s-" + miner.String(),
		LeaseEndMs: protocol.Ms(issued.Add(lease)), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}, k)
	if _, err := r.pool.AddGrant(g); err != nil {
		t.Fatal(err)
	}
}

// A router that got four of a pool of five, where its limit is three: once
// the grants are shareGrace old, the oracle evicts the miner whose grant
// ranks fourth, once and not again at once, and no other.
func TestOracleEvictsBeyondTheShare(t *testing.T) {
	t.Parallel()
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, key))
	p.RouterShareFloor = 1
	now := time.Now()
	clock := func() time.Time { return now }
	r := newRig(t, key, nil, t.TempDir(), p, clock)
	hoarder := testkit.NewKey(t)
	var got []*noticed
	for i := range 5 {
		k, n := r.poolMiner(t)
		got = append(got, n)
		if i < 4 {
			r.grant(t, k, hoarder, now.Add(time.Duration(i)*time.Millisecond))
		}
	}
	seen := map[string]*shareSeen{}
	r.o.judgeSharesOnce(t.Context(), seen)
	now = now.Add(shareGrace)
	r.o.judgeSharesOnce(t.Context(), seen)
	r.o.judgeSharesOnce(t.Context(), seen) // sent already: not again yet
	testkit.Eventually(t, "the fourth miner's eviction arrives", 5*time.Second, func() bool { return len(got[3].all()) == 1 })
	time.Sleep(100 * time.Millisecond)
	for i, n := range got {
		if want := map[bool]int{true: 1}[i == 3]; len(n.all()) != want {
			t.Errorf("miner %d got %d notices, want %d", i, len(n.all()), want)
		}
	}
	e := testkit.Open[pb.Eviction](t, got[3].all()[0])
	r.check.Now = clock
	if err := r.check.Eviction(e); err != nil {
		t.Fatal(err)
	}
	if m := e.Msg; m.Held != 4 || m.Pool != 5 || m.Limit != 3 || m.Rank != 4 || peer.ID(m.Router) != testkit.ID(t, hoarder) {
		t.Errorf("eviction: held %d pool %d limit %d rank %d router %x", m.Held, m.Pool, m.Limit, m.Rank, m.Router)
	}
	if s := r.o.Stats(); s.Evictions != 1 {
		t.Errorf("stats: %d evictions, want 1", s.Evictions)
	}
}
