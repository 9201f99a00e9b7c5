package miner

import (
	"bytes"
	"errors"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
)

// A router that sends claims to many miners faster than their grants cross
// gossip can take more than its share of the pool (overLimit): each miner
// counts only the grants it has seen. So a reserved miner keeps judging its
// router's share, and a miner whose grant ranks beyond the limit ends its
// reservation at once, as a lease end, instead of at the router's next
// renewal (a third of a lease, minutes with the longest one).
const (
	// shareGrace is how long after its grant a miner waits before it
	// judges: long enough for the other grants of a burst to arrive.
	shareGrace = 2 * time.Second
	// shareEvery is how often a reserved miner judges again; it also does
	// at once when its pool view accepts a grant.
	shareEvery = time.Second
)

// shareView is what the miner remembers of the reservation it judges: the
// largest pool it has seen since the grant. The limit is judged against
// that, so that a pool that shrinks for a moment (miners released by other
// routers revalidate out of it) ends none of a router's grants that were
// within its limit; the pool cannot be swelled to raise it (Pool.Holdings).
type shareView struct {
	digest  string // the claim digest of the reservation
	size    int
	checked time.Time
}

// seeShare notes a pool of size for the reservation of claim digest, and
// returns the largest seen for it.
func (m *Miner) seeShare(digest []byte, size int, now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.share.digest != string(digest) {
		m.share = shareView{digest: string(digest)}
	}
	m.share.size = max(m.share.size, size)
	m.share.checked = now
	return m.share.size
}

// shareDue reports whether the reservation s must be judged now.
func (m *Miner) shareDue(s State, now time.Time) bool {
	if now.Sub(s.Since) < shareGrace {
		return false
	}
	if m.grantSeen.Swap(false) {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.share.digest != string(s.ClaimDigest) || now.Sub(m.share.checked) >= shareEvery
}

// judgeShare ends reservation s if its router holds more than its limit in
// this miner's view and this miner's grant ranks beyond the limit
// (protocol.GrantRank). A grant within the limit is never ended, and the
// ranking is the same in every view that holds the same grants, so the
// router keeps the first grants it got and loses the excess.
func (m *Miner) judgeShare(s State, now time.Time) {
	grants, size := m.d.Pool.Held(s.Router, m.self)
	size = m.seeShare(s.ClaimDigest, size+1, now) // this miner, reserved by the router
	held := len(grants) + 1
	limit := m.d.Check.Params.RouterLimit(size)
	if held <= limit {
		return
	}
	own, err := protocol.Open[pb.Grant](s.Grant)
	if err != nil {
		m.log.Error("stored grant", "err", err)
		return
	}
	others := make([]*pb.Grant, len(grants))
	for i, g := range grants {
		others[i] = g.Msg
	}
	rank := protocol.GrantRank(own.Msg, others)
	if rank <= limit {
		return
	}
	after, err := m.commit(func(c State, now time.Time) (State, error) {
		if c.State != pb.MinerState_RESERVED || !bytes.Equal(c.ClaimDigest, s.ClaimDigest) || !now.Before(c.LeaseEnd) {
			return c, errNoChange // released, expired or ended meanwhile
		}
		return c.revalidate(now), nil
	})
	if err != nil {
		if !errors.Is(err, errNoChange) {
			m.log.Error("ending a reservation over its router's share", "err", err)
		}
		return
	}
	m.evictions.Add(1)
	m.log.Info("miner state", "from", "reserved", "to", "validating", "generation", after.Generation,
		"why", "router over its share", "reservation", s.Session, "peer", s.Router,
		"held", held, "pool", size, "limit", limit, "rank", rank)
}

// Evictions counts the reservations this miner ended because its router
// held more than its share, since it started.
func (m *Miner) Evictions() uint64 { return m.evictions.Load() }
