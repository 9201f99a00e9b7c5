package miner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
)

const testNet = "minertest"

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func idOf(t testing.TB, k crypto.PrivKey) peer.ID {
	t.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newHost(t testing.TB, key crypto.PrivKey) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// published captures what the miner gossips on one topic.
type published struct {
	mu   sync.Mutex
	envs [][]byte
}

func (p *published) publish(_ context.Context, data []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.envs = append(p.envs, slices.Clone(data))
	return nil
}

func (p *published) all() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.envs)
}

func (p *published) has(b []byte) bool {
	return slices.ContainsFunc(p.all(), func(e []byte) bool { return bytes.Equal(e, b) })
}

// network is what the tests of one miner share: the oracle set and the rules.
type testNetwork struct {
	oracles []crypto.PrivKey
	check   protocol.Checker
}

func newNetwork(t testing.TB) *testNetwork {
	t.Helper()
	n := &testNetwork{}
	p := protocol.DefaultParams()
	for range 3 {
		k := newKey(t)
		n.oracles = append(n.oracles, k)
		p.Oracles = append(p.Oracles, idOf(t, k).String())
	}
	p.Quorum = 2
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
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	n.check = protocol.Checker{Network: testNet, Params: p}
	return n
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
	pools *published // pool topic
	res   *published // reservations topic
	m     *Miner
}

