package gossip

import (
	"log/slog"
	"slices"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Gossipsub learns a peer's subscriptions once, from the first message of
// the stream the peer opens to us. When our own stream to the peer fails
// while it is still connected, gossipsub forgets those subscriptions and
// opens a new stream, which carries ours; nothing asks for the peer's
// again. That is the rule after every restart of a subscriber on the same
// key: the dead process's QUIC connection lives on until we next send on
// it, by which time the new process has connected and said hello. A node
// that subscribes to nothing (Fanout: a miner) then stops sending to that
// subscriber for good; in the chaos run a miner came to know 1 of 5.
//
// The rehelloer asks again. A peer that subscribed to one of the network's
// topics and no longer does although still connected has its stream to us
// reset; gossipsub at its end then opens a new one, and the first message
// of a new stream is the sender's subscriptions. Only for a node that
// subscribes to nothing: the reset makes the peer forget our
// subscriptions in turn, which for such a node are none, so two of them
// cannot keep resetting each other.
type rehelloer struct {
	h      host.Host
	ps     *pubsub.PubSub
	topics []string
	m      *metrics
	log    *slog.Logger

	subscribed map[peer.ID]bool       // connected peers seen subscribed to a topic
	forgotten  map[peer.ID]bool       // of those, subscribed to none at the last check
	next       map[peer.ID]revivalDue // peers asked, and when they may be again
}

func newRehelloer(h host.Host, ps *pubsub.PubSub, topics []string, m *metrics, log *slog.Logger) *rehelloer {
	return &rehelloer{h: h, ps: ps, topics: topics, m: m, log: log,
		subscribed: map[peer.ID]bool{}, forgotten: map[peer.ID]bool{}, next: map[peer.ID]revivalDue{}}
}

// check asks every connected peer that gossipsub has forgotten the
// subscriptions of, at two checks in a row (its hello may be on its way),
// to say them again.
func (r *rehelloer) check(now time.Time) {
	current := map[peer.ID]bool{}
	for _, t := range r.topics {
		for _, p := range r.ps.ListPeers(t) {
			current[p] = true
		}
	}
	for p := range r.subscribed {
		switch {
		case current[p]:
			delete(r.forgotten, p)
			delete(r.next, p)
		case r.h.Network().Connectedness(p) != network.Connected:
			// Gone: a new connection brings a new hello.
			delete(r.subscribed, p)
			delete(r.forgotten, p)
			delete(r.next, p)
		case !r.forgotten[p]:
			r.forgotten[p] = true
		default:
			r.ask(p, now)
		}
	}
	for p := range current {
		r.subscribed[p] = true
	}
}

// ask resets p's gossipsub streams to us, at most once per backoff.
func (r *rehelloer) ask(p peer.ID, now time.Time) {
	again, ok := backOff(r.next, p, now)
	if !ok {
		return
	}
	reset := 0
	for _, c := range r.h.Network().ConnsToPeer(p) {
		for _, s := range c.GetStreams() {
			if s.Stat().Direction == network.DirInbound && slices.Contains(pubsub.GossipSubDefaultProtocols, s.Protocol()) {
				_ = s.Reset()
				reset++
			}
		}
	}
	r.m.reasked.Inc()
	r.log.Info("gossip peer connected but its subscriptions forgotten; asked for them again", "peer", p, "streams_reset", reset, "again", again)
}
