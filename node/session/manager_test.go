package session

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// One miner answers a session's task over the stream mode; ending the
// session releases the miner, which must then be validated at its next
// generation.
func TestSessionRedundancyOne(t *testing.T) {
	x, tr := newPair(t)
	gen := x.makeAvailable(t)
	ctx := t.Context()

	s := tr.create(t, Params{})
	if s.State != StateOpen || s.Params.Redundancy != 1 || s.Params.MaxNodes != 1 || !s.Ends.Equal(s.Created.Add(DefaultReservePeriod)) {
		t.Fatalf("session %+v", s)
	}
	task := tr.submit(t, s.ID, ask("What is 17 + 25?"))
	if task.ID != "1" || task.Seq != 1 || task.State != TaskQueued {
		t.Fatalf("submitted %+v", task)
	}
	task = tr.waitTask(t, s.ID, task.ID)
	if task.State != TaskDone || !strings.Contains(task.Answer, "42") || task.Agreement != nil || task.Attempts != 1 {
		t.Fatalf("task %+v", task)
	}
	if len(task.Answers) != 1 {
		t.Fatalf("answers %+v", task.Answers)
	}
	a := task.Answers[0]
	if a.Miner != x.id.String() || !a.Accepted || a.Output != task.Answer || a.Generation != gen || a.Reservation == "" ||
		a.Similarity != nil || a.Error != "" || a.Model != inference.BuiltinModel {
		t.Fatalf("answer %+v", a)
	}

	s, err := tr.m.End(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != StateEnded || s.EndReason != EndClosed || s.Completed != 1 || s.Submitted != 1 || len(s.Miners) != 1 {
		t.Fatalf("ended %+v", s)
	}
	if h := s.Miners[0]; h.State != HoldReleased || h.Miner != x.id.String() || h.Tasks != 1 || h.Reservation != a.Reservation || h.Until.IsZero() {
		t.Fatalf("holding %+v", h)
	}
	if res, ok := tr.r.Get(a.Reservation); !ok || res.State != router.StateReleased || res.Detail != "" || res.Session != s.ID {
		t.Fatalf("reservation %+v", res)
	}
	x.waitState(t, pb.MinerState_VALIDATING, gen+1)
	if _, err := tr.m.End(ctx, s.ID); !errors.Is(err, ErrEnded) {
		t.Fatalf("second end: %v", err)
	}
	if _, err := tr.m.Submit(ctx, s.ID, ask("again")); !errors.Is(err, ErrEnded) {
		t.Fatalf("submit after end: %v", err)
	}
}

// Three miners answer each task by commit-reveal; identical answers agree fully.
func TestSessionRedundancyThree(t *testing.T) {
	n := newTestNet(t)
	miners := n.newMiners(t, 3)
	tr := n.newRouter(t, testConfig())
	for _, m := range miners {
		m.makeAvailable(t)
	}
	s := tr.create(t, Params{Redundancy: 3})
	task := tr.submit(t, s.ID, ask("What is 17 + 25?"))
	task = tr.waitTask(t, s.ID, task.ID)
	if task.State != TaskDone || !strings.Contains(task.Answer, "42") || task.Agreement == nil || *task.Agreement < 0.999 {
		t.Fatalf("task %+v", task)
	}
	seen := map[string]bool{}
	for _, a := range task.Answers {
		if !a.Accepted || a.Error != "" || a.Similarity == nil || *a.Similarity < 0.999 || seen[a.Miner] {
			t.Fatalf("answers %+v", task.Answers)
		}
		seen[a.Miner] = true
	}
	for _, m := range miners {
		if !seen[m.id.String()] {
			t.Fatalf("miner %s gave no answer: %+v", m.id, task.Answers)
		}
	}
	s, _ = tr.m.Get(s.ID)
	if s.MeanAgreement == nil || *s.MeanAgreement < 0.999 || s.AgreementN != 1 || active(s) != 3 {
		t.Fatalf("session %+v", s)
	}
}

// cheat replaces the miner's session handler with one that commits to one
// signed answer and, asked to reveal, sends another, validly signed too.
func (tm *testMiner) cheat() *atomic.Int32 {
	var calls atomic.Int32
	tm.host.SetStreamHandler(protocol.SessionProtocol(testNetwork), func(s network.Stream) {
		defer s.Close()
		calls.Add(1)
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(s)
		raw, err := protocol.ReadMsg(br, protocol.MaxMessageSize)
		if err != nil {
			s.Reset()
			return
		}
		digest := protocol.Digest(raw)
		result := func(output string) []byte {
			env, err := protocol.Seal(&pb.TaskResult{
				Network: testNetwork, Miner: []byte(tm.id), TaskDigest: digest, Model: inference.BuiltinModel,
				Output: output, LatencyMs: 1,
			}, tm.key)
			if err != nil {
				panic(err)
			}
			return env
		}
		committed, revealed := result("17 + 25 = 42."), result("17 + 25 = 43.")
		commit, err := protocol.Seal(&pb.TaskCommit{
			Network: testNetwork, Miner: []byte(tm.id), TaskDigest: digest, ResultHash: protocol.ResultHash(committed),
		}, tm.key)
		if err != nil {
			panic(err)
		}
		frame := func(env []byte) error {
			return protocol.WriteFrame(s, &pb.SessionFrame{Body: &pb.SessionFrame_Envelope{Envelope: env}})
		}
		if err := frame(commit); err != nil {
			s.Reset()
			return
		}
		if _, err := protocol.ReadMsg(br, 4096); err != nil { // the Reveal
			s.Reset()
			return
		}
		_ = frame(revealed)
	})
	return &calls
}

// A reveal that does not match its commitment is rejected and counts
// against its miner, which the session drops and releases as failed; the
// task still completes on the other miners and a spare.
func TestSessionBadRevealRejected(t *testing.T) {
	n := newTestNet(t)
	miners := n.newMiners(t, 4)
	cheater, spare := miners[0], miners[3]
	cheats := cheater.cheat()
	tr := n.newRouter(t, testConfig())
	for _, m := range miners[:3] {
		m.makeAvailable(t)
	}
	s := tr.create(t, Params{Redundancy: 3})
	// The session holds the first three, the cheater among them; then the
	// spare becomes available.
	s = tr.waitSession(t, s.ID, "three miners held", 10*time.Second, func(s Session) bool { return active(s) == 3 })
	var cheaterRes string
	for _, h := range s.Miners {
		if h.Miner == cheater.id.String() {
			cheaterRes = h.Reservation
		}
	}
	if cheaterRes == "" {
		t.Fatalf("the cheater is not held: %+v", s.Miners)
	}
	spareGen := spare.makeAvailable(t)

	task := tr.submit(t, s.ID, ask("What is 17 + 25?"))
	task = tr.waitTask(t, s.ID, task.ID)
	if task.State != TaskDone || !strings.Contains(task.Answer, "42") || task.Attempts != 2 {
		t.Fatalf("task %+v", task)
	}
	if cheats.Load() != 1 {
		t.Fatalf("the cheater got %d tasks", cheats.Load())
	}
	var rejected []Answer
	accepted := map[string]bool{}
	for _, a := range task.Answers {
		switch {
		case a.Error != "":
			rejected = append(rejected, a)
		case a.Accepted:
			accepted[a.Miner] = true
		}
	}
	if len(rejected) != 1 || rejected[0].Miner != cheater.id.String() || !strings.Contains(rejected[0].Error, "commitment") ||
		rejected[0].Accepted || rejected[0].Reservation != cheaterRes {
		t.Fatalf("rejected answers %+v", rejected)
	}
	if len(accepted) != 3 || accepted[cheater.id.String()] {
		t.Fatalf("accepted answers %+v", task.Answers)
	}
	for _, m := range miners[1:] {
		if !accepted[m.id.String()] {
			t.Fatalf("miner %s gave no accepted answer: %+v", m.id, task.Answers)
		}
	}
	if task.Agreement == nil || *task.Agreement < 0.999 {
		t.Fatalf("agreement of the honest answers %v", task.Agreement)
	}
	if rep := tr.pool.Reputation(cheater.id); rep.Faults != 1 {
		t.Fatalf("cheater's reputation %+v", rep)
	}
	for _, m := range miners[1:] {
		if rep := tr.pool.Reputation(m.id); rep.Faults != 0 {
			t.Fatalf("honest miner's reputation %+v", rep)
		}
	}
	s, _ = tr.m.Get(s.ID)
	for _, h := range s.Miners {
		want := HoldActive
		if h.Miner == cheater.id.String() {
			want = HoldFailed
			if !strings.Contains(h.Detail, "commitment") {
				t.Fatalf("cheater's holding %+v", h)
			}
		}
		if h.State != want {
			t.Fatalf("holding %+v, want %s", h, want)
		}
	}
	if len(s.Miners) != 4 || active(s) != 3 {
		t.Fatalf("holdings %+v", s.Miners)
	}
	// The cheater is released as failed: validated again before any reuse.
	testkit.Eventually(t, "the cheater released", 5*time.Second, func() bool {
		res, ok := tr.r.Get(cheaterRes)
		return ok && res.State == router.StateReleased
	})
	cheater.waitState(t, pb.MinerState_VALIDATING, 1)
	if st := spare.m.State(); st.State != pb.MinerState_RESERVED || st.Generation != spareGen {
		t.Fatalf("spare is %s at %d", st.State, st.Generation)
	}
}

// The queue is bounded over every session, as are the open sessions; a
// task waiting for miners counts as queued.
func TestQueueAndSessionBounds(t *testing.T) {
	n := newTestNet(t)
	tr := n.newRouter(t, Config{MaxSessions: 2, MaxQueued: 2, QueueTimeout: time.Minute})
	ctx := t.Context()
	s1 := tr.create(t, Params{})
	var ids []string
	for range 2 {
		task := tr.submit(t, s1.ID, ask("What is 17 + 25?"))
		ids = append(ids, task.ID)
	}
	// Give the worker time to take the first task up and look for miners.
	time.Sleep(200 * time.Millisecond)
	if _, err := tr.m.Submit(ctx, s1.ID, ask("one too many")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third submit: %v, want ErrQueueFull", err)
	}
	if st := tr.m.Stats(); st.Queued != 2 || st.Open != 1 {
		t.Fatalf("stats %+v", st)
	}
	if s, _ := tr.m.Get(s1.ID); s.Queued != 2 || s.Submitted != 2 {
		t.Fatalf("session %+v", s)
	}
	for _, id := range ids {
		if task, _ := tr.m.Task(ctx, s1.ID, id, 0); task.State != TaskQueued {
			t.Fatalf("task %+v", task)
		}
	}
	s2 := tr.create(t, Params{})
	if _, err := tr.m.Submit(ctx, s2.ID, ask("elsewhere")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("submit to another session: %v, want ErrQueueFull", err)
	}
	if _, err := tr.m.Create(ctx, Params{}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third session: %v, want ErrTooMany", err)
	}
	if _, err := tr.m.End(ctx, s2.ID); err != nil {
		t.Fatal(err)
	}
	s3, err := tr.m.Create(ctx, Params{})
	if err != nil {
		t.Fatalf("a session after one ended: %v", err)
	}
	// Ending s1 fails its queued tasks and frees the queue.
	if _, err := tr.m.End(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		task, _ := tr.m.Task(ctx, s1.ID, id, 0)
		if task.State != TaskFailed || !strings.Contains(task.Error, EndClosed) {
			t.Fatalf("task of an ended session %+v", task)
		}
	}
	if st := tr.m.Stats(); st.Queued != 0 {
		t.Fatalf("stats after end %+v", st)
	}
	if _, err := tr.m.Submit(ctx, s3.ID, ask("room again")); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.m.Submit(ctx, "nope", ask("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("submit to an unknown session: %v", err)
	}
	if _, err := tr.m.Submit(ctx, s3.ID, TaskRequest{}); !errors.Is(err, ErrBadParams) {
		t.Fatalf("empty task: %v", err)
	}
}

// A session ends after max_tasks tasks and releases its miners; a task past
// the limit is refused.
func TestMaxTasksEndsSession(t *testing.T) {
	x, tr := newPair(t)
	ctx := t.Context()
	s := tr.create(t, Params{MaxTasks: 2})
	// No miner yet: both tasks wait, and the session is open.
	var ids []string
	for _, q := range []string{"What is 17 + 25?", "What is 2 + 2?"} {
		task := tr.submit(t, s.ID, ask(q))
		ids = append(ids, task.ID)
	}
	if _, err := tr.m.Submit(ctx, s.ID, ask("a third")); !errors.Is(err, ErrTaskLimit) {
		t.Fatalf("third task: %v, want ErrTaskLimit", err)
	}
	gen := x.makeAvailable(t)
	for _, id := range ids {
		if task := tr.waitTask(t, s.ID, id); task.State != TaskDone {
			t.Fatalf("task %+v", task)
		}
	}
	s = tr.waitSession(t, s.ID, "the session to end", 5*time.Second, func(s Session) bool { return s.State == StateEnded })
	if s.EndReason != EndMaxTasks || s.Completed != 2 || len(s.Miners) != 1 {
		t.Fatalf("session %+v", s)
	}
	if h := s.Miners[0]; h.State != HoldReleased || h.Tasks != 2 {
		t.Fatalf("holding %+v", h)
	}
	x.waitState(t, pb.MinerState_VALIDATING, gen+1)
	if _, err := tr.m.Submit(ctx, s.ID, ask("late")); !errors.Is(err, ErrEnded) {
		t.Fatalf("submit after the end: %v", err)
	}
}

// A session ends when its reservation period runs out, and releases its miners.
func TestReservePeriodEndsSession(t *testing.T) {
	x, tr := newPair(t)
	gen := x.makeAvailable(t)
	s := tr.create(t, Params{ReservePeriod: dur(2 * time.Second)})
	if s.Params.TaskTimeout != dur(2*time.Second) {
		t.Fatalf("params %+v", s.Params)
	}
	tr.waitSession(t, s.ID, "a miner held", 5*time.Second, func(s Session) bool { return active(s) == 1 })
	s = tr.waitSession(t, s.ID, "the period to run out", 6*time.Second, func(s Session) bool { return s.State == StateEnded })
	if s.EndReason != EndReservePeriod || s.Ended.Before(s.Ends) || len(s.Miners) != 1 || s.Miners[0].State != HoldReleased {
		t.Fatalf("session %+v", s)
	}
	x.waitState(t, pb.MinerState_VALIDATING, gen+1)
}

// A graceful shutdown ends every open session, fails what they had queued
// and releases their miners.
func TestStopEndsSessions(t *testing.T) {
	x, tr := newPair(t)
	gen := x.makeAvailable(t)
	ctx := t.Context()
	// Two miners per task, one to be had: the task waits.
	s := tr.create(t, Params{Redundancy: 2, MinNodes: 1})
	s = tr.waitSession(t, s.ID, "a miner held", 5*time.Second, func(s Session) bool { return active(s) == 1 })
	res := s.Miners[0].Reservation
	task := tr.submit(t, s.ID, ask("What is 17 + 25?"))
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tr.m.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	s, _ = tr.m.Get(s.ID)
	if s.State != StateEnded || s.EndReason != EndShutdown || s.Miners[0].State != HoldReleased || s.Failed != 1 {
		t.Fatalf("session after stop %+v", s)
	}
	task, _ = tr.m.Task(ctx, s.ID, task.ID, 0)
	if task.State != TaskFailed || !strings.Contains(task.Error, EndShutdown) {
		t.Fatalf("task after stop %+v", task)
	}
	if r, _ := tr.r.Get(res); r.State != router.StateReleased || r.Detail != "" {
		t.Fatalf("reservation after stop %+v", r)
	}
	x.waitState(t, pb.MinerState_VALIDATING, gen+1)
	// What the store says is what a restart would find.
	raw, err := tr.store.Get(sessKey(s.ID))
	if err != nil {
		t.Fatal(err)
	}
	var stored Session
	if err := json.Unmarshal(raw, &stored); err != nil || stored.State != StateEnded || stored.EndReason != EndShutdown {
		t.Fatalf("stored %+v: %v", stored, err)
	}
	if _, err := tr.m.Create(ctx, Params{}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("create after stop: %v", err)
	}
}

// After a crash, a router started over the same store resumes its open
// sessions with the miners they still hold, runs their queued tasks, and
// releases reservations made for sessions it does not have.
func TestRestartResumesSessions(t *testing.T) {
	n := newTestNet(t)
	x, z := n.newMiner(t), n.newMiner(t)
	key, dir := testkit.NewKey(t), t.TempDir()
	tr := n.openRouter(t, key, dir, testConfig())
	x.makeAvailable(t)
	zGen := z.makeAvailable(t)
	ctx := t.Context()

	// A reservation for a session this router will not know: as if the
	// session were pruned, or lost, while its reservation was on the way.
	ghost, err := tr.r.ReserveFor(ctx, router.Request{Session: "ghost", Exclude: []peer.ID{x.id}})
	if err != nil {
		t.Fatal(err)
	}
	if ghost.Miner != z.id.String() {
		t.Fatalf("ghost reservation of %s", ghost.Miner)
	}
	// A session that wants two miners a task and finds one: its task waits.
	s := tr.create(t, Params{Redundancy: 2, MinNodes: 1})
	s = tr.waitSession(t, s.ID, "a miner held", 5*time.Second, func(s Session) bool { return active(s) == 1 })
	held := s.Miners[0]
	if held.Miner != x.id.String() {
		t.Fatalf("holding %+v", held)
	}
	task := tr.submit(t, s.ID, ask("What is 17 + 25?"))
	testkit.Eventually(t, "the router to see both miners reserved", 5*time.Second, func() bool { return len(tr.pool.Available("")) == 0 })

	tr.crash(t)
	// Time passes: the reservations are older than a reservation on its
	// way into a session can be.
	backdate(t, dir, orphanAge+time.Second)

	tr2 := n.openRouter(t, key, dir, testConfig())
	testkit.Eventually(t, "the ghost reservation released", 5*time.Second, func() bool {
		r, ok := tr2.r.Get(ghost.ID)
		return ok && r.State == router.StateReleased
	})
	if r, _ := tr2.r.Get(ghost.ID); r.Detail != "" {
		t.Fatalf("ghost release %+v", r)
	}
	z.waitState(t, pb.MinerState_VALIDATING, zGen+1)

	// The session is open, still holds x, and its task waits.
	got, err := tr2.m.Get(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateOpen || active(got) != 1 || got.Miners[0].Reservation != held.Reservation || got.Submitted != 1 {
		t.Fatalf("resumed session %+v", got)
	}
	if r, _ := tr2.r.Get(held.Reservation); r.State != router.StateActive {
		t.Fatalf("the session's reservation %+v", r)
	}
	if tk, err := tr2.m.Task(ctx, s.ID, task.ID, 0); err != nil || tk.State != TaskQueued {
		t.Fatalf("resumed task %+v: %v", tk, err)
	}

	// A second miner: the task runs on both.
	y := n.newMiner(t)
	y.makeAvailable(t)
	done := tr2.waitTask(t, s.ID, task.ID)
	if done.State != TaskDone || !strings.Contains(done.Answer, "42") || done.Agreement == nil || *done.Agreement < 0.999 {
		t.Fatalf("task after restart %+v", done)
	}
	answered := map[string]bool{}
	for _, a := range done.Answers {
		if a.Accepted {
			answered[a.Miner] = true
		}
	}
	if len(answered) != 2 || !answered[x.id.String()] || !answered[y.id.String()] {
		t.Fatalf("answers %+v", done.Answers)
	}
	got, _ = tr2.m.Get(s.ID)
	if got.State != StateOpen || active(got) != 2 || got.Completed != 1 {
		t.Fatalf("session after its task %+v", got)
	}
	// Its own reservations, as old as the ghost's, were never taken for orphans.
	if r, _ := tr2.r.Get(held.Reservation); r.State != router.StateActive {
		t.Fatalf("the session's reservation %+v", r)
	}
}

// backdate moves the creation of every reservation in the store in dir by d
// into the past.
func backdate(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	st, err := store.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs := map[string]map[string]any{}
	err = st.Scan([]byte("res/"), func(k, v []byte) error {
		var rec map[string]any
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		recs[string(k)] = rec
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatal("no reservation stored")
	}
	for k, rec := range recs {
		created, err := time.Parse(time.RFC3339Nano, rec["created"].(string))
		if err != nil {
			t.Fatal(err)
		}
		rec["created"] = created.Add(-d).Format(time.RFC3339Nano)
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put([]byte(k), b); err != nil {
			t.Fatal(err)
		}
	}
}
