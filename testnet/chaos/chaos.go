// Package chaos is the SIGKILL half of `make chaos`: while sessions run
// through every router of a local testnet, random nodes are killed with
// SIGKILL at random moments and restarted on their homes; afterwards the run
// is judged on what the routers' APIs and every node's dashboard data showed
// during it.
package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api"
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
	if c.Cycles == 0 {
		c.Cycles = d.Cycles
	}
	if c.ConvergeWithin == 0 {
		c.ConvergeWithin = d.ConvergeWithin
	}
	if c.MaxKills == 0 {
		c.MaxKills = d.MaxKills
	}
	if c.MaxDown == 0 {
		c.MaxDown = d.MaxDown
	}
	if c.MaxPause == 0 {
		c.MaxPause = d.MaxPause
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// The checks of a chaos run, as its report names them.
const (
	CheckDoubleGrant = "double grant"
	CheckLostGrant   = "lost grant"
	CheckUnreleased  = "unreleased"
	CheckConvergence = "re-convergence"
	CheckCrash       = "node crash"
)

// Report is what a chaos run did and found.
type Report struct {
	Seed   uint64
	Cycles int
	// Kills counts the nodes killed, by role.
	Kills map[string]int
	// Sessions created through the routers' APIs, those found open on a
	// router without an answer to their creation included; ended: seen ended
	// at the end.
	SessionsCreated, SessionsEnded int
	// Tasks as the ended sessions count them; Lost are tasks a router
	// accepted that its session no longer counts.
	TasksSubmitted, TasksDone, TasksFailed, TasksLost int
	// WrongAnswers are done tasks whose answer lacked the sum asked for.
	WrongAnswers int
	// Grants are the distinct (miner, generation) reservations seen, in a
	// router's reservations or as a grant on gossip; GrantsListed and
	// GrantsGossiped those each source showed.
	Grants, GrantsListed, GrantsGossiped int
	// Evidence counts the evidence of equivocation any node reported.
	Evidence int
	// The findings of the checks, one line each.
	DoubleGrants, LostGrants, Unreleased []string
	// ExpiredUnadopted are grants seen on gossip that their router never
	// listed, whose lease then ran out on the miner: not lost (the miner
	// did not stay reserved), but worth a look.
	ExpiredUnadopted []string
	// Converged is whether every miner was available in time, and
	// ConvergedAfter how long after the last restart it was.
	Converged      bool
	ConvergedAfter time.Duration
	ConvergeWithin time.Duration
	// NotConverged names the miners that were not available in time, and where.
	NotConverged []string
	// Crashed names the nodes whose process exited without being killed.
	Crashed []string
	// Failed names the checks that failed, in the order above.
	Failed []string
}

// Err is nil when every check passed, else one line naming the checks that failed.
func (r Report) Err() error {
	if len(r.Failed) == 0 {
		return nil
	}
	return fmt.Errorf("check failed: %s", strings.Join(r.Failed, ", "))
}

// Print writes the report for people.
func (r Report) Print(w io.Writer) {
	roles := make([]string, 0, len(r.Kills))
	total := 0
	for _, role := range []node.Role{node.RoleBootstrap, node.RoleOracle, node.RoleMiner, node.RoleRouter} {
		if n := r.Kills[string(role)]; n > 0 {
			roles = append(roles, fmt.Sprintf("%s %d", role, n))
			total += n
		}
	}
	conv := fmt.Sprintf("%.1fs after the last restart (bound %s)", r.ConvergedAfter.Seconds(), r.ConvergeWithin)
	if !r.Converged {
		conv = fmt.Sprintf("NOT within %s of the last restart", r.ConvergeWithin)
	}
	fmt.Fprintf(w, "chaos report (seed %d)\n", r.Seed)
	fmt.Fprintf(w, "  cycles:          %d\n", r.Cycles)
	fmt.Fprintf(w, "  kills:           %d (%s)\n", total, strings.Join(roles, ", "))
	fmt.Fprintf(w, "  sessions:        %d created, %d ended\n", r.SessionsCreated, r.SessionsEnded)
	fmt.Fprintf(w, "  tasks:           %d submitted, %d done, %d failed, %d lost (%d wrong answers)\n",
		r.TasksSubmitted, r.TasksDone, r.TasksFailed, r.TasksLost, r.WrongAnswers)
	fmt.Fprintf(w, "  grants seen:     %d (%d listed by routers, %d on gossip)\n", r.Grants, r.GrantsListed, r.GrantsGossiped)
	fmt.Fprintf(w, "  evidence:        %d\n", r.Evidence)
	fmt.Fprintf(w, "  double grants:   %d\n", len(r.DoubleGrants))
	fmt.Fprintf(w, "  lost grants:     %d (and %d expired before their router adopted them)\n", len(r.LostGrants), len(r.ExpiredUnadopted))
	fmt.Fprintf(w, "  unreleased:      %d\n", len(r.Unreleased))
	fmt.Fprintf(w, "  re-convergence:  %s\n", conv)
	fmt.Fprintf(w, "  node crashes:    %d\n", len(r.Crashed))
	for _, l := range [][]string{r.DoubleGrants, r.LostGrants, r.Unreleased, r.NotConverged, r.Crashed, r.ExpiredUnadopted} {
		for _, s := range l {
			fmt.Fprintf(w, "  - %s\n", s)
		}
	}
	if err := r.Err(); err != nil {
		fmt.Fprintf(w, "FAIL: %v\n", err)
	} else {
		fmt.Fprintln(w, "PASS")
	}
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
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
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
				if ok, _ := testnet.CheckHealth(hctx, c.url(v.name)); ok {
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

// localURL accepts only an http URL on 127.0.0.1: the chaos run never
// talks to anything else.
func localURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" || p.Hostname() != "127.0.0.1" {
		return fmt.Errorf("API %q is not an http URL on 127.0.0.1", u)
	}
	return nil
}

// chaosClient times out a request to a node that died under it.
var chaosClient = &http.Client{Timeout: 20 * time.Second}

// errDown is a node that is down or does not answer.
var errDown = errors.New("node down or not answering")

// call sends a JSON request to the node named name and decodes a 2xx answer
// into out. It returns the status; an error wrapping errDown when the node
// is down or the request did not get an answer.
func (c *run) call(ctx context.Context, name, method, path string, body, out any) (int, error) {
	base := c.url(name)
	if base == "" {
		return 0, fmt.Errorf("%s: %w", name, errDown)
	}
	if err := localURL(base); err != nil {
		return 0, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := chaosClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s %s: %w: %v", name, method, path, errDown, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("%s %s %s: %w: %v", name, method, path, errDown, err)
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s %s: HTTP %d: %s", name, method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s %s: bad answer: %v", name, method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// chaosSession is the part of a session the run reads.
type chaosSession struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	EndReason string `json:"end_reason"`
	Submitted int    `json:"tasks_submitted"`
	Completed int    `json:"tasks_completed"`
	Failed    int    `json:"tasks_failed"`
	Queued    int    `json:"tasks_queued"`
	Miners    []struct {
		Reservation string `json:"reservation"`
		Miner       string `json:"miner"`
		Generation  uint64 `json:"generation"`
		State       string `json:"state"`
	} `json:"miners"`
}

// chaosTask is the part of a task the run reads.
type chaosTask struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Answer string `json:"answer"`
	Error  string `json:"error"`
}

// drive runs sessions on router until work ends: open one with a random
// redundancy, run one to three tasks one after the other, end it. A router
// that is down is waited for. Once work ends, the session open is ended at
// once (its running task abandoned); until ctx ends, the end is retried.
func (c *run) drive(work, ctx context.Context, router string, rng *rand.Rand) {
	for work.Err() == nil {
		redundancy := 1 + rng.IntN(min(2, c.tn.Spec.Miners))
		req := api.SessionRequest{Redundancy: redundancy, MinNodes: redundancy, MaxTasks: 50, ReservePeriod: "5m", TaskTimeout: "30s"}
		var s chaosSession
		status, err := c.call(work, router, http.MethodPost, "/v1/sessions", req, &s)
		if err != nil || s.ID == "" {
			if work.Err() == nil && status != 0 {
				c.logf("%s: open session: %v", router, err)
			}
			sleep(work, 300*time.Millisecond)
			continue
		}
		c.led.opened(router, s.ID)
		tasks := 1 + rng.IntN(3)
		for i := 0; i < tasks && work.Err() == nil; i++ {
			a, b := rng.IntN(100), rng.IntN(100)
			if !c.runTask(work, router, s.ID, a, b) {
				break
			}
		}
		ectx, done := context.WithTimeout(ctx, 60*time.Second)
		c.endSession(ectx, router, s.ID)
		done()
	}
}

// runTask submits "What is a + b?" to session and waits for its outcome. It
// reports whether the session can take more tasks.
func (c *run) runTask(work context.Context, router, session string, a, b int) bool {
	path := "/v1/sessions/" + url.PathEscape(session) + "/tasks"
	var task chaosTask
	for {
		status, err := c.call(work, router, http.MethodPost, path, api.TaskRequest{Prompt: fmt.Sprintf("What is %d + %d?", a, b)}, &task)
		switch {
		case err == nil && task.ID != "":
		case status == 0 && work.Err() == nil:
			// Down, or no answer: the task may or may not have been
			// taken. Another is submitted; the session's own count is
			// what the checks read.
			sleep(work, 300*time.Millisecond)
			continue
		default:
			if work.Err() == nil {
				c.logf("%s: submit to session %s: %v", router, session, err)
			}
			return false
		}
		break
	}
	c.led.submitted(session)
	for work.Err() == nil {
		status, err := c.call(work, router, http.MethodGet, path+"/"+url.PathEscape(task.ID)+"?wait=5s", nil, &task)
		switch {
		case err == nil && (task.State == "done" || task.State == "failed"):
			c.led.finished(task, a+b)
			return true
		case err == nil, status == 0:
			sleep(work, 100*time.Millisecond)
		case status == http.StatusNotFound:
			c.logf("%s: task %s of session %s accepted, then unknown: %v", router, task.ID, session, err)
			return false
		default:
			c.logf("%s: task %s of session %s: %v", router, task.ID, session, err)
			sleep(work, 300*time.Millisecond)
		}
	}
	return false
}

// endSession ends a session, retrying while its router is down, until ctx ends.
func (c *run) endSession(ctx context.Context, router, id string) {
	for ctx.Err() == nil {
		var s chaosSession
		status, err := c.call(ctx, router, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, &s)
		switch {
		case err == nil, status == http.StatusConflict:
			c.led.ended(id)
			return
		case status == http.StatusNotFound:
			c.logf("%s: session %s unknown when ended", router, id)
			return
		case status != 0 && status != http.StatusServiceUnavailable:
			c.logf("%s: end session %s: %v", router, id, err)
		}
		sleep(ctx, 300*time.Millisecond)
	}
}

// endAll ends every session still open on any router, those whose opening
// got no answer included.
func (c *run) endAll(ctx context.Context) error {
	for _, r := range c.named(node.RoleRouter) {
		var list []chaosSession
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err := c.call(ctx, r.name, http.MethodGet, "/v1/sessions", nil, &list)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || !sleep(ctx, 300*time.Millisecond) {
				return fmt.Errorf("list the sessions of %s: %w", r.name, errors.Join(err, ctx.Err()))
			}
		}
		for _, s := range list {
			if c.led.opened(r.name, s.ID) {
				c.logf("%s: session %s open without an answer to its creation", r.name, s.ID)
			}
			if s.State != "ended" {
				ectx, done := context.WithTimeout(ctx, 60*time.Second)
				c.endSession(ectx, r.name, s.ID)
				done()
			}
		}
	}
	return ctx.Err()
}

