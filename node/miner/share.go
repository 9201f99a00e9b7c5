package miner

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A router may hold only its share of the pool (protocol.Params.RouterLimit).
// A miner follows no gossip, so it cannot count what a router holds: the
// oracles, which follow every grant, judge it, and send each miner whose
// grant ranks beyond its router's limit an eviction (docs/PROTOCOL.md §8).
// The miner ends the reservation once a quorum of oracles has sent one, so
// no single oracle can end a reservation, and then refuses that router's
// claims for shareMemory: a router that took more than its share a moment
// ago would take this miner again at once.
const shareMemory = time.Minute

// evictionVotes are the oracles that judged one reservation over its
// router's share.
type evictionVotes struct {
	digest  string // the reservation's claim digest
	oracles map[peer.ID]bool
}

// evict counts an oracle's eviction of the miner's current reservation and
// ends the reservation once a quorum of oracles agree. An eviction of any
// other reservation (ended already, or a past one) is ignored.
func (m *Miner) evict(e protocol.Signed[*pb.Eviction]) error {
	if err := m.d.Check.Eviction(e); err != nil {
		return err
	}
	ev := e.Msg
	router, _ := peer.IDFromBytes(ev.Router) // checked above
	s := m.State()
	if !bytes.Equal(ev.Miner, []byte(m.self)) || s.State != pb.MinerState_RESERVED ||
		!bytes.Equal(ev.ClaimDigest, s.ClaimDigest) || ev.Generation != s.Generation || router != s.Router {
		return fmt.Errorf("%w: not about this miner's reservation", protocol.ErrIgnore)
	}
	m.mu.Lock()
	if m.votes.digest != string(s.ClaimDigest) {
		m.votes = evictionVotes{digest: string(s.ClaimDigest), oracles: map[peer.ID]bool{}}
	}
	m.votes.oracles[e.Signer] = true
	votes := len(m.votes.oracles)
	m.mu.Unlock()
	if votes < m.d.Check.Params.Quorum {
		return nil
	}
	after, err := m.commit(func(c State, now time.Time) (State, error) {
		if c.State != pb.MinerState_RESERVED || !bytes.Equal(c.ClaimDigest, s.ClaimDigest) || !now.Before(c.LeaseEnd) {
			return c, errNoChange // released, expired or ended meanwhile
		}
		return c.revalidate(now), nil
	})
	if err != nil {
		if errors.Is(err, errNoChange) {
			return nil
		}
		return fmt.Errorf("ending a reservation over its router's share: %w", err)
	}
	m.mu.Lock()
	m.overShare[router] = time.Now().Add(shareMemory)
	m.mu.Unlock()
	m.evictions.Add(1)
	m.log.Info("miner state", "from", "reserved", "to", "validating", "generation", after.Generation,
		"why", "router over its share", "reservation", s.Session, "peer", s.Router,
		"held", ev.Held, "pool", ev.Pool, "limit", ev.Limit, "rank", ev.Rank, "oracles", votes)
	return nil
}

// refusesRouter says why this miner refuses router's claims, or "" if it does
// not: a quorum of oracles evicted it from router within shareMemory.
func (m *Miner) refusesRouter(router peer.ID, now time.Time) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	until, ok := m.overShare[router]
	if !ok {
		return ""
	}
	if !now.Before(until) {
		delete(m.overShare, router)
		return ""
	}
	return fmt.Sprintf("oracles judged this router over its share of the pool; its claims are refused for %s", until.Sub(now).Round(time.Second))
}

// Evictions counts the reservations this miner ended because its router
// held more than its share, since it started.
func (m *Miner) Evictions() uint64 { return m.evictions.Load() }
