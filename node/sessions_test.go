package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/testnet"
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
	tn := startTestnet(t, testnet.Spec{Network: "sess3", Bootstraps: 1, Oracles: 3, Miners: 3, Routers: 1})
	nodes := tn.Nodes()
	waitPool(t, inProcess(t, nodes[0]), "3 available miners", 60*time.Second, func(v poolView) bool {
		return v.Count("available") == 3
	})
	r := routersOf(t, tn)[0]
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
	task, err := sm.Submit(ctx, s.ID, ask("What is 17 + 25?"))
	if err != nil {
		t.Fatal(err)
	}
	task, err = sm.Task(ctx, s.ID, task.ID, 45*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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
