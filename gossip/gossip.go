// Package gossip runs gossipsub for a node: the network's topics, their
// validators, content-hash message IDs and explicit peer scoring.
package gossip

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/internal/names"
	"github.com/ephemera-network/ephemera/protocol"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// Validator judges one message. err says why it was not accepted; it is
// logged at debug and never sent anywhere.
type Validator func(ctx context.Context, from peer.ID, data []byte) (pubsub.ValidationResult, error)

// Handler receives every accepted message of a topic, including our own.
type Handler func(msg *pubsub.Message)

// Gossip is one node's gossipsub router and the topics it has joined.
type Gossip struct {
	ps      *pubsub.PubSub
	network string
	cfg     Config
	metrics *metrics
	log     *slog.Logger
	guard   *guard

	mu     sync.Mutex
	topics map[string]*Topic
	wg     sync.WaitGroup

	stopReviver context.CancelFunc
	reviverDone chan struct{}

	scoreMu sync.Mutex
	scores  map[peer.ID]float64 // the latest snapshot from the score inspector
}

// MessageID is the SHA-256 of the message's data: the same content always has
// the same ID, whoever forwards it, so duplicates are dropped network-wide.
func MessageID(m *pb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:])
}

// New starts gossipsub on h. Messages are not signed by the router: every
// payload is a signed envelope of its own, so a second signature would only
// cost CPU and bytes; without one, IDs must be content hashes.
//
// A peer that is graylisted, or whose REJECTed messages alone would graylist
// it, is cut off: its connections are closed and, if h is a PeerBlocker (as
// *p2p.Host is), refused for CutOffPeriod. Any other connected peer that
// gossipsub has dropped is introduced to it again (see reviver); with
// Fanout, a connected subscriber whose subscriptions gossipsub forgot is
// asked for them again (see rehelloer).
func New(ctx context.Context, h host.Host, network string, cfg Config, reg prometheus.Registerer, log *slog.Logger, opts ...Option) (*Gossip, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return start(ctx, h, network, cfg, reg, log, o, nil)
}

// Option changes how New runs gossipsub for this node's role.
type Option func(*options)

type options struct{ fanout bool }

// Fanout is for a node that subscribes to no topic (a miner): it sends its
// messages to gossipsub's fanout, D peers of the topic, instead of flooding
// them to every subscribed peer. Its messages are its own records and
// grants, which the subscribers' meshes spread from there, and so what it
// sends does not grow with the peers it knows.
func Fanout() Option { return func(o *options) { o.fanout = true } }

// start is New with its options o, and tune, if not nil, applied to the guard before anything
// runs: a test's clock, or the addresses a test counts.
func start(ctx context.Context, h host.Host, network string, cfg Config, reg prometheus.Registerer, log *slog.Logger, o options, tune func(*guard)) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ids := make([]string, len(protocol.Topics))
	for i, n := range protocol.Topics {
		ids[i] = protocol.TopicID(network, n)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	g := &Gossip{network: network, cfg: cfg, metrics: m, log: log, guard: newGuard(h, m, log), topics: map[string]*Topic{}}
	if tune != nil {
		tune(g.guard)
	}
	ps, err := pubsub.NewGossipSub(ctx, h,
		pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMaxMessageSize(cfg.MaxMessageSize),
		// IDONTWANT (gossipsub v1.2) stays at its default, messages of 1 KiB
		// or more: sent for ours too (200 B and up), it cost the 88-node
		// simulation 8% more bytes and 23% more packets than it spared.
		pubsub.WithGossipSubParams(pubsub.DefaultGossipSubParams()),
		pubsub.WithPeerScore(scoreParams(ids, ownNets(h.Network().ListenAddresses())...), scoreThresholds()),
		pubsub.WithPeerScoreInspect(g.keepScores, scoreInspectPeriod),
		// Our messages are few and matter (attestations, grants): the origin
		// sends each to every subscribed peer above the publish threshold,
		// rather than only to a mesh that may still be forming. Unless it
		// subscribes to nothing (Fanout): then it has no mesh to wait for.
		pubsub.WithFloodPublish(!o.fanout),
		pubsub.WithPeerExchange(true),
		pubsub.WithLogger(log),
	)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	g.ps = ps
	rv, err := newReviver(h, ps, g.guard, m, log)
	if err != nil {
		return nil, fmt.Errorf("gossip: peer reviver: %w", err)
	}
	var rh *rehelloer
	if o.fanout {
		rh = newRehelloer(h, ps, ids, m, log)
	}
	rctx, stop := context.WithCancel(ctx)
	g.stopReviver, g.reviverDone = stop, make(chan struct{})
	go func() {
		defer close(g.reviverDone)
		rv.run(rctx, rh)
	}()
	return g, nil
}

// scoreInspectPeriod is how stale PeerScore may be.
const scoreInspectPeriod = time.Second

func (g *Gossip) keepScores(scores map[peer.ID]float64) {
	g.scoreMu.Lock()
	g.scores = scores
	g.scoreMu.Unlock()
	g.guard.scored(scores)
}

