// Package chaos is the SIGKILL half of `make chaos`: while sessions run
// through every router of a local testnet, random nodes are killed with
// SIGKILL at random moments and restarted on their homes; afterwards the run
// is judged on what the routers' APIs and every node's dashboard data showed
// during it.
//
// The run is here; the load it drives is in driver.go, what it records in
// ledger.go, the checks at the end in checks.go, and every request it sends
// to a node in client.go.
package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/testnet"
)

// Config is one chaos run. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// Cycles is how many rounds of kills and restarts the run has.
	Cycles int
	// Seed drives every random choice: which nodes die, when, for how long,
	// and the sessions' shapes. The timing of the processes is not seeded,
	// so a replay repeats the schedule, not every interleaving.
	Seed uint64
	// ConvergeWithin bounds the time from the last restart until every
	// miner is available again: by its own word, and in the bootstrap
	// nodes' and the routers' views.
	ConvergeWithin time.Duration
	// MaxKills is the most nodes killed in one cycle (at least one is).
	MaxKills int
	// MaxDown is the longest a killed node stays down before its restart.
	MaxDown time.Duration
	// MaxPause is the longest wait, while sessions run, before a cycle's kills.
	MaxPause time.Duration
	// Workers is how many session drivers run against each router.
	Workers int
	// Launcher restarts the killed nodes; its nodes must be *testnet.Process.
	Launcher testnet.Subprocess
	// Log receives a line per step; nil discards them.
	Log io.Writer
}

// DefaultConfig is the run `make chaos` does, for 10 cycles.
func DefaultConfig() Config {
	return Config{
		Cycles:         10,
		ConvergeWithin: 90 * time.Second,
		MaxKills:       2,
		MaxDown:        3 * time.Second,
		MaxPause:       4 * time.Second,
		Workers:        1,
	}
}

