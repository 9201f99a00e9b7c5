// Package observe watches a node's pool view for the dashboard: the events of
// each miner's lifecycle as this node saw them, the most recent events over
// all miners, the pool's size by state over the last hour, and a feed of
// changes for live subscribers (the API's /v1/events).
//
// It takes the pool's events on the goroutine that accepted them (gossip
// validation), so it only copies what it needs there and hands it to its own
// goroutine; when that one falls behind, events are dropped rather than the
// pool slowed. Everything it keeps is bounded.
package observe

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/internal/names"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Bounds and periods.
const (
	// SampleEvery is how often the pool is counted by state.
	SampleEvery = 10 * time.Second
	// Samples is how many counts are kept: an hour's.
	Samples = 360
	// MinerEvents is how many events are kept per miner.
	MinerEvents = 200
	// RecentEvents is how many events are kept over all miners.
	RecentEvents = 500
	// SubscriberBuffer is how many updates a subscriber may fall behind
	// before it is dropped.
	SubscriberBuffer = 256
	// queueSize is how many pool events may wait for the observer's
	// goroutine before new ones are dropped.
	queueSize = 4096
)

// Config is what an Observer watches, and its clock.
type Config struct {
	Pool *pool.Pool
	// Now is the clock of the events and samples; nil is time.Now.
	Now func() time.Time
	// Ticks, when set, drives the sampler instead of a ticker every
	// SampleEvery, each tick's time the time of its sample: for tests.
	Ticks <-chan time.Time
	Log   *slog.Logger
}

// Observer keeps what the dashboard shows of a pool. It is safe for
// concurrent use, and implements api.Observer but for Overview, which needs
// the node.
type Observer struct {
	pool  *pool.Pool
	now   func() time.Time
	ticks <-chan time.Time
	log   *slog.Logger

	queue   chan input
	done    chan struct{}
	wg      sync.WaitGroup
	stopped atomic.Bool
	dropped atomic.Uint64
	stop    sync.Once

	mu      sync.Mutex
	miners  map[peer.ID]*minerLog
	recent  *ring[api.Event]
	history *ring[api.HistoryPoint]
	subs    map[*subscriber]struct{}
	closed  bool // no more subscribers: the observer stopped
}

// minerLog is one miner as the observer saw it.
type minerLog struct {
	events *ring[api.Event]
	// The last availability record seen: state, generation and sequence.
	hasRecord bool
	state     pb.MinerState
	gen, seq  uint64
	lastEvent time.Time
}

type subscriber struct {
	ch   chan api.Update
	once sync.Once
}

func (s *subscriber) close() { s.once.Do(func() { close(s.ch) }) }

// input is what the pool's callback copies out of one of its events.
type input struct {
	at         time.Time
	kind       pool.EventKind
	miner      peer.ID
	state      pb.MinerState // availability
	gen, seq   uint64
	oracle     peer.ID // attestation
	pass       bool
	scoreMilli uint32
	router     peer.ID // grant, release
	session    string
	leaseEndMs int64
	outcome    pb.Outcome
	evKind     pb.EvidenceKind // evidence
	first      []byte
	second     []byte
	offender   peer.ID
}

