package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

// drive runs sessions on router until work ends: open one with a random
// redundancy, run one to three tasks one after the other, end it. A router
// that is down is waited for. Once work ends, the session open is ended at
// once (its running task abandoned); until ctx ends, the end is retried.
func (c *run) drive(work, ctx context.Context, router string, rng *rand.Rand) {
	for work.Err() == nil {
		redundancy := 1 + rng.IntN(min(2, c.tn.Spec.Miners))
		req := api.SessionRequest{Redundancy: redundancy, MinNodes: redundancy, MaxTasks: 50, ReservePeriod: "5m", TaskTimeout: "30s"}
		var s api.SessionDetail
		status, err := c.postSession(work, router, req, &s)
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
	var task api.Task
	for {
		status, err := c.postTask(work, router, session, api.TaskRequest{Prompt: fmt.Sprintf("What is %d + %d?", a, b)}, &task)
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
		status, err := c.getTask(work, router, session, task.ID, &task)
		switch {
		case err == nil && task.Settled():
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
		var s api.SessionDetail
		status, err := c.deleteSession(ctx, router, id, &s)
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
		var list []api.Session
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err := c.getSessions(ctx, r.name, &list)
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
			if s.State != api.SessionEnded {
				ectx, done := context.WithTimeout(ctx, 60*time.Second)
				c.endSession(ectx, r.name, s.ID)
				done()
			}
		}
	}
	return ctx.Err()
}