// newRig starts a miner with key (fresh if nil) on a store in dir (a temp
// dir if "").
func newRig(t testing.TB, n *testNetwork, key crypto.PrivKey, dir string) *rig {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	r := &rig{net: n, key: key, id: idOf(t, key), dir: dir, pools: &published{}, res: &published{}}
	r.host = newHost(t, key)
	st, err := store.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.store = st
	t.Cleanup(func() { st.Close() })
	r.pool, err = pool.New(st, n.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.m, err = New(Deps{
		Check: n.check, Host: r.host, Key: key, Store: st, Pool: r.pool, Backend: inference.NewBuiltin(),
		PublishPool: r.pools.publish, PublishReservations: r.res.publish,
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

func (r *rig) addrInfo() peer.AddrInfo { return peer.AddrInfo{ID: r.id, Addrs: r.host.Addrs()} }

// attest seals an attestation by oracle i and hands it to the pool, as gossip would.
func (r *rig) attest(t testing.TB, i int, gen, round uint64, pass bool) []byte {
	t.Helper()
	return r.attestFor(t, i, gen, round, pass, r.net.check.Params.AttestationLifetime.Std())
}

// attestFor is attest with an attestation that expires after lifetime.
func (r *rig) attestFor(t testing.TB, i int, gen, round uint64, pass bool, lifetime time.Duration) []byte {
	t.Helper()
	o := r.net.oracles[i]
	now := time.Now()
	score := uint32(0)
	if pass {
		score = 1000
	}
	raw, err := protocol.Seal(&pb.Attestation{
		Network: testNet, Oracle: []byte(idOf(t, o)), Miner: []byte(r.id), Generation: gen, Round: round,
		Model: inference.BuiltinModel, ScoreMilli: score, Pass: pass,
		IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(lifetime)),
		ChallengeDigest: protocol.Digest(fmt.Appendf(nil, "%d/%d/%d", i, gen, round)),
	}, o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := protocol.Open[pb.Attestation](raw)
	if err != nil {
		t.Fatal(err)
	}
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

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitState(t testing.TB, m *Miner, st pb.MinerState, gen uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("state %s at generation %d", st, gen), 5*time.Second, func() bool {
		s := m.State()
		return s.State == st && s.Generation == gen
	})
}

// latestRecord opens the published pool record with the highest sequence
// (gossip runs in goroutines, so publication order is not sequence order).
func (r *rig) latestRecord(t testing.TB) protocol.Signed[*pb.Availability] {
	t.Helper()
	var best protocol.Signed[*pb.Availability]
	for _, raw := range r.pools.all() {
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
	waitFor(t, fmt.Sprintf("record %d", seq), 5*time.Second, func() bool {
		return slices.ContainsFunc(r.pools.all(), func(raw []byte) bool {
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
		o.session = "s-" + idOf(t, o.router).String()
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	raw, err := protocol.Seal(&pb.Claim{
		Network: o.network, Session: o.session, Router: []byte(idOf(t, o.router)), Miner: []byte(o.miner),
		Generation: o.gen, LeaseMs: o.leaseMs, Nonce: nonce, ExpiresMs: protocol.Ms(o.expires), Model: inference.BuiltinModel,
	}, o.router)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (r *rig) renew(t testing.TB, router crypto.PrivKey, session string, gen uint64, leaseMs uint32) []byte {
	t.Helper()
	raw, err := protocol.Seal(&pb.Renew{
		Network: testNet, Session: session, Router: []byte(idOf(t, router)), Miner: []byte(r.id),
		Generation: gen, LeaseMs: leaseMs, IssuedMs: protocol.Ms(time.Now()),
	}, router)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (r *rig) release(t testing.TB, router crypto.PrivKey, session string, gen uint64) []byte {
	t.Helper()
	id := idOf(t, router)
	raw, err := protocol.Seal(&pb.Release{
		Network: testNet, Session: session, Signer: []byte(id), Miner: []byte(r.id), Router: []byte(id),
		Generation: gen, Outcome: pb.Outcome_COMPLETED, Rating: 5, IssuedMs: protocol.Ms(time.Now()),
	}, router)
	if err != nil {
		t.Fatal(err)
	}
	return raw
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
	s, err := h.NewStream(ctx, to.ID, proto)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := protocol.WriteMsg(s, msg); err != nil {
		s.Reset()
		return nil, err
	}
	_ = s.CloseWrite()
	return protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
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

func TestStartValidatesThenAvailable(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	if s := r.m.State(); s.State != pb.MinerState_JOINING {
		t.Fatalf("fresh miner: %s, want JOINING", s.State)
	}
	r.start(t)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 0 {
		t.Fatalf("after Start: %s gen %d, want VALIDATING gen 0", s.State, s.Generation)
	}
	rec := r.waitRecord(t)
	if rec.Msg.State != pb.MinerState_VALIDATING || rec.Signer != r.id {
		t.Fatalf("first record: %s by %s", rec.Msg.State, rec.Signer)
	}
	if err := r.net.check.Availability(rec); err != nil {
		t.Fatalf("validating record: %v", err)
	}

	// One pass is not a quorum.
	round := r.net.check.Params.RoundAt(time.Now())
	a0 := r.attest(t, 0, 0, round, true)
	time.Sleep(400 * time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING {
		t.Fatalf("after one pass: %s", s.State)
	}
	a1 := r.attest(t, 1, 0, round, true)
	waitState(t, r.m, pb.MinerState_AVAILABLE, 0)

	rec = r.waitRecord(t)
	if rec.Msg.State != pb.MinerState_AVAILABLE || rec.Msg.Generation != 0 {
		t.Fatalf("record: %s gen %d", rec.Msg.State, rec.Msg.Generation)
	}
	if err := r.net.check.Availability(rec); err != nil {
		t.Fatalf("available record does not check: %v", err)
	}
	if len(rec.Msg.Attestations) != 2 {
		t.Fatalf("%d attestations in the record, want 2", len(rec.Msg.Attestations))
	}
	for _, a := range [][]byte{a0, a1} {
		if !slices.ContainsFunc(rec.Msg.Attestations, func(b []byte) bool { return bytes.Equal(a, b) }) {
			t.Fatal("an attestation fed to the pool is missing from the record")
		}
	}
	if !slices.Equal(rec.Msg.Models, []string{inference.BuiltinModel}) {
		t.Fatalf("models %v", rec.Msg.Models)
	}

	// No record ever says JOINING, and sequence numbers never repeat.
	seqs := map[uint64][]byte{}
	for _, raw := range r.pools.all() {
		s, err := protocol.Open[pb.Availability](raw)
		if err != nil {
			t.Fatal(err)
		}
		if s.Msg.State == pb.MinerState_JOINING {
			t.Fatal("a JOINING record was published")
		}
		if prev, ok := seqs[s.Msg.Seq]; ok && !bytes.Equal(prev, raw) {
			t.Fatalf("two different records with sequence %d", s.Msg.Seq)
		}
		seqs[s.Msg.Seq] = raw
	}
}

func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	key, dir := newKey(t), t.TempDir()
	r := newRig(t, n, key, dir)
	r.start(t)
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	r.host.Close()

	r2 := newRig(t, n, key, dir)
	if s := r2.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 0 {
		t.Fatalf("reloaded: %s gen %d, want VALIDATING gen 0", s.State, s.Generation)
	}

	// Restarted while available with valid attestations: still available.
	r2.start(t)
	atts := r2.makeAvailable(t, 0)
	if err := r2.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r2.store.Close()
	r2.host.Close()
	r3 := newRig(t, n, key, dir)
	r3.start(t)
	if s := r3.m.State(); s.State != pb.MinerState_AVAILABLE || len(s.Attestations) != len(atts) {
		t.Fatalf("restarted available miner: %s with %d attestations", s.State, len(s.Attestations))
	}
	if rec := r3.waitRecord(t); rec.Msg.State != pb.MinerState_AVAILABLE || n.check.Availability(rec) != nil {
		t.Fatalf("record after restart: %s, %v", rec.Msg.State, n.check.Availability(rec))
	}
}

func TestFailuresCoolOffThenNewGeneration(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	if fq := r.net.check.Params.FailureQuorum(); fq != 2 {
		t.Fatalf("failure quorum %d, want 2", fq)
	}
	round := r.net.check.Params.RoundAt(time.Now())
	r.attest(t, 0, 0, round, false)
	time.Sleep(400 * time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING {
		t.Fatalf("after one failure: %s", s.State)
	}
	r.attest(t, 1, 0, round, false)
	waitState(t, r.m, pb.MinerState_COOLING_OFF, 0)
	s := r.m.State()
	if s.Failures != 1 || s.CoolUntil.IsZero() {
		t.Fatalf("cooling off: failures %d, cool until %v", s.Failures, s.CoolUntil)
	}
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_COOLING_OFF {
		t.Fatalf("record says %s", rec.Msg.State)
	}

	// After the backoff, a new generation.
	waitState(t, r.m, pb.MinerState_VALIDATING, 1)

	// Passing verdicts on generation 0 (a later round) count for nothing now.
	r.attest(t, 0, 0, round+1, true)
	r.attest(t, 1, 0, round+1, true)
	r.attest(t, 2, 0, round+1, true)
	time.Sleep(600 * time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 1 {
		t.Fatalf("after generation-0 passes: %s gen %d, want VALIDATING gen 1", s.State, s.Generation)
	}

	// Generation 1 passes.
	r.makeAvailable(t, 1)
	if s := r.m.State(); s.Failures != 0 {
		t.Fatalf("failures %d after becoming available", s.Failures)
	}
	rec := r.waitRecord(t)
	if rec.Msg.Generation != 1 || r.net.check.Availability(rec) != nil {
		t.Fatalf("record gen %d: %v", rec.Msg.Generation, r.net.check.Availability(rec))
	}
}

func TestClaim(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	routerKey := newKey(t)
	rh := newHost(t, routerKey)

	// While validating.
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	rep := r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: routerKey, gen: 0})))
	wantRefusal(t, rep, pb.RefusalReason_NOT_VALIDATED)
	if rep.refusal.Msg.State != pb.MinerState_VALIDATING {
		t.Fatalf("refusal reports state %s", rep.refusal.Msg.State)
	}

	r.makeAvailable(t, 0)

	// Refusals that leave the miner available.
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 1})), pb.RefusalReason_WRONG_GENERATION)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, expires: time.Now().Add(-time.Second)})), pb.RefusalReason_EXPIRED_CLAIM)
	wantRefusal(t, r.claimDirect(t, []byte("garbage")), pb.RefusalReason_BAD_SIGNATURE)
	tampered := r.claim(t, claimOpts{router: routerKey, gen: 0})
	tampered[len(tampered)-1] ^= 0xff
	wantRefusal(t, r.claimDirect(t, tampered), pb.RefusalReason_BAD_SIGNATURE)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, miner: idOf(t, newKey(t))})), pb.RefusalReason_BAD_CLAIM)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, network: "othernet"})), pb.RefusalReason_BAD_CLAIM)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, leaseMs: 60_000})), pb.RefusalReason_BAD_CLAIM)
	rep = r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: routerKey, gen: 7})))
	wantRefusal(t, rep, pb.RefusalReason_WRONG_GENERATION)
	if s := r.m.State(); s.State != pb.MinerState_AVAILABLE {
		t.Fatalf("refusals changed the state to %s", s.State)
	}

	// The claim over a real stream wins.
	claimRaw := r.claim(t, claimOpts{router: routerKey, gen: 0, session: "session-1", leaseMs: 3000})
	before := time.Now()
	rep = r.openReply(t, reserve(t, rh, r, claimRaw))
	g := wantGrant(t, rep)
	cl, err := r.net.check.Grant(*g)
	if err != nil || !bytes.Equal(cl.Raw, claimRaw) {
		t.Fatalf("grant's claim: %v", err)
	}
	if g.Msg.Session != "session-1" || g.Msg.Generation != 0 || !bytes.Equal(g.Msg.ClaimDigest, protocol.Digest(claimRaw)) ||
		!bytes.Equal(g.Msg.Router, []byte(idOf(t, routerKey))) {
		t.Fatalf("grant fields: %+v", g.Msg)
	}
	if end := protocol.Time(g.Msg.LeaseEndMs); end.Before(before.Add(2900*time.Millisecond)) || end.After(time.Now().Add(3100*time.Millisecond)) {
		t.Fatalf("lease ends at %v, want ~3s from now", end)
	}
	s := r.m.State()
	if s.State != pb.MinerState_RESERVED || s.Session != "session-1" || s.Router != idOf(t, routerKey) || !bytes.Equal(s.Grant, rep.raw) {
		t.Fatalf("state after grant: %+v", s)
	}
	waitFor(t, "grant gossiped", 2*time.Second, func() bool { return r.res.has(rep.raw) })
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_RESERVED || len(rec.Msg.Attestations) != 0 {
		t.Fatalf("record: %s with %d attestations", rec.Msg.State, len(rec.Msg.Attestations))
	}

	// Idempotent: the same envelope again, directly and over a stream.
	if again := r.claimDirect(t, claimRaw); !bytes.Equal(again.raw, rep.raw) {
		t.Fatal("the same claim got a different grant")
	}
	if again := reserve(t, rh, r, claimRaw); !bytes.Equal(again, rep.raw) {
		t.Fatal("the same claim over a stream got a different grant")
	}

	// Anyone else is refused.
	other := newKey(t)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: other, gen: 0})), pb.RefusalReason_BUSY)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: routerKey, gen: 0, session: "session-2"})), pb.RefusalReason_BUSY)
	wantRefusal(t, r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: other, gen: 0}))), pb.RefusalReason_BUSY)
	if s2 := r.m.State(); !bytes.Equal(s2.Grant, rep.raw) || s2.Seq != s.Seq {
		t.Fatal("refused claims changed the committed state")
	}
}

