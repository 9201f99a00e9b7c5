package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

const testNetwork = "testnet"

// testNet is a network's rules and its oracle set, whose keys the test holds.
type testNet struct {
	*testkit.Oracles
	check protocol.Checker
}

func newTestNet(tb testing.TB) *testNet {
	tb.Helper()
	o := testkit.NewOracles(tb, testNetwork, 2, 2, func(p *protocol.Params) { p.Lease = duration.Duration(2 * time.Second) })
	return &testNet{Oracles: o, check: o.Checker()}
}

// fakeMiner serves the reserve protocol as node/miner does, over a tiny
// in-memory compare-and-set: available at generation g → reserved, and on
// release or lease expiry → validating at g+1. It publishes nothing.
type fakeMiner struct {
	tb    testing.TB
	net   *testNet
	key   crypto.PrivKey
	id    peer.ID
	host  host.Host
	check protocol.Checker

	mu          sync.Mutex
	state       pb.MinerState
	gen         uint64
	seq         uint64
	record      []byte // the availability record of the current generation
	session     string
	router      peer.ID
	leaseEnd    time.Time
	claimDigest []byte
	grant       []byte
	grants      [][]byte
	claims      int
	renews      int
	releases    []*pb.Release

	// Misbehaviour and test switches.
	forgeKey      crypto.PrivKey // sign grants with this key instead
	replay        []byte         // answer claims with this (stale) grant
	dropReplies   int            // act on this many requests but reset the stream instead of replying
	autoAvailable bool           // a release makes it available at the next generation at once
	sizes         map[string]int // bytes of the last request and reply of each kind
}

func newFakeMiner(tb testing.TB, n *testNet) *fakeMiner {
	tb.Helper()
	key := testkit.NewKey(tb)
	h := testkit.Host(tb, key)
	m := &fakeMiner{
		tb: tb, net: n, key: key, id: h.ID(), host: h, check: n.check,
		state: pb.MinerState_AVAILABLE, gen: 1, sizes: map[string]int{},
	}
	m.record = m.makeRecord()
	testkit.Serve(tb, h, protocol.ReserveProtocol(testNetwork), m.answer)
	return m
}

// makeRecord signs an AVAILABLE record for the current generation; mu held or unshared.
func (m *fakeMiner) makeRecord() []byte {
	m.seq++
	now := time.Now()
	return testkit.Seal(m.tb, &pb.Availability{
		Network: testNetwork, Miner: []byte(m.id), Seq: m.seq, State: pb.MinerState_AVAILABLE,
		Generation: m.gen, Models: []string{"m1"}, Attestations: m.net.Passes(m.tb, m.id, m.gen),
		IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(m.net.Params.RecordLifetime.Std())),
	}, m.key)
}

// available is the miner's current availability record, opened.
func (m *fakeMiner) available() protocol.Signed[*pb.Availability] {
	m.mu.Lock()
	raw := m.record
	m.mu.Unlock()
	return testkit.Open[pb.Availability](m.tb, raw)
}

func (m *fakeMiner) snapshot() (state pb.MinerState, gen uint64, session string, renews int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.gen, m.session, m.renews
}

// answer is the miner's reply to a request over the reserve protocol; an
// error resets the stream.
func (m *fakeMiner) answer(raw []byte) ([]byte, error) {
	kind, reply, err := m.request(raw)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sizes[kind+"-req"], m.sizes[kind+"-reply"] = len(raw), len(reply)
	if m.dropReplies > 0 {
		m.dropReplies--
		return nil, errors.New("reply dropped")
	}
	return reply, nil
}

func (m *fakeMiner) request(raw []byte) (string, []byte, error) {
	env, err := record.UnmarshalEnvelope(raw)
	if err != nil {
		return "", nil, err
	}
	kind := func(k protocol.Kind) bool { return bytes.Equal(env.PayloadType, k.PayloadType) }
	kc, _ := protocol.KindOf(&pb.Claim{})
	kr, _ := protocol.KindOf(&pb.Renew{})
	kl, _ := protocol.KindOf(&pb.Release{})
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked(time.Now())
	switch {
	case kind(kc):
		reply, err := m.claimLocked(raw)
		return "claim", reply, err
	case kind(kr):
		reply, err := m.renewLocked(raw)
		return "renew", reply, err
	case kind(kl):
		reply, err := m.releaseLocked(raw)
		return "release", reply, err
	}
	return "", nil, fmt.Errorf("payload type %q", env.PayloadType)
}

