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

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	routedhost "github.com/libp2p/go-libp2p/p2p/host/routed"
)

func TestReserveGrantsAndPersists(t *testing.T) {
	_, m, tr := newPair(t)

	res := tr.reserve(t, "m1", 0)
	if res.State != StateActive || res.Miner != m.id.String() || res.Generation != 1 || res.Model != "m1" {
		t.Fatalf("reservation %+v", res)
	}
	if lease := time.Until(res.LeaseEnd); lease < time.Second || lease > 2*time.Second {
		t.Fatalf("lease ends in %s, want about the default 2s", lease)
	}
	g, err := protocol.Open[pb.Grant](res.Grant)
	if err != nil || g.Signer != m.id || g.Msg.Session != res.ID {
		t.Fatalf("grant %v: %v", g, err)
	}
	state, gen, session, _ := m.snapshot()
	if state != pb.MinerState_RESERVED || gen != 1 || session != res.ID {
		t.Fatalf("miner is %s at %d for %q", state, gen, session)
	}
	got := tr.stored(t)[res.ID]
	if got.State != StateActive || got.Miner != res.Miner || !bytes.Equal(got.GrantEnv, res.Grant) || got.LeaseMs != 2000 {
		t.Fatalf("stored %+v", got)
	}
	if r, ok := tr.Get(res.ID); !ok || r.ID != res.ID {
		t.Fatalf("Get: %v %v", r, ok)
	}
	if list := tr.Reservations(); len(list) != 1 || list[0].ID != res.ID {
		t.Fatalf("Reservations: %v", list)
	}
	// The API's JSON carries no grant bytes.
	b, _ := json.Marshal(res)
	if bytes.Contains(b, []byte("grant")) || !bytes.Contains(b, []byte(`"state":"active"`)) {
		t.Fatalf("JSON %s", b)
	}
}

func TestSecondReserveFindsNoMiner(t *testing.T) {
	n, m, tr := newPair(t)
	if _, err := tr.Reserve(t.Context(), "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Reserve(t.Context(), "", 0); !errors.Is(err, ErrNoMiner) {
		t.Fatalf("second reserve: %v, want ErrNoMiner", err)
	}
	// Another router, whose pool view still says available, is refused.
	other := newRouter(t, n, m)
	other.refused(t, "BUSY")
	if len(other.Reservations()) != 0 || len(other.stored(t)) != 0 {
		t.Fatal("a refused claim left a reservation")
	}
	// A model nobody serves.
	if _, err := tr.Reserve(t.Context(), "no-such-model", 0); !errors.Is(err, ErrNoMiner) {
		t.Fatalf("unknown model: %v", err)
	}
}

func TestLeaseBounds(t *testing.T) {
	n, m, tr := newPair(t)
	for _, lease := range []time.Duration{n.Params.LeaseMax.Std() + time.Millisecond, -time.Second, time.Microsecond} {
		if _, err := tr.Reserve(t.Context(), "", lease); !errors.Is(err, ErrBadLease) {
			t.Fatalf("lease %s: %v, want ErrBadLease", lease, err)
		}
	}
	m.mu.Lock()
	claims := m.claims
	m.mu.Unlock()
	if claims != 0 {
		t.Fatal("a bad lease reached the miner")
	}
	if _, err := tr.Reserve(t.Context(), "", n.Params.LeaseMax.Std()); err != nil {
		t.Fatalf("the longest lease: %v", err)
	}
}

