package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// progressEvery is how often, in simulated time, Run reports its progress.
const progressEvery = 10 * time.Second

// Scenario is one simulated run.
type Scenario struct {
	Plan Plan
	// Duration is the simulated time the network runs once its pool filled.
	Duration time.Duration
	// Churn is the share of miners that leave every minute, each replaced
	// by a new miner with a new identity.
	Churn float64
	// SessionEvery is the mean gap between two sessions of one router.
	SessionEvery time.Duration
	// Partition, if set, splits the network in two halves for this long,
	// starting a third of the way through Duration.
	Partition time.Duration
	// ConvergeWithin bounds how long the routers' views may take to agree
	// with the miners again after the partition heals.
	ConvergeWithin time.Duration
	// FillWithin bounds how long the first pool may take to fill.
	FillWithin time.Duration
	Seed       uint64
	// Transport carries the nodes' connections: QUIC on simulated packet
	// links if empty, or the lighter mem transport.
	Transport Transport
	// RealBudget, if set, ends the load early once the run has taken this
	// much of the machine's time; the report then says how much it
	// simulated. The pool must still fill first.
	RealBudget time.Duration
}

// Validate rejects a scenario that cannot run.
func (s Scenario) Validate() error {
	if err := s.Plan.Validate(); err != nil {
		return err
	}
	switch {
	case s.Duration < time.Minute:
		return fmt.Errorf("sim: duration %v is under a minute", s.Duration)
	case s.Churn < 0 || s.Churn > 0.5:
		return fmt.Errorf("sim: churn %.2f is not between 0 and 0.5 a minute", s.Churn)
	case s.SessionEvery <= 0:
		return errors.New("sim: session_every must be positive")
	case s.Partition < 0 || s.Partition > s.Duration/2:
		return fmt.Errorf("sim: partition %v must be between 0 and half the duration", s.Partition)
	case s.FillWithin <= 0:
		return errors.New("sim: fill_within must be positive")
	case s.RealBudget < 0:
		return fmt.Errorf("sim: real budget %v is negative", s.RealBudget)
	case s.Partition > 0 && s.ConvergeWithin <= 0:
		return errors.New("sim: a partition needs a converge_within bound")
	case s.Transport != "" && s.Transport != TransportQUIC && s.Transport != TransportMem:
		return fmt.Errorf("sim: transport %q: want quic or mem", s.Transport)
	case s.Partition > 0 && s.Transport == TransportMem:
		return errMemPartition
	}
	return nil
}

// Run runs sc on a new network under dir. It must run inside a synctest
// bubble (see sim_test.go); time.Now is the simulated clock there. Nodes
// log to log; a line every progressEvery goes to progress, if set.
func Run(ctx context.Context, dir string, sc Scenario, log *slog.Logger, progress io.Writer) (*Report, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	realStart := realNow()
	w := newWatcher()
	nw := NewNetwork(dir, "sim", sc.Transport, log)
	nw.watch = w.watch
	nw.onReserve = w.reserved
	rep := &Report{Scenario: sc.describe(), Nodes: sc.Plan.Total()}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := nw.Close(stopCtx); err != nil {
			log.Warn("closing the network", "err", err)
		}
	}()

	// Phase 1: every node starts, and the pool fills.
	t0 := time.Now()
	if progress != nil {
		stopProgress := make(chan struct{})
		defer close(stopProgress)
		go reportProgress(nw, t0, realStart, progress, stopProgress)
	}
	if err := nw.Start(ctx, sc.Plan, nil); err != nil {
		return nil, err
	}
	rep.StartS = time.Since(t0).Seconds()
	if progress != nil {
		fmt.Fprintf(progress, "sim: %d nodes started in %.1f s simulated, %.0f s real\n", sc.Plan.Total(), rep.StartS, realSince(realStart).Seconds())
	}
	if _, err := waitFor(ctx, sc.FillWithin, func() bool {
		return minAvailable(nw) >= sc.Plan.Miners
	}); err != nil {
		return nil, fmt.Errorf("sim: the pool did not fill within %v: %d of %d miners available at the emptiest router",
			sc.FillWithin, minAvailable(nw), sc.Plan.Miners)
	}
	rep.FillS = time.Since(t0).Seconds()
	rep.HeapPerNodeMB, rep.RSSPerNodeMB = memoryPerNode(len(nw.Running("")))
	rep.PeersPerNode = peersPerNode(nw)

	// Phase 2: sessions, churn and perhaps a partition, for Duration.
	rng := rand.New(rand.NewPCG(sc.Seed, sc.Seed^0x5eed))
	var rngMu sync.Mutex
	intN := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }
	expGap := func() time.Duration {
		rngMu.Lock()
		defer rngMu.Unlock()
		return time.Duration(rng.ExpFloat64() * float64(sc.SessionEvery))
	}
	window := newTrafficWindow(nw)
	runCtx, stopLoad := context.WithTimeout(ctx, sc.Duration)
	defer stopLoad()
	var load sync.WaitGroup
	var sess sessionCounts
	for _, r := range nw.Running(node.RoleRouter) {
		load.Go(func() {
			for {
				select {
				case <-runCtx.Done():
					return
				case <-time.After(expGap()):
				}
				oneSession(runCtx, r, intN, &sess)
			}
		})
	}
	load.Go(func() { churn(runCtx, nw, sc, intN, rep, log) })
	if sc.Partition > 0 {
		load.Go(func() { partition(runCtx, nw, sc, intN, rep) })
	}
	if sc.RealBudget > 0 {
		load.Go(func() {
			if waitReal(runCtx, realStart.Add(sc.RealBudget)) {
				rep.CutShort = true
				stopLoad()
			}
		})
	}
	loadStart := time.Now()
	load.Wait()
	rep.SimulatedS = time.Since(loadStart).Seconds()
	rep.PeersAtEnd = peersPerNode(nw)
	window.close(rep)

	// Phase 3: every session ends; every miner it held is released.
	rep.Sessions = sess.snapshot()
	rep.Unreleased, rep.ReleasedLost = endSessions(ctx, nw)
	rep.finish(w, nw)
	rep.RealS = realSince(realStart).Seconds()
	return rep, nil
}

