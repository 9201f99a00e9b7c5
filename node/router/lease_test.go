package router

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

func TestRelease(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
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
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 1200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
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
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 1200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
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