func (m *fakeMiner) expireLocked(now time.Time) {
	if m.state == pb.MinerState_RESERVED && !now.Before(m.leaseEnd) {
		m.gen++
		m.state = pb.MinerState_VALIDATING
	}
}

func (m *fakeMiner) refuseLocked(digest []byte, reason pb.RefusalReason, detail string) ([]byte, error) {
	return protocol.Seal(&pb.Refusal{
		Network: testNetwork, Miner: []byte(m.id), ClaimDigest: digest,
		Reason: reason, Detail: detail, State: m.state, Generation: m.gen,
	}, m.key)
}

func (m *fakeMiner) receiptLocked(req []byte, ok bool, detail string) ([]byte, error) {
	return protocol.Seal(&pb.Receipt{
		Network: testNetwork, Miner: []byte(m.id), RequestDigest: protocol.Digest(req), Ok: ok, Detail: detail,
		LeaseEndMs: protocol.Ms(m.leaseEnd), Generation: m.gen, State: m.state,
	}, m.key)
}

func (m *fakeMiner) claimLocked(raw []byte) ([]byte, error) {
	m.claims++
	c, err := protocol.Open[pb.Claim](raw)
	if err != nil {
		return m.refuseLocked(nil, pb.RefusalReason_BAD_SIGNATURE, err.Error())
	}
	digest := c.Digest()
	if err := m.check.Claim(c, m.id); err != nil {
		if errors.Is(err, protocol.ErrIgnore) {
			return m.refuseLocked(digest, pb.RefusalReason_EXPIRED_CLAIM, err.Error())
		}
		return m.refuseLocked(digest, pb.RefusalReason_BAD_CLAIM, err.Error())
	}
	switch {
	case m.state == pb.MinerState_RESERVED && bytes.Equal(m.claimDigest, digest):
		return m.grant, nil // idempotent on the claim
	case m.state == pb.MinerState_RESERVED:
		return m.refuseLocked(digest, pb.RefusalReason_BUSY, "reserved for another session")
	case m.state != pb.MinerState_AVAILABLE:
		return m.refuseLocked(digest, pb.RefusalReason_NOT_VALIDATED, "state "+m.state.String())
	case c.Msg.Generation != m.gen:
		return m.refuseLocked(digest, pb.RefusalReason_WRONG_GENERATION, fmt.Sprintf("current generation is %d", m.gen))
	}
	if m.replay != nil {
		return m.replay, nil
	}
	leaseEnd := time.Now().Add(time.Duration(c.Msg.LeaseMs) * time.Millisecond)
	key := m.key
	if m.forgeKey != nil {
		key = m.forgeKey
	}
	g, err := protocol.Seal(&pb.Grant{
		Network: testNetwork, Miner: []byte(m.id), Router: c.Msg.Router, Session: c.Msg.Session,
		Generation: m.gen, LeaseEndMs: protocol.Ms(leaseEnd), ClaimDigest: digest, Claim: raw,
	}, key)
	if err != nil || m.forgeKey != nil {
		return g, err
	}
	m.state, m.session, m.router, m.leaseEnd, m.claimDigest, m.grant = pb.MinerState_RESERVED, c.Msg.Session, c.Signer, leaseEnd, digest, g
	m.grants = append(m.grants, g)
	return g, nil
}

func (m *fakeMiner) renewLocked(raw []byte) ([]byte, error) {
	r, err := protocol.Open[pb.Renew](raw)
	if err != nil {
		return nil, err
	}
	lease := time.Duration(r.Msg.LeaseMs) * time.Millisecond
	switch {
	case r.Msg.Network != testNetwork || !bytes.Equal(r.Msg.Router, []byte(r.Signer)):
		return m.receiptLocked(raw, false, "malformed renewal")
	case m.state != pb.MinerState_RESERVED || m.session != r.Msg.Session || m.router != r.Signer || m.gen != r.Msg.Generation:
		return m.receiptLocked(raw, false, "no such reservation")
	case lease <= 0 || lease > m.check.Params.LeaseMax.Std():
		return m.receiptLocked(raw, false, "lease out of bounds")
	}
	m.renews++
	m.leaseEnd = time.Now().Add(lease)
	return m.receiptLocked(raw, true, "")
}

