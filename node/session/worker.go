package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// topUpEvery is how often a session short of min_nodes tries to reserve.
	topUpEvery = time.Second
	// reserveWaitMax caps the wait between reservation attempts of a task
	// that finds no miner.
	reserveWaitMax = 2 * time.Second
	// maxRounds bounds the dispatch rounds of one task: the first and its retries.
	maxRounds = 4
	// releaseTimeout bounds releasing one miner.
	releaseTimeout = 10 * time.Second
	// reconcileEvery is how often reservations serving no session are looked for.
	reconcileEvery = 5 * time.Second
	// orphanAge is how old a reservation serving no session must be before
	// it is released: younger ones may be on their way into a session.
	orphanAge = 30 * time.Second
)

// work is a session's worker: it keeps min_nodes miners reserved, runs the
// queued tasks one after another, and ends the session when it is asked to,
// when its task limit is reached or when its reservation period is over.
func (m *Manager) work(ctx context.Context, l *live) {
	defer m.wg.Done()
	defer close(l.done)
	reason := m.loop(ctx, l)
	m.finish(l, reason)
}

func (m *Manager) loop(ctx context.Context, l *live) string {
	m.mu.Lock()
	ends := l.s.Ends
	m.mu.Unlock()
	periodEnd := time.NewTimer(time.Until(ends))
	defer periodEnd.Stop()
	topUp := time.NewTicker(topUpEvery)
	defer topUp.Stop()
	for {
		if reason := m.endReason(ctx, l); reason != "" {
			return reason
		}
		if !m.now().Before(ends) {
			return EndReservePeriod
		}
		m.topUp(ctx, l)
		if lt := m.next(l); lt != nil {
			m.execute(ctx, l, lt)
			m.mu.Lock()
			limit := l.s.Completed+l.s.Failed >= l.s.Params.MaxTasks
			m.mu.Unlock()
			if limit {
				return EndMaxTasks
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-l.wake:
		case <-periodEnd.C:
		case <-topUp.C:
		}
	}
}

// endReason is why the worker must stop, or "".
func (m *Manager) endReason(ctx context.Context, l *live) string {
	if ctx.Err() == nil {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.ending == "" {
		l.ending = EndShutdown
	}
	return l.ending
}

// next returns the first queued task. It stays queued, and counts against
// MaxQueued, until it has its miners (see dequeueLocked).
func (m *Manager) next(l *live) *liveTask {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(l.queue) == 0 {
		return nil
	}
	return l.queue[0]
}

// dequeueLocked takes lt out of the queue; m.mu is held.
func (m *Manager) dequeueLocked(l *live, lt *liveTask) {
	if i := slices.Index(l.queue, lt); i >= 0 {
		l.queue = slices.Delete(l.queue, i, i+1)
		m.queued--
	}
}

// topUp reserves miners until the session holds min_nodes, one attempt
// each; a pool with none free is tried again later.
func (m *Manager) topUp(ctx context.Context, l *live) {
	m.mu.Lock()
	missing := l.s.Params.MinNodes - len(l.held)
	m.mu.Unlock()
	for range missing {
		if _, err := m.reserve(ctx, l, nil); err != nil {
			return
		}
	}
}

// reserve adds one miner to the session, never one it already holds or
// that failed it.
func (m *Manager) reserve(ctx context.Context, l *live, exclude []peer.ID) (*held, error) {
	m.mu.Lock()
	for _, h := range l.s.Miners {
		if id, err := peer.Decode(h.Miner); err == nil && (h.State == HoldActive || h.State == HoldFailed) {
			exclude = append(exclude, id)
		}
	}
	model, sessionID := l.s.Params.Model, l.s.ID
	m.mu.Unlock()
	res, err := m.d.Router.ReserveFor(ctx, router.Request{Model: model, Session: sessionID, Exclude: exclude})
	if err != nil {
		return nil, err
	}
	id, err := peer.Decode(res.Miner)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	h := &held{res: res, miner: id, idx: len(l.s.Miners)}
	l.s.Miners = append(l.s.Miners, Holding{
		Reservation: res.ID, Miner: res.Miner, Generation: res.Generation, State: HoldActive, Since: m.now(),
	})
	l.held = append(l.held, h)
	m.mu.Unlock()
	if err := m.saveSession(l); err != nil {
		m.log.Error("store session", "session", l.s.ID, "err", err)
	}
	return h, nil
}

// acquire returns n miners of the session not in tried, reserving more (up
// to max_nodes) when it holds too few, and waiting for the pool until
// deadline when it has none to give.
func (m *Manager) acquire(ctx context.Context, l *live, n int, tried []peer.ID, deadline time.Time) ([]*held, error) {
	wait := 100 * time.Millisecond
	var lastErr error
	for {
		m.dropLost(l)
		m.mu.Lock()
		var free []*held
		for _, h := range l.held {
			if !slices.Contains(tried, h.miner) {
				free = append(free, h)
			}
		}
		room := l.s.Params.MaxNodes - len(l.held)
		m.mu.Unlock()
		if len(free) >= n {
			return free[:n], nil
		}
		if room > 0 {
			_, err := m.reserve(ctx, l, tried)
			if err == nil {
				continue
			}
			lastErr = err
		} else {
			lastErr = fmt.Errorf("the session holds max_nodes (%d) miners", l.s.Params.MaxNodes)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, lastErr
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, reserveWaitMax)
	}
}

// dropLost forgets held miners whose reservation ended without the
// session: the lease expired, or the miner refused a renewal.
func (m *Manager) dropLost(l *live) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l.held = slices.DeleteFunc(l.held, func(h *held) bool {
		res, ok := m.d.Router.Get(h.res.ID)
		if ok && res.State == router.StateActive {
			return false
		}
		hd := &l.s.Miners[h.idx]
		hd.State, hd.Until = HoldLost, m.now()
		if ok {
			hd.Detail = "reservation " + res.State + ": " + res.Detail
		}
		return true
	})
}

// execute runs one task to its outcome: on redundancy miners, retrying on
// other miners those that fail, then scoring the answers' agreement.
func (m *Manager) execute(ctx context.Context, l *live, lt *liveTask) {
	m.mu.Lock()
	p := l.s.Params
	onDelta := lt.onDelta
	m.mu.Unlock()
	need := p.Redundancy
	mode := pb.TaskMode_TASK_MODE_STREAM
	if need > 1 {
		mode = pb.TaskMode_TASK_MODE_COMMIT_REVEAL
	}
	m.mu.Lock()
	ends := l.s.Ends
	m.mu.Unlock()
	// A task waits for miners no longer than the queue allows, nor past the
	// end of its session's reservation period.
	waitUntil := m.now().Add(m.d.Config.QueueTimeout)
	if ends.Before(waitUntil) {
		waitUntil = ends
	}
	miners, err := m.acquire(ctx, l, need, nil, waitUntil)
	if err != nil {
		if ctx.Err() != nil {
			return // still queued: the session's next run starts it
		}
		m.mu.Lock()
		m.dequeueLocked(l, lt)
		m.mu.Unlock()
		m.fail(l, lt, fmt.Sprintf("%s within %s: %v", ErrNoMiner, m.d.Config.QueueTimeout, err))
		return
	}
	start := m.now()
	deadline := start.Add(p.TaskTimeout.Std())
	m.mu.Lock()
	m.dequeueLocked(l, lt)
	lt.t.State, lt.t.Started = TaskRunning, start
	lt.t.QueueMs = start.Sub(lt.t.Created).Milliseconds()
	m.mu.Unlock()
	// Not stored: a task found running after a crash is queued again, as one
	// found queued is.

	var (
		good     []*call
		tried    []peer.ID
		streamed bool
	)
	tctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for round := 0; ; round++ {
		m.mu.Lock()
		lt.t.Attempts++
		m.mu.Unlock()
		var deltas func(string) error
		if onDelta != nil && !streamed {
			deltas = func(s string) error {
				streamed = true
				if err := onDelta(s); err != nil {
					return fmt.Errorf("%w: %v", errClientGone, err)
				}
				return nil
			}
		}
		calls := m.dispatch(tctx, l, lt, miners, mode, deadline, deltas)
		for i, c := range calls {
			tried = append(tried, miners[i].miner)
			if c.err == nil {
				good = append(good, c.call)
				continue
			}
			m.recordFailure(l, lt, miners[i], c)
		}
		if len(good) >= need {
			break
		}
		switch {
		case ctx.Err() != nil:
			m.requeue(l, lt)
			return
		case streamed:
			m.fail(l, lt, ErrStreamBroken.Error())
			return
		case tctx.Err() != nil:
			m.fail(l, lt, fmt.Sprintf("no answer within the task timeout (%s)", p.TaskTimeout))
			return
		case round+1 >= maxRounds:
			m.fail(l, lt, fmt.Sprintf("%d of %d miners answered after %d rounds", len(good), need, maxRounds))
			return
		}
		miners, err = m.acquire(tctx, l, need-len(good), tried, deadline)
		if err != nil {
			if ctx.Err() != nil {
				m.requeue(l, lt)
				return
			}
			m.fail(l, lt, fmt.Sprintf("%s for a retry: %v", ErrNoMiner, err))
			return
		}
	}
	m.conclude(ctx, l, lt, good)
}

// errClientGone is a streamed answer's reader gone: the task ends, and the
// miner is not to blame.
var errClientGone = errors.New("the client stopped reading the answer")

// outcome is a call's result, or why it failed.
type outcome struct {
	call *call
	err  error
}

// dispatch sends the task to miners at once and waits for them all. In
// commit-reveal mode no miner is asked to reveal before every miner has
// committed or failed.
func (m *Manager) dispatch(ctx context.Context, l *live, lt *liveTask, miners []*held, mode pb.TaskMode, deadline time.Time, onDelta func(string) error) []outcome {
	m.mu.Lock()
	t := cloneTask(lt.t)
	m.mu.Unlock()
	out := make([]outcome, len(miners))
	committed := make(chan error, len(miners))
	reveal := make(chan struct{})
	var commitments uint32 // set before reveal is closed, read after
	var wg sync.WaitGroup
	for i, h := range miners {
		c, err := m.sealTask(&t, h, mode, deadline)
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

// recordFailure drops a miner that failed a task from the session and
// releases it as failed; a broken commitment also counts against it here.
func (m *Manager) recordFailure(l *live, lt *liveTask, h *held, c outcome) {
	if errors.Is(c.err, context.Canceled) || errors.Is(c.err, errClientGone) {
		return // the session is ending, or its client left: not the miner's fault
	}
	m.log.Warn("miner failed a task", "session", l.s.ID, "task", lt.t.ID, "miner", h.miner, "reservation", h.res.ID, "err", c.err)
	if errors.Is(c.err, errBadReveal) {
		m.d.Pool.RecordFault(h.miner)
	}
	m.mu.Lock()
	lt.t.Answers = append(lt.t.Answers, Answer{
		Miner: h.miner.String(), Generation: h.res.Generation, Reservation: h.res.ID, Error: c.err.Error(),
	})
	m.mu.Unlock()
	m.drop(l, h, HoldFailed, c.err.Error(), pb.Outcome_FAILED)
}

// drop takes h out of the session and releases it in the background: a
// miner that was killed would hold the task up for the release's timeout.
func (m *Manager) drop(l *live, h *held, state, detail string, o pb.Outcome) {
	m.mu.Lock()
	l.held = slices.DeleteFunc(l.held, func(x *held) bool { return x == h })
	hd := &l.s.Miners[h.idx]
	hd.State, hd.Until, hd.Detail = state, m.now(), detail
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.release(h, o)
	}()
}

func (m *Manager) release(h *held, o pb.Outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if _, err := m.d.Router.Release(ctx, h.res.ID, o); err != nil && !errors.Is(err, router.ErrEnded) {
		m.log.Warn("release", "reservation", h.res.ID, logging.Opt("session", h.res.Session), "miner", h.miner, "err", err)
	}
}

// conclude scores the answers, keeps them on the task and drops miners
// the others out-voted.
func (m *Manager) conclude(ctx context.Context, l *live, lt *liveTask, calls []*call) {
	outputs := make([]string, len(calls))
	for i, c := range calls {
		outputs[i] = c.result.Msg.Output
		m.d.Router.ObserveLatency(c.miner, c.roundTrip)
	}
	v, err := m.agree(ctx, outputs)
	if err != nil {
		m.fail(l, lt, "compare answers: "+err.Error())
		return
	}
	m.mu.Lock()
	byMiner := map[peer.ID]*held{}
	for _, h := range l.held {
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
				l.s.Miners[h.idx].Tasks++
			} else if v.outvoted[i] {
				outvoted = append(outvoted, h)
			}
		}
		lt.t.Answers = append(lt.t.Answers, a)
	}
	now := m.now()
	lt.t.State, lt.t.Finished = TaskDone, now
	lt.t.RunMs = now.Sub(lt.t.Started).Milliseconds()
	lt.t.Answer = outputs[v.chosen]
	if len(calls) > 1 {
		a := v.agreement
		lt.t.Agreement = &a
		l.s.AgreementSum += a
		l.s.AgreementN++
	}
	l.s.Completed++
	m.stats.TasksDone++
	m.mu.Unlock()
	for _, h := range outvoted {
		m.log.Warn("miner out-voted", "session", l.s.ID, "task", lt.t.ID, "miner", h.miner, "reservation", h.res.ID)
		m.d.Pool.RecordFault(h.miner)
		m.drop(l, h, HoldFailed, "out-voted on task "+lt.t.ID, pb.Outcome_FAILED)
	}
	m.closeTask(l, lt)
}