// converge waits until every miner says it is available and is so in the
// bootstrap nodes' and the routers' views, up to ConvergeWithin after the
// last restart.
func (c *run) converge(ctx context.Context, lastRestart time.Time, rep *Report) {
	var miners []string
	for _, m := range c.named(node.RoleMiner) {
		miners = append(miners, m.peerID)
	}
	names := map[string]string{}
	for _, m := range c.nodes {
		names[m.peerID] = m.name
	}
	viewers := append(c.named(node.RoleBootstrap), c.named(node.RoleRouter)...)
	deadline := lastRestart.Add(c.cfg.ConvergeWithin)
	nextLog := time.Now().Add(10 * time.Second)
	for {
		var missing []string
		// The miner's own word first: a view may still show available a
		// miner that has just left it.
		for _, m := range c.named(node.RoleMiner) {
			var info api.NodeInfo
			if _, err := c.call(ctx, m.name, http.MethodGet, "/v1/node", nil, &info); err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", m.name, err))
			} else if info.State != "available" {
				missing = append(missing, fmt.Sprintf("%s says it is %s", m.name, info.State))
			}
		}
		for _, v := range viewers {
			var pool []api.PoolMiner
			if _, err := c.call(ctx, v.name, http.MethodGet, "/v1/pool", nil, &pool); err != nil {
				missing = append(missing, fmt.Sprintf("%s: no pool view: %v", v.name, err))
				continue
			}
			for _, id := range miners {
				state := "unknown"
				for _, p := range pool {
					if p.PeerID == id {
						var attesting []string
						for _, o := range p.Oracles {
							attesting = append(attesting, nameOr(names, o))
						}
						state = fmt.Sprintf("%s at generation %d, attested by [%s]", p.State, p.Generation, strings.Join(attesting, " "))
						if p.State == "available" {
							state = ""
						}
						break
					}
				}
				if state != "" {
					missing = append(missing, fmt.Sprintf("%s sees %s %s", v.name, names[id], state))
				}
			}
		}
		if len(missing) == 0 {
			rep.Converged, rep.ConvergedAfter = true, time.Since(lastRestart)
			c.logf("every miner available in every view, %.1fs after the last restart", rep.ConvergedAfter.Seconds())
			return
		}
		if time.Now().After(nextLog) {
			nextLog = time.Now().Add(15 * time.Second)
			c.logf("not converged yet: %s", strings.Join(missing, "; "))
		}
		if time.Now().After(deadline) || !sleep(ctx, 250*time.Millisecond) {
			rep.ConvergedAfter = time.Since(lastRestart)
			rep.NotConverged = missing
			return
		}
	}
}

