package session

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Config bounds what a router takes on.
type Config struct {
	// MaxSessions bounds the sessions open at once; more answer ErrTooMany.
	MaxSessions int
	// MaxQueued bounds the tasks waiting for miners over every session;
	// more answer ErrQueueFull.
	MaxQueued int
	// QueueTimeout is how long a task may wait for miners before it fails.
	QueueTimeout time.Duration
}

// DefaultConfig is the configuration of a router that sets none.
func DefaultConfig() Config {
	return Config{MaxSessions: 64, MaxQueued: 256, QueueTimeout: time.Minute}
}

// Deps are what a session manager works with.
type Deps struct {
	Check  protocol.Checker
	Host   host.Host // dials miners; a routed host finds their addresses
	Key    crypto.PrivKey
	Store  *store.Store
	Router *router.Router
	Pool   *pool.Pool
	// Embed turns answers into vectors to compare them.
	Embed  func(ctx context.Context, texts []string) ([][]float32, error)
	Config Config
	Log    *slog.Logger
	// ObserveTask, if set, is told of each finished task: "done" or
	// "failed", how long it waited for miners and how long they took.
	ObserveTask func(outcome string, queued, ran time.Duration)
}

// maxHistory is how many ended sessions are kept with their tasks.
const maxHistory = 500

// Manager runs a router's sessions. It is safe for concurrent use.
type Manager struct {
	d    Deps
	self peer.ID
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*live
	queued   int // tasks waiting for miners, over every session
	running  bool
	ctx      context.Context // the workers' parent while running
	cancel   context.CancelFunc
	wg       sync.WaitGroup // workers, releases and the reconcile loop
	stats    Stats
}

// live is a session in memory. Its fields are guarded by Manager.mu.
type live struct {
	s      Session
	tasks  map[string]*liveTask
	queue  []*liveTask
	held   []*held // miners reserved and serving
	wake   chan struct{}
	cancel context.CancelFunc // stops the worker; nil when none runs
	done   chan struct{}      // closed when the worker has returned
	ending string             // why the worker is asked to stop

	saveMu sync.Mutex // orders the store writes of this session and its tasks
}

type liveTask struct {
	t       Task
	done    chan struct{} // closed when the task has finished
	onDelta func(string) error
}

// held is one reservation a session serves with.
type held struct {
	res   router.Reservation
	miner peer.ID
	idx   int // its entry in Session.Miners
}

// New checks d and loads the sessions in the store; the open ones resume
// at Start.
func New(d Deps) (*Manager, error) {
	switch {
	case d.Host == nil || d.Key == nil || d.Store == nil || d.Router == nil || d.Pool == nil || d.Embed == nil:
		return nil, errors.New("session: host, key, store, router, pool and embed are required")
	case d.Config.MaxSessions < 1 || d.Config.MaxQueued < 1 || d.Config.QueueTimeout <= 0:
		return nil, fmt.Errorf("session: config %+v", d.Config)
	}
	self, err := peer.IDFromPrivateKey(d.Key)
	if err != nil {
		return nil, fmt.Errorf("session: identity: %w", err)
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{d: d, self: self, log: d.Log, sessions: map[string]*live{}}
	if err := m.load(); err != nil {
		return nil, fmt.Errorf("session: load: %w", err)
	}
	return m, nil
}

func (m *Manager) now() time.Time {
	if m.d.Check.Now != nil {
		return m.d.Check.Now()
	}
	return time.Now()
}

// Start resumes the open sessions and starts releasing reservations that
// serve no session.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.running = true
	byID := map[string][]router.Reservation{}
	for _, res := range m.d.Router.Reservations() {
		if res.Session != "" && res.State == router.StateActive {
			byID[res.Session] = append(byID[res.Session], res)
		}
	}
	for _, l := range m.sessions {
		if l.s.State != StateOpen {
			continue
		}
		// A session resumes with the reservations that still serve it.
		l.held = nil
		for i := range l.s.Miners {
			h := &l.s.Miners[i]
			if h.State != HoldActive {
				continue
			}
			idx := slices.IndexFunc(byID[l.s.ID], func(r router.Reservation) bool { return r.ID == h.Reservation })
			id, err := peer.Decode(h.Miner)
			if idx < 0 || err != nil {
				h.State, h.Until, h.Detail = HoldLost, m.now(), "not held after the router restarted"
				continue
			}
			l.held = append(l.held, &held{res: byID[l.s.ID][idx], miner: id, idx: i})
		}
		m.startWorkerLocked(l)
	}
	m.wg.Add(1)
	go m.reconcileLoop(m.ctx)
}