// waitReal reports whether the machine's clock reached deadline before ctx
// ended. It looks once a simulated second: a goroutine of the bubble cannot
// wait on anything from outside it without stalling the simulated clock.
func waitReal(ctx context.Context, deadline time.Time) bool {
	for realNow().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
	return true
}

// reportProgress writes a line every progressEvery until stop: where the
// run is, in simulated and real time, and what the network carries.
func reportProgress(nw *Network, t0, realStart time.Time, out io.Writer, stop <-chan struct{}) {
	var last trafficTotals
	lastAt := t0
	for {
		select {
		case <-stop:
			return
		case <-time.After(progressEvery):
		}
		now := trafficTotalsOf(nw)
		running := len(nw.Running(""))
		seconds := time.Since(lastAt).Seconds()
		perNodeS := float64(running) * seconds
		var topics []string
		for _, t := range slices.Sorted(maps.Keys(now.published)) {
			topics = append(topics, fmt.Sprintf("%s %.0f", t, float64(now.published[t]-last.published[t])/seconds))
		}
		fmt.Fprintf(out, "sim: %4.0f s simulated, %5.0f s real: %d nodes, %.0f peers each, %d miners available at the emptiest router; "+
			"per node and s %.0f packets, %.2f connections opened, %.1f gossip received; published per s: %s; %.1f GB resident, %d goroutines\n",
			time.Since(t0).Seconds(), realSince(realStart).Seconds(), running, peersPerNode(nw), minAvailable(nw),
			float64(now.packets-last.packets)/perNodeS, float64(now.conns-last.conns)/perNodeS, float64(now.received-last.received)/perNodeS, strings.Join(topics, ", "),
			float64(residentBytes())/1e9, runtime.NumGoroutine())
		last, lastAt = now, time.Now()
	}
}

// trafficTotals sums every member's counters, stopped ones included.
type trafficTotals struct {
	packets, conns, received uint64
	published                map[string]uint64
}

func trafficTotalsOf(nw *Network) trafficTotals {
	t := trafficTotals{published: map[string]uint64{}}
	for _, m := range nw.Members() {
		t.packets += m.Traffic().SentPackets
		t.conns += m.link.conns.Load()
		for topic, c := range m.GossipCounts() {
			t.received += c.Accept + c.Reject + c.Ignore + c.Throttled
			t.published[topic] += c.Published
		}
	}
	return t
}

// waitFor polls cond every simulated second for up to limit.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) (time.Duration, error) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			return time.Since(start), errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return time.Since(start), nil
}

// minAvailable is the fewest available miners any running router sees.
func minAvailable(nw *Network) int {
	least := math.MaxInt
	for _, r := range nw.Running(node.RoleRouter) {
		least = min(least, len(r.PoolView().Available("")))
	}
	return least
}

// sessionCounts tallies the simulated users' sessions.
type sessionCounts struct {
	mu sync.Mutex
	SessionStats
}

// SessionStats are what the routers' sessions did.
type SessionStats struct {
	Created     int `json:"created"`
	CreateFails int `json:"create_fails"`
	Ended       int `json:"ended"`
	TasksDone   int `json:"tasks_done"`
	TasksFailed int `json:"tasks_failed"`
}

