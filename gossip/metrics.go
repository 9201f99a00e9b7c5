package gossip

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type metrics struct {
	validated *prometheus.CounterVec
	published *prometheus.CounterVec
	cutOff    *prometheus.CounterVec
	netCut    *prometheus.CounterVec
	revived   prometheus.Counter
	reasked   prometheus.Counter
}

// newMetrics registers the gossip counters with reg; a nil reg keeps them unexported.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ephemera", Subsystem: "gossip", Name: name, Help: help}, labels)
	}
	m := &metrics{
		validated: counter("messages_total", "Gossip messages received, by topic and validation outcome (accept, reject, ignore, throttled).", "topic", "outcome"),
		published: counter("published_total", "Gossip messages this node published, by topic.", "topic"),
		cutOff:    counter("peers_cut_off_total", "Peers whose connections were closed and refused for a while, by reason: graylisted (score below the graylist threshold), invalid (enough REJECTed messages to graylist it) or network (its address or subnet was cut off).", "reason"),
		netCut:    counter("networks_cut_off_total", "Addresses (IPv4, IPv6 /64) and subnets (IPv4 /24, IPv6 /48) whose peers together sent enough REJECTed messages that every connection with them was closed and refused for a while, by kind: address or subnet.", "kind"),
		revived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "gossip", Name: "peers_revived_total",
			Help: "Connected peers that gossipsub had dropped (it gives up on a peer whose stream died four times in 10 minutes while it stayed connected, as after restarts) and that were introduced to it again.",
		}),
		reasked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "gossip", Name: "subscriptions_reasked_total",
			Help: "Times a node that subscribes to nothing (a miner) reset a connected peer's gossip stream because gossipsub had forgotten the peer's subscriptions (as after the peer restarted), so that the peer said them again.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.validated, m.published, m.cutOff, m.netCut, m.revived, m.reasked} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("gossip metrics"), err)
		}
	}
	return m, nil
}

// TopicCounts are one topic's counters since the node started.
type TopicCounts struct {
	Accept, Reject, Ignore, Throttled uint64 // messages received, by validation outcome
	Published                         uint64 // messages this node published
}

// Counts reads the counters of every topic that has any, straight from the
// counters themselves rather than through a whole registry gather.
func (g *Gossip) Counts() map[string]TopicCounts {
	out := map[string]TopicCounts{}
	read := func(c prometheus.Collector, add func(labels map[string]string, v uint64)) {
		ch := make(chan prometheus.Metric)
		go func() { c.Collect(ch); close(ch) }()
		for m := range ch {
			var pm dto.Metric
			if m.Write(&pm) != nil {
				continue
			}
			labels := map[string]string{}
			for _, l := range pm.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			add(labels, uint64(pm.GetCounter().GetValue()))
		}
	}
	read(g.metrics.validated, func(l map[string]string, v uint64) {
		t := out[l["topic"]]
		switch l["outcome"] {
		case "accept":
			t.Accept = v
		case "reject":
			t.Reject = v
		case "ignore":
			t.Ignore = v
		case "throttled":
			t.Throttled = v
		}
		out[l["topic"]] = t
	})
	read(g.metrics.published, func(l map[string]string, v uint64) {
		t := out[l["topic"]]
		t.Published = v
		out[l["topic"]] = t
	})
	return out
}
