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
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/inference"
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
	// MaxSessions bounds the users' sessions open at once; more answer ErrTooMany.
	MaxSessions int
	// MaxQueued bounds the tasks waiting for miners over every session;
	// more answer ErrQueueFull.
	MaxQueued int
	// QueueTimeout is how long a session's task may wait for miners before
	// it fails.
	QueueTimeout time.Duration
	// CompletionWait is how long a chat completion may wait for a miner
	// before it answers ErrBusy.
	CompletionWait time.Duration
	// IdleRelease is how long a warm session keeps a miner with no work.
	IdleRelease time.Duration
	// WarmMaxMiners bounds the miners one warm session holds.
	WarmMaxMiners int
	// WarmMaxTasks and WarmPeriod bound what one reservation of a warm
	// session serves: so many tasks, for so long; then the miner is given
	// back and validated again.
	WarmMaxTasks int
	WarmPeriod   time.Duration
	// MaxPerClient bounds one API client's chat completions in flight;
	// 0 for no bound. Only requests with a token count as a client's.
	MaxPerClient int
}

// DefaultConfig is the configuration of a router that sets none.
func DefaultConfig() Config {
	return Config{
		MaxSessions: 64, MaxQueued: 256, QueueTimeout: time.Minute,
		CompletionWait: 15 * time.Second, IdleRelease: 3 * time.Second,
		WarmMaxMiners: 16, WarmMaxTasks: 10000, WarmPeriod: 5 * time.Minute, MaxPerClient: 32,
	}
}

// withDefaults fills the warm sessions' settings a config leaves unset.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.CompletionWait = cmp.Or(c.CompletionWait, d.CompletionWait)
	c.IdleRelease = cmp.Or(c.IdleRelease, d.IdleRelease)
	c.WarmMaxMiners = cmp.Or(c.WarmMaxMiners, d.WarmMaxMiners)
	c.WarmMaxTasks = cmp.Or(c.WarmMaxTasks, d.WarmMaxTasks)
	c.WarmPeriod = cmp.Or(c.WarmPeriod, d.WarmPeriod)
	return c
}

func (c Config) check() error {
	switch {
	case c.MaxSessions < 1 || c.MaxQueued < 1 || c.QueueTimeout <= 0 || c.CompletionWait <= 0:
		return fmt.Errorf("session: config %+v", c)
	case c.IdleRelease <= 0 || c.WarmMaxMiners < 1 || c.WarmMaxMiners > MaxNodes || c.WarmMaxTasks < 1 || c.WarmPeriod <= 0 || c.MaxPerClient < 0:
		return fmt.Errorf("session: warm session config %+v", c)
	}
	return nil
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

// Manager keeps a router's sessions: the list of them and their storage.
// Each session runs on a worker of its own (worker.go). It is safe for
// concurrent use.
type Manager struct {
	d    Deps
	self peer.ID
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*worker
	warm     map[warmKey]*worker
	clients  map[string]int // completions in flight, by client
	warmMu   sync.Mutex     // one warm session opened at a time
	running  bool
	ctx      context.Context // the workers' parent while running
	cancel   context.CancelFunc
	wg       sync.WaitGroup // workers, tasks, releases and the reconcile loop

	queued       atomic.Int64 // tasks waiting for miners, over every session
	ended        atomic.Int64
	tasksDone    atomic.Int64
	tasksFailed  atomic.Int64
	requests     atomic.Int64 // chat completions asked for
	idleReleases atomic.Int64 // miners warm sessions gave back for want of work
	use          usage
}

// New checks d and loads the sessions in the store; the open ones resume
// at Start.
func New(d Deps) (*Manager, error) {
	switch {
	case d.Host == nil || d.Key == nil || d.Store == nil || d.Router == nil || d.Pool == nil || d.Embed == nil:
		return nil, errors.New("session: host, key, store, router, pool and embed are required")
	}
	d.Config = d.Config.withDefaults()
	if err := d.Config.check(); err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(d.Key)
	if err != nil {
		return nil, fmt.Errorf("session: identity: %w", err)
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		d: d, self: self, log: d.Log,
		sessions: map[string]*worker{}, warm: map[warmKey]*worker{}, clients: map[string]int{},
	}
	if err := m.load(); err != nil {
		return nil, fmt.Errorf("session: load: %w", err)
	}
	return m, nil
}

func (m *Manager) now() time.Time { return m.d.Check.Time() }

// Start resumes the open sessions and starts releasing reservations that
// serve no session.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return nil
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.running = true
	byID := map[string][]router.Reservation{}
	for _, res := range m.d.Router.Reservations() {
		if res.Session != "" && res.State == router.StateActive {
			byID[res.Session] = append(byID[res.Session], res)
		}
	}
	for _, w := range m.sessions {
		switch {
		case w.s.State != StateOpen:
		case w.s.Warm:
			// Demand does not outlive the router: its reservations go back
			// to the pool (see reconcile).
			w.s.State, w.s.EndReason, w.s.Ended = StateEnded, EndShutdown, m.now()
			for i := range w.s.Miners {
				if w.s.Miners[i].State == HoldActive {
					w.s.Miners[i].State, w.s.Miners[i].Until = HoldLost, w.s.Ended
				}
			}
			w.publish()
			w.saveSessionLogged()
		default:
			w.resume(byID[w.id], m.now())
			w.start(m.ctx)
		}
	}
	m.wg.Add(1)
	go m.reconcileLoop(m.ctx)
	return nil
}

