package router

import (
	"bytes"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

func TestRestartResumesRenewing(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	key, dir := testkit.NewKey(t), t.TempDir()
	tr := newRouter(t, n, key, dir, m)
	res, err := tr.Reserve(t.Context(), "", 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	tr.close() // stops renewing, releases nothing

	tr = newRouter(t, n, key, dir, m)
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
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.autoAvailable = true
	tr := newRouter(t, n, testkit.NewKey(t), t.TempDir(), m)
	tr.mu.Lock()
	tr.history = 2
	tr.mu.Unlock()
	var ids []string
	for range 4 {
		res, err := tr.Reserve(t.Context(), "", 0)
		if err != nil {
			t.Fatal(err)
		}
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
