package miner

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
)

const testNet = "minertest"

// testNetwork is what the tests of one miner share: the oracle set and the
// rules, with rounds, leases and backoffs short enough for a test to see
// them pass.
type testNetwork struct {
	*testkit.Oracles
	check protocol.Checker
}

func newNetwork(t testing.TB) *testNetwork {
	t.Helper()
	o := testkit.NewOracles(t, testNet, 3, 2, func(p *protocol.Params) {
		p.RoundPeriod = duration.Duration(time.Second)
		p.AttestationLifetime = duration.Duration(time.Minute)
		p.Lease = duration.Duration(time.Second)
		p.LeaseMax = duration.Duration(5 * time.Second)
		p.ClaimLifetime = duration.Duration(10 * time.Second)
		p.RevalidationBackoff = duration.Duration(200 * time.Millisecond)
		p.RevalidationBackoffMax = duration.Duration(time.Second)
		p.RecordLifetime = duration.Duration(time.Minute)
		p.ProvideValidity = duration.Duration(time.Minute)
		p.ClockSkew = duration.Duration(5 * time.Second)
	})
	return &testNetwork{Oracles: o, check: o.Checker()}
}

// rig is one miner on a real host, store and pool.
type rig struct {
	net   *testNetwork
	key   crypto.PrivKey
	id    peer.ID
	dir   string
	host  host.Host
	store *store.Store
	pool  *pool.Pool
	pools *testkit.Published // pool topic
	res   *testkit.Published // reservations topic
	m     *Miner
}

// newRig is a new miner, not yet started, with a fresh key on a fresh store
// in a network of its own.
func newRig(t testing.TB) *rig {
	t.Helper()
	return openRig(t, newNetwork(t), testkit.NewKey(t), t.TempDir())
}

// availableRig is a started miner, available at generation 0.
func availableRig(t testing.TB) *rig {
	t.Helper()
	r := newRig(t)
	r.start(t)
	r.makeAvailable(t, 0)
	return r
}

// reopen builds the miner of r again after down, with its key on its store,
// as a restarted process would; it is not yet started.
func (r *rig) reopen(t testing.TB) *rig {
	t.Helper()
	return openRig(t, r.net, r.key, r.dir)
}

