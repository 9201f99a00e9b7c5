package session

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// A session holding three miners with redundancy one runs three tasks at
// once: each miner is busy on one while the others run.
func TestSessionRunsTasksInParallel(t *testing.T) {
	n := newTestNet(t)
	miners := n.newMiners(t, 3)
	for _, x := range miners {
		x.setSlow(time.Second)
	}
	tr := n.newRouter(t, testConfig())
	for _, x := range miners {
		x.makeAvailable(t)
	}
	s := tr.create(t, Params{MinNodes: 3, MaxNodes: 3, MaxTasks: 3})
	tr.waitSession(t, s.ID, "three miners held", 10*time.Second, func(s Session) bool { return active(s) == 3 })
	var ids []string
	for range 3 {
		task := tr.submit(t, s.ID, ask("What is 17 + 25?"))
		ids = append(ids, task.ID)
	}
	testkit.Eventually(t, "three tasks running at once", 5*time.Second, func() bool {
		tasks, err := tr.m.Tasks(s.ID)
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, task := range tasks {
			if task.State == TaskRunning {
				running++
			}
		}
		return running == 3
	})
	seen := map[string]bool{}
	for _, id := range ids {
		task := tr.waitTask(t, s.ID, id)
		if task.State != TaskDone {
			t.Fatalf("task %+v", task)
		}
		seen[task.Answers[0].Miner] = true
	}
	if len(seen) != 3 {
		t.Fatalf("3 tasks ran on %d miners", len(seen))
	}
	tr.waitSession(t, s.ID, "the session ended by its task limit", 10*time.Second, func(s Session) bool { return s.EndReason == EndMaxTasks })
}

// Chat completions share one warm session per model and redundancy: the
// first reserves a miner, the next ones reuse it, and it goes back to the
// pool (and to validation) once idle for idle_release.
func TestWarmSessionReusesThenReleasesIdleMiner(t *testing.T) {
	n := newTestNet(t)
	x := n.newMiner(t)
	cfg := testConfig()
	cfg.IdleRelease = 500 * time.Millisecond
	tr := n.newRouter(t, cfg)
	gen := x.makeAvailable(t)
	ctx := t.Context()

	var first Completion
	for i := range 5 {
		c, err := tr.m.Complete(ctx, Demand{}, ask("What is 17 + 25?"), nil)
		if err != nil {
			t.Fatalf("completion %d: %v", i, err)
		}
		if c.Task.State != TaskDone || !strings.Contains(c.Task.Answer, "42") {
			t.Fatalf("completion %d: %+v", i, c.Task)
		}
		if i == 0 {
			first = c
		} else if c.Session != first.Session || c.Task.Answers[0].Reservation != first.Task.Answers[0].Reservation {
			t.Fatalf("completion %d ran in session %s on reservation %s, want the warm one %s on %s",
				i, c.Session, c.Task.Answers[0].Reservation, first.Session, first.Task.Answers[0].Reservation)
		}
	}
	s, err := tr.m.Get(first.Session)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Warm || s.Completed != 5 || active(s) != 1 {
		t.Fatalf("warm session %+v", s)
	}
	if st := tr.m.Stats(); st.WarmSessions != 1 || st.WarmMiners != 1 || st.Requests != 5 || st.Open != 0 {
		t.Fatalf("stats %+v", st)
	}
	s = tr.waitSession(t, first.Session, "the idle miner given back", 5*time.Second, func(s Session) bool { return active(s) == 0 })
	if h := s.Miners[0]; h.State != HoldReleased || !strings.Contains(h.Detail, "idle") {
		t.Fatalf("holding %+v", h)
	}
	x.waitState(t, pb.MinerState_VALIDATING, gen+1)
	if st := tr.m.Stats(); st.IdleReleases != 1 || st.WarmMiners != 0 || st.WarmBusySeconds <= 0 || st.WarmHeldSeconds < st.WarmBusySeconds {
		t.Fatalf("stats after the idle release %+v", st)
	}
}

// A warm session grows while requests queue: eight requests at once on
// three slow miners are served by all three.
func TestWarmSessionGrowsWithDemand(t *testing.T) {
	n := newTestNet(t)
	miners := n.newMiners(t, 3)
	for _, x := range miners {
		x.setSlow(100 * time.Millisecond)
	}
	tr := n.newRouter(t, testConfig())
	for _, x := range miners {
		x.makeAvailable(t)
	}
	var mu sync.Mutex
	used := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, err := tr.m.Complete(t.Context(), Demand{}, ask("What is 17 + 25?"), nil)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			used[c.Task.Answers[0].Miner] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(used) != 3 {
		t.Fatalf("8 requests served by %d miners, want all 3", len(used))
	}
}

// A model no miner serves is refused at once, for a completion and for a
// new session, which takes no slot; a served model whose miners stay busy
// is ErrBusy once the wait is over; a client at its limit is ErrBusy too.
func TestCompletionErrors(t *testing.T) {
	n := newTestNet(t)
	x := n.newMiner(t)
	x.setSlow(time.Second)
	cfg := testConfig()
	cfg.MaxSessions = 1
	cfg.CompletionWait = 200 * time.Millisecond
	cfg.MaxPerClient = 1
	tr := n.newRouter(t, cfg)
	x.makeAvailable(t)
	ctx := t.Context()

	if _, err := tr.m.Complete(ctx, Demand{Model: "gpt-4"}, ask("hi"), nil); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
	for range 3 {
		if _, err := tr.m.Create(ctx, Params{Model: "gpt-4"}); !errors.Is(err, ErrUnknownModel) {
			t.Fatalf("session for an unknown model: %v", err)
		}
	}
	// Refused before anything was opened or queued: no slot taken.
	if ss, st := tr.m.Sessions(), tr.m.Stats(); len(ss) != 0 || st.WarmSessions != 0 || st.Queued != 0 {
		t.Fatalf("after unknown models: sessions %+v, stats %+v", ss, st)
	}
	// One slow request holds the only miner; the next waits, then is busy.
	done := make(chan error, 1)
	go func() {
		_, err := tr.m.Complete(ctx, Demand{}, ask("What is 17 + 25?"), nil)
		done <- err
	}()
	testkit.Eventually(t, "the first request running", 5*time.Second, func() bool { return tr.m.Stats().WarmBusy == 1 })
	if _, err := tr.m.Complete(ctx, Demand{}, ask("What is 1 + 1?"), nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("second request on a busy miner: %v", err)
	}
	// A client with one request in flight may not start another.
	block := make(chan error, 1)
	go func() {
		_, err := tr.m.Complete(ctx, Demand{Client: "alice"}, ask("What is 2 + 2?"), nil)
		block <- err
	}()
	testkit.Eventually(t, "alice's request counted", 5*time.Second, func() bool {
		tr.m.mu.Lock()
		defer tr.m.mu.Unlock()
		return tr.m.clients["alice"] == 1
	})
	if _, err := tr.m.Complete(ctx, Demand{Client: "alice"}, ask("What is 3 + 3?"), nil); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("alice's second request: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("first request: %v", err)
	}
	<-block
}
