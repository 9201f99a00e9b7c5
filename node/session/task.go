package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// errClientGone is a streamed answer's reader gone: the task ends, and the
// miner is not to blame.
var errClientGone = errors.New("the client stopped reading the answer")

// errCancelled is a task its client gave up on.
var errCancelled = errors.New("cancelled by its client")

// outcome is a call's result, or why it failed.
type outcome struct {
	call *call
	err  error
}

// runTask runs one task to its outcome on its own goroutine: on
// redundancy miners, retrying on other miners those that fail, then
// scoring the answers' agreement. It works on t, the task as it was when
// it started, and reports every change to the worker.
func (w *worker) runTask(ctx context.Context, lt *liveTask, t Task, p Params, miners []*held) {
	need := p.Redundancy
	mode := pb.TaskMode_TASK_MODE_STREAM
	if need > 1 {
		mode = pb.TaskMode_TASK_MODE_COMMIT_REVEAL
	}
	var (
		good     []*call
		tried    []peer.ID
		streamed bool
	)
	for round := 0; ; round++ {
		var deltas func(string) error
		if lt.onDelta != nil && !streamed {
			deltas = func(s string) error {
				streamed = true
				if err := lt.onDelta(s); err != nil {
					return fmt.Errorf("%w: %v", errClientGone, err)
				}
				return nil
			}
		}
		calls := w.m.dispatch(ctx, &t, miners, mode, lt.deadline, deltas)
		var failed []outcome
		var failedOn []*held
		for i, c := range calls {
			tried = append(tried, miners[i].miner)
			if c.err == nil {
				good = append(good, c.call)
				continue
			}
			failed, failedOn = append(failed, c), append(failedOn, miners[i])
		}
		w.post(func() { w.roundDone(lt, miners, failedOn, failed) })
		if len(good) >= need {
			break
		}
		why := stopReason(ctx, streamed, round, len(good), p)
		if why == "" {
			var err error
			if miners, err = w.retryMiners(ctx, lt, need-len(good), tried); err != nil {
				why = cmp.Or(stopReason(ctx, streamed, round, len(good), p), fmt.Sprintf("%s for a retry: %v", ErrNoMiner, err))
			}
		}
		if why != "" {
			w.post(func() { w.taskFailed(lt, why) })
			return
		}
	}
	w.conclude(ctx, lt, good)
}

// stopReason is why a task with too few answers after a round must stop,
// or "" if it may try other miners.
func stopReason(ctx context.Context, streamed bool, round, good int, p Params) string {
	switch {
	case errors.Is(context.Cause(ctx), errCancelled):
		return errCancelled.Error()
	case ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return "session ended while the task ran"
	case streamed:
		return ErrStreamBroken.Error()
	case ctx.Err() != nil:
		return fmt.Sprintf("no answer within the task timeout (%s)", p.TaskTimeout)
	case round+1 >= maxRounds:
		return fmt.Sprintf("%d of %d miners answered after %d rounds", good, p.Redundancy, maxRounds)
	}
	return ""
}

// retryMiners asks the worker for n miners not in tried, and waits for
// them until the task's deadline.
func (w *worker) retryMiners(ctx context.Context, lt *liveTask, n int, tried []peer.ID) ([]*held, error) {
	mw := &minerWait{lt: lt, n: n, exclude: tried, reply: make(chan []*held, 1)}
	if !w.post(func() { w.waiters = append(w.waiters, mw) }) {
		return nil, ErrEnded
	}
	select {
	case hs, ok := <-mw.reply:
		if !ok {
			return nil, errors.New("none was free before the task's deadline")
		}
		return hs, nil
	case <-ctx.Done():
		// Miners given after all are handed back.
		w.post(func() {
			if i := slices.Index(w.waiters, mw); i >= 0 {
				w.waiters = append(w.waiters[:i], w.waiters[i+1:]...)
				return
			}
			if hs, ok := <-mw.reply; ok {
				w.give(hs)
			}
		})
		return nil, context.Cause(ctx)
	}
}

// dispatch sends the task to miners at once and waits for them all. In
// commit-reveal mode no miner is asked to reveal before every miner has
// committed or failed.
func (m *Manager) dispatch(ctx context.Context, t *Task, miners []*held, mode pb.TaskMode, deadline time.Time, onDelta func(string) error) []outcome {
	out := make([]outcome, len(miners))
	committed := make(chan error, len(miners))
	reveal := make(chan struct{})
	var commitments uint32 // set before reveal is closed, read after
	var wg sync.WaitGroup
	for i, h := range miners {
		c, err := m.sealTask(t, h, mode, deadline)
		if err != nil {
			out[i] = outcome{err: err}
			committed <- err
			continue
		}
		out[i].call = c
		wg.Go(func() {
			if mode == pb.TaskMode_TASK_MODE_STREAM {
				out[i].err = m.streamCall(ctx, c, onDelta)
			} else {
				out[i].err = m.commitCall(ctx, c, committed, reveal, &commitments)
			}
			if out[i].err != nil && ctx.Err() != nil {
				// The stream was cut because the task ran out of time or
				// the session ended: say which, not what the reset looked like.
				out[i].err = fmt.Errorf("%w (%v)", context.Cause(ctx), out[i].err)
			}
		})
	}
	if mode == pb.TaskMode_TASK_MODE_COMMIT_REVEAL {
		for range miners {
			if <-committed == nil {
				commitments++
			}
		}
		close(reveal)
	}
	wg.Wait()
	return out
}

