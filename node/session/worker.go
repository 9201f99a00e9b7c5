package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// tickEvery is how often a worker looks at its clock-driven duties: the
	// queue's deadlines, idle miners, a reservation to retry.
	tickEvery = 250 * time.Millisecond
	// reserveWaitMin and reserveWaitMax bound the wait between reservation
	// attempts while the pool has no miner to give.
	reserveWaitMin = 100 * time.Millisecond
	reserveWaitMax = 2 * time.Second
	// maxRounds bounds the dispatch rounds of one task: the first and its retries.
	maxRounds = 4
	// releaseTimeout bounds releasing one miner.
	releaseTimeout = 10 * time.Second
	// keepHoldings is how many ended holdings a warm session keeps on show;
	// it holds many miners over its life.
	keepHoldings = 32
)

// worker runs one session. Its goroutine owns the session's state: every
// change happens there, as a closure sent on inbox, and the worker then
// publishes a copy that readers take without waiting (see snapshot). Tasks
// run on goroutines of their own, which report back through inbox.
type worker struct {
	m     *Manager
	id    string
	warm  *warmSpec // nil for a user's session
	inbox chan func()
	done  chan struct{} // closed when the goroutine has returned
	stop  context.CancelFunc

	snap atomic.Pointer[Session]

	// Owned by the goroutine.
	s          Session
	queue      []*liveTask
	running    map[*liveTask]context.CancelFunc
	waiters    []*minerWait
	held       []*held
	reserving  bool
	nextTry    time.Time     // no reservation before this, after a failed one
	tryWait    time.Duration // the wait after the next failure
	ending     string
	finishing  bool
	taskCtx    context.Context // parent of every task's context; ends with the session
	cancelRuns context.CancelFunc

	tasksMu sync.Mutex // guards tasks, the index API calls look tasks up in
	tasks   map[string]*liveTask
	saveMu  sync.Mutex // orders the store writes of this session and its tasks
}

type liveTask struct {
	snap    atomic.Pointer[Task] // the task as last published
	done    chan struct{}        // closed when the task has finished
	onDelta func(string) error

	// Owned by the worker goroutine.
	t        Task
	until    time.Time               // fails with ErrNoMiner if still queued then
	deadline time.Time               // the task timeout, once started
	cancel   context.CancelCauseFunc // cuts the running task short
}

func (lt *liveTask) publish() {
	t := cloneTask(lt.t)
	lt.snap.Store(&t)
}

// held is one reservation a session serves with.
type held struct {
	res       router.Reservation
	miner     peer.ID
	idx       int // its entry in Session.Miners
	busy      bool
	since     time.Time // reserved
	idleSince time.Time
	tasks     int // tasks it took part in
}

// minerWait is a running task's request for miners to retry on.
type minerWait struct {
	lt      *liveTask
	n       int
	exclude []peer.ID
	reply   chan []*held // buffered: the worker never blocks on it
}

func newWorker(m *Manager, s Session, warm *warmSpec) *worker {
	w := &worker{
		m: m, id: s.ID, warm: warm, s: s,
		inbox:   make(chan func(), 64),
		done:    make(chan struct{}),
		running: map[*liveTask]context.CancelFunc{},
		tasks:   map[string]*liveTask{},
		tryWait: reserveWaitMin,
	}
	w.publish()
	return w
}

// post runs f on the worker's goroutine; false if the worker has returned.
func (w *worker) post(f func()) bool {
	select {
	case w.inbox <- f:
		return true
	case <-w.done:
		return false
	}
}