// fail ends a task without an answer.
func (m *Manager) fail(l *live, lt *liveTask, why string) {
	m.mu.Lock()
	now := m.now()
	lt.t.State, lt.t.Finished, lt.t.Error = TaskFailed, now, why
	if !lt.t.Started.IsZero() {
		lt.t.RunMs = now.Sub(lt.t.Started).Milliseconds()
	}
	l.s.Failed++
	m.stats.TasksFailed++
	m.mu.Unlock()
	m.log.Warn("task failed", "session", l.s.ID, "task", lt.t.ID, "why", why)
	m.closeTask(l, lt)
}

func (m *Manager) closeTask(l *live, lt *liveTask) {
	if m.d.ObserveTask != nil {
		m.mu.Lock()
		t := lt.t
		m.mu.Unlock()
		queued := time.Duration(t.QueueMs) * time.Millisecond
		if t.Started.IsZero() { // it never got its miners
			queued = t.Finished.Sub(t.Created)
		}
		m.d.ObserveTask(t.State, queued, time.Duration(t.RunMs)*time.Millisecond)
	}
	if err := m.saveBoth(l, lt); err != nil {
		m.log.Error("store task", "session", l.s.ID, "task", lt.t.ID, "err", err)
	}
	close(lt.done)
}

// requeue puts back a task the session stopped working on: the next run
// of the session, after a restart, starts it again.
func (m *Manager) requeue(l *live, lt *liveTask) {
	m.mu.Lock()
	lt.t.State = TaskQueued
	l.queue = append([]*liveTask{lt}, l.queue...)
	m.queued++
	m.mu.Unlock()
	m.saveTaskLogged(l, lt)
}