func (c *sessionCounts) add(f func(*SessionStats)) {
	c.mu.Lock()
	f(&c.SessionStats)
	c.mu.Unlock()
}

func (c *sessionCounts) snapshot() SessionStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.SessionStats
}

var prompts = []string{"What is 17 + 25?", "Name the capital of France.", "Reverse the word ledger.", "What is 9 times 8?"}

// oneSession is one user's session on router r: one or two miners per
// task, one to three tasks, then the end.
func oneSession(ctx context.Context, r *Member, intN func(int) int, c *sessionCounts) {
	sm := r.Sessions()
	s, err := sm.Create(ctx, session.Params{Redundancy: 1 + intN(2), MaxTasks: 3})
	if err != nil {
		c.add(func(s *SessionStats) { s.CreateFails++ })
		return
	}
	c.add(func(s *SessionStats) { s.Created++ })
	for range 1 + intN(3) {
		t, err := sm.Submit(ctx, s.ID, session.TaskRequest{
			Messages: []inference.Message{{Role: "user", Content: prompts[intN(len(prompts))]}},
		})
		if err == nil {
			t, err = sm.Task(ctx, s.ID, t.ID, 2*time.Minute)
		}
		done := err == nil && t.State == session.TaskDone
		c.add(func(s *SessionStats) {
			if done {
				s.TasksDone++
			} else {
				s.TasksFailed++
			}
		})
		if ctx.Err() != nil {
			break
		}
	}
	// Ending uses a context of its own: the run's may just have ended.
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := sm.End(endCtx, s.ID); err == nil {
		c.add(func(s *SessionStats) { s.Ended++ })
	}
}

// churn replaces sc.Churn of the miners every minute.
func churn(ctx context.Context, nw *Network, sc Scenario, intN func(int) int, rep *Report, log *slog.Logger) {
	k := int(math.Round(sc.Churn * float64(sc.Plan.Miners)))
	if k == 0 {
		return
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for wait.Tick(ctx, tick.C) {
		miners := nw.Running(node.RoleMiner)
		n := min(k, len(miners))
		var wg sync.WaitGroup
		for range n {
			i := intN(len(miners))
			m := miners[i]
			miners = slices.Delete(miners, i, i+1)
			wg.Go(func() {
				stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				if err := nw.Stop(stopCtx, m); err != nil {
					log.Warn("churn: stop", "node", m.Name, "err", err)
				}
			})
			wg.Go(func() {
				if _, err := nw.Launch(context.WithoutCancel(ctx), node.RoleMiner, nil); err != nil {
					log.Warn("churn: join", "err", err)
				}
			})
		}
		wg.Wait()
		rep.Left += n
		rep.Joined += n
	}
}

// partition splits the network in two random halves a third of the way
// into the run, heals it sc.Partition later, and measures how long the
// routers take to agree with the miners again.
func partition(ctx context.Context, nw *Network, sc Scenario, intN func(int) int, rep *Report) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(sc.Duration / 3):
	}
	all := nw.Running("")
	var side []*Member
	for _, m := range all {
		if intN(2) == 0 {
			side = append(side, m)
		}
	}
	nw.Partition(side)
	rep.PartitionS = sc.Partition.Seconds()
	select {
	case <-ctx.Done():
	case <-time.After(sc.Partition):
	}
	nw.Heal()
	took, err := waitFor(context.WithoutCancel(ctx), sc.ConvergeWithin, func() bool { return diverged(nw) == 0 })
	rep.ConvergeS = took.Seconds()
	rep.Converged = err == nil
	if err != nil {
		rep.Diverged = diverged(nw)
	}
}

// settled is how long a miner must have held its state before a router
// that does not show it yet counts as diverged rather than catching up.
const settled = 5 * time.Second

// diverged counts (router, miner) pairs where the router's view of a
// running miner disagrees with the miner's own state.
func diverged(nw *Network) int {
	n := 0
	routers := nw.Running(node.RoleRouter)
	for _, m := range nw.Running(node.RoleMiner) {
		own := m.MinerState()
		if time.Since(own.Since) < settled || own.State == pb.MinerState_MINER_STATE_UNSPECIFIED {
			continue
		}
		for _, r := range routers {
			v, ok := r.PoolView().Miner(m.ID())
			if !ok || v.State != own.State || v.Generation != own.Generation {
				n++
			}
		}
	}
	return n
}

