package oracle

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The attack: identities that announce themselves validating, accept the
// challenge and never answer, with peer IDs that sort before the honest
// miner's. A miner this oracle passed before, validating again after a
// session, is still challenged at once: the stallers hold at most the
// newcomers' slots, and every one of them holds its slot for the whole
// exchange (30 s here), far longer than the bound.
func TestStallingMinersLeaveRoomForProvenMiners(t *testing.T) {
	for _, stallers := range []int{12, 50} {
		t.Run(fmt.Sprint(stallers), func(t *testing.T) { stallingAttack(t, stallers) })
	}
}

func stallingAttack(t *testing.T, stallers int) {
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, key))
	p.RoundPeriod = duration.Duration(200 * time.Millisecond)
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	// As gossip would, deliver our own attestations to our pool.
	r.pub.Then(func(env []byte) {
		if s, err := protocol.Open[pb.Attestation](env); err != nil {
			t.Error(err)
		} else if _, err := r.pool.AddAttestation(s); err != nil {
			t.Errorf("pool refuses our attestation: %v", err)
		}
	})
	// The honest miner gets the key whose ID sorts last.
	keys := make([]crypto.PrivKey, stallers+1)
	for i := range keys {
		keys[i] = testkit.NewKey(t)
	}
	slices.SortFunc(keys, func(a, b crypto.PrivKey) int {
		return bytes.Compare([]byte(testkit.ID(t, a)), []byte(testkit.ID(t, b)))
	})
	honest := r.miner(t, keys[stallers], honest)
	r.start(t)

	// Quiet network: the honest miner joins and passes.
	start := time.Now()
	addMiner(t, r.pool, honest.key, pb.MinerState_VALIDATING, 1)
	testkit.Eventually(t, "the honest miner's first pass", 20*time.Second, func() bool {
		return r.pool.Reputation(honest.id).Passes == 1
	})
	quiet := time.Since(start)

	// The attack: every staller is due, and the slots newcomers may hold fill up.
	var stalling []*fakeMiner
	for _, k := range keys[:stallers] {
		stalling = append(stalling, r.miner(t, k, silent))
		addMiner(t, r.pool, k, pb.MinerState_VALIDATING, 1)
	}
	held := func() int {
		n := 0
		for _, m := range stalling {
			n += int(m.challenges.Load())
		}
		return n
	}
	testkit.Eventually(t, "stallers in every newcomer slot", 20*time.Second, func() bool { return held() >= NewcomerSlots })

	// The honest miner comes back from a session at the next generation.
	start = time.Now()
	if err := r.pool.AddAvailability(minerRecord(t, honest.key, 2, pb.MinerState_VALIDATING, 2, nil)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the honest miner's revalidation", 10*time.Second, func() bool {
		return len(r.pool.PassingOracles(honest.id, 2)) == 1
	})
	t.Logf("%d stallers: revalidated in %s, first validation on a quiet network %s", stallers, time.Since(start), quiet)
	if got := held(); got > NewcomerSlots {
		t.Errorf("stallers were challenged %d times, more than the %d newcomer slots", got, NewcomerSlots)
	}
}

// A miner that fails is not challenged again before the network's backoff,
// and is challenged again after it.
func TestFailedMinerBacksOff(t *testing.T) {
	key := testkit.NewKey(t)
	p := testParams(testkit.ID(t, key))
	p.RoundPeriod = duration.Duration(50 * time.Millisecond)
	p.RevalidationBackoff = duration.Duration(time.Second)
	r := newRig(t, key, nil, t.TempDir(), p, nil)
	m := r.miner(t, nil, banana)
	addMiner(t, r.pool, m.key, pb.MinerState_VALIDATING, 1)
	r.start(t)
	<-m.received
	first := time.Now()
	// Ten rounds or more, in each of which it would be due.
	start := p.RoundAt(time.Now())
	testkit.Eventually(t, "ten more rounds", 20*time.Second, func() bool { return p.RoundAt(time.Now()) >= start+10 })
	if time.Since(first) < time.Second {
		if got := m.challenges.Load(); got != 1 {
			t.Fatalf("challenged %d times within its backoff", got)
		}
	}
	select {
	case <-m.received:
	case <-time.After(20 * time.Second):
		t.Fatal("not challenged again after its backoff")
	}
	if gap := time.Since(first); gap < time.Second {
		t.Errorf("challenged again %s after failing, before its backoff of 1s", gap)
	}
	if got := r.o.sched.failures(m.id); got < 1 {
		t.Errorf("%d failures remembered", got)
	}
}

