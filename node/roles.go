package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	routedhost "github.com/libp2p/go-libp2p/p2p/host/routed"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/miner"
	"github.com/ephemera-network/ephemera/node/oracle"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// Role is a job a node does in the network; one node may hold several.
type Role string

// The roles of DESIGN.md.
const (
	RoleBootstrap Role = "bootstrap" // a well-known DHT server and gossip relay
	RoleMiner     Role = "miner"     // runs inference; the candidate ephemeral node
	RoleOracle    Role = "oracle"    // validates miners and signs attestations
	RoleRouter    Role = "router"    // reserves miners for user sessions
)

// AllRoles lists the roles in their canonical order.
var AllRoles = []Role{RoleBootstrap, RoleMiner, RoleOracle, RoleRouter}

// ParseRoles reads a comma-separated role list such as "bootstrap,oracle".
func ParseRoles(s string) ([]Role, error) {
	var out []Role
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		out = append(out, Role(part))
	}
	return out, ValidateRoles(out)
}

// ValidateRoles rejects an empty list, an unknown role or a repeated one.
func ValidateRoles(roles []Role) error {
	if len(roles) == 0 {
		return fmt.Errorf("roles: at least one of %s is needed", roleList())
	}
	for i, r := range roles {
		if !slices.Contains(AllRoles, r) {
			return fmt.Errorf("roles: unknown role %q (known: %s)", r, roleList())
		}
		if slices.Contains(roles[:i], r) {
			return fmt.Errorf("roles: %q is listed twice", r)
		}
	}
	return nil
}

func roleList() string {
	names := make([]string, len(AllRoles))
	for i, r := range AllRoles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// HasRole reports whether roles holds r.
func HasRole(roles []Role, r Role) bool { return slices.Contains(roles, r) }

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

// role is the lifecycle every role shares: the node starts its roles in
// order and stops them in reverse, each within the stop's deadline.
type role interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// startRoles builds the role of each kind this node holds, then starts
// them in order: miner, oracle, router, sessions.
func (n *Node) startRoles(ctx context.Context) error {
	backend, err := n.backend()
	if err != nil {
		return err
	}
	// Oracles and routers dial miners they know only from signed records:
	// a routed host looks a peer's addresses up in the DHT when it has none.
	// Their request/reply streams may also run over a relay (limitedDialer).
	dialer := limitedDialer{routedhost.Wrap(n.host, n.host.DHT)}
	var roles []role
	if HasRole(n.cfg.Roles, RoleMiner) {
		m, err := miner.New(miner.Deps{
			Check: n.check, Host: n.host, DHT: n.host.DHT, Key: n.key, Store: n.store, Pool: n.pool,
			Backend: backend, PublishPool: n.publisher(protocol.TopicPool), PublishReservations: n.publisher(protocol.TopicReservations),
			PoolPeers: func() int { return n.topicPeers(protocol.TopicPool) },
			Log:       n.log.With("module", "miner"),
		})
		if err != nil {
			return fmt.Errorf("miner: %w", err)
		}
		n.miner = m
		roles = append(roles, m)
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
			Bank: bank, Embed: backend.Embed, Publish: n.publisher(protocol.TopicAttestations), Log: n.log.With("module", "oracle"),
		})
		if err != nil {
			return err
		}
		n.oracle = o
		roles = append(roles, o)
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
		n.router = r
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
		n.sessions = sm
		// Started after the router and so stopped before it: ending the
		// sessions can still release their miners.
		roles = append(roles, r, sm)
	}
	for _, r := range roles {
		if err := r.Start(ctx); err != nil {
			return err
		}
		n.onStop(r.Stop)
	}
	if n.miner != nil {
		go n.watchDialable(ctx)
	}
	return nil
}
