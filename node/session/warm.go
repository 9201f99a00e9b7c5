package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
)

// Errors of the OpenAI-compatible path; the API maps each to a status.
var (
	// ErrUnknownModel is a model no miner of the pool serves (404).
	ErrUnknownModel = errors.New("no miner of the pool serves this model")
	// ErrBusy is a served model whose miners stayed busy for as long as a
	// request may wait, or a client at its limit of requests at once (429).
	ErrBusy = errors.New("every miner serving this model is busy")
)

// Demand is what a chat completion asks for: the warm session that serves
// it is the one for its model, redundancy and client.
type Demand struct {
	Model      string // "" for any model the pool serves
	Redundancy int
	Client     string // the API token's name, or "" where tokens are not used
}

type warmKey = Demand

// warmSpec bounds what a warm session holds and how long it keeps it.
type warmSpec struct {
	idle     time.Duration // a miner idle this long goes back to the pool
	maxTasks int           // tasks one reservation serves at most
	period   time.Duration // how long one reservation serves at most
}

// Completion is a chat completion's outcome: the task, in the warm session
// that ran it.
type Completion struct {
	Session string
	Task    Task
}

// Complete runs one prompt on the warm session for d, opened on the first
// request and grown while requests queue, as the OpenAI-compatible
// endpoint does. onDelta, when set and one miner answers, receives the
// answer as the miner produces it. If ctx ends first, the task is
// cancelled.
func (m *Manager) Complete(ctx context.Context, d Demand, q TaskRequest, onDelta func(string) error) (Completion, error) {
	m.requests.Add(1)
	if d.Redundancy == 0 {
		d.Redundancy = 1
	}
	if d.Redundancy > 1 {
		onDelta = nil
	}
	if err := q.check(); err != nil {
		return Completion{}, err
	}
	if err := m.checkModel(d.Model); err != nil {
		return Completion{}, err
	}
	leave, err := m.enter(d.Client)
	if err != nil {
		return Completion{}, err
	}
	defer leave()
	w, err := m.warmFor(d)
	if err != nil {
		return Completion{}, err
	}
	lt, err := w.submit(ctx, q, onDelta, m.d.Config.CompletionWait)
	if errors.Is(err, ErrQueueFull) {
		return Completion{}, fmt.Errorf("%w: %v", ErrBusy, err)
	}
	if err != nil {
		return Completion{}, err
	}
	select {
	case <-lt.done:
	case <-ctx.Done():
		w.post(func() { w.cancelTask(lt) })
		return Completion{}, ctx.Err()
	}
	t := *lt.snap.Load()
	c := Completion{Session: w.id, Task: t}
	if t.State == TaskFailed {
		return c, taskError(t)
	}
	return c, nil
}

// cancelTask gives up on a task its client left: a queued one fails at
// once, a running one is cut short.
func (w *worker) cancelTask(lt *liveTask) {
	if i := slices.Index(w.queue, lt); i >= 0 {
		w.queue = slices.Delete(w.queue, i, i+1)
		w.m.queued.Add(-1)
		w.fail(lt, errCancelled.Error())
		return
	}
	if lt.cancel != nil {
		lt.cancel(errCancelled)
	}
}

// enter counts a client's request in flight, refusing one beyond its
// limit; leave counts it out.
func (m *Manager) enter(client string) (leave func(), err error) {
	limit := m.d.Config.MaxPerClient
	if client == "" || limit <= 0 {
		return func() {}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.clients[client] >= limit {
		return nil, fmt.Errorf("%w: %d requests of this client are in flight, its limit", ErrBusy, limit)
	}
	m.clients[client]++
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.clients[client]--; m.clients[client] <= 0 {
			delete(m.clients, client)
		}
	}, nil
}

// warmFor returns the warm session for d, opening it on first use.
func (m *Manager) warmFor(d Demand) (*worker, error) {
	m.mu.Lock()
	w, ok := m.warm[d]
	m.mu.Unlock()
	if ok {
		return w, nil
	}
	c := m.d.Config
	p, err := Params{
		Model: d.Model, Redundancy: d.Redundancy, MinNodes: 1, MaxNodes: max(c.WarmMaxMiners, d.Redundancy),
		ReservePeriod: duration.Duration(MaxReservePeriod), MaxTasks: MaxTasks,
		TaskTimeout: duration.Duration(DefaultTaskTimeout),
	}.WithDefaults()
	if err != nil {
		return nil, err
	}
	p.MinNodes = 0 // a quiet warm session holds nothing
	m.warmMu.Lock()
	defer m.warmMu.Unlock()
	m.mu.Lock()
	w, ok = m.warm[d]
	m.mu.Unlock()
	if ok {
		return w, nil
	}
	w, err = m.openSession(p, &warmSpec{idle: c.IdleRelease, maxTasks: c.WarmMaxTasks, period: c.WarmPeriod})
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.warm[d] = w
	m.mu.Unlock()
	m.log.Info("warm session opened", "session", w.id, "model", d.Model, "redundancy", d.Redundancy, "client", d.Client)
	return w, nil
}

