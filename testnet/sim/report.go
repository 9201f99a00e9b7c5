package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/router"
)

// Report is what one run measured. Times are simulated unless named real.
type Report struct {
	Scenario string `json:"scenario"`
	Nodes    int    `json:"nodes"`

	StartS     float64 `json:"start_s"`     // until every node of the plan had started
	FillS      float64 `json:"fill_s"`      // until every router saw every miner available
	SimulatedS float64 `json:"simulated_s"` // the run after the fill
	CutShort   bool    `json:"cut_short"`   // the load ended early, at the real-time budget
	RealS      float64 `json:"real_s"`      // what it all took on this machine

	Attestations       int     `json:"attestations"`
	AttDeliveryRatio   float64 `json:"att_delivery_ratio"` // receptions / nodes that need it, up throughout
	AttP50Ms, AttP99Ms float64 `json:"-"`

	Reservations       int            `json:"reservations"`
	ReserveFailures    map[string]int `json:"reserve_failures"`
	ReserveErrors      []string       `json:"reserve_errors,omitempty"` // the first few failures, as the router said them
	ReserveSuccess     float64        `json:"reserve_success"`
	FindP50Ms          float64        `json:"find_p50_ms"`
	FindP95Ms          float64        `json:"find_p95_ms"`
	DoubleBookings     int            `json:"double_bookings"`
	Evidence           int            `json:"evidence"`
	StaleP50Ms         float64        `json:"stale_p50_ms"`
	StaleP95Ms         float64        `json:"stale_p95_ms"`
	StaleMaxMs         float64        `json:"stale_max_ms"`
	StaleUnseen        int            `json:"stale_unseen"` // (reservation, router) pairs the router never saw end
	Sessions           SessionStats   `json:"sessions"`
	Unreleased         int            `json:"unreleased"`    // reservations still active on a running miner at the end
	ReleasedLost       int            `json:"released_lost"` // ended without a confirmed release (the miner left)
	Joined, Left       int            `json:"-"`
	GossipMsgsPerNodeS float64        `json:"gossip_msgs_per_node_s"`
	PacketsPerNodeS    float64        `json:"packets_per_node_s"`
	KBPerNodeS         float64        `json:"kb_per_node_s"`
	// ByRole is the same traffic per node of each role (bootstrap, oracle,
	// miner, router): what a node of that role pays.
	ByRole        map[string]RoleTraffic `json:"by_role"`
	PeersPerNode  float64                `json:"peers_per_node"`
	PeersAtEnd    float64                `json:"peers_at_end"`
	HeapPerNodeMB float64                `json:"heap_per_node_mb"`
	RSSPerNodeMB  float64                `json:"rss_per_node_mb"`

	// Link is the raw baseline: one-way delay between two nodes over the
	// simulated links, over every pair, and a round trip's.
	LinkP50Ms, LinkP95Ms, LinkP99Ms, RTTP95Ms float64 `json:"-"`

	PartitionS float64 `json:"partition_s,omitempty"`
	ConvergeS  float64 `json:"converge_s,omitempty"`
	Converged  bool    `json:"converged,omitempty"`
	Diverged   int     `json:"diverged,omitempty"`
}

// RoleTraffic is the gossip a node of one role receives, the bytes it
// sends and the signatures it verifies (node.Node.SigChecks), per second.
type RoleTraffic struct {
	MsgsPerNodeS float64 `json:"gossip_msgs_per_node_s"`
	KBPerNodeS   float64 `json:"kb_per_node_s"`
	SigsPerNodeS float64 `json:"sig_checks_per_node_s"`
}

// roleOrder is the order roles are reported in.
var roleOrder = []node.Role{node.RoleMiner, node.RoleOracle, node.RoleRouter, node.RoleBootstrap}

func (s Scenario) describe() string {
	p := s.Plan
	d := fmt.Sprintf("%d nodes (%d bootstrap, %d oracles, %d miners, %d routers), %v simulated, churn %.0f%%/min, a session every %v per router",
		p.Total(), p.Bootstraps, p.Oracles, p.Miners, p.Routers, s.Duration, 100*s.Churn, s.SessionEvery)
	if s.Partition > 0 {
		d += fmt.Sprintf(", partitioned in two for %v", s.Partition)
	}
	if s.Transport == TransportMem {
		d += ", on the mem transport"
	}
	return d
}