// call runs f on the worker's goroutine and waits for it to have run.
func (w *worker) call(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	if !w.post(func() { f(); close(ran) }) {
		return ErrEnded
	}
	select {
	case <-ran:
		return nil
	case <-w.done:
		select {
		case <-ran:
			return nil
		default:
			return ErrEnded
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// view is the session as last published.
func (w *worker) view() Session { return *w.snap.Load() }

// publish makes the state readable by everyone.
func (w *worker) publish() {
	s := w.s
	s.Miners = slices.Clone(w.s.Miners)
	s.Queued = len(w.queue)
	if s.AgreementN > 0 {
		a := s.AgreementSum / float64(s.AgreementN)
		s.MeanAgreement = &a
	}
	w.snap.Store(&s)
}

func (w *worker) task(id string) (*liveTask, bool) {
	w.tasksMu.Lock()
	defer w.tasksMu.Unlock()
	lt, ok := w.tasks[id]
	return lt, ok
}

// start runs the worker until the session ends.
func (w *worker) start(ctx context.Context) {
	ctx, w.stop = context.WithCancel(ctx)
	w.taskCtx, w.cancelRuns = context.WithCancel(ctx)
	w.m.wg.Add(1)
	go func() {
		defer w.m.wg.Done()
		defer close(w.done)
		w.run(ctx)
	}()
}

func (w *worker) run(ctx context.Context) {
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	var periodEnd <-chan time.Time
	if w.warm == nil {
		t := time.NewTimer(time.Until(w.s.Ends))
		defer t.Stop()
		periodEnd = t.C
	}
	stopped := ctx.Done()
	for {
		w.step()
		w.publish()
		if w.finishing && len(w.running) == 0 && !w.reserving {
			w.finish()
			return
		}
		select {
		case f := <-w.inbox:
			f()
		case <-tick.C:
			// Lost reservations are rare: looked for on the clock, not on
			// every task.
			w.dropLost()
		case <-periodEnd:
			w.endFor(EndReservePeriod)
		case <-stopped:
			stopped = nil
			w.endFor(EndShutdown)
		}
	}
}

// endFor starts ending the session for reason: running tasks are cut short,
// and once they and any reservation on its way are back, finish releases
// every miner.
func (w *worker) endFor(reason string) {
	if w.finishing {
		return
	}
	if w.ending == "" {
		w.ending = reason
	}
	w.finishing = true
	w.cancelRuns()
}

// step does what the state asks for now: fail tasks that waited too long,
// give miners to retries and queued tasks, give back idle or used-up ones,
// and reserve more when tasks wait.
func (w *worker) step() {
	if w.finishing {
		return
	}
	now := w.m.now()
	if now.After(w.s.Ends) && w.warm == nil {
		w.endFor(EndReservePeriod)
		return
	}
	w.expire(now)
	w.serveWaiters()
	w.dispatchQueue(now)
	w.retire(now)
	w.grow(now)
	if w.warm == nil && w.s.Completed+w.s.Failed >= w.s.Params.MaxTasks {
		w.endFor(EndMaxTasks)
	}
}

// free lists the held miners that can take a task now, never one in exclude.
func (w *worker) free(exclude []peer.ID) []*held {
	var out []*held
	for _, h := range w.held {
		if !h.busy && !slices.Contains(exclude, h.miner) {
			out = append(out, h)
		}
	}
	return out
}

func (w *worker) take(hs []*held) {
	for _, h := range hs {
		h.busy = true
		w.m.noteBusy(w, h, true)
	}
}

// give makes miners free again after a task round.
func (w *worker) give(hs []*held) {
	now := w.m.now()
	for _, h := range hs {
		if h.busy && slices.Contains(w.held, h) {
			h.busy, h.idleSince = false, now
			w.m.noteBusy(w, h, false)
		}
	}
}

// expire fails the queued tasks that have waited as long as they may.
func (w *worker) expire(now time.Time) {
	w.queue = slices.DeleteFunc(w.queue, func(lt *liveTask) bool {
		if now.Before(lt.until) {
			return false
		}
		w.m.queued.Add(-1)
		why := fmt.Sprintf("%s within %s", ErrNoMiner, lt.until.Sub(lt.t.Created).Round(time.Millisecond))
		if w.s.Params.Model != "" {
			why += fmt.Sprintf(": every miner serving %q is busy", w.s.Params.Model)
		}
		w.fail(lt, why)
		return true
	})
	w.waiters = slices.DeleteFunc(w.waiters, func(mw *minerWait) bool {
		if now.Before(mw.lt.deadline) {
			return false
		}
		close(mw.reply)
		return true
	})
}

// serveWaiters gives free miners to running tasks that retry, first.
func (w *worker) serveWaiters() {
	w.waiters = slices.DeleteFunc(w.waiters, func(mw *minerWait) bool {
		free := w.free(mw.exclude)
		if len(free) < mw.n {
			return false
		}
		w.take(free[:mw.n])
		mw.reply <- free[:mw.n]
		return true
	})
}

// dispatchQueue starts queued tasks, in order, while miners are free: a
// session holding k miners with redundancy r runs up to k/r tasks at once.
func (w *worker) dispatchQueue(now time.Time) {
	need := w.s.Params.Redundancy
	for len(w.queue) > 0 && len(w.waiters) == 0 {
		free := w.free(nil)
		if len(free) < need {
			return
		}
		lt := w.queue[0]
		w.queue = w.queue[1:]
		w.m.queued.Add(-1)
		miners := free[:need]
		w.take(miners)
		lt.t.State, lt.t.Started = TaskRunning, now
		lt.t.QueueMs = now.Sub(lt.t.Created).Milliseconds()
		lt.deadline = now.Add(w.s.Params.TaskTimeout.Std())
		ctx, cancel := context.WithCancelCause(w.taskCtx)
		ctx, stop := context.WithDeadline(ctx, lt.deadline)
		w.running[lt] = stop
		lt.cancel = cancel
		lt.publish()
		// Not stored: a task found running after a crash is queued again,
		// as one found queued is.
		go w.runTask(ctx, lt, cloneTask(lt.t), w.s.Params, miners)
	}
}

// retire gives back the miners a warm session no longer needs: idle for
// idle_release, or at the end of their reservation's bounds.
func (w *worker) retire(now time.Time) {
	if w.warm == nil {
		return
	}
	for _, h := range slices.Clone(w.held) {
		if h.busy {
			continue
		}
		switch {
		case h.tasks >= w.warm.maxTasks:
			w.drop(h, HoldReleased, fmt.Sprintf("served its %d tasks", h.tasks), pb.Outcome_COMPLETED)
		case now.Sub(h.since) >= w.warm.period:
			w.drop(h, HoldReleased, "reserved for "+w.warm.period.String(), pb.Outcome_COMPLETED)
		case len(w.queue) == 0 && len(w.waiters) == 0 && now.Sub(h.idleSince) >= w.warm.idle:
			w.m.idleReleases.Add(1)
			w.drop(h, HoldReleased, "idle for "+w.warm.idle.String(), pb.Outcome_COMPLETED)
		}
	}
}

// wanted is how many more miners the session could use now: to keep
// min_nodes, and for the tasks and retries that wait.
func (w *worker) wanted() int {
	missing := w.s.Params.MinNodes - len(w.held)
	short := 0
	for _, mw := range w.waiters {
		short += mw.n
	}
	short += len(w.queue) * w.s.Params.Redundancy
	short -= len(w.free(nil))
	return min(max(missing, short), w.s.Params.MaxNodes-len(w.held))
}

// grow reserves one more miner when the session wants one; one at a time,
// so that two attempts never race for the same miner.
func (w *worker) grow(now time.Time) {
	if w.reserving || w.wanted() <= 0 || now.Before(w.nextTry) {
		return
	}
	var exclude []peer.ID
	for _, h := range w.s.Miners {
		if id, err := peer.Decode(h.Miner); err == nil && (h.State == HoldActive || h.State == HoldFailed) {
			exclude = append(exclude, id)
		}
	}
	for _, mw := range w.waiters {
		exclude = append(exclude, mw.exclude...)
	}
	w.reserving = true
	req := router.Request{Model: w.s.Params.Model, Session: w.id, Exclude: exclude}
	ctx := w.taskCtx
	go func() {
		res, err := w.m.d.Router.ReserveFor(ctx, req)
		if !w.post(func() { w.reserved(res, err) }) && err == nil {
			w.m.release(res, pb.Outcome_CANCELLED)
		}
	}()
}

// reserved takes in the outcome of a reservation attempt.
func (w *worker) reserved(res router.Reservation, err error) {
	w.reserving = false
	now := w.m.now()
	if err != nil {
		w.nextTry = now.Add(w.tryWait)
		w.tryWait = min(2*w.tryWait, reserveWaitMax)
		return
	}
	w.tryWait = reserveWaitMin
	id, derr := peer.Decode(res.Miner)
	if w.finishing || derr != nil {
		w.m.releaseLater(res, pb.Outcome_CANCELLED)
		return
	}
	h := &held{res: res, miner: id, idx: len(w.s.Miners), since: now, idleSince: now}
	w.s.Miners = append(w.s.Miners, Holding{
		Reservation: res.ID, Miner: res.Miner, Generation: res.Generation, State: HoldActive, Since: now,
	})
	w.held = append(w.held, h)
	w.m.noteHeld(w, 1)
	w.trimHoldings()
	w.saveSessionLogged()
}

// trimHoldings forgets a warm session's oldest ended holdings.
func (w *worker) trimHoldings() {
	if w.warm == nil {
		return
	}
	ended := len(w.s.Miners) - len(w.held)
	if ended <= keepHoldings {
		return
	}
	drop := ended - keepHoldings
	kept := w.s.Miners[:0]
	for _, hd := range w.s.Miners {
		if drop > 0 && hd.State != HoldActive {
			drop--
			continue
		}
		kept = append(kept, hd)
	}
	w.s.Miners = kept
	for _, h := range w.held {
		h.idx = slices.IndexFunc(w.s.Miners, func(hd Holding) bool { return hd.Reservation == h.res.ID })
	}
}

// dropLost forgets held miners whose reservation ended without the
// session: the lease expired, or the miner refused a renewal.
func (w *worker) dropLost() {
	w.held = slices.DeleteFunc(w.held, func(h *held) bool {
		res, ok := w.m.d.Router.Get(h.res.ID)
		if ok && res.State == router.StateActive {
			return false
		}
		hd := &w.s.Miners[h.idx]
		hd.State, hd.Until = HoldLost, w.m.now()
		if ok {
			hd.Detail = "reservation " + res.State + ": " + res.Detail
		}
		if h.busy {
			w.m.noteBusy(w, h, false)
		}
		w.m.noteHeld(w, -1)
		return true
	})
}

// drop takes h out of the session and releases it in the background: a
// miner that was killed would hold the session up for the release's timeout.
func (w *worker) drop(h *held, state, detail string, o pb.Outcome) {
	i := slices.Index(w.held, h)
	if i < 0 {
		return
	}
	w.held = slices.Delete(w.held, i, i+1)
	if h.busy {
		w.m.noteBusy(w, h, false)
	}
	w.m.noteHeld(w, -1)
	hd := &w.s.Miners[h.idx]
	hd.State, hd.Until, hd.Detail = state, w.m.now(), detail
	w.m.releaseLater(h.res, o)
	w.saveSessionLogged()
}

// finish ends the session: it fails what is queued and releases every
// miner held. A session stopped by a shutdown ends the same way, so no
// miner stays reserved for it.
func (w *worker) finish() {
	for _, lt := range w.queue {
		w.m.queued.Add(-1)
		w.fail(lt, "session ended before the task ran: "+w.ending)
	}
	w.queue = nil
	var wg sync.WaitGroup
	for _, h := range w.held {
		wg.Go(func() { w.m.release(h.res, pb.Outcome_COMPLETED) })
	}
	wg.Wait()
	now := w.m.now()
	for _, h := range w.held {
		hd := &w.s.Miners[h.idx]
		hd.State, hd.Until = HoldReleased, now
	}
	w.m.noteHeld(w, -len(w.held))
	released := len(w.held)
	w.held = nil
	w.s.State, w.s.EndReason, w.s.Ended = StateEnded, w.ending, now
	w.m.ended.Add(1)
	w.publish()
	w.saveSessionLogged()
	w.m.log.Info("session ended", "session", w.id, "reason", w.ending, "miners_released", released)
	w.m.sessionEnded(w)
}

// release ends a reservation, logging what goes wrong.
func (m *Manager) release(res router.Reservation, o pb.Outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if _, err := m.d.Router.Release(ctx, res.ID, o); err != nil && !errors.Is(err, router.ErrEnded) {
		m.log.Warn("release", "reservation", res.ID, logging.Opt("session", res.Session), "miner", res.Miner, "err", err)
	}
}

// releaseLater releases in the background, within the manager's life.
func (m *Manager) releaseLater(res router.Reservation, o pb.Outcome) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.release(res, o)
	}()
}

// reconcileLoop releases reservations made for sessions that no longer
// hold them: a session that ended while a reservation was on its way in, or
// that a crash took away.
func (m *Manager) reconcileLoop(ctx context.Context) {
	defer m.wg.Done()
	wait.Every(ctx, reconcileEvery, m.reconcile)
}

const (
	// reconcileEvery is how often reservations serving no session are looked for.
	reconcileEvery = 5 * time.Second
	// orphanAge is how old a reservation serving no session must be before
	// it is released: younger ones may be on their way into a session.
	orphanAge = 30 * time.Second
)

func (m *Manager) reconcile(ctx context.Context) {
	now := m.now()
	for _, res := range m.d.Router.Reservations() {
		if res.Session == "" || res.State != router.StateActive || now.Sub(res.Created) < orphanAge {
			continue
		}
		m.mu.Lock()
		w, ok := m.sessions[res.Session]
		m.mu.Unlock()
		if ok && slices.ContainsFunc(w.view().Miners, func(h Holding) bool { return h.Reservation == res.ID && h.State == HoldActive }) {
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
