// The rig of the session tests: tuned launchers, engines that stall or lie,
// and a watch on the pool.
package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testRound is the validation round of the testnets below, instead of the
// default 5 s: a released miner is validated again within a few seconds,
// so a test that waits for that stays short. Only the oracles' schedule
// depends on it.
const testRound = time.Second

// tunedLauncher starts nodes in this process, like testnet.InProcess, with
// every node's params.round_period set to round (when not zero), and gives
// the node of a name (such as "miner-0") the engine backend returns for it,
// nil keeping the built-in one. It records when each node's Start was
// called.
type tunedLauncher struct {
	round   time.Duration
	backend func(name string) inference.Backend

	mu      sync.Mutex
	started map[*node.Node]time.Time
}

func (l *tunedLauncher) Launch(ctx context.Context, name string, home node.Home) (testnet.Node, error) {
	cfg, err := node.LoadConfig(home.ConfigPath())
	if err != nil {
		return nil, err
	}
	if l.round > 0 {
		cfg.Params.RoundPeriod = duration.Duration(l.round)
	}
	opts := node.Options{Version: "test"}
	if l.backend != nil {
		opts.Backend = l.backend(name)
	}
	n, err := node.New(home, cfg, opts)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := n.Start(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	l.mu.Lock()
	if l.started == nil {
		l.started = map[*node.Node]time.Time{}
	}
	l.started[n] = t0
	l.mu.Unlock()
	return testnet.InProcessNode{Node: n}, nil
}

// startedAt is when n's Start was called.
func (l *tunedLauncher) startedAt(n *node.Node) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.started[n]
}

// taskMarker is the system message that tells the tests' engines a task
// comes from a user session. Oracles' challenges carry none, so an engine
// that misbehaves only on marked tasks still validates.
const taskMarker = "ephemera test: a user session's task"

func marked(req inference.GenerateRequest) bool {
	return slices.ContainsFunc(req.Messages, func(m inference.Message) bool {
		return m.Role == "system" && m.Content == taskMarker
	})
}

// askMarked is ask with the marker.
func askMarked(prompt string) session.TaskRequest {
	return session.TaskRequest{Messages: []inference.Message{{Role: "system", Content: taskMarker}, {Role: "user", Content: prompt}}}
}

// slowEngine holds the built-in engine's marked tasks: a marked task
// announces itself on started and then runs until its context ends (or a
// minute has passed), in flight for as long as the test needs. Its hold
// goes before a testkit.Engine.
type slowEngine struct {
	started chan struct{}
	once    sync.Once
}

func (e *slowEngine) hold(ctx context.Context, req inference.GenerateRequest) error {
	if !marked(req) {
		return nil
	}
	e.once.Do(func() { close(e.started) })
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return nil
	}
}

// liarEngine answers the oracles' challenges as the built-in engine does,
// so it validates, but every marked task wrongly.
type liarEngine struct{ *inference.Builtin }

const lie = "I refuse to answer."

func (e liarEngine) Generate(ctx context.Context, req inference.GenerateRequest) (inference.GenerateResponse, error) {
	if marked(req) {
		return inference.GenerateResponse{Model: inference.BuiltinModel, Text: lie, CompletionTokens: 4}, nil
	}
	return e.Builtin.Generate(ctx, req)
}

func (e liarEngine) GenerateStream(ctx context.Context, req inference.GenerateRequest, onToken func(string) error) (inference.GenerateResponse, error) {
	if !marked(req) {
		return e.Builtin.GenerateStream(ctx, req, onToken)
	}
	if onToken != nil {
		if err := onToken(lie); err != nil {
			return inference.GenerateResponse{}, err
		}
	}
	return inference.GenerateResponse{Model: inference.BuiltinModel, Text: lie, CompletionTokens: 4}, nil
}

// nodeNamed is the in-process node of that name in tn ("miner-0").
func nodeNamed(t *testing.T, tn *testnet.Testnet, name string) *node.Node {
	t.Helper()
	for _, n := range tn.Nodes() {
		if _, got, ok := tn.Find(n.Runtime().PeerID); ok && got == name {
			return inProcess(t, n)
		}
	}
	t.Fatalf("no node named %s", name)
	return nil
}