// finish computes the figures from what w saw.
func (r *Report) finish(w *watcher, nw *Network) {
	w.mu.Lock()
	defer w.mu.Unlock()
	members := nw.Members()

	// Attestations: each counts against the nodes that need it and were
	// up from its issue until 30 s after, its own oracle aside: every node
	// that follows gossip, and the miner it is about (PROTOCOL §11).
	var delays []float64
	expected, got := 0, 0
	for _, a := range w.atts {
		r.Attestations++
		for _, m := range members {
			if m.ID() == a.oracle || m.Started.After(a.issued) || (!m.Running() && m.Stopped.Before(a.issued.Add(30*time.Second))) ||
				(m.Role == node.RoleMiner && m.ID() != a.miner) {
				continue
			}
			expected++
			if d, ok := a.recv[m.Index]; ok {
				got++
				delays = append(delays, float64(d)/float64(time.Millisecond))
			}
		}
	}
	if expected > 0 {
		r.AttDeliveryRatio = float64(got) / float64(expected)
	}
	r.AttP50Ms, r.AttP99Ms = quantile(delays, 0.50), quantile(delays, 0.99)

	// Reservations.
	r.Reservations = len(w.reservations)
	r.ReserveFailures = w.failures
	r.ReserveErrors = w.failureTexts
	// A reservation its caller canceled (the load ending while it was under
	// way) neither succeeded nor failed.
	failed := 0
	for kind, n := range w.failures {
		if kind != router.OutcomeCanceled {
			failed += n
		}
	}
	if total := r.Reservations + failed; total > 0 {
		r.ReserveSuccess = float64(r.Reservations) / float64(total)
	}
	var finds, stale []float64
	routers := nw.Running(node.RoleRouter)
	for _, res := range w.reservations {
		finds = append(finds, float64(res.took)/float64(time.Millisecond))
		// From the miner's signing of its reserved record (or, if no
		// router saw that record, the grant's arrival) until the last
		// router stopped listing the miner as available.
		since, ok := w.reservedAt[minerGen{res.miner, res.generation}]
		if !ok {
			since = res.at
		}
		worst, seen := time.Duration(0), true
		for _, rt := range routers {
			at, ok := w.leftAvailable(rt.Index, res.miner, res.generation)
			if !ok {
				r.StaleUnseen++
				seen = false
				continue
			}
			if !at.IsZero() {
				worst = max(worst, at.Sub(since))
			}
		}
		if seen {
			stale = append(stale, float64(worst)/float64(time.Millisecond))
		}
	}
	r.FindP50Ms, r.FindP95Ms = quantile(finds, 0.50), quantile(finds, 0.95)
	r.StaleP50Ms, r.StaleP95Ms = quantile(stale, 0.50), quantile(stale, 0.95)
	if len(stale) > 0 {
		r.StaleMaxMs = stale[len(stale)-1]
	}
	r.DoubleBookings = w.doubleBookings()
	r.Evidence = w.evidence

	var links []float64
	for i, a := range members {
		for _, b := range members[i+1:] {
			links = append(links, float64(nw.delay(a, b))/float64(time.Millisecond))
		}
	}
	r.LinkP50Ms, r.LinkP95Ms, r.LinkP99Ms = quantile(links, 0.50), quantile(links, 0.95), quantile(links, 0.99)
	r.RTTP95Ms = 2 * r.LinkP95Ms
}

// BenchLines writes the figures as `go test -bench` lines, beside their
// raw baselines (the simulated links themselves), for cmd/benchreport.
func (r *Report) BenchLines(w io.Writer) {
	name := fmt.Sprintf("BenchmarkSimulation%dNodes", r.Nodes)
	fmt.Fprintln(w, "pkg: github.com/ephemera-network/ephemera/testnet/sim")
	fmt.Fprintf(w, "%s\t1\t%.0f simulated-s\t%.1f fill-s\t%.4f att-delivery\t%.1f att-p50-ms\t%.1f att-p99-ms\t%.4f reserve-success\t%.1f find-p95-ms\t%d double-bookings\t%.1f stale-p95-ms\t%.2f gossip-msgs/node/s\t%.1f packets/node/s\t%.2f kB/node/s\t%.1f heap-MB/node\t%.1f rss-MB/node\t%.0f real-s\n",
		name, r.FillS+r.SimulatedS, r.FillS, r.AttDeliveryRatio, r.AttP50Ms, r.AttP99Ms, r.ReserveSuccess, r.FindP95Ms, r.DoubleBookings, r.StaleP95Ms,
		r.GossipMsgsPerNodeS, r.PacketsPerNodeS, r.KBPerNodeS, r.HeapPerNodeMB, r.RSSPerNodeMB, r.RealS)
	// Each role's figures, named after it: miner-msgs/node/s is what a
	// miner receives.
	var roles strings.Builder
	for _, role := range roleOrder {
		if t, ok := r.ByRole[string(role)]; ok {
			fmt.Fprintf(&roles, "\t%.2f %s-msgs/node/s\t%.2f %s-kB/node/s\t%.2f %s-sigs/node/s",
				t.MsgsPerNodeS, role, t.KBPerNodeS, role, t.SigsPerNodeS, role)
		}
	}
	if roles.Len() > 0 {
		fmt.Fprintf(w, "%sByRole\t1%s\n", name, roles.String())
	}
	fmt.Fprintf(w, "%sBaseline\t1\t%.1f att-p50-ms\t%.1f att-p99-ms\t%.1f find-p95-ms\t%.1f stale-p95-ms\n",
		name, r.LinkP50Ms, r.LinkP99Ms, r.RTTP95Ms, r.LinkP95Ms)
}