// New subscribes to c.Pool, takes in what the pool already holds (each miner's
// record as a state event "from" nothing), counts the pool once and starts
// watching. Stop ends it.
func New(c Config) *Observer {
	if c.Pool == nil {
		panic("observe: New without a Pool")
	}
	o := &Observer{
		pool: c.Pool, now: c.Now, ticks: c.Ticks, log: c.Log,
		queue:   make(chan input, queueSize),
		done:    make(chan struct{}),
		miners:  map[peer.ID]*minerLog{},
		recent:  newRing[api.Event](RecentEvents),
		history: newRing[api.HistoryPoint](Samples),
		subs:    map[*subscriber]struct{}{},
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	// Subscribed before the records are read: an event that lands between
	// the two waits in the queue, and is recognised as old news by its
	// sequence.
	c.Pool.Subscribe(o.take)
	o.prime()
	o.sample(o.now())
	o.wg.Go(o.run)
	o.wg.Go(o.sampler)
	return o
}

// Stop ends the observer's goroutines and closes every subscriber's channel.
// What it holds can still be read.
func (o *Observer) Stop() {
	o.stop.Do(func() {
		o.stopped.Store(true)
		close(o.done)
		o.wg.Wait()
		o.mu.Lock()
		o.closed = true
		for s := range o.subs {
			s.close()
		}
		clear(o.subs)
		o.mu.Unlock()
	})
}

// Dropped counts the pool events lost because the observer fell behind.
func (o *Observer) Dropped() uint64 { return o.dropped.Load() }

// take is the pool's callback. It runs inside the pool's Add path, often in
// gossip validation: it copies the event's few fields and never blocks.
func (o *Observer) take(ev pool.Event) {
	if o.stopped.Load() {
		return
	}
	in := input{at: o.now(), kind: ev.Kind}
	switch ev.Kind {
	case pool.EventAvailability:
		a := ev.Availability
		in.miner, in.state, in.gen, in.seq = a.Signer, a.Msg.State, a.Msg.Generation, a.Msg.Seq
	case pool.EventAttestation:
		a := ev.Attestation
		in.miner, in.gen = peer.ID(a.Msg.Miner), a.Msg.Generation
		in.oracle, in.pass, in.scoreMilli = a.Signer, a.Msg.Pass, a.Msg.ScoreMilli
	case pool.EventGrant:
		g := ev.Grant
		in.miner, in.gen = g.Signer, g.Msg.Generation
		in.router, in.session, in.leaseEndMs = peer.ID(g.Msg.Router), g.Msg.Session, g.Msg.LeaseEndMs
	case pool.EventRelease:
		r := ev.Release
		in.miner, in.gen = peer.ID(r.Msg.Miner), r.Msg.Generation
		in.router, in.session, in.outcome = peer.ID(r.Msg.Router), r.Msg.Session, r.Msg.Outcome
	case pool.EventEvidence:
		e := ev.Evidence
		in.evKind, in.first, in.second, in.offender = e.Kind, slices.Clone(e.First), slices.Clone(e.Second), ev.Offender
	default:
		return
	}
	select {
	case o.queue <- in:
	default:
		if n := o.dropped.Add(1); n&(n-1) == 0 { // 1, 2, 4, 8…: a log line per doubling
			o.log.Warn("observer behind; pool events dropped", "dropped", n)
		}
	}
}

func (o *Observer) run() {
	for {
		select {
		case <-o.done:
			return
		case in := <-o.queue:
			o.handle(in)
		}
	}
}

func (o *Observer) sampler() {
	ticks, injected := o.ticks, o.ticks != nil
	if !injected {
		t := time.NewTicker(SampleEvery)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-o.done:
			return
		case at := <-ticks:
			if !injected {
				at = o.now()
			}
			o.sample(at)
		}
	}
}

// prime takes in the records the pool held before the observer subscribed,
// oldest first.
func (o *Observer) prime() {
	recs := o.pool.Records()
	slices.SortStableFunc(recs, func(a, b pool.Miner) int { return a.LastSeen.Compare(b.LastSeen) })
	for _, m := range recs {
		at := m.LastSeen
		if at.IsZero() {
			at = o.now()
		}
		o.handle(input{at: at, kind: pool.EventAvailability, miner: m.ID, state: m.State, gen: m.Generation, seq: m.Seq})
	}
}

// handle records one pool event and tells the subscribers.
func (o *Observer) handle(in input) {
	var (
		ev       api.Event
		keep     = true
		minerUpd = true
	)
	switch in.kind {
	case pool.EventAvailability:
		var old bool
		if ev, keep, old = o.availability(in); old {
			return
		}
	case pool.EventAttestation:
		ev = api.Event{
			Kind: api.EventAttestation, Generation: in.gen, Oracle: in.oracle.String(),
			Pass: in.pass, Score: float64(in.scoreMilli) / 1000,
		}
	case pool.EventGrant:
		ev = api.Event{
			Kind: api.EventGrant, Generation: in.gen, Router: in.router.String(), Session: in.session,
			LeaseEnd: protocol.Time(in.leaseEndMs).UTC(),
		}
		minerUpd = false // the record says reserved when the miner publishes it
	case pool.EventRelease:
		ev = api.Event{
			Kind: api.EventRelease, Generation: in.gen, Router: in.router.String(), Session: in.session,
			Outcome: OutcomeName(in.outcome),
		}
	case pool.EventEvidence:
		var miner peer.ID
		miner, ev = evidenceEvent(in)
		in.miner = miner
	}
	if in.miner == "" {
		return
	}
	ev.Time, ev.Miner = in.at.UTC(), in.miner.String()

	o.mu.Lock()
	ml := o.minerLog(in.miner)
	ml.lastEvent = in.at
	if keep {
		ml.events.push(ev)
		o.recent.push(ev)
	}
	o.mu.Unlock()

	if keep {
		o.fanOut(api.Update{Transition: &ev})
	}
	if minerUpd && o.hasSubscribers() {
		if m, ok := o.pool.Miner(in.miner); ok {
			pm := PoolMiner(o.pool, m, o.now())
			o.fanOut(api.Update{Miner: &pm})
		}
	}
}