func TestReserveStreamGarbageIsReset(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	rh := newHost(t, newKey(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := roundTrip(ctx, rh, r.addrInfo(), protocol.ReserveProtocol(testNet), []byte("garbage")); err == nil {
		t.Fatalf("garbage got a reply of %d bytes", len(b))
	}
	// An envelope of a kind the reserve protocol does not carry.
	att, err := protocol.Seal(&pb.Evidence{Network: testNet}, r.net.oracles[0])
	if err != nil {
		t.Fatal(err)
	}
	if b, err := roundTrip(ctx, rh, r.addrInfo(), protocol.ReserveProtocol(testNet), att); err == nil {
		t.Fatalf("evidence got a reply of %d bytes", len(b))
	}
}

func TestConcurrentClaimsOneGrant(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	r.makeAvailable(t, 0)
	rh := newHost(t, newKey(t))
	if err := rh.Connect(context.Background(), r.addrInfo()); err != nil {
		t.Fatal(err)
	}

	const n = 50
	claims := make([][]byte, n)
	for i := range claims {
		claims[i] = r.claim(t, claimOpts{router: newKey(t), gen: 0, session: fmt.Sprintf("s%d", i)})
	}
	replies := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if i%2 == 0 {
				replies[i], errs[i] = r.m.Claim(claims[i])
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			replies[i], errs[i] = roundTrip(ctx, rh, r.addrInfo(), protocol.ReserveProtocol(testNet), claims[i])
		})
	}
	close(start)
	wg.Wait()

	grants, busy := 0, 0
	var winner int
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("claim %d: %v", i, errs[i])
		}
		rep := r.openReply(t, replies[i])
		switch {
		case rep.grant != nil:
			grants++
			winner = i
		case rep.refusal.Msg.Reason == pb.RefusalReason_BUSY:
			busy++
		default:
			t.Fatalf("claim %d refused %s", i, rep.refusal.Msg.Reason)
		}
	}
	if grants != 1 || busy != n-1 {
		t.Fatalf("%d grants and %d BUSY refusals, want 1 and %d", grants, busy, n-1)
	}
	s := r.m.State()
	if s.State != pb.MinerState_RESERVED || s.Session != fmt.Sprintf("s%d", winner) || !bytes.Equal(s.Grant, replies[winner]) {
		t.Fatalf("state %s session %q, winner s%d", s.State, s.Session, winner)
	}
	waitFor(t, "grant gossiped", 2*time.Second, func() bool { return r.res.has(replies[winner]) })
	if got := len(r.res.all()); got != 1 {
		t.Fatalf("%d messages gossiped on reservations, want the one grant", got)
	}
}