// Check returns what the run got wrong, if anything: the invariants that
// must hold whatever the load.
func (r *Report) Check() error {
	var errs []error
	if r.DoubleBookings > 0 {
		errs = append(errs, fmt.Errorf("%d miners were granted twice for one generation", r.DoubleBookings))
	}
	if r.Evidence > 0 {
		errs = append(errs, fmt.Errorf("nodes recorded %d pieces of evidence of equivocation; no node here equivocates", r.Evidence))
	}
	if r.Unreleased > 0 {
		errs = append(errs, fmt.Errorf("%d reservations were still active on running miners after every session ended", r.Unreleased))
	}
	if r.Sessions.Ended != r.Sessions.Created {
		errs = append(errs, fmt.Errorf("%d sessions were created but %d ended", r.Sessions.Created, r.Sessions.Ended))
	}
	if r.Reservations == 0 {
		errs = append(errs, errors.New("no reservation succeeded"))
	}
	if r.PartitionS > 0 && !r.Converged {
		errs = append(errs, fmt.Errorf("the pool had not re-converged %.0f s after the partition healed: %d (router, miner) views disagree", r.ConvergeS, r.Diverged))
	}
	return errors.Join(errs...)
}

// Print writes the report for a person.
func (r *Report) Print(w io.Writer) {
	f := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	f("scenario:            %s", r.Scenario)
	f("cost:                %.0f s of this machine for %.0f s simulated (start %.1f s, fill %.1f s)", r.RealS, r.FillS+r.SimulatedS, r.StartS, r.FillS)
	f("pool filled:         %.1f s after the first node started", r.FillS)
	if r.CutShort {
		f("cut short:           the real-time budget ended the load after %.0f simulated s", r.SimulatedS)
	}
	f("links (baseline):    one way p50 %.0f ms, p95 %.0f ms, p99 %.0f ms", r.LinkP50Ms, r.LinkP95Ms, r.LinkP99Ms)
	f("attestations:        %d, delivered to %.2f%% of the nodes that need them up throughout, p50 %.0f ms, p99 %.0f ms", r.Attestations, 100*r.AttDeliveryRatio, r.AttP50Ms, r.AttP99Ms)
	f("reservations:        %d granted, %.1f%% success (not granted %v; canceled ones don't count), find+claim p50 %.0f ms, p95 %.0f ms", r.Reservations, 100*r.ReserveSuccess, r.ReserveFailures, r.FindP50Ms, r.FindP95Ms)
	for _, e := range r.ReserveErrors {
		f("  failed:            %s", e)
	}
	f("double bookings:     %d (evidence %d)", r.DoubleBookings, r.Evidence)
	f("staleness:           p50 %.0f ms, p95 %.0f ms, max %.0f ms until no router listed a reserved miner (%d unseen)", r.StaleP50Ms, r.StaleP95Ms, r.StaleMaxMs, r.StaleUnseen)
	f("sessions:            %d created (%d refused), %d ended; tasks %d done, %d failed; %d reservations unreleased, %d ended with their miner gone",
		r.Sessions.Created, r.Sessions.CreateFails, r.Sessions.Ended, r.Sessions.TasksDone, r.Sessions.TasksFailed, r.Unreleased, r.ReleasedLost)
	f("churn:               %d miners left, %d joined", r.Left, r.Joined)
	f("traffic per node:    %.1f gossip messages/s received, %.1f packets/s and %.1f kB/s sent", r.GossipMsgsPerNodeS, r.PacketsPerNodeS, r.KBPerNodeS)
	for _, role := range roleOrder {
		if t, ok := r.ByRole[string(role)]; ok {
			f("  %-11s        %.1f gossip messages/s received, %.1f kB/s sent, %.1f signatures/s verified",
				"per "+string(role)+":", t.MsgsPerNodeS, t.KBPerNodeS, t.SigsPerNodeS)
		}
	}
	f("peers per node:      %.1f connected when the pool filled, %.1f at the end", r.PeersPerNode, r.PeersAtEnd)
	f("memory per node:     %.1f MB heap in use, %.1f MB resident (process total / nodes)", r.HeapPerNodeMB, r.RSSPerNodeMB)
	if r.PartitionS > 0 {
		f("partition:           %.0f s in two halves; views agreed again %.1f s after healing (converged: %v)", r.PartitionS, r.ConvergeS, r.Converged)
	}
}

// residentBytes is the process's resident set size, from /proc.
func residentBytes() uint64 { return procKB("/proc/self/status", "VmRSS:") * 1024 }

// procKB reads a "Field:   123 kB" line of a /proc file; 0 if it cannot.
func procKB(path, field string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}
