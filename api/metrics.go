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
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ephemera", Subsystem: "api", Name: name, Help: help}, labels)
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ephemera", Subsystem: "api", Name: name, Help: help}, labels)
	}
	m := &metrics{
		refused:        counter("requests_refused_total", "Requests refused before any endpoint: reason host (403), origin (403) or content_type (415).", "reason"),
		streamsOpen:    gauge("streams_open", "Open event streams (kind events) and streaming chat completions (kind chat).", "kind"),
		streamsRefused: counter("streams_refused_total", "Streams refused with 429 for api.max_streams (reason total) or api.max_streams_per_addr (reason per_address).", "kind", "reason"),
		streamsDropped: counter("streams_dropped_total", "Streams ended because their client read too slowly: its queue filled or a write passed its deadline.", "kind"),
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