// settle gives the routers up to 20 s to end the reservations they still
// hold: one whose miner's lease ran out ends at the router's next renewal.
func (c *run) settle(ctx context.Context) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		active := 0
		for _, r := range c.named(node.RoleRouter) {
			var list []chaosReservation
			if _, err := c.call(ctx, r.name, http.MethodGet, "/v1/reservations", nil, &list); err != nil {
				active++
				continue
			}
			for _, x := range list {
				if x.State == "active" {
					active++
				}
			}
		}
		if active == 0 || time.Now().After(deadline) || !sleep(ctx, 500*time.Millisecond) {
			return
		}
	}
}

// chaosReservation is the part of a router's reservation the run reads.
type chaosReservation struct {
	ID         string `json:"id"`
	Session    string `json:"session"`
	Miner      string `json:"miner"`
	Generation uint64 `json:"generation"`
	State      string `json:"state"`
	Detail     string `json:"detail"`
}

// pollReservations records every router's reservations.
func (c *run) pollReservations(ctx context.Context) {
	for _, r := range c.named(node.RoleRouter) {
		var list []chaosReservation
		if _, err := c.call(ctx, r.name, http.MethodGet, "/v1/reservations", nil, &list); err != nil {
			continue
		}
		c.led.reservations(r.name, list, time.Now())
	}
}