// PeerScore is p's gossip score as of the last inspection (zero if unknown).
// A peer below the graylist threshold has everything it sends dropped, and
// is cut off (see New).
func (g *Gossip) PeerScore(p peer.ID) float64 {
	g.scoreMu.Lock()
	defer g.scoreMu.Unlock()
	return g.scores[p]
}

// GraylistThreshold is the score below which a peer is ignored entirely.
func GraylistThreshold() float64 { return scoreThresholds().GraylistThreshold }

// Topic is a joined topic: subscribed, or joined only to publish.
type Topic struct {
	name    string
	topic   *pubsub.Topic
	sub     *pubsub.Subscription // nil when joined only to publish
	metrics *metrics
}

// Join joins topic name with validator v in place before any message can
// arrive, and hands each accepted message to handle until ctx ends.
func (g *Gossip) Join(ctx context.Context, name string, v Validator, handle Handler) (*Topic, error) {
	return g.join(ctx, name, v, handle, true)
}

// JoinToPublish joins topic name without subscribing: this node's messages
// go to the topic's subscribers it knows (gossipsub's fanout), checked by v
// first as every published message is, and it receives none. A node that
// needs nothing from a topic so costs its peers nothing on it.
func (g *Gossip) JoinToPublish(ctx context.Context, name string, v Validator) (*Topic, error) {
	return g.join(ctx, name, v, nil, false)
}

func (g *Gossip) join(ctx context.Context, name string, v Validator, handle Handler, subscribe bool) (*Topic, error) {
	id := protocol.TopicID(g.network, name)
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.topics[name]; ok {
		return nil, fmt.Errorf("gossip: topic %s joined twice", id)
	}
	err := g.ps.RegisterTopicValidator(id, g.instrument(name, v),
		pubsub.WithValidatorTimeout(g.cfg.ValidatorTimeout.Std()),
		pubsub.WithValidatorConcurrency(g.cfg.ValidatorConcurrency))
	if err != nil {
		return nil, fmt.Errorf("gossip: validator for %s: %w", id, err)
	}
	t, err := g.ps.Join(id)
	if err != nil {
		return nil, fmt.Errorf("gossip: join %s: %w", id, err)
	}
	topic := &Topic{name: name, topic: t, metrics: g.metrics}
	if subscribe {
		if topic.sub, err = t.Subscribe(); err != nil {
			t.Close()
			return nil, fmt.Errorf("gossip: subscribe %s: %w", id, err)
		}
		g.wg.Go(func() { topic.deliver(ctx, handle) })
	}
	g.topics[name] = topic
	return topic, nil
}

// instrument counts every validation outcome by topic.
func (g *Gossip) instrument(name string, v Validator) pubsub.ValidatorEx {
	return func(ctx context.Context, from peer.ID, msg *pubsub.Message) (res pubsub.ValidationResult) {
		// Whatever a peer sends, a bug in a validator must not take the node down.
		defer func() {
			if p := recover(); p != nil {
				g.log.Error("gossip validator panicked; message rejected", "topic", name, "from", from, "panic", p)
				g.metrics.validated.WithLabelValues(name, "reject").Inc()
				res = pubsub.ValidationReject
			}
		}()
		res, err := v(ctx, from, msg.Data)
		g.metrics.validated.WithLabelValues(name, Outcome(res)).Inc()
		if res == pubsub.ValidationReject {
			g.guard.rejected(from)
		}
		if err != nil {
			g.log.Debug("gossip message not accepted", "topic", name, "from", from, "outcome", Outcome(res), "reason", err)
		}
		return res
	}
}

// Outcome names a validation result as logs and metrics labels do.
func Outcome(r pubsub.ValidationResult) string { return names.Of(outcomeNames, r, "throttled") }

var outcomeNames = map[pubsub.ValidationResult]string{
	pubsub.ValidationAccept: "accept",
	pubsub.ValidationReject: "reject",
	pubsub.ValidationIgnore: "ignore",
}

// Publish sends data to the topic's mesh.
func (t *Topic) Publish(ctx context.Context, data []byte) error {
	if err := t.topic.Publish(ctx, data); err != nil {
		return fmt.Errorf("publish on %s: %w", t.name, err)
	}
	t.metrics.published.WithLabelValues(t.name).Inc()
	return nil
}

// Peers lists the peers that subscribe to this topic.
func (t *Topic) Peers() []peer.ID { return t.topic.ListPeers() }

func (t *Topic) deliver(ctx context.Context, handle Handler) {
	for {
		msg, err := t.sub.Next(ctx)
		if err != nil {
			return // ctx ended or the subscription was cancelled
		}
		if handle != nil {
			handle(msg)
		}
	}
}

// Close stops reviving peers, leaves every topic and waits for their
// handlers to return.
func (g *Gossip) Close() error {
	g.stopReviver()
	<-g.reviverDone
	g.mu.Lock()
	var errs []error
	for _, t := range g.topics {
		if t.sub != nil {
			t.sub.Cancel()
		}
		if err := t.topic.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	g.topics = map[string]*Topic{}
	g.mu.Unlock()
	g.wg.Wait()
	return errors.Join(errs...)
}