func TestConcurrentReservesGetDistinctMiners(t *testing.T) {
	n := newTestNet(t)
	miners := []*fakeMiner{newFakeMiner(t, n), newFakeMiner(t, n)}
	tr := newRouter(t, n, miners...)
	const calls = 20
	var wg sync.WaitGroup
	results := make([]Reservation, calls)
	errs := make([]error, calls)
	for i := range calls {
		wg.Go(func() { results[i], errs[i] = tr.Reserve(t.Context(), "m1", 0) })
	}
	wg.Wait()
	type slot struct {
		miner string
		gen   uint64
	}
	granted := map[slot]string{}
	for i := range calls {
		if errs[i] != nil {
			if !errors.Is(errs[i], ErrNoMiner) {
				t.Errorf("call %d: %v", i, errs[i])
			}
			continue
		}
		s := slot{results[i].Miner, results[i].Generation}
		if prev, dup := granted[s]; dup {
			t.Errorf("%s at %d granted to %s and %s", s.miner, s.gen, prev, results[i].ID)
		}
		granted[s] = results[i].ID
	}
	if len(granted) != len(miners) {
		t.Fatalf("%d reservations for %d miners", len(granted), len(miners))
	}
	if len(tr.Reservations()) != len(miners) || len(tr.stored(t)) != len(miners) {
		t.Fatal("reservations held do not match those granted")
	}
}

// BenchmarkClaimGrant is one Reserve and Release against a fake miner over
// loopback: two signed exchanges and two synced store writes.
func BenchmarkClaimGrant(b *testing.B) {
	_, m, tr := newPair(b)
	m.autoAvailable = true
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := tr.Reserve(ctx, "", 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Release(ctx, res.ID, pb.Outcome_COMPLETED); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		tr.know(b, m) // the miner's next generation, validated
		b.StartTimer()
	}
}

// BenchmarkClaimGrantBaseline is the floor under BenchmarkClaimGrant: the
// same two stream exchanges with the same message sizes, framing and
// stream handling, and the same two synced writes, with no signing,
// verifying or pool lookup.
func BenchmarkClaimGrantBaseline(b *testing.B) {
	_, m, tr := newPair(b)
	ctx := context.Background()
	// One real round trip measures the sizes.
	res, err := tr.Reserve(ctx, "", 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tr.Release(ctx, res.ID, pb.Outcome_COMPLETED); err != nil {
		b.Fatal(err)
	}
	m.mu.Lock()
	sizes := map[int]int{m.sizes["claim-req"]: m.sizes["claim-reply"], m.sizes["release-req"]: m.sizes["release-reply"]}
	claimReq, releaseReq := make([]byte, m.sizes["claim-req"]), make([]byte, m.sizes["release-req"])
	m.mu.Unlock()
	if len(sizes) != 2 {
		b.Fatalf("claim and release requests of one size: %v", sizes)
	}
	rec, err := tr.store.Get(resKey(res.ID))
	if err != nil {
		b.Fatal(err)
	}
	const echo = "/bench/echo/1.0.0"
	testkit.Serve(b, m.host, echo, func(req []byte) ([]byte, error) { return make([]byte, sizes[len(req)]), nil })
	round := func(req []byte) {
		if _, _, err := protocol.Call(ctx, tr.host, m.id, echo, req, protocol.MaxMessageSize); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		key := fmt.Appendf(nil, "res/bench-%d", i)
		round(claimReq)
		if err := tr.store.Put(key, rec); err != nil {
			b.Fatal(err)
		}
		round(releaseReq)
		if err := tr.store.Put(key, rec); err != nil {
			b.Fatal(err)
		}
	}
}

func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "granted"},
		{fmt.Errorf("%w: none is free in the pool", ErrNoMiner), "no_miner"},
		{fmt.Errorf("reserve: %w (1 tried)", context.Canceled), "canceled"},
		{fmt.Errorf("reserve: %w (1 tried)", context.DeadlineExceeded), "error"},
		{ErrNotRunning, "error"},
	} {
		if got := Outcome(c.err); got != c.want {
			t.Errorf("Outcome(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestRelease(t *testing.T) {
	_, m, tr := newPair(t)
	res := tr.reserve(t, "", 0)
	rel, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != StateReleased || rel.Ended.IsZero() || rel.Detail != "" {
		t.Fatalf("released %+v", rel)
	}
	state, gen, _, _ := m.snapshot()
	m.mu.Lock()
	releases := m.releases
	m.mu.Unlock()
	if state != pb.MinerState_VALIDATING || gen != 2 || len(releases) != 1 ||
		releases[0].Session != res.ID || releases[0].Outcome != pb.Outcome_COMPLETED ||
		!bytes.Equal(releases[0].Signer, []byte(tr.host.ID())) || !bytes.Equal(releases[0].Router, []byte(tr.host.ID())) {
		t.Fatalf("miner is %s at %d after releases %v", state, gen, releases)
	}
	if got := tr.stored(t)[res.ID]; got.State != StateReleased || got.Ended.IsZero() {
		t.Fatalf("stored %+v", got)
	}
	if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED); !errors.Is(err, ErrEnded) {
		t.Fatalf("second release: %v, want ErrEnded", err)
	}
	if _, err := tr.Release(t.Context(), "nope", pb.Outcome_COMPLETED); !errors.Is(err, ErrUnknownReservation) {
		t.Fatalf("unknown release: %v", err)
	}
	if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_EXPIRED); !errors.Is(err, ErrBadOutcome) {
		t.Fatalf("release as expired: %v", err)
	}
}

