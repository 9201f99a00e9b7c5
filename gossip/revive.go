package gossip

import (
	"context"
	"log/slog"
	"time"

	"github.com/ephemera-network/ephemera/internal/wait"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A peer that restarts on the same key and ports comes back on a new
// connection while we still hold its old one: a SIGKILLed process sends no
// goodbye, and a QUIC connection only dies when we next send on it (and get
// a stateless reset). Gossipsub keeps its stream on the old connection and
// ignores the new one ("already have connection to peer"); when the old one
// dies with the peer still connected it reopens the stream, but only four
// times per peer, counted over 10 minutes (go-libp2p-pubsub's
// deadPeerBackoff, MaxBackoffAttempts). After that it drops the peer for
// good: no stream, so no message, IHAVE or GRAFT reply ever goes to it,
// although it is connected and its own messages still reach us. Only a new
// identification of the peer (another connection) brings it back.
//
// The reviver finds such peers and tells gossipsub about them again the way
// identify would: an EvtPeerProtocolsUpdated for the pubsub protocols the
// peer is known to speak. Gossipsub then opens a stream and sends our
// subscriptions, as for any new peer; the other subscribers (the DHT,
// AutoNAT) only re-read the peer's protocols from the peerstore.
type reviver struct {
	h     host.Host
	ps    *pubsub.PubSub
	emit  event.Emitter
	guard *guard
	m     *metrics
	log   *slog.Logger

	missing map[peer.ID]bool       // connected pubsub peers gossipsub lacked at the last check
	next    map[peer.ID]revivalDue // peers revived, and when they may be again
}

type revivalDue struct {
	at   time.Time
	wait time.Duration
}

// backOff reports whether p may be acted on at now, and whether it was
// before; if it may, the next time is set in next: reviveBackoff from now,
// or twice the last wait up to reviveBackoffMax.
func backOff(next map[peer.ID]revivalDue, p peer.ID, now time.Time) (again, ok bool) {
	due, again := next[p]
	if again && now.Before(due.at) {
		return again, false
	}
	wait := reviveBackoff
	if again {
		wait = min(2*due.wait, reviveBackoffMax)
	}
	next[p] = revivalDue{at: now.Add(wait), wait: wait}
	return again, true
}

const (
	// reviveInterval is how often gossipsub's peers are compared with the
	// connected ones. A peer must be missing at two checks in a row, so that
	// one being added right now is left alone.
	reviveInterval = time.Second
	// A peer gossipsub keeps dropping (its streams fail) is revived again
	// after reviveBackoff, doubling up to reviveBackoffMax.
	reviveBackoff    = 2 * time.Second
	reviveBackoffMax = time.Minute
)

func newReviver(h host.Host, ps *pubsub.PubSub, gd *guard, m *metrics, log *slog.Logger) (*reviver, error) {
	emit, err := h.EventBus().Emitter(new(event.EvtPeerProtocolsUpdated))
	if err != nil {
		return nil, err
	}
	return &reviver{h: h, ps: ps, emit: emit, guard: gd, m: m, log: log,
		missing: map[peer.ID]bool{}, next: map[peer.ID]revivalDue{}}, nil
}

// run checks every reviveInterval until ctx ends, and has rh, if not nil,
// check too.
func (r *reviver) run(ctx context.Context, rh *rehelloer) {
	defer r.emit.Close()
	t := time.NewTicker(reviveInterval)
	defer t.Stop()
	for wait.Tick(ctx, t.C) {
		now := time.Now()
		r.check(now)
		if rh != nil {
			rh.check(now)
		}
	}
}

// check revives every connected peer that speaks a pubsub protocol and that
// gossipsub has lacked for two checks, unless it is cut off.
func (r *reviver) check(now time.Time) {
	known := map[peer.ID]bool{}
	for _, p := range r.ps.ListPeers("") {
		known[p] = true
	}
	missing := map[peer.ID]bool{}
	for _, p := range r.h.Network().Peers() {
		if known[p] || r.h.Network().Connectedness(p) != network.Connected || r.guard.isCut(p, now) {
			continue
		}
		protos, err := r.h.Peerstore().SupportsProtocols(p, pubsub.GossipSubDefaultProtocols...)
		if err != nil || len(protos) == 0 {
			continue
		}
		missing[p] = true
		if !r.missing[p] {
			continue
		}
		again, ok := backOff(r.next, p, now)
		if !ok {
			continue
		}
		if err := r.emit.Emit(event.EvtPeerProtocolsUpdated{Peer: p, Added: protos}); err != nil {
			r.log.Debug("reviving a gossip peer", "peer", p, "err", err)
			continue
		}
		r.m.revived.Inc()
		r.log.Info("gossip peer connected but dropped by gossipsub; introduced again", "peer", p, "again", again)
	}
	// A peer gossipsub has again, or that has gone, starts afresh.
	for p := range r.next {
		if !missing[p] && !r.missing[p] {
			delete(r.next, p)
		}
	}
	r.missing = missing
}