func (m *Manager) saveTaskLogged(l *live, lt *liveTask) {
	if err := m.saveTask(l, lt); err != nil {
		m.log.Error("store task", "session", l.s.ID, "task", lt.t.ID, "err", err)
	}
}

// finish ends a session for reason: it fails what is queued and releases
// every miner held. A session stopped by a shutdown ends the same way, so
// no miner stays reserved for it.
func (m *Manager) finish(l *live, reason string) {
	m.mu.Lock()
	queue := l.queue
	l.queue = nil
	m.queued -= len(queue)
	holds := l.held
	l.held = nil
	m.mu.Unlock()
	for _, lt := range queue {
		m.fail(l, lt, "session ended before the task ran: "+reason)
	}
	var wg sync.WaitGroup
	for _, h := range holds {
		wg.Go(func() { m.release(h, pb.Outcome_COMPLETED) })
	}
	wg.Wait()
	m.mu.Lock()
	now := m.now()
	for _, h := range holds {
		hd := &l.s.Miners[h.idx]
		hd.State, hd.Until = HoldReleased, now
	}
	l.s.State, l.s.EndReason, l.s.Ended = StateEnded, reason, now
	m.stats.Ended++
	m.mu.Unlock()
	if err := m.saveSession(l); err != nil {
		m.log.Error("store ended session", "session", l.s.ID, "err", err)
	}
	m.log.Info("session ended", "session", l.s.ID, "reason", reason, "miners_released", len(holds))
	m.prune()
}