// availability turns a record into a state event when its state or
// generation differ from the last record seen; keep is false when they do
// not. A record older than the last one seen is old news, passed over.
func (o *Observer) availability(in input) (ev api.Event, keep, old bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ml := o.minerLog(in.miner)
	if ml.hasRecord && in.seq <= ml.seq {
		return api.Event{}, false, true
	}
	from := ""
	if ml.hasRecord {
		from = pool.StateName(ml.state)
	}
	changed := !ml.hasRecord || ml.state != in.state || ml.gen != in.gen
	ml.hasRecord, ml.state, ml.gen, ml.seq = true, in.state, in.gen, in.seq
	if !changed {
		return api.Event{}, false, false
	}
	return api.Event{Kind: api.EventState, State: pool.StateName(in.state), From: from, Generation: in.gen}, true, false
}

// minerLog returns id's log, made if new. o.mu is held.
func (o *Observer) minerLog(id peer.ID) *minerLog {
	ml, ok := o.miners[id]
	if !ok {
		ml = &minerLog{events: newRing[api.Event](MinerEvents)}
		o.miners[id] = ml
	}
	return ml
}

// evidenceEvent describes a conflict. Its miner is the one the conflicting
// messages are about: the offender of a double grant, the attested miner of
// a double verdict (whose offender is the oracle).
func evidenceEvent(in input) (peer.ID, api.Event) {
	ev := api.Event{Kind: api.EventEvidence}
	switch in.evKind {
	case pb.EvidenceKind_DOUBLE_GRANT:
		a, errA := protocol.Open[pb.Grant](in.first)
		b, errB := protocol.Open[pb.Grant](in.second)
		if errA != nil || errB != nil {
			break
		}
		ev.Generation = a.Msg.Generation
		ev.Detail = fmt.Sprintf("the miner signed two grants for generation %d: session %q to router %s and session %q to router %s",
			a.Msg.Generation, a.Msg.Session, peer.ID(a.Msg.Router), b.Msg.Session, peer.ID(b.Msg.Router))
		return in.offender, ev
	case pb.EvidenceKind_DOUBLE_VERDICT:
		a, errA := protocol.Open[pb.Attestation](in.first)
		b, errB := protocol.Open[pb.Attestation](in.second)
		if errA != nil || errB != nil {
			break
		}
		ev.Generation, ev.Oracle = a.Msg.Generation, in.offender.String()
		ev.Detail = fmt.Sprintf("oracle %s signed two verdicts on generation %d, round %d: pass=%t score %.3f and pass=%t score %.3f",
			in.offender, a.Msg.Generation, a.Msg.Round, a.Msg.Pass, float64(a.Msg.ScoreMilli)/1000,
			b.Msg.Pass, float64(b.Msg.ScoreMilli)/1000)
		return peer.ID(a.Msg.Miner), ev
	}
	// Valid evidence always opens; this is for the unforeseen.
	ev.Detail = fmt.Sprintf("%s by %s", strings.ToLower(in.evKind.String()), in.offender)
	return in.offender, ev
}

// OutcomeName is the API name of a release's outcome: completed, failed,
// expired or cancelled.
func OutcomeName(o pb.Outcome) string { return names.Of(outcomeNames, o, "unknown") }

var outcomeNames = map[pb.Outcome]string{
	pb.Outcome_COMPLETED: "completed",
	pb.Outcome_FAILED:    "failed",
	pb.Outcome_EXPIRED:   "expired",
	pb.Outcome_CANCELLED: "cancelled",
}

