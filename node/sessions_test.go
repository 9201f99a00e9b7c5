package node_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
	"github.com/libp2p/go-libp2p/core/peer"
)

func ask(prompt string) session.TaskRequest {
	return session.TaskRequest{Messages: []inference.Message{{Role: "user", Content: prompt}}}
}

// A session with redundancy 3 gets three agreeing answers from three
// miners, which are released when it ends and come back only validated anew.
func TestSessionRedundancyThree(t *testing.T) {
	if testing.Short() {
		t.Skip("8 nodes")
	}
	tn := localnet.Start(t, testnet.Spec{Network: "sess3", Bootstraps: 1, Oracles: 3, Miners: 3, Routers: 1}, nil)
	nodes := tn.Nodes()
	waitPool(t, inProcess(t, nodes[0]), "3 available miners", 60*time.Second, func(v poolView) bool {
		return v.Count("available") == 3
	})
	r := localnet.WithRole(tn, node.RoleRouter)[0]
	waitPool(t, r, "the router to see 3 available miners", 30*time.Second, func(v poolView) bool {
		return v.Count("available") == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sm := r.Sessions()
	s, err := sm.Create(ctx, session.Params{Redundancy: 3, MaxTasks: 2})
	if err != nil {
		t.Fatal(err)
	}
	task := runTask(t, ctx, sm, s.ID, ask("What is 17 + 25?"), 45*time.Second)
	if task.State != session.TaskDone {
		t.Fatalf("task %s: %s", task.State, task.Error)
	}
	if !strings.Contains(task.Answer, "42") || task.Agreement == nil || *task.Agreement < 0.99 || len(task.Answers) != 3 {
		t.Fatalf("task %+v", task)
	}
	seen := map[string]bool{}
	for _, a := range task.Answers {
		if !a.Accepted || seen[a.Miner] {
			t.Fatalf("answers %+v", task.Answers)
		}
		seen[a.Miner] = true
	}
	if _, err := sm.End(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	got, _ := sm.Get(s.ID)
	for _, h := range got.Miners {
		if h.State != session.HoldReleased {
			t.Errorf("holding %+v", h)
		}
	}
	waitPool(t, r, "the miners to be available again at the next generation", 60*time.Second, func(v poolView) bool {
		for _, h := range got.Miners {
			m, ok := v.Find(h.Miner)
			if !ok || m.State != "available" || m.Generation != h.Generation+1 {
				return false
			}
		}
		return true
	})
}

// 100 tasks over 10 sessions on 6 miners: the sessions queue for miners,
// each ends by its task limit and releases its miner, and a released miner
// serves another session only once it is validated again, at its next
// generation.
func TestHundredTasksOverTenSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("11 nodes")
	}
	const (
		sessions = 10
		perTask  = 10
		miners   = 6
	)
	tn := localnet.Start(t, testnet.Spec{Network: "sess100", Bootstraps: 1, Oracles: 3, Miners: miners, Routers: 1},
		&tunedLauncher{round: testRound})
	r := localnet.WithRole(tn, node.RoleRouter)[0]
	start := time.Now()
	waitPool(t, r, "the router to see 6 available miners", 60*time.Second, func(v poolView) bool {
		return v.Count("available") == miners
	})
	t.Logf("6 miners available after %s", time.Since(start).Round(time.Millisecond))
	mon := watchPool(r)
	defer func() {
		if mon != nil {
			mon.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	sm := r.Sessions()
	type sub struct {
		session, task string
		sum           int
	}
	var subs []sub
	var ids []string
	for i := range sessions {
		s, err := sm.Create(ctx, session.Params{Redundancy: 1, MinNodes: 1, MaxNodes: 1, MaxTasks: perTask})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		for j := range perTask {
			a, b := 100*i+j, 7*j+13
			task, err := sm.Submit(ctx, s.ID, ask(fmt.Sprintf("What is %d + %d?", a, b)))
			if err != nil {
				t.Fatalf("session %d task %d: %v", i, j, err)
			}
			subs = append(subs, sub{s.ID, task.ID, a + b})
		}
	}
	begin := time.Now()
	for _, sb := range subs {
		task, err := sm.Task(ctx, sb.session, sb.task, 120*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if task.State != session.TaskDone {
			t.Fatalf("task %s/%s %s: %s", sb.session, sb.task, task.State, task.Error)
		}
		if !strings.Contains(task.Answer, strconv.Itoa(sb.sum)) {
			t.Fatalf("task %s/%s: %q to %q, want %d", sb.session, sb.task, task.Answer, task.Messages[0].Content, sb.sum)
		}
		if len(task.Answers) != 1 || !task.Answers[0].Accepted || task.Answers[0].Error != "" {
			t.Fatalf("task %s/%s answers %+v", sb.session, sb.task, task.Answers)
		}
	}
	t.Logf("100 tasks done in %s", time.Since(begin).Round(time.Millisecond))

	var served []session.Holding
	byGen := map[string]int{} // sessions served per (miner, generation)
	for _, id := range ids {
		s := waitSession(t, sm, id, "the session to end", 30*time.Second, func(s session.Session) bool {
			return s.State == session.StateEnded
		})
		if s.EndReason != session.EndMaxTasks || s.Completed != perTask || s.Failed != 0 {
			t.Fatalf("session %s: ended %q with %d done, %d failed", id, s.EndReason, s.Completed, s.Failed)
		}
		tasks := 0
		for _, h := range s.Miners {
			if h.State != session.HoldReleased {
				t.Errorf("session %s holding %+v", id, h)
			}
			tasks += h.Tasks
			byGen[fmt.Sprintf("%s/%d", h.Miner, h.Generation)]++
			served = append(served, h)
		}
		if tasks != perTask {
			t.Errorf("session %s: its miners gave %d accepted answers, want %d", id, tasks, perTask)
		}
	}
	t.Logf("every session ended after %s", time.Since(begin).Round(time.Millisecond))
	for k, n := range byGen {
		if n != 1 {
			t.Errorf("%s served %d sessions: a miner serves one per generation", k, n)
		}
	}
	if len(byGen) < sessions {
		t.Errorf("%d (miner, generation) pairs served %d sessions", len(byGen), sessions)
	}
	for _, res := range r.Router().Reservations() {
		if res.State == router.StateActive {
			t.Errorf("reservation still active after every session ended: %+v", res)
		}
	}
	// Back only at a later generation, with a quorum of passing
	// attestations for that generation (the view's oracles are those of the
	// miner's current generation).
	quorum := r.Config().Params.Quorum
	waitPool(t, r, "every miner that served available again at a later generation", 90*time.Second, func(v poolView) bool {
		for _, h := range served {
			m, ok := v.Find(h.Miner)
			if !ok || m.State != "available" || m.Generation <= h.Generation || len(m.Oracles) < quorum {
				return false
			}
		}
		return true
	})
	t.Logf("every miner that served available again after %s", time.Since(begin).Round(time.Millisecond))
	if bad := mon.Stop(); len(bad) > 0 {
		t.Errorf("pool view: %s", strings.Join(bad, "; "))
	}
	mon = nil
}

// A miner stopped while it runs a task: the task is retried on another
// miner and completes, the stopped one is dropped from the session as
// failed, and the session goes on with its other miner.
func TestSessionSurvivesMinerKilledMidTask(t *testing.T) {
	if testing.Short() {
		t.Skip("8 nodes")
	}
	slow := &slowEngine{started: make(chan struct{})}
	tn := localnet.Start(t, testnet.Spec{Network: "sesskill", Bootstraps: 1, Oracles: 3, Miners: 3, Routers: 1},
		&tunedLauncher{round: testRound, backend: func(name string) inference.Backend {
			if name == "miner-0" {
				return testkit.Builtin(slow.hold)
			}
			return nil
		}})
	r := localnet.WithRole(tn, node.RoleRouter)[0]
	victim := nodeNamed(t, tn, "miner-0")
	waitPool(t, r, "the router to see 3 available miners", 60*time.Second, func(v poolView) bool {
		return v.Count("available") == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sm := r.Sessions()

	// The session can only have miner-0 at first; the others are then
	// given back and validated again, ready for the retry.
	others := holdAllBut(t, ctx, r, victim.ID(), 2)
	s, err := sm.Create(ctx, session.Params{Redundancy: 1, MinNodes: 1, MaxNodes: 2, MaxTasks: 5})
	if err != nil {
		t.Fatal(err)
	}
	s = waitSession(t, sm, s.ID, "the session to hold miner-0", 30*time.Second, func(s session.Session) bool {
		return len(activeHoldings(s)) == 1
	})
	if h := activeHoldings(s)[0]; h.Miner != victim.ID().String() {
		t.Fatalf("the session holds %s, not miner-0 (%s)", h.Miner, victim.ID())
	}
	giveBack(t, ctx, r, others)
	waitPool(t, r, "the other miners available again", 60*time.Second, func(v poolView) bool {
		for _, res := range others {
			m, ok := v.Find(res.Miner)
			if !ok || m.State != "available" || m.Generation != res.Generation+1 {
				return false
			}
		}
		return true
	})

	task, err := sm.Submit(ctx, s.ID, askMarked("What is 17 + 25?"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-slow.started:
	case <-ctx.Done():
		t.Fatal("the task never reached miner-0's engine")
	}
	if got, _ := sm.Task(ctx, s.ID, task.ID, 0); got.State != session.TaskRunning {
		t.Fatalf("task %s while miner-0 runs it", got.State)
	}
	// Killed: its host closes every connection at once, and nothing of the
	// node says goodbye. The rest of it is stopped (before the testnet's
	// own stop) once the test is over.
	t.Cleanup(func() {
		sctx, done := context.WithTimeout(context.Background(), 20*time.Second)
		defer done()
		if err := victim.Stop(sctx); err != nil {
			t.Logf("stopping what is left of miner-0: %v", err)
		}
	})
	if err := victim.Host().Close(); err != nil {
		t.Fatalf("closing miner-0's host: %v", err)
	}

	task, err = sm.Task(ctx, s.ID, task.ID, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if task.State != session.TaskDone || !strings.Contains(task.Answer, "42") {
		t.Fatalf("task %s (%s): %q; answers %+v", task.State, task.Error, task.Answer, task.Answers)
	}
	if task.Attempts < 2 || len(task.Answers) != 2 {
		t.Fatalf("%d attempts, answers %+v", task.Attempts, task.Answers)
	}
	failed, good := task.Answers[0], task.Answers[1]
	t.Logf("miner-0 failed with %q; %s answered %q on attempt %d", failed.Error, good.Miner, good.Output, task.Attempts)
	if failed.Miner != victim.ID().String() || failed.Accepted || failed.Error == "" {
		t.Errorf("miner-0's answer %+v, want a failure", failed)
	}
	if good.Miner == victim.ID().String() || !good.Accepted || good.Error != "" || !strings.Contains(good.Output, "42") {
		t.Errorf("the retry's answer %+v, want another miner's accepted one", good)
	}
	s, _ = sm.Get(s.ID)
	var states []string
	for _, h := range s.Miners {
		states = append(states, h.Miner+"="+h.State)
		if h.Miner == victim.ID().String() && h.State != session.HoldFailed {
			t.Errorf("miner-0's holding %+v, want failed", h)
		}
	}
	act := activeHoldings(s)
	if len(act) != 1 || act[0].Miner != good.Miner {
		t.Fatalf("holdings %v, want the retry's miner active", states)
	}

	// The session goes on with the miner that took over.
	next := runTask(t, ctx, sm, s.ID, ask("What is 20 + 3?"), 30*time.Second)
	if next.State != session.TaskDone || !strings.Contains(next.Answer, "23") || len(next.Answers) != 1 || next.Answers[0].Miner != good.Miner {
		t.Fatalf("the next task: %+v", next)
	}
	if _, err := sm.End(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
}

// A miner whose engine answers users wrongly (but the oracles' challenges
// right, so it validates) is out-voted by two honest ones: its answer is
// not accepted, it is dropped from the session, and the router counts the
// fault against its reputation.
func TestFaultyMinerOutVoted(t *testing.T) {
	if testing.Short() {
		t.Skip("9 nodes")
	}
	tn := localnet.Start(t, testnet.Spec{Network: "sessliar", Bootstraps: 1, Oracles: 3, Miners: 4, Routers: 1},
		&tunedLauncher{round: testRound, backend: func(name string) inference.Backend {
			if name == "miner-0" {
				return liarEngine{inference.NewBuiltin()}
			}
			return nil
		}})
	r := localnet.WithRole(tn, node.RoleRouter)[0]
	liar := nodeNamed(t, tn, "miner-0").ID()
	waitPool(t, r, "the router to see 4 available miners", 60*time.Second, func(v poolView) bool {
		return v.Count("available") == 4
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sm := r.Sessions()

	// One honest miner is held away, so the session's three include the liar.
	held := holdAllBut(t, ctx, r, liar, 1)
	s, err := sm.Create(ctx, session.Params{Redundancy: 3, MaxTasks: 3})
	if err != nil {
		t.Fatal(err)
	}
	s = waitSession(t, sm, s.ID, "the session to hold 3 miners", 30*time.Second, func(s session.Session) bool {
		return len(activeHoldings(s)) == 3
	})
	if !slices.ContainsFunc(s.Miners, func(h session.Holding) bool { return h.Miner == liar.String() }) {
		t.Fatalf("the session does not hold miner-0: %+v", s.Miners)
	}
	giveBack(t, ctx, r, held)

	task := runTask(t, ctx, sm, s.ID, askMarked("What is 17 + 25?"), 45*time.Second)
	if task.State != session.TaskDone || !strings.Contains(task.Answer, "42") || len(task.Answers) != 3 {
		t.Fatalf("task %s (%s): %q; answers %+v", task.State, task.Error, task.Answer, task.Answers)
	}
	if task.Agreement == nil || *task.Agreement > 0.5 {
		t.Errorf("agreement %v, want one honest pair out of three", task.Agreement)
	}
	var honest []peer.ID
	for _, a := range task.Answers {
		switch {
		case a.Error != "":
			t.Errorf("answer %+v failed", a)
		case a.Miner == liar.String():
			if a.Accepted || a.Output != lie || a.Similarity == nil || *a.Similarity >= session.AgreeThreshold {
				t.Errorf("the liar's answer %+v, want it not accepted, similarity below %.1f", a, session.AgreeThreshold)
			}
		default:
			if !a.Accepted || a.Similarity == nil || *a.Similarity < session.AgreeThreshold {
				t.Errorf("an honest answer %+v, want it accepted", a)
			}
			id, _ := peer.Decode(a.Miner)
			honest = append(honest, id)
		}
	}
	if len(honest) != 2 {
		t.Fatalf("%d honest answers, want 2: %+v", len(honest), task.Answers)
	}
	s, _ = sm.Get(s.ID)
	for _, h := range s.Miners {
		want := session.HoldActive
		if h.Miner == liar.String() {
			want = session.HoldFailed
		}
		if h.State != want {
			t.Errorf("holding %+v, want %s", h, want)
		}
	}
	rep := reputationOf(t, r, liar)
	t.Logf("agreement %.2f; the liar's reputation %+v, score %.2f", *task.Agreement, rep, rep.Score())
	if rep.Faults < 1 {
		t.Errorf("the router's reputation of the liar %+v, want a fault", rep)
	}
	for _, id := range honest {
		if h := reputationOf(t, r, id); h.Faults != 0 || h.Score() <= rep.Score() {
			t.Errorf("honest %s scores %.2f (%+v), the liar %.2f (%+v)", id, h.Score(), h, rep.Score(), rep)
		}
	}
	view := poolView(r.Pool())
	lv, _ := view.Find(liar.String())
	for _, id := range honest {
		if hv, _ := view.Find(id.String()); hv.Reputation <= lv.Reputation {
			t.Errorf("the router's pool view: honest %s at %.2f, the liar at %.2f", id, hv.Reputation, lv.Reputation)
		}
	}
	if _, err := sm.End(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
}
