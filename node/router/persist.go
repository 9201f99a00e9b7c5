package router

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxHistory is how many ended reservations are kept, in memory and in
// the store; older ones are deleted.
const maxHistory = 1000

// saved is a reservation as the store keeps it, under res/<id>.
type saved struct {
	Reservation
	GrantEnv []byte `json:"grant"`
	LeaseMs  int64  `json:"lease_ms"`
}

func (r *Router) load(v []byte) (*entry, error) {
	var s saved
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, err
	}
	miner, err := peer.Decode(s.Miner)
	if err != nil {
		return nil, fmt.Errorf("miner: %w", err)
	}
	if s.ID == "" {
		return nil, errors.New("no session id")
	}
	lease := time.Duration(s.LeaseMs) * time.Millisecond
	if lease <= 0 {
		lease = r.d.Check.Params.Lease.Std()
	}
	s.Reservation.Grant = s.GrantEnv
	switch s.State {
	case StateActive, StateReleased, StateExpired, StateLost:
	default:
		return nil, fmt.Errorf("state %q", s.State)
	}
	return &entry{res: s.Reservation, miner: miner, lease: lease}, nil
}

// save writes e's current state to the store, one synced Put.
func (r *Router) save(e *entry) error { return r.saveSettling(e, false) }

// saveSettling is save; with settled it also deletes the entry's pending
// claim in the same synced transaction, so that a crash leaves either the
// claim or the reservation, never both.
func (r *Router) saveSettling(e *entry, settled bool) error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	if e.pruned {
		return nil
	}
	r.mu.Lock()
	s := saved{Reservation: e.res, GrantEnv: e.res.Grant, LeaseMs: e.lease.Milliseconds()}
	r.mu.Unlock()
	return r.d.Store.Update(func(txn *store.Txn) error {
		if err := store.PutJSON(txn, resKey(s.ID), s); err != nil {
			return err
		}
		if !settled {
			return nil
		}
		return txn.Delete(pendKey(s.ID))
	})
}

// prune forgets the oldest ended reservations beyond the history size.
func (r *Router) prune() {
	r.mu.Lock()
	var ended []*entry
	for _, e := range r.res {
		if e.res.State != StateActive {
			ended = append(ended, e)
		}
	}
	if len(ended) <= r.history {
		r.mu.Unlock()
		return
	}
	slices.SortFunc(ended, func(a, b *entry) int {
		return cmp.Or(a.res.Ended.Compare(b.res.Ended), a.res.Created.Compare(b.res.Created), strings.Compare(a.res.ID, b.res.ID))
	})
	drop := ended[:len(ended)-r.history]
	for _, e := range drop {
		delete(r.res, e.res.ID)
	}
	r.mu.Unlock()
	for _, e := range drop {
		e.saveMu.Lock()
		e.pruned = true
		if err := r.d.Store.Delete(resKey(e.res.ID)); err != nil {
			r.log.Warn("delete old reservation", "reservation", e.res.ID, "err", err)
		}
		e.saveMu.Unlock()
	}
}