// resume takes back the reservations that still serve the session after a
// restart, before its worker starts.
func (w *worker) resume(kept []router.Reservation, now time.Time) {
	for i := range w.s.Miners {
		h := &w.s.Miners[i]
		if h.State != HoldActive {
			continue
		}
		idx := slices.IndexFunc(kept, func(r router.Reservation) bool { return r.ID == h.Reservation })
		id, err := peer.Decode(h.Miner)
		if idx < 0 || err != nil {
			h.State, h.Until, h.Detail = HoldLost, now, "not held after the router restarted"
			continue
		}
		w.held = append(w.held, &held{res: kept[idx], miner: id, idx: i, since: h.Since, idleSince: now})
		w.m.noteHeld(w, 1)
	}
	w.publish()
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
	m.mu.Unlock()
	m.cancel() // every worker ends its session
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
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
// its min_nodes miners. A session for a model no miner of the pool serves
// is refused at once.
func (m *Manager) Create(ctx context.Context, p Params) (Session, error) {
	p, err := p.WithDefaults()
	if err != nil {
		return Session{}, err
	}
	if err := m.checkModel(p.Model); err != nil {
		return Session{}, err
	}
	w, err := m.openSession(p, nil)
	if err != nil {
		return Session{}, err
	}
	m.log.Info("session opened", "session", w.id, "model", p.Model, "redundancy", p.Redundancy, "min_nodes", p.MinNodes, "max_nodes", p.MaxNodes)
	return w.view(), nil
}

// openSession stores a new session and starts its worker. Warm sessions do not
// count against max_sessions: there is at most one per kind of demand.
func (m *Manager) openSession(p Params, warm *warmSpec) (*worker, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	now := m.now()
	s := Session{ID: id, Params: p, State: StateOpen, Created: now, Ends: now.Add(p.ReservePeriod.Std()), Miners: []Holding{}}
	if warm != nil {
		s.Warm = true
	}
	w := newWorker(m, s, warm)
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return nil, ErrNotRunning
	}
	if warm == nil {
		if open := m.openLocked(); open >= m.d.Config.MaxSessions {
			m.mu.Unlock()
			return nil, fmt.Errorf("%w: %d are open, the most this router runs", ErrTooMany, open)
		}
	}
	m.sessions[id] = w
	m.mu.Unlock()
	if err := w.save(nil, true); err != nil {
		m.mu.Lock()
		delete(m.sessions, id)
		m.mu.Unlock()
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		delete(m.sessions, id)
		return nil, ErrNotRunning
	}
	w.start(m.ctx)
	return w, nil
}

// openLocked counts the users' open sessions; m.mu is held.
func (m *Manager) openLocked() int {
	n := 0
	for _, w := range m.sessions {
		if s := w.view(); s.State == StateOpen && !s.Warm {
			n++
		}
	}
	return n
}

// sessionEnded is told by a worker that its session has ended.
func (m *Manager) sessionEnded(w *worker) {
	m.mu.Lock()
	for k, x := range m.warm {
		if x == w {
			delete(m.warm, k)
		}
	}
	m.mu.Unlock()
	m.prune()
}

// Sessions lists every session, newest first.
func (m *Manager) Sessions() []Session {
	m.mu.Lock()
	out := make([]Session, 0, len(m.sessions))
	for _, w := range m.sessions {
		out = append(out, w.view())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int {
		return cmp.Or(b.Created.Compare(a.Created), strings.Compare(a.ID, b.ID))
	})
	return out
}

func (m *Manager) worker(id string) (*worker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.sessions[id]
	if !ok {
		return nil, fmt.Errorf("%w: session %q", ErrNotFound, id)
	}
	return w, nil
}

// Get returns one session.
func (m *Manager) Get(id string) (Session, error) {
	w, err := m.worker(id)
	if err != nil {
		return Session{}, err
	}
	return w.view(), nil
}

// End ends a session on the user's request: its queued tasks fail, the
// running ones are cut short and every miner is released.
func (m *Manager) End(ctx context.Context, id string) (Session, error) {
	w, err := m.worker(id)
	if err != nil {
		return Session{}, err
	}
	if s := w.view(); s.State != StateOpen {
		return s, fmt.Errorf("%w: %s", ErrEnded, s.EndReason)
	}
	if w.stop == nil {
		return Session{}, ErrNotRunning
	}
	w.post(func() { w.endFor(EndClosed) })
	select {
	case <-w.done:
	case <-ctx.Done():
		return Session{}, ctx.Err()
	}
	return w.view(), nil
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
	w, err := m.worker(id)
	if err != nil {
		return Task{}, err
	}
	lt, err := w.submit(ctx, q, nil, m.d.Config.QueueTimeout)
	if err != nil {
		return Task{}, err
	}
	return *lt.snap.Load(), nil
}