func TestRenew(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	r.makeAvailable(t, 0)
	router := newKey(t)
	rh := newHost(t, router)
	g := wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 1000})))
	end0 := protocol.Time(g.Msg.LeaseEndMs)

	time.Sleep(50 * time.Millisecond)
	req := r.renew(t, router, "s", 0, 4000)
	rc := r.openReceipt(t, reserve(t, rh, r, req), req)
	if !rc.Ok {
		t.Fatalf("renew refused: %s", rc.Detail)
	}
	if end := protocol.Time(rc.LeaseEndMs); !end.After(end0.Add(2 * time.Second)) {
		t.Fatalf("lease end %v, not extended past %v", end, end0)
	}
	if s := r.m.State(); s.State != pb.MinerState_RESERVED || protocol.Ms(s.LeaseEnd) != rc.LeaseEndMs || rc.State != pb.MinerState_RESERVED {
		t.Fatalf("state %s lease %v, receipt %d", s.State, s.LeaseEnd, rc.LeaseEndMs)
	}

	// Past the original lease, it still holds.
	time.Sleep(time.Until(end0) + 400*time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("renewed reservation ended early: %s", s.State)
	}

	// Refused renewals: another router, another session, wrong generation, too long.
	endBefore := r.m.State().LeaseEnd
	other := newKey(t)
	for name, req := range map[string][]byte{
		"other router":  r.renew(t, other, "s", 0, 4000),
		"other session": r.renew(t, router, "nope", 0, 4000),
		"wrong gen":     r.renew(t, router, "s", 1, 4000),
		"too long":      r.renew(t, router, "s", 0, 60_000),
		"zero lease":    r.renew(t, router, "s", 0, 0),
	} {
		rc := r.openReceipt(t, reserve(t, rh, r, req), req)
		if rc.Ok {
			t.Errorf("%s: renew accepted", name)
		}
	}
	if s := r.m.State(); !s.LeaseEnd.Equal(endBefore) {
		t.Fatalf("refused renewals moved the lease end from %v to %v", endBefore, s.LeaseEnd)
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	r.makeAvailable(t, 0)
	router := newKey(t)
	rh := newHost(t, router)
	wantGrant(t, r.openReply(t, reserve(t, rh, r, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 5000}))))

	// Not the router's, or not this reservation.
	for name, req := range map[string][]byte{
		"unknown session": r.release(t, router, "nope", 0),
		"other router":    r.release(t, newKey(t), "s", 0),
		"wrong gen":       r.release(t, router, "s", 3),
	} {
		rc := r.openReceipt(t, reserve(t, rh, r, req), req)
		if rc.Ok {
			t.Fatalf("%s: release accepted", name)
		}
		if s := r.m.State(); s.State != pb.MinerState_RESERVED {
			t.Fatalf("%s: state %s", name, s.State)
		}
	}

	req := r.release(t, router, "s", 0)
	rc := r.openReceipt(t, reserve(t, rh, r, req), req)
	if !rc.Ok || rc.State != pb.MinerState_VALIDATING || rc.Generation != 1 {
		t.Fatalf("receipt: ok %v %s gen %d (%s)", rc.Ok, rc.State, rc.Generation, rc.Detail)
	}
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING || s.Generation != 1 || s.Grant != nil || s.Session != "" {
		t.Fatalf("after release: %+v", s)
	}
	waitFor(t, "release gossiped", 2*time.Second, func() bool { return r.res.has(req) })
	if rec := r.waitRecord(t); rec.Msg.State != pb.MinerState_VALIDATING || rec.Msg.Generation != 1 {
		t.Fatalf("record %s gen %d", rec.Msg.State, rec.Msg.Generation)
	}

	// The same release again: nothing left to release.
	if rc := r.openReceipt(t, reserve(t, rh, r, req), req); rc.Ok {
		t.Fatal("a second release was accepted")
	}
	if s := r.m.State(); s.Generation != 1 {
		t.Fatalf("second release moved the generation to %d", s.Generation)
	}

	// A claim of the old generation: not validated, then the wrong generation.
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: newKey(t), gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	time.Sleep(300 * time.Millisecond) // generation-0 attestations are still in the pool: they must not count
	if s := r.m.State(); s.State != pb.MinerState_VALIDATING {
		t.Fatalf("old attestations made the miner %s", s.State)
	}
	r.makeAvailable(t, 1)
	wantRefusal(t, r.claimDirect(t, r.claim(t, claimOpts{router: newKey(t), gen: 0})), pb.RefusalReason_WRONG_GENERATION)
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: newKey(t), gen: 1})))
}

