// Package miner is the miner's side of the lifecycle: it answers oracles'
// challenges with its inference backend, becomes available once a quorum of
// oracles has passed its generation, grants one claim per generation, and
// goes back to validation at a new generation when released. It is the one
// authority over its own state, and commits every transition to the store
// before it announces it.
package miner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Deps are what a miner needs from its node.
type Deps struct {
	Check   protocol.Checker
	Host    host.Host
	DHT     *dht.IpfsDHT // nil: no DHT index (tests)
	Key     crypto.PrivKey
	Store   *store.Store
	Pool    *pool.Pool
	Backend inference.Backend
	// PublishPool and PublishReservations gossip on the pool and reservations topics.
	PublishPool         func(ctx context.Context, data []byte) error
	PublishReservations func(ctx context.Context, data []byte) error
	// PoolPeers counts the peers subscribed to the pool topic; nil for none.
	PoolPeers func() int
	Log       *slog.Logger
}

// Miner runs one node's miner role.
type Miner struct {
	d    Deps
	self peer.ID
	log  *slog.Logger

	mu    sync.Mutex // serialises transitions
	state State

	wake       chan struct{}
	ctx        context.Context // the miner's lifetime, from Start to Stop
	cancel     context.CancelFunc
	spawnMu    sync.Mutex // orders spawn's wg.Add before Stop's wg.Wait
	wg         sync.WaitGroup
	provided   time.Time             // when the pool CIDs were last provided
	lastRecord time.Time             // when the availability record was last signed
	heardBy    int                   // fewest pool-topic peers since it was last signed
	votes      evictionVotes         // the oracles that would evict the current reservation
	overShare  map[peer.ID]time.Time // routers evicted from this miner, until when their claims are refused
	sem        chan struct{}

	evictions atomic.Uint64 // reservations ended over their router's share
}

// maxValidations bounds the challenges a miner answers at once; rendezvous
// assigns quorum + 1 oracles a round, so this leaves room for stragglers.
const maxValidations = 8

// errNoChange tells commit that a step decided not to transition.
var errNoChange = errors.New("no change")

// New loads the miner's committed state.
func New(d Deps) (*Miner, error) {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	m := &Miner{d: d, self: d.Host.ID(), log: d.Log, wake: make(chan struct{}, 1), sem: make(chan struct{}, maxValidations),
		overShare: map[peer.ID]time.Time{},
		ctx:       context.Background()}
	err := d.Store.View(func(txn *store.Txn) error {
		s, err := loadState(txn)
		m.state = s
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// State is the miner's committed state.
func (m *Miner) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Start serves the validate, reserve and session protocols and runs the lifecycle.
// It fails if the miner cannot commit the state it starts in.
func (m *Miner) Start(ctx context.Context) error {
	ctx, m.cancel = context.WithCancel(ctx)
	m.ctx = ctx
	net := m.d.Check.Network
	m.d.Host.SetStreamHandler(protocol.ValidateProtocol(net), m.handleValidate)
	m.d.Host.SetStreamHandler(protocol.ReserveProtocol(net), m.handleReserve)
	m.d.Host.SetStreamHandler(protocol.SessionProtocol(net), m.sessionHandler(maxTasks))
	m.d.Host.SetStreamHandler(protocol.NoticeProtocol(net), m.handleNotice)
	m.d.Pool.Subscribe(func(ev pool.Event) {
		if ev.Kind == pool.EventAttestation && string(ev.Attestation.Msg.Miner) == string(m.self) {
			m.poke()
		}
	})
	if len(m.d.Check.Params.Oracles) == 0 {
		m.log.Warn("the oracle set is empty: this miner cannot become available")
	}
	if err := m.resume(); err != nil {
		_ = m.Stop(context.WithoutCancel(ctx)) // nothing runs yet to wait for
		return fmt.Errorf("miner: %w", err)
	}
	m.wg.Go(func() { m.run(ctx) })
	return nil
}

// Stop ends the lifecycle loop and the protocol handlers, and waits for
// what runs to return, within ctx.
func (m *Miner) Stop(ctx context.Context) error {
	net := m.d.Check.Network
	m.d.Host.RemoveStreamHandler(protocol.ValidateProtocol(net))
	m.d.Host.RemoveStreamHandler(protocol.ReserveProtocol(net))
	m.d.Host.RemoveStreamHandler(protocol.SessionProtocol(net))
	m.d.Host.RemoveStreamHandler(protocol.NoticeProtocol(net))
	m.spawnMu.Lock()
	if m.cancel != nil {
		m.cancel()
	}
	m.spawnMu.Unlock()
	return waitWithin(ctx, "miner", m.wg.Wait)
}

// waitWithin runs wait, giving up when ctx ends first.
func waitWithin(ctx context.Context, what string, wait func()) error {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: stop: %w", what, ctx.Err())
	}
}

func (m *Miner) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// resume takes a restarted miner to where its committed state says it is:
// a reservation stands until its lease ends, and a grant made before a
// crash is announced again, so none is lost.
func (m *Miner) resume() error {
	_, err := m.commit(func(s State, now time.Time) (State, error) {
		if s.State == pb.MinerState_JOINING {
			return s.enter(pb.MinerState_VALIDATING, now), nil
		}
		if s.State == pb.MinerState_AVAILABLE {
			if _, err := m.d.Check.Quorum(m.self, s.Generation, s.Attestations); err != nil {
				// Its attestations expired while down: an AVAILABLE record
				// without them is invalid, so validate again.
				return s.enter(pb.MinerState_VALIDATING, now), nil
			}
		}
		return s, nil // re-sign the record: it may have expired while down
	})
	if err != nil {
		return err
	}
	if s := m.State(); s.State == pb.MinerState_RESERVED && len(s.Grant) > 0 {
		m.gossip(m.d.PublishReservations, s.Grant)
	}
	return nil
}

// run drives the time-based transitions and the record's refresh.
func (m *Miner) run(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-m.wake: // a transition is due now, not at the next tick
		}
		m.step(ctx)
	}
}