// pollTransitions records the grants, releases and evidence that every node
// but the miners saw on gossip. The miners see the same gossip; the others
// are enough, and fewer.
func (c *run) pollTransitions(ctx context.Context) {
	for _, m := range c.nodes {
		if m.role == node.RoleMiner {
			continue
		}
		var evs []api.Event
		if _, err := c.call(ctx, m.name, http.MethodGet, fmt.Sprintf("/v1/transitions?limit=%d", api.MaxTransitions), nil, &evs); err != nil {
			continue
		}
		c.led.events(evs)
	}
}

// judge reads every router's last word and runs the checks.
func (c *run) judge(ctx context.Context, rep *Report) error {
	routers := c.named(node.RoleRouter)
	final := map[string]map[string]chaosReservation{} // router → id → reservation
	byPeer := map[string]string{}                     // router peer ID → name
	for _, r := range routers {
		byPeer[r.peerID] = r.name
		var list []chaosReservation
		if _, err := c.call(ctx, r.name, http.MethodGet, "/v1/reservations", nil, &list); err != nil {
			return fmt.Errorf("the last reservations of %s: %w", r.name, err)
		}
		final[r.name] = map[string]chaosReservation{}
		for _, x := range list {
			final[r.name][x.ID] = x
		}
	}
	sessions := map[string]chaosSession{}
	for _, id := range c.led.sessionIDs() {
		router := c.led.routerOf(id)
		var s chaosSession
		if _, err := c.call(ctx, router, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, &s); err != nil {
			s = chaosSession{ID: id, State: "unreadable: " + err.Error()}
		}
		sessions[id] = s
	}
	c.led.judge(rep, final, byPeer, sessions)
	return nil
}

