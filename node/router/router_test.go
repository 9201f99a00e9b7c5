package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/network"
)

func TestReserveGrantsAndPersists(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)

	res, err := tr.Reserve(t.Context(), "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
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
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	if _, err := tr.Reserve(t.Context(), "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Reserve(t.Context(), "", 0); !errors.Is(err, ErrNoMiner) {
		t.Fatalf("second reserve: %v, want ErrNoMiner", err)
	}
	// Another router, whose pool view still says available, is refused.
	other := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	_, err := other.Reserve(t.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), "BUSY") {
		t.Fatalf("reserve by another router: %v, want ErrNoMiner with BUSY", err)
	}
	if len(other.Reservations()) != 0 || len(other.stored(t)) != 0 {
		t.Fatal("a refused claim left a reservation")
	}
	// A model nobody serves.
	if _, err := tr.Reserve(t.Context(), "no-such-model", 0); !errors.Is(err, ErrNoMiner) {
		t.Fatalf("unknown model: %v", err)
	}
}

func TestLeaseBounds(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	for _, lease := range []time.Duration{n.params.LeaseMax.Std() + time.Millisecond, -time.Second, time.Microsecond} {
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
	if _, err := tr.Reserve(t.Context(), "", n.params.LeaseMax.Std()); err != nil {
		t.Fatalf("the longest lease: %v", err)
	}
}

func TestConcurrentReservesGetDistinctMiners(t *testing.T) {
	n := newTestNet(t)
	miners := []*fakeMiner{newFakeMiner(t, n), newFakeMiner(t, n)}
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), miners...)
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
	n := newTestNet(b)
	m := newFakeMiner(b, n)
	m.autoAvailable = true
	tr := newRouter(b, n, testkit.NewKey(b), b.TempDir(), m)
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
	n := newTestNet(b)
	m := newFakeMiner(b, n)
	tr := newRouter(b, n, testkit.NewKey(b), b.TempDir(), m)
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
	m.host.SetStreamHandler(echo, func(s network.Stream) {
		defer s.Close()
		req, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
		if err != nil {
			s.Reset()
			return
		}
		_ = protocol.WriteMsg(s, make([]byte, sizes[len(req)]))
	})
	round := func(req []byte) {
		s, err := tr.host.NewStream(ctx, m.id, echo)
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriter(s)
		if err := protocol.WriteMsg(w, req); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := s.CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if _, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize); err != nil {
			b.Fatal(err)
		}
		s.Close()
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