func TestScheduleBackoff(t *testing.T) {
	p := protocol.DefaultParams()
	s := newSchedule()
	id := peer.ID("miner")
	now := time.Now()
	if s.waiting(id, now) || s.failures(id) != 0 {
		t.Fatal("a miner never seen is waiting")
	}
	for n, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		s.failed(id, now, p.Backoff)
		if s.failures(id) != n+1 || !s.waiting(id, now.Add(want-time.Millisecond)) || s.waiting(id, now.Add(want)) {
			t.Errorf("failure %d: not waiting exactly %s", n+1, want)
		}
	}
	for range 20 {
		s.failed(id, now, p.Backoff)
	}
	if s.waiting(id, now.Add(p.RevalidationBackoffMax.Std())) {
		t.Error("backoff beyond its cap")
	}
	s.passed(id)
	if s.waiting(id, now) || s.failures(id) != 0 {
		t.Error("a pass did not clear the failures")
	}
	s.failed(id, now, p.Backoff)
	s.forget([]pool.Miner{{ID: "other"}})
	if s.failures(id) != 0 {
		t.Error("a miner gone from the pool view is still remembered")
	}
}

func TestScheduleSlots(t *testing.T) {
	s := newSchedule()
	ctx := context.Background()
	// soon bounds a wait for a slot that must not come.
	soon := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	var releases []func()
	for range NewcomerSlots {
		if rel := s.acquire(ctx, false); rel == nil {
			t.Fatal("no slot for a newcomer while newcomer slots are free")
		} else {
			releases = append(releases, rel)
		}
	}
	if s.acquire(soon(), false) != nil {
		t.Fatal("newcomers hold more than their slots")
	}
	for range MaxConcurrent - NewcomerSlots {
		if rel := s.acquire(ctx, true); rel == nil {
			t.Fatal("no slot for a proven miner")
		} else {
			releases = append(releases, rel)
		}
	}
	if s.acquire(soon(), true) != nil {
		t.Fatal("more than MaxConcurrent slots")
	}
	// A proven miner's slot freed does not go to a newcomer while
	// newcomers hold their share; a newcomer's does.
	releases[len(releases)-1]()
	if s.acquire(soon(), false) != nil {
		t.Fatal("a newcomer took a proven miner's slot")
	}
	releases[0]()
	if s.acquire(ctx, false) == nil {
		t.Fatal("a newcomer's freed slot went to no newcomer")
	}
}

func TestScheduleOrder(t *testing.T) {
	s := newSchedule()
	var miners []pool.Miner
	for i := range 20 {
		miners = append(miners, pool.Miner{ID: peer.ID(fmt.Sprintf("m%02d", i))})
	}
	proven := func(m pool.Miner) bool { return m.ID < "m05" }
	firsts := map[peer.ID]bool{}
	for range 50 {
		s.order(miners, proven)
		for i, m := range miners {
			if proven(m) != (i < 5) {
				t.Fatalf("order %v: proven miners are not first", miners)
			}
		}
		firsts[miners[0].ID] = true
		firsts[miners[5].ID] = true
	}
	// A fixed order would put the same miner first every time.
	if len(firsts) < 4 {
		t.Errorf("the same miners first in 50 rounds: %v", firsts)
	}
}