// Validate rejects a configuration no run can follow.
func (c Config) Validate() error {
	switch {
	case c.Cycles < 1:
		return fmt.Errorf("cycles: %d, want at least 1", c.Cycles)
	case c.ConvergeWithin <= 0:
		return fmt.Errorf("converge-within: %s, want a positive duration", c.ConvergeWithin)
	case c.MaxKills < 1:
		return fmt.Errorf("max-kills: %d, want at least 1", c.MaxKills)
	case c.MaxDown < 0:
		return fmt.Errorf("max-down: %s is negative", c.MaxDown)
	case c.MaxPause < 0:
		return fmt.Errorf("max-pause: %s is negative", c.MaxPause)
	case c.Workers < 1:
		return fmt.Errorf("workers: %d, want at least 1", c.Workers)
	case c.Launcher.Binary == "":
		return errors.New("no ephemera binary to restart nodes with")
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.Cycles = cmp.Or(c.Cycles, d.Cycles)
	c.ConvergeWithin = cmp.Or(c.ConvergeWithin, d.ConvergeWithin)
	c.MaxKills = cmp.Or(c.MaxKills, d.MaxKills)
	c.MaxDown = cmp.Or(c.MaxDown, d.MaxDown)
	c.MaxPause = cmp.Or(c.MaxPause, d.MaxPause)
	c.Workers = cmp.Or(c.Workers, d.Workers)
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// member is a node of the testnet as the chaos run knows it: what never
// changes across restarts.
type member struct {
	name   string
	role   node.Role
	peerID string
}

// run is one chaos run.
type run struct {
	tn    *testnet.Testnet
	cfg   Config
	begin time.Time
	nodes []member

	logMu sync.Mutex

	mu   sync.Mutex
	urls map[string]string // name → API URL; "" while the node is down

	led ledger
}

// Run runs cfg on the running testnet tn, whose nodes must be processes
// started with cfg.Launcher, and judges the run: it waits until every node
// is healthy and every miner available; starts cfg.Workers session drivers
// per router (open a session, run a few tasks, end it, again) and pollers of
// every router's reservations and of the dashboard events of every node
// but the miners; then, cfg.Cycles times, kills random nodes with SIGKILL,
// leaves them down a random while and restarts them on their homes and
// ports; then stops the drivers, ends every session still open, waits for
// every miner to be available again and checks what it saw.
//
// The error is for a run that could not be carried out (a node that would
// not come back, ctx ended); the checks' verdict is the report's Err.
func Run(ctx context.Context, tn *testnet.Testnet, cfg Config) (Report, error) {
	cfg = cfg.withDefaults()
	rep := Report{Seed: cfg.Seed, Kills: map[string]int{}, ConvergeWithin: cfg.ConvergeWithin}
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	if tn.Spec.Miners < 1 || tn.Spec.Routers < 1 || tn.Spec.Oracles < 1 {
		return rep, errors.New("a chaos run needs at least one oracle, miner and router")
	}
	c := &run{tn: tn, cfg: cfg, begin: time.Now(), urls: map[string]string{}}
	c.led.init()
	for _, m := range tn.Members() {
		if _, ok := m.Node.(*testnet.Process); !ok {
			return rep, fmt.Errorf("%s is not a process: chaos kills real processes only", m.Name)
		}
		if len(m.Roles) != 1 {
			return rep, fmt.Errorf("%s has roles %v: chaos counts kills by a node's one role", m.Name, m.Roles)
		}
		rt := m.Node.Runtime()
		c.nodes = append(c.nodes, member{name: m.Name, role: m.Roles[0], peerID: rt.PeerID})
		if err := localURL(rt.APIURL); err != nil {
			return rep, fmt.Errorf("%s: %w", m.Name, err)
		}
		c.urls[m.Name] = rt.APIURL
	}

	wctx, wdone := context.WithTimeout(ctx, 90*time.Second)
	_, err := tn.WaitHealthy(wctx)
	if err == nil {
		_, err = tn.WaitPool(wctx, "every miner available", func(m []api.PoolMiner) bool {
			return testnet.CountState(m, "available") == tn.Spec.Miners
		})
	}
	wdone()
	if err != nil {
		return rep, fmt.Errorf("before the chaos: %w", err)
	}
	c.logf("all %d nodes healthy, all %d miners available; seed %d", len(c.nodes), tn.Spec.Miners, cfg.Seed)

	// The pollers watch until the checks have read their last answers; the
	// drivers work until the cycles are over.
	pollCtx, stopPolls := context.WithCancel(ctx)
	var polls sync.WaitGroup
	polls.Go(func() { c.every(pollCtx, 500*time.Millisecond, c.pollReservations) })
	polls.Go(func() { c.every(pollCtx, time.Second, c.pollTransitions) })
	defer func() { stopPolls(); polls.Wait() }()

	workCtx, stopWork := context.WithCancel(ctx)
	var work sync.WaitGroup
	seq := uint64(0)
	for _, m := range c.nodes {
		if m.role != node.RoleRouter {
			continue
		}
		for range cfg.Workers {
			seq++
			rng := rand.New(rand.NewPCG(cfg.Seed, seq))
			work.Go(func() { c.drive(workCtx, ctx, m.name, rng) })
		}
	}

	lastRestart, err := c.cycles(ctx, &rep)
	stopWork()
	work.Wait()
	if err != nil {
		return rep, err
	}
	c.logf("cycles over; every driver stopped")
	c.crashed(&rep)

	if err := c.endAll(ctx); err != nil {
		return rep, err
	}
	c.converge(ctx, lastRestart, &rep)
	c.settle(ctx)
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	// A last look at everything, once every release has had its time.
	c.pollReservations(ctx)
	c.pollTransitions(ctx)
	stopPolls()
	polls.Wait()
	if err := c.judge(ctx, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}

func (c *run) logf(format string, args ...any) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	fmt.Fprintf(c.cfg.Log, "[%6.1fs] %s\n", time.Since(c.begin).Seconds(), fmt.Sprintf(format, args...))
}

// url is the API of the node named name, "" while it is down.
func (c *run) url(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.urls[name]
}

func (c *run) setURL(name, u string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.urls[name] = u
}

func (c *run) named(role node.Role) []member {
	var out []member
	for _, m := range c.nodes {
		if m.role == role {
			out = append(out, m)
		}
	}
	return out
}

// every runs f at once and then every period until ctx ends.
func (c *run) every(ctx context.Context, period time.Duration, f func(context.Context)) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		f(ctx)
		if !wait.Tick(ctx, tick.C) {
			return
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// between is a random duration in [lo, hi].
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// cycles kills and restarts nodes cfg.Cycles times and returns when the
// last restart was done. Only this goroutine touches the testnet's nodes.
func (c *run) cycles(ctx context.Context, rep *Report) (time.Time, error) {
	rng := rand.New(rand.NewPCG(c.cfg.Seed, 0))
	var last time.Time
	for cycle := 1; cycle <= c.cfg.Cycles; cycle++ {
		if !sleep(ctx, between(rng, 500*time.Millisecond, max(c.cfg.MaxPause, 500*time.Millisecond))) {
			return last, ctx.Err()
		}
		// A node that died on its own is a finding; it is started again
		// so that the run goes on.
		for _, name := range c.crashed(rep) {
			n, err := c.restart(ctx, name)
			if err != nil {
				return last, fmt.Errorf("cycle %d: %w", cycle, err)
			}
			c.setURL(name, n.Runtime().APIURL)
		}
		k := 1 + rng.IntN(min(c.cfg.MaxKills, len(c.nodes)))
		victims := slices.Clone(c.nodes)
		rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
		victims = victims[:k]
		// Restarted in the testnet's order: a bootstrap node first, so that
		// the others find it up.
		slices.SortFunc(victims, func(a, b member) int {
			return slices.IndexFunc(c.nodes, func(m member) bool { return m.name == a.name }) -
				slices.IndexFunc(c.nodes, func(m member) bool { return m.name == b.name })
		})
		down := between(rng, 200*time.Millisecond, c.cfg.MaxDown)
		var names []string
		for _, v := range victims {
			n, _, ok := c.tn.Find(v.peerID)
			if !ok {
				return last, fmt.Errorf("cycle %d: %s is not in the testnet", cycle, v.name)
			}
			c.setURL(v.name, "")
			pid := n.Runtime().PID
			if err := n.(*testnet.Process).Kill(); err != nil {
				return last, fmt.Errorf("cycle %d: kill %s: %w", cycle, v.name, err)
			}
			rep.Kills[string(v.role)]++
			names = append(names, fmt.Sprintf("%s (pid %d)", v.name, pid))
		}
		c.logf("cycle %d/%d: kill -9 %s; down for %s", cycle, c.cfg.Cycles, strings.Join(names, ", "), down.Round(time.Millisecond))
		if !sleep(ctx, down) {
			return last, ctx.Err()
		}
		for _, v := range victims {
			n, err := c.restart(ctx, v.name)
			if err != nil {
				return last, fmt.Errorf("cycle %d: %w", cycle, err)
			}
			c.setURL(v.name, n.Runtime().APIURL)
		}
		last = time.Now()
		rep.Cycles = cycle
		c.logf("cycle %d/%d: restarted %d node(s)", cycle, c.cfg.Cycles, len(victims))
		// Health is waited for, not required: the next kill may come while
		// a node is still finding its peers, as it would in the field.
		hctx, hdone := context.WithTimeout(ctx, 30*time.Second)
		for _, v := range victims {
			for hctx.Err() == nil {
				if c.healthy(hctx, v.name) {
					break
				}
				sleep(hctx, 200*time.Millisecond)
			}
		}
		if hctx.Err() != nil && ctx.Err() == nil {
			c.logf("cycle %d/%d: not every restarted node healthy within 30s; going on", cycle, c.cfg.Cycles)
		}
		hdone()
	}
	return last, nil
}

// crashed adds to rep the nodes whose process exited though nobody killed
// it, and returns their names.
func (c *run) crashed(rep *Report) []string {
	var names []string
	for _, m := range c.tn.Members() {
		p, ok := m.Node.(*testnet.Process)
		if !ok {
			continue
		}
		if exit, exited := p.Exited(); exited {
			pid := p.Runtime().PID
			c.setURL(m.Name, "")
			names = append(names, m.Name)
			rep.Crashed = append(rep.Crashed, fmt.Sprintf("%s (pid %d) exited on its own (%v): %s", m.Name, pid, exit.Err, exit.LastLog))
			c.logf("%s (pid %d) exited on its own", m.Name, pid)
		}
	}
	return names
}

// restart starts the node named name again, a few times if need be: a port
// the dead process held may take a moment to be free.
func (c *run) restart(ctx context.Context, name string) (testnet.Node, error) {
	var err error
	for attempt := range 3 {
		if attempt > 0 && !sleep(ctx, time.Second) {
			break
		}
		var n testnet.Node
		if n, err = c.tn.Restart(ctx, name, c.cfg.Launcher); err == nil {
			if u := n.Runtime().APIURL; localURL(u) != nil {
				_ = n.(*testnet.Process).Kill()
				return nil, fmt.Errorf("%s came back with API %q, not on 127.0.0.1", name, u)
			}
			return n, nil
		}
		c.logf("restart %s: %v", name, err)
	}
	return nil, fmt.Errorf("restart %s: %w", name, errors.Join(err, ctx.Err()))
}