// step applies whichever transition is due now.
func (m *Miner) step(ctx context.Context) {
	s := m.State()
	now := time.Now()
	switch s.State {
	case pb.MinerState_VALIDATING:
		m.evaluate()
	case pb.MinerState_AVAILABLE:
		if _, err := m.d.Check.Quorum(m.self, s.Generation, s.Attestations); err != nil {
			m.evaluate() // attestations expired: refresh them, or validate again
		} else if m.provideDue(now) {
			m.provide(ctx)
		}
	case pb.MinerState_COOLING_OFF:
		if !now.Before(s.CoolUntil) {
			m.transition("cooled off", func(s State, now time.Time) (State, error) {
				if s.State != pb.MinerState_COOLING_OFF {
					return s, errNoChange
				}
				s.Generation++
				return s.enter(pb.MinerState_VALIDATING, now), nil
			})
		}
	case pb.MinerState_RESERVED:
		if !now.Before(s.LeaseEnd) {
			m.expire()
		}
	}
	if m.recordDue(now) {
		_, _ = m.commit(func(s State, _ time.Time) (State, error) { return s, nil })
	}
}

// evaluate moves a validating miner to available once a quorum of oracles
// has passed its generation, or to cooling off once a pass quorum can no
// longer be reached; it keeps an available miner's attestations fresh.
func (m *Miner) evaluate() {
	p := m.d.Check.Params
	m.transition("validation", func(s State, now time.Time) (State, error) {
		if s.State != pb.MinerState_VALIDATING && s.State != pb.MinerState_AVAILABLE {
			return s, errNoChange
		}
		passing, failing := map[peer.ID]protocol.Signed[*pb.Attestation]{}, map[peer.ID]bool{}
		for _, a := range m.d.Pool.Attestations(m.self, s.Generation) {
			if a.Msg.Pass {
				// The longest-lived verdict of each oracle keeps the record
				// valid longest.
				if have, ok := passing[a.Signer]; !ok || a.Msg.ExpiresMs > have.Msg.ExpiresMs {
					passing[a.Signer] = a
				}
			} else {
				failing[a.Signer] = true
			}
		}
		for o := range passing {
			delete(failing, o) // an oracle that passed us in a later round does not count against us
		}
		if len(passing) >= p.Quorum {
			atts := make([][]byte, 0, len(passing))
			for _, a := range passing {
				atts = append(atts, a.Raw)
			}
			slices.SortFunc(atts, bytes.Compare) // one state, one record
			if s.State == pb.MinerState_AVAILABLE {
				s.Attestations = atts
				return s, nil
			}
			s.Failures = 0
			s = s.enter(pb.MinerState_AVAILABLE, now)
			s.Attestations = atts
			return s, nil
		}
		if s.State == pb.MinerState_AVAILABLE {
			return s.enter(pb.MinerState_VALIDATING, now), nil
		}
		if len(failing) >= p.FailureQuorum() {
			s.Failures++
			s = s.enter(pb.MinerState_COOLING_OFF, now)
			s.CoolUntil = now.Add(p.Backoff(s.Failures))
			return s, nil
		}
		return s, errNoChange
	})
}