func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	r.makeAvailable(t, 0)
	router := newKey(t)
	g := wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 1000})))
	end := protocol.Time(g.Msg.LeaseEndMs)
	if _, err := r.pool.AddGrant(*g); err != nil { // as gossip brings it
		t.Fatal(err)
	}

	time.Sleep(time.Until(end) - 200*time.Millisecond)
	if s := r.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("before the lease end: %s", s.State)
	}
	waitState(t, r.m, pb.MinerState_VALIDATING, 1)
	if time.Now().Before(end) {
		t.Fatal("released before the lease end")
	}

	var rel *protocol.Signed[*pb.Release]
	waitFor(t, "expiry release gossiped", 2*time.Second, func() bool {
		for _, raw := range r.res.all() {
			if s, err := protocol.Open[pb.Release](raw); err == nil {
				rel = &s
				return true
			}
		}
		return false
	})
	if err := r.net.check.Release(*rel); err != nil {
		t.Fatalf("expiry release does not check: %v", err)
	}
	m := rel.Msg
	if rel.Signer != r.id || m.Outcome != pb.Outcome_EXPIRED || m.Session != "s" || m.Generation != 0 ||
		!bytes.Equal(m.Router, []byte(idOf(t, router))) || !bytes.Equal(m.Miner, []byte(r.id)) || !bytes.Equal(m.Signer, []byte(r.id)) {
		t.Fatalf("expiry release: %+v by %s", m, rel.Signer)
	}
	if err := r.pool.AddRelease(*rel); err != nil {
		t.Fatalf("pool refuses the expiry release: %v", err)
	}

	// The router can no longer renew or release it.
	req := r.renew(t, router, "s", 0, 1000)
	if b, err := r.m.reserveRequest(req); err != nil || r.openReceipt(t, b, req).Ok {
		t.Fatalf("renew after expiry: err %v", err)
	}
	req = r.release(t, router, "s", 0)
	if b, err := r.m.reserveRequest(req); err != nil || r.openReceipt(t, b, req).Ok {
		t.Fatalf("release after expiry: err %v", err)
	}
}

