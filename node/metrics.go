package node

import (
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/prometheus/client_golang/prometheus"
)

// roleCollector exports the pool and the roles' figures, computed at scrape
// time from the state itself, so a figure can never drift from what it
// counts.
type roleCollector struct {
	n *Node

	poolMiners, reputation, minerState, minerGeneration, minerEvictions, validations, reservations *prometheus.Desc
	oracleEvictions, sigChecks                                                                     *prometheus.Desc
	sessions, queued, tasks, agreement                                                             *prometheus.Desc
	completions, warmSessions, warmMiners, warmSeconds, idleReleases                               *prometheus.Desc
}

func newRoleCollector(n *Node) *roleCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ephemera_"+name, help, labels, nil)
	}
	return &roleCollector{
		n:               n,
		poolMiners:      d("pool_miners", "Miners this node knows, by lifecycle state.", "state"),
		reputation:      d("miner_reputation", "This node's reputation score (0 to 1) of each miner it knows.", "peer"),
		minerState:      d("miner_state", "1 for this miner's own lifecycle state.", "state"),
		minerGeneration: d("miner_generation", "This miner's current generation."),
		minerEvictions:  d("miner_evictions_total", "Reservations this miner ended early because their router held more than its share of the pool."),
		validations:     d("oracle_validations_total", "Validations this oracle ran, by verdict.", "verdict"),
		oracleEvictions: d("oracle_evictions_total", "Evictions this oracle sent to miners whose router held more than its share of the pool."),
		sigChecks:       d("signature_checks_total", "Signatures this node verified of gossip messages, verdicts and records (not of its own stream exchanges)."),
		reservations:    d("router_reservations", "This router's reservations, by state.", "state"),
		sessions:        d("router_sessions", "This router's sessions, by state (ended: since the router started).", "state"),
		queued:          d("router_queued_tasks", "Tasks waiting for a miner on this router."),
		tasks:           d("router_tasks_total", "Tasks this router finished, by outcome.", "outcome"),
		agreement:       d("router_agreement", "Mean agreement (0 to 1) of the answers of tasks several miners ran."),
		completions:     d("router_completions_total", "Chat completions this router was asked for."),
		warmSessions:    d("router_warm_sessions", "Warm sessions serving chat completions, one per model and redundancy (and token)."),
		warmMiners:      d("router_warm_miners", "Miners held by warm sessions, busy on a task or idle.", "state"),
		warmSeconds:     d("router_warm_miner_seconds_total", "Miner-seconds warm sessions held miners, and of those busy: their ratio is the utilisation.", "state"),
		idleReleases:    d("router_idle_releases_total", "Miners warm sessions gave back to the pool after idle_release without work."),
	}
}

func (c *roleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.poolMiners, c.reputation, c.minerState, c.minerGeneration, c.minerEvictions, c.validations, c.reservations,
		c.oracleEvictions, c.sigChecks,
		c.sessions, c.queued, c.tasks, c.agreement, c.completions, c.warmSessions, c.warmMiners, c.warmSeconds, c.idleReleases} {
		ch <- d
	}
}

func (c *roleCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counts := map[pb.MinerState]int{}
	for _, m := range c.n.pool.Records() {
		counts[m.State]++
		gauge(c.reputation, c.n.pool.Reputation(m.ID).Score(), m.ID.String())
	}
	for st := pb.MinerState_JOINING; st <= pb.MinerState_COOLING_OFF; st++ {
		gauge(c.poolMiners, float64(counts[st]), pool.StateName(st))
	}
	if c.n.miner != nil {
		s := c.n.miner.State()
		for st := pb.MinerState_JOINING; st <= pb.MinerState_COOLING_OFF; st++ {
			v := 0.0
			if st == s.State {
				v = 1
			}
			gauge(c.minerState, v, pool.StateName(st))
		}
		gauge(c.minerGeneration, float64(s.Generation))
		ch <- prometheus.MustNewConstMetric(c.minerEvictions, prometheus.CounterValue, float64(c.n.miner.Evictions()))
	}
	if c.n.oracle != nil {
		st := c.n.oracle.Stats()
		ch <- prometheus.MustNewConstMetric(c.validations, prometheus.CounterValue, float64(st.Passed), "pass")
		ch <- prometheus.MustNewConstMetric(c.validations, prometheus.CounterValue, float64(st.Failed), "fail")
		ch <- prometheus.MustNewConstMetric(c.oracleEvictions, prometheus.CounterValue, float64(st.Evictions))
	}
	ch <- prometheus.MustNewConstMetric(c.sigChecks, prometheus.CounterValue, float64(c.n.SigChecks()))
	if c.n.router != nil {
		byState := map[string]int{"active": 0, "released": 0, "expired": 0, "lost": 0}
		for _, r := range c.n.router.Reservations() {
			byState[r.State]++
		}
		for st, v := range byState {
			gauge(c.reservations, float64(v), st)
		}
	}
	if c.n.sessions != nil {
		st := c.n.sessions.Stats()
		gauge(c.sessions, float64(st.Open), "open")
		gauge(c.sessions, float64(st.Ended), "ended")
		gauge(c.queued, float64(st.Queued))
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.CounterValue, float64(st.TasksDone), "done")
		ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.CounterValue, float64(st.TasksFailed), "failed")
		gauge(c.agreement, st.MeanAgreement)
		counter := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
		}
		counter(c.completions, float64(st.Requests))
		gauge(c.warmSessions, float64(st.WarmSessions))
		gauge(c.warmMiners, float64(st.WarmBusy), "busy")
		gauge(c.warmMiners, float64(st.WarmMiners-st.WarmBusy), "idle")
		counter(c.warmSeconds, st.WarmHeldSeconds, "held")
		counter(c.warmSeconds, st.WarmBusySeconds, "busy")
		counter(c.idleReleases, float64(st.IdleReleases))
	}
}