// openRig builds a miner with key on a store in dir.
func openRig(t testing.TB, n *testNetwork, key crypto.PrivKey, dir string) *rig {
	t.Helper()
	r := &rig{net: n, key: key, id: testkit.ID(t, key), dir: dir, pools: &testkit.Published{}, res: &testkit.Published{}}
	r.host = testkit.Host(t, key)
	st := testkit.Store(t, dir)
	r.store = st
	var err error
	r.pool, err = pool.New(st, n.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.m, err = New(Deps{
		Check: n.check, Host: r.host, Key: key, Store: st, Pool: r.pool, Backend: inference.NewBuiltin(),
		PublishPool: r.pools.Publish, PublishReservations: r.res.Publish,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) start(t testing.TB) {
	t.Helper()
	r.m.Start(context.Background())
	t.Cleanup(func() { _ = r.m.Stop(context.Background()) }) // before the store closes: cleanups run last-in first-out
}

// down stops the miner and closes its store and host, as a process that
// ends leaves them; reopen is its restart.
func (r *rig) down(t testing.TB) {
	t.Helper()
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Close(); err != nil {
		t.Fatal(err)
	}
	r.host.Close()
}

func (r *rig) addrInfo() peer.AddrInfo { return peer.AddrInfo{ID: r.id, Addrs: r.host.Addrs()} }

// attest seals an attestation by oracle i and hands it to the pool, as gossip would.
func (r *rig) attest(t testing.TB, i int, gen, round uint64, pass bool) []byte {
	t.Helper()
	return r.attestFor(t, i, gen, round, pass, r.net.check.Params.AttestationLifetime.Std())
}

// attestFor is attest with an attestation that expires after lifetime.
func (r *rig) attestFor(t testing.TB, i int, gen, round uint64, pass bool, lifetime time.Duration) []byte {
	t.Helper()
	raw := r.net.Verdict(t, i, r.id, gen, round, pass, lifetime)
	s := testkit.Open[pb.Attestation](t, raw)
	if ev, err := r.pool.AddAttestation(s); err != nil || ev != nil {
		t.Fatalf("add attestation: evidence %v, err %v", ev, err)
	}
	return raw
}

// makeAvailable feeds two passing attestations for gen and waits for AVAILABLE.
func (r *rig) makeAvailable(t testing.TB, gen uint64) [][]byte {
	t.Helper()
	round := r.net.check.Params.RoundAt(time.Now())
	atts := [][]byte{r.attest(t, 0, gen, round, true), r.attest(t, 1, gen, round, true)}
	waitState(t, r.m, pb.MinerState_AVAILABLE, gen)
	return atts
}

func waitState(t testing.TB, m *Miner, st pb.MinerState, gen uint64) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("state %s at generation %d", st, gen), 5*time.Second, func() bool {
		s := m.State()
		return s.State == st && s.Generation == gen
	})
}

// latestRecord opens the published pool record with the highest sequence
// (gossip runs in goroutines, so publication order is not sequence order).
func (r *rig) latestRecord(t testing.TB) protocol.Signed[*pb.Availability] {
	t.Helper()
	var best protocol.Signed[*pb.Availability]
	for _, raw := range r.pools.All() {
		s, err := protocol.Open[pb.Availability](raw)
		if err != nil {
			t.Fatalf("published pool record: %v", err)
		}
		if best.Msg == nil || s.Msg.Seq > best.Msg.Seq {
			best = s
		}
	}
	if best.Msg == nil {
		t.Fatal("no pool record published")
	}
	return best
}

// waitRecord waits for a published record of the miner's committed sequence.
func (r *rig) waitRecord(t testing.TB) protocol.Signed[*pb.Availability] {
	t.Helper()
	seq := r.m.State().Seq
	testkit.Eventually(t, fmt.Sprintf("record %d", seq), 5*time.Second, func() bool {
		return slices.ContainsFunc(r.pools.All(), func(raw []byte) bool {
			s, err := protocol.Open[pb.Availability](raw)
			return err == nil && s.Msg.Seq >= seq
		})
	})
	return r.latestRecord(t)
}

type claimOpts struct {
	router   crypto.PrivKey
	miner    peer.ID
	gen      uint64
	session  string
	leaseMs  uint32
	expires  time.Time
	network  string
	noncePfx string
}

func (r *rig) claim(t testing.TB, o claimOpts) []byte {
	t.Helper()
	if o.miner == "" {
		o.miner = r.id
	}
	if o.leaseMs == 0 {
		o.leaseMs = uint32(r.net.check.Params.Lease.Std().Milliseconds())
	}
	if o.expires.IsZero() {
		o.expires = time.Now().Add(5 * time.Second)
	}
	if o.network == "" {
		o.network = testNet
	}
	if o.session == "" {
		o.session = "s-" + testkit.ID(t, o.router).String()
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	return testkit.Seal(t, &pb.Claim{
		Network: o.network, Session: o.session, Router: []byte(testkit.ID(t, o.router)), Miner: []byte(o.miner),
		Generation: o.gen, LeaseMs: o.leaseMs, Nonce: nonce, ExpiresMs: protocol.Ms(o.expires), Model: inference.BuiltinModel,
	}, o.router)
}

func (r *rig) renew(t testing.TB, router crypto.PrivKey, session string, gen uint64, leaseMs uint32) []byte {
	t.Helper()
	return testkit.Seal(t, &pb.Renew{
		Network: testNet, Session: session, Router: []byte(testkit.ID(t, router)), Miner: []byte(r.id),
		Generation: gen, LeaseMs: leaseMs, IssuedMs: protocol.Ms(time.Now()),
	}, router)
}

func (r *rig) release(t testing.TB, router crypto.PrivKey, session string, gen uint64) []byte {
	t.Helper()
	id := testkit.ID(t, router)
	return testkit.Seal(t, &pb.Release{
		Network: testNet, Session: session, Signer: []byte(id), Miner: []byte(r.id), Router: []byte(id),
		Generation: gen, Outcome: pb.Outcome_COMPLETED, Rating: 5, IssuedMs: protocol.Ms(time.Now()),
	}, router)
}

// reply is a miner's answer to a claim: a grant or a refusal.
type reply struct {
	raw     []byte
	grant   *protocol.Signed[*pb.Grant]
	refusal *protocol.Signed[*pb.Refusal]
}

func (r *rig) openReply(t testing.TB, raw []byte) reply {
	t.Helper()
	out := reply{raw: raw}
	if g, err := protocol.Open[pb.Grant](raw); err == nil {
		if g.Signer != r.id {
			t.Fatalf("grant signed by %s, not the miner", g.Signer)
		}
		if _, err := r.net.check.Grant(g); err != nil {
			t.Fatalf("grant does not check: %v", err)
		}
		out.grant = &g
		return out
	}
	f, err := protocol.Open[pb.Refusal](raw)
	if err != nil {
		t.Fatalf("reply is neither a grant nor a refusal: %v", err)
	}
	if f.Signer != r.id || f.Msg.Network != testNet || !bytes.Equal(f.Msg.Miner, []byte(r.id)) {
		t.Fatalf("refusal of the wrong signer or network: %+v", f.Msg)
	}
	out.refusal = &f
	return out
}

func (r *rig) claimDirect(t testing.TB, raw []byte) reply {
	t.Helper()
	b, err := r.m.Claim(raw)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return r.openReply(t, b)
}

func wantRefusal(t testing.TB, rep reply, reason pb.RefusalReason) {
	t.Helper()
	if rep.refusal == nil {
		t.Fatalf("want refusal %s, got a grant", reason)
	}
	if rep.refusal.Msg.Reason != reason {
		t.Fatalf("want refusal %s, got %s (%s)", reason, rep.refusal.Msg.Reason, rep.refusal.Msg.Detail)
	}
}

func wantGrant(t testing.TB, rep reply) *protocol.Signed[*pb.Grant] {
	t.Helper()
	if rep.grant == nil {
		t.Fatalf("want a grant, got refusal %s (%s)", rep.refusal.Msg.Reason, rep.refusal.Msg.Detail)
	}
	return rep.grant
}

// roundTrip sends msg on proto from h to the peer and reads one reply.
func roundTrip(ctx context.Context, h host.Host, to peer.AddrInfo, proto libp2pprotocol.ID, msg []byte) ([]byte, error) {
	if err := h.Connect(ctx, to); err != nil {
		return nil, err
	}
	reply, _, err := protocol.Call(ctx, h, to.ID, proto, msg, protocol.MaxMessageSize)
	return reply, err
}

func reserve(t testing.TB, h host.Host, r *rig, msg []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := roundTrip(ctx, h, r.addrInfo(), protocol.ReserveProtocol(testNet), msg)
	if err != nil {
		t.Fatalf("reserve stream: %v", err)
	}
	return b
}

func (r *rig) openReceipt(t testing.TB, raw, req []byte) *pb.Receipt {
	t.Helper()
	s, err := protocol.Open[pb.Receipt](raw)
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	if s.Signer != r.id || s.Msg.Network != testNet || !bytes.Equal(s.Msg.RequestDigest, protocol.Digest(req)) {
		t.Fatalf("receipt of the wrong signer, network or request: %+v", s.Msg)
	}
	return s.Msg
}