// taskError is the error of a failed task, wrapping ErrBusy when no miner
// could be had.
func taskError(t Task) error {
	switch {
	case strings.HasPrefix(t.Error, ErrNoMiner.Error()):
		return fmt.Errorf("%w: %s", ErrBusy, t.Error)
	case t.Error == ErrStreamBroken.Error():
		return ErrStreamBroken
	}
	return fmt.Errorf("%w: %s", ErrTaskFailed, t.Error)
}

// Models lists the models the miners of the pool serve, busy or not.
func (m *Manager) Models() []string {
	seen := map[string]bool{}
	now := m.now()
	for _, mi := range m.d.Pool.Records() {
		if mi.Expires.Before(now) || m.d.Pool.Penalized(mi.ID) {
			continue
		}
		for _, model := range mi.Models {
			seen[model] = true
		}
	}
	out := make([]string, 0, len(seen))
	for model := range seen {
		out = append(out, model)
	}
	slices.Sort(out)
	return out
}

// checkModel refuses a model no miner of the pool serves; "" is any.
func (m *Manager) checkModel(model string) error {
	if model == "" || slices.Contains(m.Models(), model) {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnknownModel, model)
}

// usage adds up what warm sessions hold and how busy it is, for metrics.
type usage struct {
	mu       sync.Mutex
	held     int           // miners held by warm sessions now
	busy     int           // of which running a task
	heldTime time.Duration // integrated over time, up to last
	busyTime time.Duration
	last     time.Time
}

func (u *usage) advance(now time.Time) {
	if !u.last.IsZero() {
		d := now.Sub(u.last)
		u.heldTime += time.Duration(u.held) * d
		u.busyTime += time.Duration(u.busy) * d
	}
	u.last = now
}

func (m *Manager) noteHeld(w *worker, n int) {
	if w.warm == nil || n == 0 {
		return
	}
	m.use.mu.Lock()
	defer m.use.mu.Unlock()
	m.use.advance(time.Now())
	m.use.held += n
}

func (m *Manager) noteBusy(w *worker, _ *held, busy bool) {
	if w.warm == nil {
		return
	}
	m.use.mu.Lock()
	defer m.use.mu.Unlock()
	m.use.advance(time.Now())
	if busy {
		m.use.busy++
	} else {
		m.use.busy--
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
	// Requests counts chat completions asked for.
	Requests int
	// WarmSessions, WarmMiners and WarmBusy: the warm sessions open, the
	// miners they hold and how many of those run a task now.
	WarmSessions, WarmMiners, WarmBusy int
	// WarmHeldSeconds and WarmBusySeconds integrate WarmMiners and
	// WarmBusy over time: their ratio is the warm miners' utilisation.
	WarmHeldSeconds, WarmBusySeconds float64
	// IdleReleases counts miners warm sessions gave back for want of work.
	IdleReleases int
}

// Stats returns the manager's counters now.
func (m *Manager) Stats() Stats {
	s := Stats{
		Ended: int(m.ended.Load()), Queued: int(m.queued.Load()),
		TasksDone: int(m.tasksDone.Load()), TasksFailed: int(m.tasksFailed.Load()),
		Requests: int(m.requests.Load()), IdleReleases: int(m.idleReleases.Load()),
	}
	m.mu.Lock()
	var sum float64
	var n int
	for _, w := range m.sessions {
		v := w.view()
		if v.State == StateOpen && !v.Warm {
			s.Open++
		}
		sum += v.AgreementSum
		n += v.AgreementN
	}
	s.WarmSessions = len(m.warm)
	m.mu.Unlock()
	if n > 0 {
		s.MeanAgreement = sum / float64(n)
	}
	m.use.mu.Lock()
	m.use.advance(time.Now())
	s.WarmMiners, s.WarmBusy = m.use.held, m.use.busy
	s.WarmHeldSeconds, s.WarmBusySeconds = m.use.heldTime.Seconds(), m.use.busyTime.Seconds()
	m.use.mu.Unlock()
	return s
}
