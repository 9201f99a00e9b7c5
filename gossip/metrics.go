package gossip

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	validated *prometheus.CounterVec
	published *prometheus.CounterVec
}

// newMetrics registers the gossip counters with reg; a nil reg keeps them unexported.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		validated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "gossip", Name: "messages_total",
			Help: "Gossip messages received, by topic and validation outcome (accept, reject, ignore, throttled).",
		}, []string{"topic", "outcome"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "gossip", Name: "published_total",
			Help: "Gossip messages this node published, by topic.",
		}, []string{"topic"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.validated, m.published} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("gossip metrics"), err)
		}
	}
	return m, nil
}