// ledger is everything the run saw. It is safe for concurrent use.
type ledger struct {
	mu sync.Mutex
	// res: every reservation a router listed, by router and id.
	res map[string]map[string]seenReservation
	// grants on gossip, by miner and generation, then claim session → router peer ID.
	grants map[minerGeneration]map[string]string
	// releases on gossip, by miner and generation: their outcome.
	releases map[minerGeneration]string
	// evidence on gossip: its detail, by its miner and generation.
	evidence map[string]api.Event
	// sessions: every session the drivers opened, by id.
	sessions map[string]*seenSession
	done     int // tasks seen done
	wrong    int // of which with a wrong answer
}

type minerGeneration struct {
	miner string
	gen   uint64
}

type seenReservation struct {
	chaosReservation
	first, last time.Time
}

type seenSession struct {
	router   string
	accepted int // tasks the router accepted
	ended    bool
}

func (l *ledger) init() {
	l.res = map[string]map[string]seenReservation{}
	l.grants = map[minerGeneration]map[string]string{}
	l.releases = map[minerGeneration]string{}
	l.evidence = map[string]api.Event{}
	l.sessions = map[string]*seenSession{}
}

// opened records a session of router; it reports whether it was news.
func (l *ledger) opened(router, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.sessions[id]; ok {
		return false
	}
	l.sessions[id] = &seenSession{router: router}
	return true
}

func (l *ledger) submitted(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		s.accepted++
	}
}

func (l *ledger) ended(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		s.ended = true
	}
}

func (l *ledger) finished(t chaosTask, sum int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.State == "done" {
		l.done++
		if !strings.Contains(t.Answer, fmt.Sprint(sum)) {
			l.wrong++
		}
	}
}

func (l *ledger) sessionIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.sessions))
	for id := range l.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (l *ledger) routerOf(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		return s.router
	}
	return ""
}

func (l *ledger) reservations(router string, list []chaosReservation, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.res[router]
	if m == nil {
		m = map[string]seenReservation{}
		l.res[router] = m
	}
	for _, r := range list {
		if r.ID == "" || r.Miner == "" {
			continue
		}
		s, ok := m[r.ID]
		if !ok {
			s.first = at
		}
		s.chaosReservation, s.last = r, at
		m[r.ID] = s
	}
}

func (l *ledger) events(evs []api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		k := minerGeneration{e.Miner, e.Generation}
		switch e.Kind {
		case api.EventGrant:
			if e.Miner == "" || e.Session == "" {
				continue
			}
			if l.grants[k] == nil {
				l.grants[k] = map[string]string{}
			}
			l.grants[k][e.Session] = e.Router
		case api.EventRelease:
			if _, ok := l.releases[k]; !ok || e.Outcome == "expired" {
				l.releases[k] = e.Outcome
			}
		case api.EventEvidence:
			l.evidence[fmt.Sprintf("%s/%d/%s", e.Miner, e.Generation, e.Detail)] = e
		}
	}
}