// roundDone takes back a round's miners: those that answered are free
// again, those that failed leave the session, released as failed.
func (w *worker) roundDone(lt *liveTask, miners, failedOn []*held, failed []outcome) {
	lt.t.Attempts++
	for i, h := range failedOn {
		err := failed[i].err
		if errors.Is(err, context.Canceled) || errors.Is(err, errClientGone) || errors.Is(err, errCancelled) {
			continue // the session is ending, or its client left: not the miner's fault
		}
		w.m.log.Warn("miner failed a task", "session", w.id, "task", lt.t.ID, "miner", h.miner, "reservation", h.res.ID, "err", err)
		if errors.Is(err, errBadReveal) {
			w.m.d.Pool.RecordFault(h.miner)
		}
		lt.t.Answers = append(lt.t.Answers, Answer{
			Miner: h.miner.String(), Generation: h.res.Generation, Reservation: h.res.ID, Error: err.Error(),
		})
		w.drop(h, HoldFailed, err.Error(), pb.Outcome_FAILED)
	}
	for _, h := range miners {
		h.tasks++
	}
	w.give(miners)
	lt.publish()
}

// conclude scores the answers on the task's goroutine (comparing them may
// call an embedding model), then has the worker keep them on the task and
// drop miners the others out-voted.
func (w *worker) conclude(ctx context.Context, lt *liveTask, calls []*call) {
	outputs := make([]string, len(calls))
	for i, c := range calls {
		outputs[i] = c.result.Msg.Output
		w.m.d.Router.ObserveLatency(c.miner, c.roundTrip)
	}
	v, err := w.m.agree(ctx, outputs)
	w.post(func() {
		if err != nil {
			w.taskFailed(lt, "compare answers: "+err.Error())
			return
		}
		w.taskDone(lt, calls, outputs, v)
	})
}

func (w *worker) taskDone(lt *liveTask, calls []*call, outputs []string, v verdict) {
	byMiner := map[peer.ID]*held{}
	for _, h := range w.held {
		byMiner[h.miner] = h
	}
	var outvoted []*held
	for i, c := range calls {
		r := c.result.Msg
		a := Answer{
			Miner: c.miner.String(), Model: r.Model, Output: r.Output,
			PromptTokens: int(r.PromptTokens), CompletionTokens: int(r.CompletionTokens),
			EngineMs: int64(r.LatencyMs), RoundTripMs: c.roundTrip.Milliseconds(), Accepted: v.accepted[i],
		}
		if len(calls) > 1 {
			s := v.similarity[i]
			a.Similarity = &s
		}
		if h := byMiner[c.miner]; h != nil {
			a.Generation, a.Reservation = h.res.Generation, h.res.ID
			if a.Accepted {
				w.s.Miners[h.idx].Tasks++
			} else if v.outvoted[i] {
				outvoted = append(outvoted, h)
			}
		}
		lt.t.Answers = append(lt.t.Answers, a)
	}
	now := w.m.now()
	lt.t.State, lt.t.Finished = TaskDone, now
	lt.t.RunMs = now.Sub(lt.t.Started).Milliseconds()
	lt.t.Answer = outputs[v.chosen]
	if len(calls) > 1 {
		a := v.agreement
		lt.t.Agreement = &a
		w.s.AgreementSum += a
		w.s.AgreementN++
	}
	w.s.Completed++
	w.m.tasksDone.Add(1)
	for _, h := range outvoted {
		w.m.log.Warn("miner out-voted", "session", w.id, "task", lt.t.ID, "miner", h.miner, "reservation", h.res.ID)
		w.m.d.Pool.RecordFault(h.miner)
		w.drop(h, HoldFailed, "out-voted on task "+lt.t.ID, pb.Outcome_FAILED)
	}
	w.closeTask(lt)
}

// taskFailed ends a running task without an answer.
func (w *worker) taskFailed(lt *liveTask, why string) {
	w.waiters = deleteWaits(w.waiters, lt)
	w.fail(lt, why)
}

func deleteWaits(ws []*minerWait, lt *liveTask) []*minerWait {
	out := ws[:0]
	for _, mw := range ws {
		if mw.lt != lt {
			out = append(out, mw)
		}
	}
	return out
}

// fail ends a task without an answer.
func (w *worker) fail(lt *liveTask, why string) {
	now := w.m.now()
	lt.t.State, lt.t.Finished, lt.t.Error = TaskFailed, now, why
	if !lt.t.Started.IsZero() {
		lt.t.RunMs = now.Sub(lt.t.Started).Milliseconds()
	}
	w.s.Failed++
	w.m.tasksFailed.Add(1)
	w.m.log.Warn("task failed", "session", w.id, "task", lt.t.ID, "why", why)
	w.closeTask(lt)
}

// closeTask stores a finished task and wakes whoever waits for it.
func (w *worker) closeTask(lt *liveTask) {
	if stop, ok := w.running[lt]; ok {
		stop()
		lt.cancel(nil)
		delete(w.running, lt)
	}
	t := lt.t
	if w.m.d.ObserveTask != nil {
		queued := time.Duration(t.QueueMs) * time.Millisecond
		if t.Started.IsZero() { // it never got its miners
			queued = t.Finished.Sub(t.Created)
		}
		w.m.d.ObserveTask(t.State, queued, time.Duration(t.RunMs)*time.Millisecond)
	}
	lt.publish()
	if w.warm == nil {
		if err := w.save(lt, true); err != nil {
			w.m.log.Error("store task", "session", w.id, "task", t.ID, "err", err)
		}
	} else {
		// A warm session's tasks live as long as their request.
		w.tasksMu.Lock()
		delete(w.tasks, t.ID)
		w.tasksMu.Unlock()
	}
	close(lt.done)
}
