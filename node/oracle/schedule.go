package oracle

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/libp2p/go-libp2p/core/peer"
)

// NewcomerSlots is how many of the MaxConcurrent validation slots miners
// without a record of passing may hold at once. Being VALIDATING costs an
// identity nothing, and a peer that accepts a challenge and never answers
// holds a slot for the whole exchange: without this cap a handful of fresh
// keys keep every slot busy and a released honest miner, which must be
// validated again before it is any use, waits behind them. The other slots
// are kept for proven miners (see proven), so their revalidation takes as
// long as on a quiet network however many stalling identities exist.
const NewcomerSlots = MaxConcurrent / 2

// schedule decides which due miners the round loop challenges and when:
// its slots, and what the oracle remembers of each miner's recent failures.
// It is kept in memory only; after a restart every miner starts afresh, and
// the network's record of passes (the pool's reputations) still marks the
// proven ones.
type schedule struct {
	all       chan struct{} // MaxConcurrent: every validation holds one
	newcomers chan struct{} // NewcomerSlots: a newcomer's validation holds one of these too

	mu     sync.Mutex
	misses map[peer.ID]miss
}

// miss is a miner's run of failed validations at this oracle.
type miss struct {
	count    int       // consecutive failing verdicts
	notUntil time.Time // not challenged again before this
}

func newSchedule() *schedule {
	return &schedule{
		all:       make(chan struct{}, MaxConcurrent),
		newcomers: make(chan struct{}, NewcomerSlots),
		misses:    map[peer.ID]miss{},
	}
}

// order shuffles miners, then puts the proven ones first, in place. A fixed
// order (the pool lists miners by peer ID) lets an attacker grind keys that
// sort before every honest miner and always be served first; a fresh random
// order each round gives no identity a standing place in the queue.
func (s *schedule) order(miners []pool.Miner, proven func(pool.Miner) bool) {
	rand.Shuffle(len(miners), func(i, j int) { miners[i], miners[j] = miners[j], miners[i] })
	first := make(map[peer.ID]bool, len(miners))
	for _, m := range miners {
		first[m.ID] = proven(m)
	}
	slices.SortStableFunc(miners, func(a, b pool.Miner) int {
		switch {
		case first[a.ID] == first[b.ID]:
			return 0
		case first[a.ID]:
			return -1
		default:
			return 1
		}
	})
}

// waiting reports whether id is backing off after a failure at now.
func (s *schedule) waiting(id peer.ID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Before(s.misses[id].notUntil)
}

// failures is id's count of consecutive failing verdicts at this oracle.
func (s *schedule) failures(id peer.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.misses[id].count
}

// failed counts a failing verdict on id at now: it is not challenged again
// for backoff(n) after its n-th in a row. A staller thus holds a slot for one
// exchange, then for ever fewer of the rounds after it.
func (s *schedule) failed(id peer.ID, now time.Time, backoff func(n int) time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.misses[id]
	m.count++
	m.notUntil = now.Add(backoff(m.count))
	s.misses[id] = m
}

// passed clears id's run of failures.
func (s *schedule) passed(id peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.misses, id)
}

// forget drops what is remembered of miners no longer in the pool view, so
// the map is never larger than the view.
func (s *schedule) forget(known []pool.Miner) {
	ids := make(map[peer.ID]bool, len(known))
	for _, m := range known {
		ids[m.ID] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.misses {
		if !ids[id] {
			delete(s.misses, id)
		}
	}
}

// acquire takes a slot for a validation and returns its release, or nil if
// ctx ended first. A proven miner takes any free slot; a newcomer takes one
// only while newcomers hold fewer than NewcomerSlots, so that newcomers never
// fill the slots proven miners need. The round loop serves proven miners
// first, and gives newcomers until the round's end (see tick): a fresh
// network fills at the pace of its newcomer slots, not of one batch a round.
func (s *schedule) acquire(ctx context.Context, proven bool) (release func()) {
	if proven {
		select {
		case s.all <- struct{}{}:
			return func() { <-s.all }
		case <-ctx.Done():
			return nil
		}
	}
	select {
	case s.newcomers <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	select {
	case s.all <- struct{}{}:
		return func() { <-s.all; <-s.newcomers }
	case <-ctx.Done():
		<-s.newcomers
		return nil
	}
}