// submit queues a task, stored with the session's count before the caller
// learns its id (so a restart neither loses nor renumbers it), unless the
// session is warm. It may wait for miners for wait.
func (w *worker) submit(ctx context.Context, q TaskRequest, onDelta func(string) error, wait time.Duration) (*liveTask, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	var lt *liveTask
	var err error
	cerr := w.call(ctx, func() {
		lt, err = w.enqueue(q, onDelta, wait)
	})
	if cerr != nil {
		if errors.Is(cerr, ErrEnded) {
			s := w.view()
			return nil, fmt.Errorf("%w: %s", ErrEnded, s.EndReason)
		}
		return nil, cerr
	}
	return lt, err
}

// enqueue runs on the worker.
func (w *worker) enqueue(q TaskRequest, onDelta func(string) error, wait time.Duration) (*liveTask, error) {
	m := w.m
	switch {
	case w.s.State != StateOpen || w.finishing:
		return nil, fmt.Errorf("%w: %s", ErrEnded, cmp.Or(w.s.EndReason, w.ending))
	case w.warm == nil && w.s.Submitted >= w.s.Params.MaxTasks:
		return nil, fmt.Errorf("%w: it accepts %d", ErrTaskLimit, w.s.Params.MaxTasks)
	case m.queued.Load() >= int64(m.d.Config.MaxQueued):
		return nil, fmt.Errorf("%w: %d tasks wait for miners", ErrQueueFull, m.queued.Load())
	}
	w.s.Submitted++
	now := m.now()
	lt := &liveTask{
		t: Task{
			ID: strconv.Itoa(w.s.Submitted), Session: w.id, Seq: w.s.Submitted, State: TaskQueued,
			Model: w.s.Params.Model, Messages: slices.Clone(q.Messages), MaxTokens: q.MaxTokens,
			Created: now, Answers: []Answer{},
		},
		done:    make(chan struct{}),
		onDelta: onDelta,
		until:   now.Add(wait),
	}
	lt.publish()
	if w.warm == nil {
		if err := w.save(lt, true); err != nil {
			w.s.Submitted--
			return nil, err
		}
	}
	w.tasksMu.Lock()
	w.tasks[lt.t.ID] = lt
	w.tasksMu.Unlock()
	w.queue = append(w.queue, lt)
	m.queued.Add(1)
	return lt, nil
}

// Task returns one task of a session; with wait > 0 it first waits that
// long, or until ctx ends, for the task to finish.
func (m *Manager) Task(ctx context.Context, session, id string, wait time.Duration) (Task, error) {
	w, err := m.worker(session)
	var lt *liveTask
	ok := err == nil
	if ok {
		lt, ok = w.task(id)
	}
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
	return *lt.snap.Load(), nil
}

func cloneTask(t Task) Task {
	t.Messages = slices.Clone(t.Messages)
	t.Answers = slices.Clone(t.Answers)
	return t
}

// Tasks lists the tasks of a session in submission order.
func (m *Manager) Tasks(session string) ([]Task, error) {
	w, err := m.worker(session)
	if err != nil {
		return nil, err
	}
	w.tasksMu.Lock()
	out := make([]Task, 0, len(w.tasks))
	for _, lt := range w.tasks {
		out = append(out, *lt.snap.Load())
	}
	w.tasksMu.Unlock()
	slices.SortFunc(out, func(a, b Task) int { return a.Seq - b.Seq })
	return out, nil
}

// prune forgets the oldest ended sessions, with their tasks, beyond maxHistory.
func (m *Manager) prune() {
	m.mu.Lock()
	var ended []*worker
	for _, w := range m.sessions {
		if w.view().State == StateEnded {
			ended = append(ended, w)
		}
	}
	if len(ended) <= maxHistory {
		m.mu.Unlock()
		return
	}
	slices.SortFunc(ended, func(a, b *worker) int { return a.view().Ended.Compare(b.view().Ended) })
	drop := ended[:len(ended)-maxHistory]
	for _, w := range drop {
		delete(m.sessions, w.id)
	}
	m.mu.Unlock()
	for _, w := range drop {
		w.saveMu.Lock()
		var keys [][]byte
		_ = m.d.Store.Scan(sessionTasks(w.id), func(k, _ []byte) error {
			keys = append(keys, slices.Clone(k))
			return nil
		})
		for _, k := range append(keys, sessKey(w.id)) {
			if err := m.d.Store.Delete(k); err != nil {
				m.log.Warn("delete old session", "session", w.id, "err", err)
			}
		}
		w.saveMu.Unlock()
	}
}