func TestCrashKeepsReservation(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	key, dir := newKey(t), t.TempDir()
	r := newRig(t, n, key, dir)
	r.start(t)
	r.makeAvailable(t, 0)
	router := newKey(t)
	claimRaw := r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: 2500})
	rep := r.claimDirect(t, claimRaw)
	g := wantGrant(t, rep)
	before := r.m.State()

	// kill -9 right after the commit: no release, nothing graceful.
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Close(); err != nil {
		t.Fatal(err)
	}
	r.host.Close()

	r2 := newRig(t, n, key, dir)
	s := r2.m.State()
	if s.State != pb.MinerState_RESERVED || s.Session != "s" || !bytes.Equal(s.Grant, rep.raw) || s.Generation != 0 ||
		!s.LeaseEnd.Equal(before.LeaseEnd) || s.Seq != before.Seq {
		t.Fatalf("reloaded state: %+v", s)
	}
	r2.start(t)
	if s := r2.m.State(); s.State != pb.MinerState_RESERVED || s.Seq <= before.Seq {
		t.Fatalf("after restart: %s seq %d (was %d)", s.State, s.Seq, before.Seq)
	}
	waitFor(t, "grant gossiped again", 2*time.Second, func() bool { return r2.res.has(rep.raw) })
	if rec := r2.waitRecord(t); rec.Msg.State != pb.MinerState_RESERVED || rec.Msg.Seq <= before.Seq {
		t.Fatalf("record after restart: %s seq %d", rec.Msg.State, rec.Msg.Seq)
	}

	// The router retries: same grant, over the restarted host.
	rh := newHost(t, router)
	if again := reserve(t, rh, r2, claimRaw); !bytes.Equal(again, rep.raw) {
		t.Fatal("the retried claim got a different reply than the grant")
	}
	wantRefusal(t, r2.claimDirect(t, r2.claim(t, claimOpts{router: newKey(t), gen: 0})), pb.RefusalReason_BUSY)

	// It holds until the lease ends, then releases itself.
	end := protocol.Time(g.Msg.LeaseEndMs)
	time.Sleep(time.Until(end) - 200*time.Millisecond)
	if s := r2.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("before the lease end: %s", s.State)
	}
	waitState(t, r2.m, pb.MinerState_VALIDATING, 1)
	waitFor(t, "expiry release", 2*time.Second, func() bool {
		return slices.ContainsFunc(r2.res.all(), func(raw []byte) bool {
			s, err := protocol.Open[pb.Release](raw)
			return err == nil && s.Msg.Outcome == pb.Outcome_EXPIRED && s.Msg.Session == "s" && n.check.Release(s) == nil
		})
	})
}