// endSessions ends every open session of every router, then waits for
// their reservations to be released. It returns the reservations still
// active on a running miner, and those that ended any other way than a
// confirmed release (their miner had left).
func endSessions(ctx context.Context, nw *Network) (unreleased, lost int) {
	routers := nw.Running(node.RoleRouter)
	for _, r := range routers {
		for _, s := range r.Sessions().Sessions() {
			if s.State == session.StateOpen {
				endCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, _ = r.Sessions().End(endCtx, s.ID)
				cancel()
			}
		}
	}
	running := map[peer.ID]bool{}
	for _, m := range nw.Running(node.RoleMiner) {
		running[m.ID()] = true
	}
	count := func() (int, int) {
		u, l := 0, 0
		for _, r := range routers {
			for _, res := range r.Router().Reservations() {
				id, _ := peer.Decode(res.Miner)
				switch {
				case res.State == "active" && running[id]:
					u++
				case res.State != "active" && res.State != "released":
					l++
				}
			}
		}
		return u, l
	}
	_, _ = waitFor(ctx, time.Minute, func() bool { u, _ := count(); return u == 0 })
	return count()
}

// trafficWindow measures link and gossip traffic from the end of the fill
// to the end of the run.
type trafficWindow struct {
	nw    *Network
	start time.Time
	base  map[int]baseline
}

type baseline struct {
	traffic      Traffic
	gossip, sigs uint64
}

// gossipReceived counts the gossip messages m received from its peers:
// those it validated, less its own (gossipsub validates what a node
// publishes too).
func gossipReceived(m *Member) uint64 {
	var n uint64
	for _, c := range m.GossipCounts() {
		n += c.Accept + c.Reject + c.Ignore + c.Throttled - min(c.Published, c.Accept)
	}
	return n
}

func newTrafficWindow(nw *Network) *trafficWindow {
	w := &trafficWindow{nw: nw, start: time.Now(), base: map[int]baseline{}}
	for _, m := range nw.Running("") {
		w.base[m.Index] = baseline{m.Traffic(), gossipReceived(m), m.SigChecks()}
	}
	return w
}

func (w *trafficWindow) close(rep *Report) {
	end := time.Now()
	all := &roleSums{}
	byRole := map[node.Role]*roleSums{}
	for _, m := range w.nw.Members() {
		from, to := m.Started, end
		if from.Before(w.start) {
			from = w.start
		}
		if !m.Running() && m.Stopped.Before(end) {
			to = m.Stopped
		}
		if !to.After(from) {
			continue
		}
		b, t := w.base[m.Index], m.Traffic()
		one := roleSums{
			nodeSeconds: to.Sub(from).Seconds(),
			packets:     float64(t.SentPackets - b.traffic.SentPackets),
			bytes:       float64(t.SentBytes - b.traffic.SentBytes),
			msgs:        float64(gossipReceived(m) - b.gossip),
			sigs:        float64(m.SigChecks() - b.sigs),
		}
		all.add(one)
		if byRole[m.Role] == nil {
			byRole[m.Role] = &roleSums{}
		}
		byRole[m.Role].add(one)
	}
	if all.nodeSeconds > 0 {
		rep.GossipMsgsPerNodeS = all.msgs / all.nodeSeconds
		rep.PacketsPerNodeS = all.packets / all.nodeSeconds
		rep.KBPerNodeS = all.bytes / all.nodeSeconds / 1000
	}
	rep.ByRole = map[string]RoleTraffic{}
	for role, s := range byRole {
		if s.nodeSeconds > 0 {
			rep.ByRole[string(role)] = RoleTraffic{
				MsgsPerNodeS: s.msgs / s.nodeSeconds,
				KBPerNodeS:   s.bytes / s.nodeSeconds / 1000,
				SigsPerNodeS: s.sigs / s.nodeSeconds,
			}
		}
	}
}

// roleSums adds up the traffic of a set of nodes over the seconds each was
// up in the window.
type roleSums struct{ nodeSeconds, packets, bytes, msgs, sigs float64 }

func (s *roleSums) add(o roleSums) {
	s.nodeSeconds += o.nodeSeconds
	s.packets += o.packets
	s.bytes += o.bytes
	s.msgs += o.msgs
	s.sigs += o.sigs
}

// memoryPerNode is the process's heap in use and resident memory, in MB,
// divided by the nodes running.
func memoryPerNode(nodes int) (heap, rss float64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = float64(ms.HeapInuse) / 1e6 / float64(nodes)
	rss = float64(residentBytes()) / 1e6 / float64(nodes)
	return heap, rss
}

// quantile is the q-quantile of xs (sorted in place), 0 when empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(i, 0)]
}

func peersPerNode(nw *Network) float64 {
	all := nw.Running("")
	n := 0
	for _, m := range all {
		n += m.Host().PeerCount()
	}
	return float64(n) / float64(len(all))
}
