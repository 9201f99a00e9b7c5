package miner

import (
	"testing"
	"time"
)

// The record is signed again when the pool topic gains a subscriber while
// the miner knows fewer than gossipsub's D, counting from the fewest seen
// since the last record: a subscriber that restarted (gone, then back)
// missed that record too.
func TestRecordDueWhenASubscriberComesBack(t *testing.T) {
	subscribers := 3
	m := &Miner{d: Deps{Check: newNetwork(t).check, PoolPeers: func() int { return subscribers }}}
	now := time.Now()
	m.lastRecord, m.heardBy = now.Add(-2*time.Second), 3
	steps := []struct {
		subscribers int
		due         bool
	}{
		{3, false}, // as when signed
		{2, false}, // one restarts
		{3, true},  // and is back: it has not heard the record
		{4, true},  // a newcomer
	}
	for i, s := range steps {
		subscribers = s.subscribers
		if due := m.recordDue(now); due != s.due {
			t.Fatalf("step %d, %d subscribers: due %v, want %v", i, s.subscribers, due, s.due)
		}
	}
	m.lastRecord, m.heardBy = now.Add(-500*time.Millisecond), 2
	if m.recordDue(now) {
		t.Error("signed again within a second of the last record")
	}
	m.lastRecord, m.heardBy, subscribers = now.Add(-2*time.Second), meshDegree, meshDegree+1
	if m.recordDue(now) {
		t.Error("signed again for a newcomer with a full mesh")
	}
}