func TestReleaseUnconfirmed(t *testing.T) {
	_, m, tr := newPair(t)
	res := tr.reserve(t, "", 10*time.Second)
	m.host.Close()
	rel, err := tr.Release(t.Context(), res.ID, pb.Outcome_FAILED)
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("release of an unreachable miner: %v, want ErrNotConfirmed", err)
	}
	if rel.State != StateReleased || tr.stored(t)[res.ID].State != StateReleased {
		t.Fatalf("not released locally: %+v", rel)
	}
}

func TestRenewExtendsLease(t *testing.T) {
	_, m, tr := newPair(t)
	res := tr.reserve(t, "", 1200*time.Millisecond)
	// Well past the first lease, still active, renewed several times.
	testkit.Eventually(t, "renewals", 5*time.Second, func() bool {
		_, _, _, renews := m.snapshot()
		return renews >= 3
	})
	time.Sleep(time.Until(res.LeaseEnd) + 100*time.Millisecond)
	got, _ := tr.Get(res.ID)
	if got.State != StateActive || !got.LeaseEnd.After(res.LeaseEnd) {
		t.Fatalf("after renewals %+v, first lease end %s", got, res.LeaseEnd)
	}
	if s := tr.stored(t)[res.ID]; !s.LeaseEnd.After(res.LeaseEnd) {
		t.Fatalf("stored lease end %s not extended", s.LeaseEnd)
	}
	if state, _, _, _ := m.snapshot(); state != pb.MinerState_RESERVED {
		t.Fatalf("miner is %s", state)
	}
}

func TestRenewRefusedIsLost(t *testing.T) {
	_, m, tr := newPair(t)
	res := tr.reserve(t, "", 3*time.Second)
	m.mu.Lock() // the miner forgets the reservation (say, it lost its disk)
	m.state, m.session = pb.MinerState_VALIDATING, ""
	m.mu.Unlock()
	testkit.Eventually(t, "lost", 5*time.Second, func() bool {
		r, _ := tr.Get(res.ID)
		return r.State == StateLost
	})
	if s := tr.stored(t)[res.ID]; s.State != StateLost || !strings.Contains(s.Detail, "no such reservation") {
		t.Fatalf("stored %+v", s)
	}
}

func TestUnreachableMinerExpires(t *testing.T) {
	_, m, tr := newPair(t)
	res := tr.reserve(t, "", 1200*time.Millisecond)
	m.host.Close()
	testkit.Eventually(t, "expired", 5*time.Second, func() bool {
		r, _ := tr.Get(res.ID)
		return r.State == StateExpired
	})
	r, _ := tr.Get(res.ID)
	if r.Ended.Before(res.LeaseEnd) {
		t.Fatalf("expired at %s, before the lease end %s", r.Ended, res.LeaseEnd)
	}
}

