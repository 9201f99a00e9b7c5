package node

import (
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector exports the pool as this node sees it, counted by state at
// scrape time, so the figure can never drift from the view.
type poolCollector struct {
	pool *pool.Pool
	desc *prometheus.Desc
}

func newPoolCollector(p *pool.Pool) *poolCollector {
	return &poolCollector{pool: p, desc: prometheus.NewDesc("ephemera_pool_miners",
		"Miners this node knows, by lifecycle state.", []string{"state"}, nil)}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[pb.MinerState]int{}
	for _, m := range c.pool.Miners() {
		counts[m.State]++
	}
	for st := pb.MinerState_JOINING; st <= pb.MinerState_COOLING_OFF; st++ {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[st]), pool.StateName(st))
	}
}
