package api

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's own: what it refused and what it dropped. Each
// Handler has its own, so that two nodes in one process count apart.
type metrics struct {
	refused        *prometheus.CounterVec // requests, by reason
	streamsOpen    *prometheus.GaugeVec   // by kind
	streamsRefused *prometheus.CounterVec // by kind and reason
	streamsDropped *prometheus.CounterVec // by kind: clients that read too slowly
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "api", Name: "requests_refused_total",
			Help: "Requests refused before any endpoint: reason host (403), origin (403) or content_type (415).",
		}, []string{"reason"}),
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "ephemera", Subsystem: "api", Name: "streams_open",
			Help: "Open event streams (kind events) and streaming chat completions (kind chat).",
		}, []string{"kind"}),
		streamsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "api", Name: "streams_refused_total",
			Help: "Streams refused with 429 for api.max_streams (reason total) or api.max_streams_per_addr (reason per_address).",
		}, []string{"kind", "reason"}),
		streamsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ephemera", Subsystem: "api", Name: "streams_dropped_total",
			Help: "Streams ended because their client read too slowly: its queue filled or a write passed its deadline.",
		}, []string{"kind"}),
	}
	if reg != nil {
		m.refused = register(reg, m.refused)
		m.streamsOpen = register(reg, m.streamsOpen)
		m.streamsRefused = register(reg, m.streamsRefused)
		m.streamsDropped = register(reg, m.streamsDropped)
	}
	return m
}

// register registers c with reg, or returns the collector registered
// before it: a second Handler on one registry counts into the first's.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