// A router whose pool view knows nothing finds the miner through the DHT:
// the model's pool provider, then the miner's availability record.
func TestDiscoveryThroughDHT(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	minerDHT := newDHT(t, m.host)
	t.Cleanup(func() { minerDHT.Close() })
	key := testkit.NewKey(t)
	h := testkit.Host(t, key)
	tr := startRouter(t, n, h, newDHT(t, h), key, t.TempDir()) // no miner known
	if err := m.host.Connect(t.Context(), peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "routing tables", 5*time.Second, func() bool {
		return minerDHT.RoutingTable().Size() > 0 && tr.d.DHT.RoutingTable().Size() > 0
	})
	if err := minerDHT.PutValue(t.Context(), protocol.AvailabilityKey([]byte(m.id)), m.available().Raw); err != nil {
		t.Fatal(err)
	}
	if err := minerDHT.Provide(t.Context(), protocol.PoolCID(testNetwork, "m1"), true); err != nil {
		t.Fatal(err)
	}
	if len(tr.pool.Available("m1")) != 0 {
		t.Fatal("the pool view knew the miner already")
	}
	res := tr.reserve(t, "m1", 0)
	if res.Miner != m.id.String() {
		t.Fatalf("reserved %s", res.Miner)
	}
}

func TestOrderPrefersTheBetterOfTwo(t *testing.T) {
	good, bad := pool.Miner{ID: "good"}, pool.Miner{ID: "bad"}
	score := func(id peer.ID) float64 {
		if id == "good" {
			return 1
		}
		return 0.1
	}
	for range 50 {
		got := order([]pool.Miner{bad, good}, score)
		if len(got) != 2 || got[0].ID != "good" {
			t.Fatalf("order %v", got)
		}
	}
	// With many, every candidate is kept, and the worst is never first.
	var many []pool.Miner
	for i := range 10 {
		many = append(many, pool.Miner{ID: peer.ID(fmt.Sprint(i))})
	}
	byIndex := func(id peer.ID) float64 { return float64(id[0]) }
	for range 50 {
		got := order(many, byIndex)
		if len(got) != 10 || got[0].ID == "0" {
			t.Fatalf("order %v", got)
		}
	}
}

// A miner whose only connection is relayed, with less left under the
// relay's limit than the lease, is passed over for another; with no other,
// the reservation fails saying why.
func TestRelayLimitPassesOver(t *testing.T) {
	n := newTestNet(t)
	relayed, direct := newFakeMiner(t, n), newFakeMiner(t, n)
	tr := newRouter(t, n, relayed, direct)
	tr.d.RelayLeft = func(p peer.ID) (time.Duration, bool) {
		if p == relayed.id {
			return 500 * time.Millisecond, true // the default test lease is 2 s
		}
		return 0, false
	}
	res := tr.reserve(t, "", 0)
	if res.Miner != direct.id.String() {
		t.Fatalf("reserved %s, want the directly reached miner %s", res.Miner, direct.id)
	}
	tr.refused(t, "relay whose limit ends the connection")
	if state, _, _, _ := relayed.snapshot(); state == pb.MinerState_RESERVED {
		t.Fatal("the relayed miner was claimed anyway")
	}
}

func TestForgedGrantRejected(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.forgeKey = testkit.NewKey(t)
	tr := newRouter(t, n, m)
	tr.refused(t, "signed by")
	if len(tr.Reservations()) != 0 || len(tr.stored(t)) != 0 {
		t.Fatal("a forged grant was kept")
	}
}

func TestGrantForAnotherClaimRejected(t *testing.T) {
	_, m, tr := newPair(t)
	m.autoAvailable = true
	res := tr.reserve(t, "", 0)
	if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED); err != nil {
		t.Fatal(err)
	}
	tr.know(t, m)
	m.mu.Lock()
	m.replay = res.Grant // a validly signed grant, but for the old claim
	m.mu.Unlock()
	tr.refused(t, "another claim")
	if len(tr.Reservations()) != 1 {
		t.Fatal("a replayed grant was kept")
	}
}