func TestBackoffDoubles(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	for gen, want := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond} {
		round := r.net.check.Params.RoundAt(time.Now())
		r.attest(t, 0, uint64(gen), round, false)
		r.attest(t, 2, uint64(gen), round, false)
		waitState(t, r.m, pb.MinerState_COOLING_OFF, uint64(gen))
		s := r.m.State()
		if s.Failures != gen+1 || s.CoolUntil.Sub(s.Since) != want {
			t.Fatalf("failure %d: failures %d, backoff %s, want %s", gen+1, s.Failures, s.CoolUntil.Sub(s.Since), want)
		}
		waitState(t, r.m, pb.MinerState_VALIDATING, uint64(gen+1))
	}
}

// TestRestartAvailableWithExpiredAttestations: a miner that comes back
// AVAILABLE after its attestations expired must not announce a record the
// network rejects; it validates again, and fresh attestations make it
// available again.
func TestRestartAvailableWithExpiredAttestations(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	key, dir := newKey(t), t.TempDir()
	r := newRig(t, n, key, dir)
	r.start(t)
	round := n.check.Params.RoundAt(time.Now())
	r.attestFor(t, 0, 0, round, true, 1200*time.Millisecond)
	r.attestFor(t, 1, 0, round, true, 1200*time.Millisecond)
	waitState(t, r.m, pb.MinerState_AVAILABLE, 0)
	if err := r.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	r.host.Close()
	time.Sleep(1300 * time.Millisecond) // down while the attestations expire

	r2 := newRig(t, n, key, dir)
	r2.start(t)
	rec := r2.waitRecord(t)
	if err := n.check.Availability(rec); err != nil {
		t.Fatalf("record announced at restart (%s) is invalid: %v", rec.Msg.State, err)
	}
	wantRefusal(t, r2.claimDirect(t, r2.claim(t, claimOpts{router: newKey(t), gen: 0})), pb.RefusalReason_NOT_VALIDATED)
	r2.makeAvailable(t, 0)
	for _, raw := range r2.pools.all() {
		s, err := protocol.Open[pb.Availability](raw)
		if err != nil || n.check.Availability(s) != nil {
			t.Fatalf("an invalid record was published: %v / %v", err, n.check.Availability(s))
		}
	}
}