// reputationOf is the reputation n's pool holds for id, counters included
// (the pool view shows only its score).
func reputationOf(t *testing.T, n *node.Node, id peer.ID) pool.Reputation {
	t.Helper()
	var r pool.Reputation
	b, err := n.Store().Get([]byte("rep/" + string(id)))
	if err != nil {
		t.Fatalf("reputation of %s: %v", id, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitSession polls the session until cond holds.
func waitSession(t *testing.T, sm *session.Manager, id, what string, timeout time.Duration, cond func(session.Session) bool) session.Session {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := sm.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; session %+v", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runTask submits req to the session id and waits up to timeout for the
// task to end.
func runTask(t *testing.T, ctx context.Context, sm *session.Manager, id string, req session.TaskRequest, timeout time.Duration) session.Task {
	t.Helper()
	task, err := sm.Submit(ctx, id, req)
	if err != nil {
		t.Fatal(err)
	}
	if task, err = sm.Task(ctx, id, task.ID, timeout); err != nil {
		t.Fatal(err)
	}
	return task
}

func activeHoldings(s session.Session) []session.Holding {
	var out []session.Holding
	for _, h := range s.Miners {
		if h.State == session.HoldActive {
			out = append(out, h)
		}
	}
	return out
}

// holdAllBut reserves, through r's raw reservation desk, every available
// miner but keep, so that the next session can only have keep. It returns
// the reservations, to be given back with giveBack.
func holdAllBut(t *testing.T, ctx context.Context, r *node.Node, keep peer.ID, n int) []router.Reservation {
	t.Helper()
	var out []router.Reservation
	for range n {
		res, err := r.Router().ReserveFor(ctx, router.Request{Exclude: []peer.ID{keep}, Lease: 5 * time.Minute})
		if err != nil {
			t.Fatalf("reserving the miners other than %s: %v", keep, err)
		}
		out = append(out, res)
	}
	return out
}

func giveBack(t *testing.T, ctx context.Context, r *node.Node, held []router.Reservation) {
	t.Helper()
	for _, res := range held {
		if _, err := r.Router().Release(ctx, res.ID, pb.Outcome_CANCELLED); err != nil {
			t.Fatalf("release %s: %v", res.ID, err)
		}
	}
}

// poolMonitor samples a node's pool view until stopped and finds the one
// thing that must never be seen: a miner available again at a generation
// it was seen reserved at (it must be released and validated anew, at the
// next generation, first), or a miner's generation going back.
type poolMonitor struct {
	stop, done chan struct{}
	reserved   map[string]map[uint64]bool
	last       map[string]uint64
	violations []string
}

func watchPool(n *node.Node) *poolMonitor {
	pm := &poolMonitor{stop: make(chan struct{}), done: make(chan struct{}),
		reserved: map[string]map[uint64]bool{}, last: map[string]uint64{}}
	go func() {
		defer close(pm.done)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			pm.sample(poolView(n.Pool()))
			select {
			case <-pm.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return pm
}

func (pm *poolMonitor) sample(v poolView) {
	for _, m := range v {
		if last, ok := pm.last[m.PeerID]; ok && m.Generation < last {
			pm.violations = append(pm.violations, fmt.Sprintf("%s went back from generation %d to %d", m.PeerID, last, m.Generation))
		}
		pm.last[m.PeerID] = m.Generation
		switch m.State {
		case "reserved":
			if pm.reserved[m.PeerID] == nil {
				pm.reserved[m.PeerID] = map[uint64]bool{}
			}
			pm.reserved[m.PeerID][m.Generation] = true
		case "available":
			if pm.reserved[m.PeerID][m.Generation] {
				pm.violations = append(pm.violations, fmt.Sprintf("%s available again at generation %d, which it was reserved at", m.PeerID, m.Generation))
				pm.reserved[m.PeerID][m.Generation] = false // said once
			}
		}
	}
}

// Stop ends the sampling and returns what it saw wrong.
func (pm *poolMonitor) Stop() []string {
	close(pm.stop)
	<-pm.done
	return pm.violations
}