func (m *fakeMiner) releaseLocked(raw []byte) ([]byte, error) {
	r, err := protocol.Open[pb.Release](raw)
	if err != nil {
		return nil, err
	}
	if err := m.check.Release(r); err != nil {
		return m.receiptLocked(raw, false, err.Error())
	}
	if m.state != pb.MinerState_RESERVED || m.session != r.Msg.Session || m.router != r.Signer ||
		m.gen != r.Msg.Generation || !bytes.Equal(r.Msg.Miner, []byte(m.id)) {
		return m.receiptLocked(raw, false, "no such reservation")
	}
	m.releases = append(m.releases, r.Msg)
	m.gen++
	m.state = pb.MinerState_VALIDATING
	if m.autoAvailable {
		m.state = pb.MinerState_AVAILABLE
		m.record = m.makeRecord()
	}
	return m.receiptLocked(raw, true, "")
}

// testRouter is a router with its own host, store and pool view.
type testRouter struct {
	*Router
	key   crypto.PrivKey
	host  host.Host
	store *store.Store
	pool  *pool.Pool
	close func()
}

// newRouter starts a router with a fresh key and store, knowing the miners'
// addresses and availability records.
func newRouter(tb testing.TB, n *testNet, miners ...*fakeMiner) *testRouter {
	tb.Helper()
	return openRouter(tb, n, testkit.NewKey(tb), tb.TempDir(), miners...)
}

// openRouter is newRouter with key over the store in dir.
func openRouter(tb testing.TB, n *testNet, key crypto.PrivKey, dir string, miners ...*fakeMiner) *testRouter {
	tb.Helper()
	return startRouter(tb, n, testkit.Host(tb, key), nil, key, dir, miners...)
}

// newPair is a network of one fake miner and a router that knows it.
func newPair(tb testing.TB) (*testNet, *fakeMiner, *testRouter) {
	tb.Helper()
	n := newTestNet(tb)
	m := newFakeMiner(tb, n)
	return n, m, newRouter(tb, n, m)
}

func startRouter(tb testing.TB, n *testNet, h host.Host, kad *dht.IpfsDHT, key crypto.PrivKey, dir string, miners ...*fakeMiner) *testRouter {
	tb.Helper()
	s := testkit.Store(tb, dir)
	p, err := pool.New(s, n.check, nil)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := New(Deps{Network: testNetwork, Check: n.check, Host: h, DHT: kad, Key: key, Store: s, Pool: p})
	if err != nil {
		tb.Fatal(err)
	}
	r.Start(context.Background())
	tr := &testRouter{Router: r, key: key, host: h, store: s, pool: p}
	var once sync.Once
	tr.close = func() {
		once.Do(func() {
			testkit.Stop(tb, 10*time.Second, r.Stop)
			if kad != nil {
				kad.Close()
			}
			h.Close()
			s.Close()
		})
	}
	tb.Cleanup(tr.close)
	for _, m := range miners {
		tr.know(tb, m)
	}
	return tr
}

// reserve is Reserve of a miner of model for lease, failing the test if it
// fails.
func (tr *testRouter) reserve(tb testing.TB, model string, lease time.Duration) Reservation {
	tb.Helper()
	res, err := tr.Reserve(tb.Context(), model, lease)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// refused is a Reserve that fails with ErrNoMiner, its error naming why.
func (tr *testRouter) refused(tb testing.TB, why string) {
	tb.Helper()
	_, err := tr.Reserve(tb.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), why) {
		tb.Fatalf("reserve: %v, want ErrNoMiner naming %q", err, why)
	}
}

// know gives the router the miner's address and feeds its pool view the
// miner's current record.
func (tr *testRouter) know(tb testing.TB, m *fakeMiner) {
	tb.Helper()
	testkit.Know(tr.host, m.host)
	if err := tr.pool.AddAvailability(m.available()); err != nil && !errors.Is(err, protocol.ErrIgnore) {
		tb.Fatal(err)
	}
}

// stored reads the reservations the router keeps in its store.
func (tr *testRouter) stored(tb testing.TB) map[string]saved {
	tb.Helper()
	out := map[string]saved{}
	err := tr.store.Scan([]byte("res/"), func(k, v []byte) error {
		var s saved
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		out[strings.TrimPrefix(string(k), "res/")] = s
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// availValidator accepts any signed availability record; the pool judges it.
type availValidator struct{}

func (availValidator) Validate(_ string, value []byte) error {
	_, err := protocol.Open[pb.Availability](value)
	return err
}

func (availValidator) Select(string, [][]byte) (int, error) { return 0, nil }

func newDHT(tb testing.TB, h host.Host) *dht.IpfsDHT {
	tb.Helper()
	kad, err := dht.New(h, dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/ephemera/"+testNetwork),
		dht.NamespacedValidator(protocol.AvailabilityNamespace, availValidator{}))
	if err != nil {
		tb.Fatal(err)
	}
	return kad
}