// judge fills in the report's figures and findings from what was seen and
// the routers' last answers: final[router][id] and the sessions as their
// routers last showed them; byPeer names the routers by peer ID.
func (l *ledger) judge(rep *Report, final map[string]map[string]chaosReservation, byPeer map[string]string, sessions map[string]chaosSession) {
	l.mu.Lock()
	defer l.mu.Unlock()

	// 1. Double grants: one (miner, generation) held under two reservations,
	// in the routers' lists or on gossip, or evidence of it.
	holders := map[minerGeneration]map[string]string{} // → reservation id → where seen
	note := func(k minerGeneration, id, where string) {
		if holders[k] == nil {
			holders[k] = map[string]string{}
		}
		if _, ok := holders[k][id]; !ok {
			holders[k][id] = where
		}
	}
	for router, m := range l.res {
		for id, r := range m {
			note(minerGeneration{r.Miner, r.Generation}, id, router)
		}
	}
	for router, m := range final {
		for id, r := range m {
			note(minerGeneration{r.Miner, r.Generation}, id, router)
		}
	}
	rep.GrantsListed = len(holders)
	rep.GrantsGossiped = len(l.grants)
	for k, m := range l.grants {
		for session, router := range m {
			note(k, session, "gossip grant to "+nameOr(byPeer, router))
		}
	}
	rep.Grants = len(holders)
	doubles := map[minerGeneration]string{}
	for k, ids := range holders {
		if len(ids) > 1 {
			var parts []string
			for id, where := range ids {
				parts = append(parts, fmt.Sprintf("%s (%s)", id, where))
			}
			sort.Strings(parts)
			doubles[k] = fmt.Sprintf("miner %s granted twice at generation %d: %s", k.miner, k.gen, strings.Join(parts, ", "))
		}
	}
	rep.Evidence = len(l.evidence)
	for _, e := range l.evidence {
		k := minerGeneration{e.Miner, e.Generation}
		if strings.Contains(e.Detail, "two grants") {
			if _, ok := doubles[k]; !ok {
				doubles[k] = fmt.Sprintf("evidence of a double grant by miner %s at generation %d: %s", k.miner, k.gen, e.Detail)
			}
		}
	}
	for _, s := range doubles {
		rep.DoubleGrants = append(rep.DoubleGrants, s)
	}
	sort.Strings(rep.DoubleGrants)

	// 2. Lost grants: a reservation a router listed that it no longer
	// knows; a grant to a router on gossip that it never listed while the
	// miner stayed reserved.
	for router, m := range l.res {
		for id, r := range m {
			if _, ok := final[router][id]; !ok {
				rep.LostGrants = append(rep.LostGrants, fmt.Sprintf("%s forgot reservation %s of miner %s at generation %d (last seen %s)",
					router, id, r.Miner, r.Generation, r.State))
			}
		}
	}
	for k, m := range l.grants {
		for session, peerID := range m {
			router, ours := byPeer[peerID]
			if !ours {
				continue
			}
			if _, ok := final[router][session]; ok {
				continue
			}
			if _, ok := l.res[router][session]; ok {
				continue // reported above
			}
			what := fmt.Sprintf("grant of miner %s at generation %d to %s for claim %s, never listed by it", k.miner, k.gen, router, session)
			if l.releases[k] == "expired" {
				rep.ExpiredUnadopted = append(rep.ExpiredUnadopted, what+"; the miner's lease expired")
			} else {
				rep.LostGrants = append(rep.LostGrants, what)
			}
		}
	}
	sort.Strings(rep.LostGrants)
	sort.Strings(rep.ExpiredUnadopted)

	// 3. Every session ended with its miners released, and no reservation
	// left active.
	ids := make([]string, 0, len(l.sessions))
	for id := range l.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rep.SessionsCreated = len(ids)
	rep.WrongAnswers = l.wrong
	for _, id := range ids {
		seen := l.sessions[id]
		s := sessions[id]
		if s.State != "ended" {
			rep.Unreleased = append(rep.Unreleased, fmt.Sprintf("session %s on %s is %q, not ended", id, seen.router, s.State))
			continue
		}
		rep.SessionsEnded++
		rep.TasksSubmitted += s.Submitted
		rep.TasksDone += s.Completed
		rep.TasksFailed += s.Failed
		if seen.accepted > s.Submitted {
			rep.TasksLost += seen.accepted - s.Submitted
		}
		if open := s.Submitted - s.Completed - s.Failed; open > 0 {
			rep.TasksLost += open
		}
		for _, h := range s.Miners {
			if h.State == "active" {
				rep.Unreleased = append(rep.Unreleased, fmt.Sprintf("ended session %s on %s still holds miner %s at generation %d (reservation %s)",
					id, seen.router, h.Miner, h.Generation, h.Reservation))
			}
		}
	}
	for router, m := range final {
		for id, r := range m {
			if r.State == "active" {
				rep.Unreleased = append(rep.Unreleased, fmt.Sprintf("%s still holds reservation %s of miner %s at generation %d (session %q)",
					router, id, r.Miner, r.Generation, r.Session))
			}
		}
	}
	sort.Strings(rep.Unreleased)

	// The verdict, in the order of the checks.
	for _, f := range []struct {
		name   string
		failed bool
	}{
		{CheckDoubleGrant, len(rep.DoubleGrants) > 0},
		{CheckLostGrant, len(rep.LostGrants) > 0},
		{CheckUnreleased, len(rep.Unreleased) > 0},
		{CheckConvergence, !rep.Converged},
		{CheckCrash, len(rep.Crashed) > 0},
	} {
		if f.failed {
			rep.Failed = append(rep.Failed, f.name)
		}
	}
}

func nameOr(names map[string]string, id string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id
}