func (m *Manager) startWorkerLocked(l *live) {
	ctx, cancel := context.WithCancel(m.ctx)
	l.cancel, l.done = cancel, make(chan struct{})
	m.wg.Add(1)
	go m.work(ctx, l)
}

// Stop ends every open session, as a router shutting down must: its
// queued tasks fail and its miners are released. It waits for that within
// ctx.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return nil
	}
	m.running = false
	var open []*live
	for _, l := range m.sessions {
		if l.s.State == StateOpen && l.cancel != nil {
			if l.ending == "" {
				l.ending = EndShutdown
			}
			l.cancel()
			open = append(open, l)
		}
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for _, l := range open {
			<-l.done
		}
		m.cancel()
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		m.cancel()
		return fmt.Errorf("session: stop: %w", ctx.Err())
	}
}

func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Create opens a session with p (defaults filled in) and starts reserving
// its min_nodes miners.
func (m *Manager) Create(ctx context.Context, p Params) (Session, error) {
	p, err := p.WithDefaults()
	if err != nil {
		return Session{}, err
	}
	id, err := newID()
	if err != nil {
		return Session{}, err
	}
	now := m.now()
	l := &live{
		s: Session{
			ID: id, Params: p, State: StateOpen, Created: now, Ends: now.Add(p.ReservePeriod.Std()),
			Miners: []Holding{},
		},
		tasks: map[string]*liveTask{},
		wake:  make(chan struct{}, 1),
	}
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return Session{}, ErrNotRunning
	}
	open := 0
	for _, o := range m.sessions {
		if o.s.State == StateOpen {
			open++
		}
	}
	if open >= m.d.Config.MaxSessions {
		m.mu.Unlock()
		return Session{}, fmt.Errorf("%w: %d are open, the most this router runs", ErrTooMany, open)
	}
	m.sessions[id] = l
	m.mu.Unlock()
	if err := m.saveSession(l); err != nil {
		m.mu.Lock()
		delete(m.sessions, id)
		m.mu.Unlock()
		return Session{}, err
	}
	m.mu.Lock()
	if m.running {
		m.startWorkerLocked(l)
	}
	s := l.view()
	m.mu.Unlock()
	m.log.Info("session opened", "session", id, "model", p.Model, "redundancy", p.Redundancy, "min_nodes", p.MinNodes, "max_nodes", p.MaxNodes)
	return s, nil
}

// view copies the session for a caller; m.mu is held.
func (l *live) view() Session {
	s := l.s
	s.Miners = slices.Clone(l.s.Miners)
	s.Queued = len(l.queue)
	if s.AgreementN > 0 {
		a := s.AgreementSum / float64(s.AgreementN)
		s.MeanAgreement = &a
	}
	return s
}

// Sessions lists every session, newest first.
func (m *Manager) Sessions() []Session {
	m.mu.Lock()
	out := make([]Session, 0, len(m.sessions))
	for _, l := range m.sessions {
		out = append(out, l.view())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int {
		return cmp.Or(b.Created.Compare(a.Created), strings.Compare(a.ID, b.ID))
	})
	return out
}

// Get returns one session.
func (m *Manager) Get(id string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.sessions[id]
	if !ok {
		return Session{}, fmt.Errorf("%w: session %q", ErrNotFound, id)
	}
	return l.view(), nil
}

// End ends a session on the user's request: its queued tasks fail, the
// running one is abandoned and every miner is released.
func (m *Manager) End(ctx context.Context, id string) (Session, error) {
	return m.end(ctx, id, EndClosed)
}

func (m *Manager) end(ctx context.Context, id, reason string) (Session, error) {
	m.mu.Lock()
	l, ok := m.sessions[id]
	switch {
	case !ok:
		m.mu.Unlock()
		return Session{}, fmt.Errorf("%w: session %q", ErrNotFound, id)
	case l.s.State != StateOpen:
		s := l.view()
		m.mu.Unlock()
		return s, fmt.Errorf("%w: %s", ErrEnded, s.EndReason)
	case l.cancel == nil:
		m.mu.Unlock()
		return Session{}, ErrNotRunning
	}
	if l.ending == "" {
		l.ending = reason
	}
	l.cancel()
	done := l.done
	m.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return Session{}, ctx.Err()
	}
	return m.Get(id)
}