func TestLostGrantIsAskedForAgain(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.dropReplies = 1
	tr := newRouter(t, n, m)
	res := tr.reserve(t, "", 0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claims != 2 || len(m.grants) != 1 || !bytes.Equal(m.grants[0], res.Grant) {
		t.Fatalf("%d claims, %d grants", m.claims, len(m.grants))
	}
}

// A miner whose addresses the router has never seen is still reached: the
// host a router is given routes, and looks them up in the DHT, here on a
// third node the miner is connected to. The miner serves no DHT, so the
// router cannot learn of it any other way.
func TestMinerOfUnknownAddressesIsDialled(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	boot := testkit.Host(t, nil)
	bootDHT := newDHT(t, boot)
	t.Cleanup(func() { bootDHT.Close() })
	key := testkit.NewKey(t)
	h := testkit.Host(t, key)
	kad := newDHT(t, h)
	tr := startRouter(t, n, routedhost.Wrap(h, kad), kad, key, t.TempDir())
	for _, p := range []host.Host{m.host, h} {
		if err := p.Connect(t.Context(), peer.AddrInfo{ID: boot.ID(), Addrs: boot.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "the router's routing table", 5*time.Second, func() bool { return kad.RoutingTable().Size() > 0 })
	if err := tr.pool.AddAvailability(m.available()); err != nil {
		t.Fatal(err)
	}
	if len(h.Peerstore().Addrs(m.id)) != 0 {
		t.Fatal("the router knew the miner's addresses already")
	}

	res := tr.reserve(t, "m1", 0)
	if res.Miner != m.id.String() {
		t.Fatalf("reserved %s", res.Miner)
	}
}

func TestRestartResumesRenewing(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	key, dir := testkit.NewKey(t), t.TempDir()
	tr := openRouter(t, n, key, dir, m)
	res := tr.reserve(t, "", 1500*time.Millisecond)
	tr.close() // stops renewing, releases nothing

	tr = openRouter(t, n, key, dir, m)
	got, ok := tr.Get(res.ID)
	if !ok || got.State != StateActive || got.Miner != res.Miner || !bytes.Equal(got.Grant, res.Grant) {
		t.Fatalf("after restart: %+v %v", got, ok)
	}
	if list := tr.Reservations(); len(list) != 1 || list[0].ID != res.ID {
		t.Fatalf("after restart: %v", list)
	}
	_, _, _, before := m.snapshot()
	testkit.Eventually(t, "renewal after restart", 5*time.Second, func() bool {
		_, _, _, renews := m.snapshot()
		return renews > before
	})
	time.Sleep(time.Until(res.LeaseEnd) + 200*time.Millisecond)
	got, _ = tr.Get(res.ID)
	state, _, session, _ := m.snapshot()
	if got.State != StateActive || !got.LeaseEnd.After(res.LeaseEnd) || state != pb.MinerState_RESERVED || session != res.ID {
		t.Fatalf("past the first lease: %+v; miner %s for %q", got, state, session)
	}
	if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED); err != nil {
		t.Fatalf("release after restart: %v", err)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	_, m, tr := newPair(t)
	m.autoAvailable = true
	tr.mu.Lock()
	tr.history = 2
	tr.mu.Unlock()
	var ids []string
	for range 4 {
		res := tr.reserve(t, "", 0)
		if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED); err != nil {
			t.Fatal(err)
		}
		tr.know(t, m)
		ids = append(ids, res.ID)
	}
	list := tr.Reservations()
	if len(list) != 2 || list[0].ID != ids[3] || list[1].ID != ids[2] {
		t.Fatalf("kept %v, want the last two of %v newest first", list, ids)
	}
	stored := tr.stored(t)
	if _, ok := stored[ids[0]]; ok || len(stored) != 2 {
		t.Fatalf("store keeps %d reservations", len(stored))
	}
}