// transition commits f and logs the state it led to.
func (m *Miner) transition(why string, f func(State, time.Time) (State, error)) {
	before := m.State()
	after, err := m.commit(f)
	if err != nil {
		if !errors.Is(err, errNoChange) {
			m.log.Error("transition failed", "why", why, "err", err)
		}
		return
	}
	if after.State != before.State || after.Generation != before.Generation {
		m.log.Info("miner state", "from", pool.StateName(before.State), "to", pool.StateName(after.State),
			"generation", after.Generation, "why", why)
	}
}

// commit runs f on the committed state in one synced transaction, signs the
// availability record of the result under the next sequence number, and
// only then announces it. f returning errNoChange commits nothing.
func (m *Miner) commit(f func(State, time.Time) (State, error)) (State, error) {
	return m.apply(f, true)
}

// commitQuiet commits a change the availability record does not show (a
// lease renewal): nothing is re-signed or announced, so renewals cost the
// network nothing.
func (m *Miner) commitQuiet(f func(State, time.Time) (State, error)) (State, error) {
	return m.apply(f, false)
}

func (m *Miner) apply(f func(State, time.Time) (State, error), announce bool) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next State
	var record []byte
	err := m.d.Store.Update(func(txn *store.Txn) error {
		cur, err := loadState(txn)
		if err != nil {
			return err
		}
		now := time.Now()
		next, err = f(cur, now)
		if err != nil {
			return err
		}
		if !announce {
			return saveState(txn, next)
		}
		next.Seq = cur.Seq + 1
		record, err = m.sealRecord(next, now)
		if err != nil {
			return err
		}
		return saveState(txn, next)
	})
	if err != nil {
		return m.state, err
	}
	m.state = next
	if announce {
		m.announce(next, record)
	}
	return next, nil
}

func (m *Miner) sealRecord(s State, now time.Time) ([]byte, error) {
	rec := &pb.Availability{
		Network:    m.d.Check.Network,
		Miner:      []byte(m.self),
		Seq:        s.Seq,
		State:      s.State,
		Generation: s.Generation,
		Models:     m.d.Backend.Models(),
		IssuedMs:   protocol.Ms(now),
		ExpiresMs:  protocol.Ms(now.Add(m.d.Check.Params.RecordLifetime.Std())),
	}
	if s.State == pb.MinerState_AVAILABLE {
		rec.Attestations = s.Attestations
	}
	return protocol.Seal(rec, m.d.Key)
}

// provideDue reports whether the pool CIDs must be provided again.
func (m *Miner) provideDue(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return now.Sub(m.provided) > m.d.Check.Params.ProvideValidity.Std()/3
}

// meshDegree is gossipsub's target mesh size: below it, a node is still
// finding its place in the topic.
const meshDegree = 6

// recordDue reports whether the record must be signed again: before it
// expires, and whenever the pool topic gains a peer while the miner's mesh is
// still forming. Gossip does not replay history, so a record published before
// anyone listened (at start-up, always) would otherwise wait a full refresh.
// A subscriber that leaves and comes back (restarted) missed it as well, so
// a gain counts from the fewest peers seen since the record.
func (m *Miner) recordDue(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.lastRecord) >= m.d.Check.Params.RecordLifetime.Std()/3 {
		return true
	}
	peers := m.poolPeers()
	m.heardBy = min(m.heardBy, peers)
	return m.heardBy < meshDegree && peers > m.heardBy && now.Sub(m.lastRecord) >= time.Second
}

func (m *Miner) poolPeers() int {
	if m.d.PoolPeers == nil {
		return 0
	}
	return m.d.PoolPeers()
}