// reconcileLoop releases reservations made for sessions that no longer
// hold them: a session that ended while a reservation was on its way in, or
// that a crash took away.
func (m *Manager) reconcileLoop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		m.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) reconcile(ctx context.Context) {
	now := m.now()
	for _, res := range m.d.Router.Reservations() {
		if res.Session == "" || res.State != router.StateActive || now.Sub(res.Created) < orphanAge {
			continue
		}
		m.mu.Lock()
		l, ok := m.sessions[res.Session]
		serving := ok && slices.ContainsFunc(l.held, func(h *held) bool { return h.res.ID == res.ID })
		m.mu.Unlock()
		if serving {
			continue
		}
		m.log.Info("releasing a reservation that serves no session", "reservation", res.ID, "session", res.Session, "miner", res.Miner)
		rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
		if _, err := m.d.Router.Release(rctx, res.ID, pb.Outcome_CANCELLED); err != nil && !errors.Is(err, router.ErrEnded) {
			m.log.Warn("release", "reservation", res.ID, logging.Opt("session", res.Session), "miner", res.Miner, "err", err)
		}
		cancel()
	}
}

// Stats are the manager's counters, for metrics.
type Stats struct {
	Open        int
	Ended       int
	Queued      int
	TasksDone   int
	TasksFailed int
	// MeanAgreement over the open and ended sessions in memory.
	MeanAgreement float64
}

// Stats returns the manager's counters now.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Queued = m.queued
	var sum float64
	var n int
	for _, l := range m.sessions {
		if l.s.State == StateOpen {
			s.Open++
		}
		sum += l.s.AgreementSum
		n += l.s.AgreementN
	}
	if n > 0 {
		s.MeanAgreement = sum / float64(n)
	}
	return s
}
