package node

import (
	"context"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/observe"
	"github.com/ephemera-network/ephemera/protocol"
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
}

var _ api.Observer = (*observeAPI)(nil)

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
			Completions: s.Requests, WarmMiners: s.WarmMiners, WarmBusy: s.WarmBusy, IdleReleases: s.IdleReleases,
		}
		if s.WarmHeldSeconds > 0 {
			ov.Router.Utilisation = s.WarmBusySeconds / s.WarmHeldSeconds
		}
	}
	return ov
}

// gossipCounters are the gossip counters of every topic of the network, in
// protocol.Topics' order.
func (a *observeAPI) gossipCounters() []api.GossipTopic {
	counts := a.n.gossip.Counts()
	out := make([]api.GossipTopic, len(protocol.Topics))
	for i, name := range protocol.Topics {
		c := counts[name]
		out[i] = api.GossipTopic{Topic: name, Accept: c.Accept, Reject: c.Reject, Ignore: c.Ignore, Throttled: c.Throttled, Published: c.Published}
	}
	return out
}
