package node

import (
	"context"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/miner"
	"github.com/ephemera-network/ephemera/node/oracle"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/libp2p/go-libp2p/core/peer"
	routedhost "github.com/libp2p/go-libp2p/p2p/host/routed"
	"github.com/prometheus/client_golang/prometheus"
)

// startPool builds the pool view and joins every topic with the kinds it
// carries, judged against that view.
func (n *Node) startPool(ctx context.Context) error {
	var err error
	if n.pool, err = pool.New(n.store, n.check, n.log.With("module", "pool")); err != nil {
		return err
	}
	kinds := n.pool.Kinds(n.key, n.publish)
	for _, name := range gossip.TopicNames {
		t, err := n.gossip.Join(ctx, name, gossip.EnvelopeValidator(kinds[name]...), nil)
		if err != nil {
			return err
		}
		// Validators of the topics joined first may already publish evidence.
		n.topicsMu.Lock()
		n.topics[name] = t
		n.topicsMu.Unlock()
	}
	return nil
}

// publish sends data on one of the network's topics.
func (n *Node) publish(ctx context.Context, topic string, data []byte) error {
	n.topicsMu.RLock()
	t, ok := n.topics[topic]
	n.topicsMu.RUnlock()
	if !ok {
		return fmt.Errorf("not joined to topic %s", topic)
	}
	return t.Publish(ctx, data)
}

// topicPeers counts the peers subscribed to one of the network's topics.
func (n *Node) topicPeers(topic string) int {
	n.topicsMu.RLock()
	t, ok := n.topics[topic]
	n.topicsMu.RUnlock()
	if !ok {
		return 0
	}
	return len(t.Peers())
}

func (n *Node) publisher(topic string) func(context.Context, []byte) error {
	return func(ctx context.Context, data []byte) error { return n.publish(ctx, topic, data) }
}

// backend is the inference engine of the configuration, unless the node's
// options bring their own.
func (n *Node) backend() (inference.Backend, error) {
	if n.opts.Backend != nil {
		return n.opts.Backend, nil
	}
	c := n.cfg.Inference
	if c.Backend == "openai" {
		b, err := inference.NewOpenAI(inference.OpenAIConfig{
			BaseURL: c.BaseURL, APIKey: c.APIKey, Model: c.Model, EmbeddingModel: c.EmbeddingModel, Timeout: c.Timeout.Std(),
		})
		if err != nil {
			return nil, fmt.Errorf("inference: %w", err)
		}
		return b, nil
	}
	return inference.NewBuiltin(), nil
}

// startRoles starts the role of each kind this node holds.
func (n *Node) startRoles(ctx context.Context) error {
	backend, err := n.backend()
	if err != nil {
		return err
	}
	// Oracles and routers dial miners they know only from signed records:
	// a routed host looks a peer's addresses up in the DHT when it has none.
	// Their request/reply streams may also run over a relay (limitedDialer).
	dialer := limitedDialer{routedhost.Wrap(n.host, n.host.DHT)}
	if HasRole(n.cfg.Roles, RoleMiner) {
		m, err := miner.New(miner.Deps{
			Check: n.check, Host: n.host, DHT: n.host.DHT, Key: n.key, Store: n.store, Pool: n.pool,
			Backend: backend, PublishPool: n.publisher(gossip.Pool), PublishReservations: n.publisher(gossip.Reservations),
			PoolPeers: func() int { return n.topicPeers(gossip.Pool) },
			Log:       n.log.With("module", "miner"),
		})
		if err != nil {
			return fmt.Errorf("miner: %w", err)
		}
		if err := m.Start(ctx); err != nil {
			return err
		}
		n.miner = m
		go n.watchDialable(ctx)
		n.onStop(func(context.Context) error { m.Stop(); return nil })
	}
	if HasRole(n.cfg.Roles, RoleOracle) {
		bank := challenge.Default()
		if path := n.cfg.Params.ChallengeBank; path != "" {
			var err error
			if bank, err = challenge.Load(path); err != nil {
				return fmt.Errorf("params.challenge_bank: %w", err)
			}
		}
		o, err := oracle.New(oracle.Deps{
			Network: n.netID, Check: n.check, Host: dialer, Key: n.key, Store: n.store, Pool: n.pool,
			Bank: bank, Embed: backend.Embed, Publish: n.publisher(gossip.Attestations), Log: n.log.With("module", "oracle"),
		})
		if err != nil {
			return err
		}
		o.Start(ctx)
		n.oracle = o
		n.onStop(func(context.Context) error { o.Stop(); return nil })
	}
	if HasRole(n.cfg.Roles, RoleRouter) {
		reserveSeconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ephemera", Name: "router_reserve_seconds",
			Help:    "Time to reserve a miner, claim and grant included, by outcome: granted, no_miner, error.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"outcome"})
		taskSeconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "ephemera", Name: "router_task_seconds",
			Help:    "Session tasks by outcome (done, failed) and phase: queued waiting for miners, run by them.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"outcome", "phase"})
		n.reg.MustRegister(reserveSeconds, taskSeconds)
		r, err := router.New(router.Deps{
			Network: n.netID, Check: n.check, Host: dialer, DHT: n.host.DHT, Key: n.key, Store: n.store,
			Pool: n.pool, Log: n.log.With("module", "router"),
			Relayed:   func(p peer.ID) bool { return relayedOnly(n.host, p) },
			RelayLeft: func(p peer.ID) (time.Duration, bool) { return relayLeft(n.host, p) },
			ObserveReserve: func(res router.Reservation, took time.Duration, err error) {
				reserveSeconds.WithLabelValues(router.Outcome(err)).Observe(took.Seconds())
				if n.opts.ObserveReserve != nil {
					n.opts.ObserveReserve(res, took, err)
				}
			},
		})
		if err != nil {
			return fmt.Errorf("router: %w", err)
		}
		r.Start(ctx)
		n.router = r
		n.onStop(r.Stop)
		rc := n.cfg.Router
		sm, err := session.New(session.Deps{
			Check: n.check, Host: dialer, Key: n.key, Store: n.store, Router: r, Pool: n.pool, Embed: backend.Embed,
			Config: session.Config{
				MaxSessions: rc.MaxSessions, MaxQueued: rc.MaxQueuedTasks, QueueTimeout: rc.QueueTimeout.Std(),
				CompletionWait: rc.CompletionWait.Std(), IdleRelease: rc.IdleRelease.Std(),
				WarmMaxMiners: rc.WarmMaxMiners, WarmMaxTasks: rc.WarmMaxTasks,
				WarmPeriod:   min(rc.WarmPeriod.Std(), n.cfg.Params.LeaseMax.Std()),
				MaxPerClient: rc.MaxPerToken,
			},
			Log: n.log.With("module", "sessions"),
			ObserveTask: func(outcome string, queued, ran time.Duration) {
				taskSeconds.WithLabelValues(outcome, "queued").Observe(queued.Seconds())
				taskSeconds.WithLabelValues(outcome, "run").Observe(ran.Seconds())
			},
		})
		if err != nil {
			return fmt.Errorf("sessions: %w", err)
		}
		sm.Start(ctx)
		n.sessions = sm
		// Stopped before the router, so that ending the sessions can still
		// release their miners.
		n.onStop(sm.Stop)
	}
	return nil
}
