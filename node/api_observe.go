package node

import (
	"context"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/node/observe"
)

// startObserver watches the pool for the dashboard, from just after the pool
// starts (taking in what the pool already holds) until the node stops.
func (n *Node) startObserver() {
	n.observer = observe.New(observe.Config{Pool: n.pool, Log: n.log.With("module", "observe")})
}

// stopObserver stops the observer, which ends the dashboard's event streams.
// Registered once more after the API starts, it runs before the API closes,
// which otherwise would wait for the streams until its deadline.
func (n *Node) stopObserver(context.Context) error {
	n.observer.Stop()
	return nil
}

// observerAPI gives the API the dashboard's data.
func (n *Node) observerAPI() api.Observer {
	return &observeAPI{Observer: n.observer, n: n}
}

// observeAPI is the pool observer with the node's overview.
type observeAPI struct {
	*observe.Observer
	n *Node

	mu       sync.Mutex
	gossipAt time.Time
	gossip   []api.GossipTopic
}

var _ api.Observer = (*observeAPI)(nil)

// gossipCacheFor is how long the gossip counters are reused: reading them
// gathers the whole registry, and every dashboard asks every 2 s.
const gossipCacheFor = time.Second

// Overview answers GET /v1/overview.
func (a *observeAPI) Overview() api.Overview {
	n := a.n
	ov := api.Overview{
		Time:   time.Now().UTC(),
		Node:   n.Info(),
		Pool:   a.Counts(),
		Gossip: a.gossipCounters(),
	}
	if n.oracle != nil {
		s := n.oracle.Stats()
		ov.Oracle = &api.OracleStats{ValidationsPassed: s.Passed, ValidationsFailed: s.Failed}
		if s.Passed+s.Failed > 0 {
			ov.Oracle.PassRate = float64(s.Passed) / float64(s.Passed+s.Failed)
		}
	}
	if n.sessions != nil {
		s := n.sessions.Stats()
		ov.Router = &api.RouterStats{
			SessionsOpen: s.Open, SessionsEnded: s.Ended, QueuedTasks: s.Queued,
			TasksDone: s.TasksDone, TasksFailed: s.TasksFailed, MeanAgreement: s.MeanAgreement,
		}
	}
	return ov
}

// gossipCounters reads the gossip package's counters from the node's
// registry: every topic of the network, in gossip.TopicNames' order.
func (a *observeAPI) gossipCounters() []api.GossipTopic {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gossip != nil && time.Since(a.gossipAt) < gossipCacheFor {
		return a.gossip
	}
	byTopic := make(map[string]*api.GossipTopic, len(gossip.TopicNames))
	out := make([]api.GossipTopic, len(gossip.TopicNames))
	for i, name := range gossip.TopicNames {
		out[i].Topic = name
		byTopic[name] = &out[i]
	}
	families, _ := a.n.reg.Gather() // a failing collector elsewhere leaves these intact
	for _, mf := range families {
		switch mf.GetName() {
		case "ephemera_gossip_messages_total", "ephemera_gossip_published_total":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			var topic, outcome string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "topic":
					topic = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			t := byTopic[topic]
			if t == nil {
				continue
			}
			v := uint64(m.GetCounter().GetValue())
			if mf.GetName() == "ephemera_gossip_published_total" {
				t.Published = v
				continue
			}
			switch outcome {
			case "accept":
				t.Accept = v
			case "reject":
				t.Reject = v
			case "ignore":
				t.Ignore = v
			case "throttled":
				t.Throttled = v
			}
		}
	}
	a.gossip, a.gossipAt = out, time.Now()
	return out
}