// PoolMiner is the API's view of m, as GET /v1/pool lists it: an available
// miner whose record has lapsed by now is "stale".
func PoolMiner(p *pool.Pool, m pool.Miner, now time.Time) api.PoolMiner {
	oracles := make([]string, len(m.Oracles))
	for i, id := range m.Oracles {
		oracles[i] = id.String()
	}
	models := m.Models
	if models == nil {
		models = []string{}
	}
	return api.PoolMiner{
		PeerID: m.ID.String(), State: stateAt(m, now), Generation: m.Generation, Oracles: oracles,
		Reputation: p.Reputation(m.ID).Score(), Models: models, LastSeen: m.LastSeen.UTC(), Seq: m.Seq,
	}
}

func stateAt(m pool.Miner, now time.Time) string {
	if m.State == pb.MinerState_AVAILABLE && !m.Expires.After(now) {
		return "stale" // its record lapsed: the miner is gone or cut off
	}
	return pool.StateName(m.State)
}

// countRecords counts miners by state; every name of api.States is there.
func countRecords(recs []pool.Miner, now time.Time) map[string]int {
	counts := make(map[string]int, len(api.States))
	for _, s := range api.States {
		counts[s] = 0
	}
	for _, m := range recs {
		counts[stateAt(m, now)]++
	}
	return counts
}

// Counts is the pool by state now.
func (o *Observer) Counts() api.PoolSummary {
	recs := o.pool.Records()
	return api.PoolSummary{Total: len(recs), Counts: countRecords(recs, o.now())}
}

// sample counts the pool into the history, and forgets the miners the pool
// no longer lists and that were quiet for a sampling period.
func (o *Observer) sample(now time.Time) {
	recs := o.pool.Records()
	listed := make(map[peer.ID]bool, len(recs))
	for _, m := range recs {
		listed[m.ID] = true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.history.push(api.HistoryPoint{Time: now.UTC(), Counts: countRecords(recs, now)})
	for id, ml := range o.miners {
		// The grace keeps the attestations that reach this node just
		// before the miner's record does.
		if !listed[id] && now.Sub(ml.lastEvent) >= SampleEvery {
			delete(o.miners, id)
		}
	}
}

// History is the pool by state over the last hour, oldest first.
func (o *Observer) History() api.History {
	o.mu.Lock()
	defer o.mu.Unlock()
	return api.History{IntervalSeconds: int(SampleEvery / time.Second), Points: o.history.oldestFirst()}
}

// Miner is one miner's record and the events this observer kept of it; false
// when the pool does not list it.
func (o *Observer) Miner(id string) (api.MinerHistory, bool) {
	pid, err := peer.Decode(id)
	if err != nil {
		return api.MinerHistory{}, false
	}
	m, ok := o.pool.Miner(pid)
	if !ok {
		return api.MinerHistory{}, false
	}
	h := api.MinerHistory{Miner: PoolMiner(o.pool, m, o.now()), Events: []api.Event{}}
	o.mu.Lock()
	if ml, ok := o.miners[pid]; ok {
		h.Events = ml.events.oldestFirst()
	}
	o.mu.Unlock()
	return h, true
}

// Transitions are the limit most recent events over all miners, newest first.
func (o *Observer) Transitions(limit int) []api.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.recent.newestFirst(limit)
}

// Subscribe delivers every transition, and every miner whose record changed,
// until ctx ends or cancel is called. A subscriber more than
// SubscriberBuffer updates behind is dropped: its channel is closed.
func (o *Observer) Subscribe(ctx context.Context) (<-chan api.Update, func()) {
	s := &subscriber{ch: make(chan api.Update, SubscriberBuffer)}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		s.close()
		return s.ch, func() {}
	}
	o.subs[s] = struct{}{}
	o.mu.Unlock()
	cancel := func() {
		o.mu.Lock()
		delete(o.subs, s)
		o.mu.Unlock()
		s.close()
	}
	stop := context.AfterFunc(ctx, cancel)
	return s.ch, func() { stop(); cancel() }
}

func (o *Observer) hasSubscribers() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.subs) > 0
}

// fanOut hands u to every subscriber without waiting: one whose buffer is
// full is dropped.
func (o *Observer) fanOut(u api.Update) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for s := range o.subs {
		select {
		case s.ch <- u:
		default:
			delete(o.subs, s)
			s.close()
			o.log.Debug("dashboard subscriber too slow; dropped")
		}
	}
}
