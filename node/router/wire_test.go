package router

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/protocol/pb"
)

func TestForgedGrantRejected(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.forgeKey = newKey(t)
	tr := newRouter(t, n, newKey(t), t.TempDir(), m)
	_, err := tr.Reserve(t.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), "signed by") {
		t.Fatalf("forged grant: %v, want ErrNoMiner", err)
	}
	if len(tr.Reservations()) != 0 || len(tr.stored(t)) != 0 {
		t.Fatal("a forged grant was kept")
	}
}

func TestGrantForAnotherClaimRejected(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.autoAvailable = true
	tr := newRouter(t, n, newKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Release(t.Context(), res.ID, pb.Outcome_COMPLETED); err != nil {
		t.Fatal(err)
	}
	tr.know(t, m)
	m.mu.Lock()
	m.replay = res.Grant // a validly signed grant, but for the old claim
	m.mu.Unlock()
	_, err = tr.Reserve(t.Context(), "", 0)
	if !errors.Is(err, ErrNoMiner) || !strings.Contains(err.Error(), "another claim") {
		t.Fatalf("replayed grant: %v", err)
	}
	if len(tr.Reservations()) != 1 {
		t.Fatal("a replayed grant was kept")
	}
}

func TestLostGrantIsAskedForAgain(t *testing.T) {
	n := newTestNet(t)
	m := newFakeMiner(t, n)
	m.dropReplies = 1
	tr := newRouter(t, n, newKey(t), t.TempDir(), m)
	res, err := tr.Reserve(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claims != 2 || len(m.grants) != 1 || !bytes.Equal(m.grants[0], res.Grant) {
		t.Fatalf("%d claims, %d grants", m.claims, len(m.grants))
	}
}