// TaskRequest is one prompt for a session.
type TaskRequest struct {
	Messages  []inference.Message
	MaxTokens int
}

func (q TaskRequest) check() error {
	if len(q.Messages) == 0 || len(q.Messages) > protocol.MaxTaskMessages {
		return fmt.Errorf("%w: %d messages, must be 1 to %d", ErrBadParams, len(q.Messages), protocol.MaxTaskMessages)
	}
	for i, msg := range q.Messages {
		if !slices.Contains(protocol.ChatRoles, msg.Role) {
			return fmt.Errorf("%w: messages[%d].role: %q, must be one of %s", ErrBadParams, i, msg.Role, strings.Join(protocol.ChatRoles, ", "))
		}
	}
	if q.MaxTokens < 0 || q.MaxTokens > protocol.MaxTaskTokens {
		return fmt.Errorf("%w: max_tokens: %d, must be from 0 to %d", ErrBadParams, q.MaxTokens, protocol.MaxTaskTokens)
	}
	return nil
}

// Submit queues a task on a session; it runs once miners are free.
func (m *Manager) Submit(ctx context.Context, id string, q TaskRequest) (Task, error) {
	return m.submit(id, q, nil)
}

func (m *Manager) submit(id string, q TaskRequest, onDelta func(string) error) (Task, error) {
	if err := q.check(); err != nil {
		return Task{}, err
	}
	m.mu.Lock()
	l, ok := m.sessions[id]
	switch {
	case !ok:
		m.mu.Unlock()
		return Task{}, fmt.Errorf("%w: session %q", ErrNotFound, id)
	case l.s.State != StateOpen || l.ending != "":
		m.mu.Unlock()
		return Task{}, fmt.Errorf("%w: %s", ErrEnded, cmp.Or(l.s.EndReason, l.ending))
	case l.s.Submitted >= l.s.Params.MaxTasks:
		m.mu.Unlock()
		return Task{}, fmt.Errorf("%w: it accepts %d", ErrTaskLimit, l.s.Params.MaxTasks)
	case m.queued >= m.d.Config.MaxQueued:
		m.mu.Unlock()
		return Task{}, fmt.Errorf("%w: %d tasks wait for miners", ErrQueueFull, m.queued)
	}
	l.s.Submitted++
	lt := &liveTask{
		t: Task{
			ID: strconv.Itoa(l.s.Submitted), Session: id, Seq: l.s.Submitted, State: TaskQueued,
			Model: l.s.Params.Model, Messages: slices.Clone(q.Messages), MaxTokens: q.MaxTokens,
			Created: m.now(), Answers: []Answer{},
		},
		done:    make(chan struct{}),
		onDelta: onDelta,
	}
	l.tasks[lt.t.ID] = lt
	l.queue = append(l.queue, lt)
	m.queued++
	t := lt.t
	m.mu.Unlock()
	// The task is stored before the caller learns its id, and with the
	// session's count, so a restart neither loses nor renumbers it.
	if err := m.saveBoth(l, lt); err != nil {
		m.mu.Lock()
		delete(l.tasks, lt.t.ID)
		if i := slices.Index(l.queue, lt); i >= 0 {
			l.queue = slices.Delete(l.queue, i, i+1)
			m.queued--
		}
		l.s.Submitted--
		m.mu.Unlock()
		return Task{}, err
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return t, nil
}

// Task returns one task of a session; with wait > 0 it first waits that
// long, or until ctx ends, for the task to finish.
func (m *Manager) Task(ctx context.Context, session, id string, wait time.Duration) (Task, error) {
	m.mu.Lock()
	l, ok := m.sessions[session]
	var lt *liveTask
	if ok {
		lt, ok = l.tasks[id]
	}
	m.mu.Unlock()
	if !ok {
		return Task{}, fmt.Errorf("%w: task %q of session %q", ErrNotFound, id, session)
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-lt.done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneTask(lt.t), nil
}

func cloneTask(t Task) Task {
	t.Messages = slices.Clone(t.Messages)
	t.Answers = slices.Clone(t.Answers)
	return t
}

// Tasks lists the tasks of a session in submission order.
func (m *Manager) Tasks(session string) ([]Task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.sessions[session]
	if !ok {
		return nil, fmt.Errorf("%w: session %q", ErrNotFound, session)
	}
	out := make([]Task, 0, len(l.tasks))
	for _, lt := range l.tasks {
		out = append(out, cloneTask(lt.t))
	}
	slices.SortFunc(out, func(a, b Task) int { return a.Seq - b.Seq })
	return out, nil
}

// Completion is a one-task session's outcome.
type Completion struct {
	Session string
	Task    Task
}

// Complete runs one prompt as a session of its own, as the OpenAI-compatible
// endpoint does for every request: redundancy miners answer it, then are
// released. onDelta, when set and one miner answers, receives the answer as
// the miner produces it. If ctx ends first, the session is cancelled.
func (m *Manager) Complete(ctx context.Context, model string, redundancy int, q TaskRequest, onDelta func(string) error) (Completion, error) {
	if redundancy == 0 {
		redundancy = 1
	}
	if err := q.check(); err != nil {
		return Completion{}, err
	}
	s, err := m.Create(ctx, Params{
		Model: model, Redundancy: redundancy, MinNodes: redundancy, MaxNodes: redundancy, MaxTasks: 1,
		ReservePeriod: duration.Duration(m.d.Config.QueueTimeout + DefaultTaskTimeout + 10*time.Second),
		TaskTimeout:   duration.Duration(DefaultTaskTimeout),
	})
	if err != nil {
		return Completion{}, err
	}
	if redundancy > 1 {
		onDelta = nil
	}
	t, err := m.submit(s.ID, q, onDelta)
	if err != nil {
		_, _ = m.end(context.WithoutCancel(ctx), s.ID, EndCancelled)
		return Completion{}, err
	}
	t, err = m.Task(ctx, s.ID, t.ID, m.d.Config.QueueTimeout+DefaultTaskTimeout+20*time.Second)
	if err != nil {
		return Completion{}, err
	}
	if !t.finished() {
		_, _ = m.end(context.WithoutCancel(ctx), s.ID, EndCancelled)
		if ctx.Err() != nil {
			return Completion{}, ctx.Err()
		}
		return Completion{Session: s.ID, Task: t}, fmt.Errorf("%w: it did not finish in time", ErrTaskFailed)
	}
	if t.State == TaskFailed {
		return Completion{Session: s.ID, Task: t}, taskError(t)
	}
	return Completion{Session: s.ID, Task: t}, nil
}

// taskError is the error of a failed task, wrapping ErrNoMiner when no
// miner could be had.
func taskError(t Task) error {
	if strings.HasPrefix(t.Error, ErrNoMiner.Error()) {
		return fmt.Errorf("%w%s", ErrNoMiner, strings.TrimPrefix(t.Error, ErrNoMiner.Error()))
	}
	if t.Error == ErrStreamBroken.Error() {
		return ErrStreamBroken
	}
	return fmt.Errorf("%w: %s", ErrTaskFailed, t.Error)
}

// Models lists the models the available miners of the pool serve.
func (m *Manager) Models() []string {
	seen := map[string]bool{}
	for _, mi := range m.d.Pool.Available("") {
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

// prune forgets the oldest ended sessions, with their tasks, beyond maxHistory.
func (m *Manager) prune() {
	m.mu.Lock()
	var ended []*live
	for _, l := range m.sessions {
		if l.s.State == StateEnded {
			ended = append(ended, l)
		}
	}
	if len(ended) <= maxHistory {
		m.mu.Unlock()
		return
	}
	slices.SortFunc(ended, func(a, b *live) int { return a.s.Ended.Compare(b.s.Ended) })
	drop := ended[:len(ended)-maxHistory]
	for _, l := range drop {
		delete(m.sessions, l.s.ID)
	}
	m.mu.Unlock()
	for _, l := range drop {
		l.saveMu.Lock()
		var keys [][]byte
		_ = m.d.Store.Scan(sessionTasks(l.s.ID), func(k, _ []byte) error {
			keys = append(keys, slices.Clone(k))
			return nil
		})
		for _, k := range append(keys, sessKey(l.s.ID)) {
			if err := m.d.Store.Delete(k); err != nil {
				m.log.Warn("delete old session", "session", l.s.ID, "err", err)
			}
		}
		l.saveMu.Unlock()
	}
}