// challenge seals a challenge signed by key for miner at gen.
func newChallenge(t testing.TB, key crypto.PrivKey, miner peer.ID, gen uint64, tasks []challenge.Task) []byte {
	t.Helper()
	ch := &pb.Challenge{
		Network: testNet, Oracle: []byte(idOf(t, key)), Miner: []byte(miner), Generation: gen, Round: 1,
		Nonce: []byte("0123456789abcdef"), IssuedMs: protocol.Ms(time.Now()), LatencyBudgetMs: 5000,
	}
	for _, tk := range tasks {
		ch.Tasks = append(ch.Tasks, &pb.Task{Family: tk.Family, Seed: tk.Seed, Prompt: tk.Prompt})
	}
	raw, err := protocol.Seal(ch, key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestValidateAnswers(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	bank := challenge.Default()
	tasks := bank.Pick(mrand.New(mrand.NewPCG(1, 2)), 8)
	oracle := r.net.oracles[0]
	oh := newHost(t, oracle)
	raw := newChallenge(t, oracle, r.id, 0, tasks)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := roundTrip(ctx, oh, r.addrInfo(), protocol.ValidateProtocol(testNet), raw)
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	ans, err := protocol.Open[pb.Answer](b)
	if err != nil {
		t.Fatal(err)
	}
	a := ans.Msg
	if ans.Signer != r.id || a.Network != testNet || !bytes.Equal(a.Miner, []byte(r.id)) ||
		!bytes.Equal(a.ChallengeDigest, protocol.Digest(raw)) || a.Model != inference.BuiltinModel {
		t.Fatalf("answer header: %+v by %s", a, ans.Signer)
	}
	if len(a.Outputs) != len(tasks) || len(a.LatenciesMs) != len(tasks) {
		t.Fatalf("%d outputs and %d latencies for %d tasks", len(a.Outputs), len(a.LatenciesMs), len(tasks))
	}
	lat := make([]time.Duration, len(a.LatenciesMs))
	for i, ms := range a.LatenciesMs {
		lat[i] = time.Duration(ms) * time.Millisecond
	}
	results, score, pass, err := bank.GradeAll(ctx, tasks, a.Outputs, lat, inference.NewBuiltin().Embed)
	if err != nil {
		t.Fatal(err)
	}
	if !pass || score != 1 {
		for i, res := range results {
			if !res.Pass {
				t.Logf("task %d (%s): %s", i, tasks[i].Family, res.Reason)
			}
		}
		t.Fatalf("answer graded %v, pass %v", score, pass)
	}

	// Available miners answer too (attestations are refreshed across rounds).
	r.makeAvailable(t, 0)
	if _, err := roundTrip(ctx, oh, r.addrInfo(), protocol.ValidateProtocol(testNet), newChallenge(t, oracle, r.id, 0, tasks[:1])); err != nil {
		t.Fatalf("challenge while available: %v", err)
	}
}

func TestValidateRefusesBadChallenges(t *testing.T) {
	t.Parallel()
	r := newRig(t, newNetwork(t), nil, "")
	r.start(t)
	tasks := challenge.Default().Pick(mrand.New(mrand.NewPCG(3, 4)), 2)
	oracle := r.net.oracles[0]
	oh := newHost(t, oracle)
	outsider := newKey(t)
	xh := newHost(t, outsider)

	many := make([]challenge.Task, 65)
	for i := range many {
		many[i] = tasks[0]
	}
	cases := []struct {
		name string
		from host.Host
		raw  []byte
	}{
		{"not an oracle", xh, newChallenge(t, outsider, r.id, 0, tasks)},
		{"another miner", oh, newChallenge(t, oracle, idOf(t, newKey(t)), 0, tasks)},
		{"wrong generation", oh, newChallenge(t, oracle, r.id, 1, tasks)},
		{"relayed by a non-signer", xh, newChallenge(t, oracle, r.id, 0, tasks)},
		{"signed by another oracle", oh, newChallenge(t, r.net.oracles[1], r.id, 0, tasks)},
		{"no tasks", oh, newChallenge(t, oracle, r.id, 0, nil)},
		{"too many tasks", oh, newChallenge(t, oracle, r.id, 0, many)},
		{"garbage", oh, []byte("garbage")},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := roundTrip(ctx, c.from, r.addrInfo(), protocol.ValidateProtocol(testNet), c.raw)
		cancel()
		if err == nil {
			t.Errorf("%s: got an answer of %d bytes", c.name, len(b))
		}
	}

	// Not while reserved.
	r.makeAvailable(t, 0)
	wantGrant(t, r.claimDirect(t, r.claim(t, claimOpts{router: newKey(t), gen: 0, leaseMs: 5000})))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := roundTrip(ctx, oh, r.addrInfo(), protocol.ValidateProtocol(testNet), newChallenge(t, oracle, r.id, 0, tasks)); err == nil {
		t.Error("a reserved miner answered a challenge")
	}
}
