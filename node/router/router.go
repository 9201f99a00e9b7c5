package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Reservation states, as the API names them.
const (
	StateActive   = "active"   // granted, and renewed by this router
	StateReleased = "released" // ended by this router's release
	StateExpired  = "expired"  // the lease ran out without a renewal the miner confirmed
	StateLost     = "lost"     // the miner refused a renewal before the lease ended
)

var (
	// ErrNoMiner: no candidate granted a claim. The API maps it to 503.
	ErrNoMiner = errors.New("no available miner")
	// ErrUnknownReservation: no reservation has this id.
	ErrUnknownReservation = errors.New("unknown reservation")
	// ErrEnded: the reservation has already ended.
	ErrEnded = errors.New("reservation already ended")
	// ErrNotConfirmed: the reservation was released locally, but the miner
	// did not confirm it; the lease will end it on the miner's side.
	ErrNotConfirmed = errors.New("the miner did not confirm the release; its lease will end it")
	// ErrBadLease: a lease that is negative or longer than the network allows.
	ErrBadLease = errors.New("bad lease")
	// ErrBadOutcome: a release outcome other than completed, failed or cancelled.
	ErrBadOutcome = errors.New("bad outcome")
	// ErrNotRunning: Reserve before Start or after Stop.
	ErrNotRunning = errors.New("router is not running")
)

// Deps are what a router works with.
type Deps struct {
	Network string
	Check   protocol.Checker
	Host    host.Host    // dials miners; it must route, finding the addresses of one it has none for
	DHT     *dht.IpfsDHT // finds pools' providers; nil: only the pool view is used to find miners
	Key     crypto.PrivKey
	Store   *store.Store
	Pool    *pool.Pool
	Log     *slog.Logger
	// ObserveReserve, if set, is told what each ReserveFor returned and
	// how long it took; Outcome names how it ended.
	ObserveReserve func(res Reservation, took time.Duration, err error)
	// Relayed, if set, says whether a miner is reached only through a
	// relay: such a miner is tried after the direct ones, since a relay
	// limits what a connection may carry and adds a hop to every task.
	Relayed func(peer.ID) bool
	// RelayLeft, if set, is how long the relayed connection that is this
	// node's only way to a miner may still last under its relay's limit;
	// ok is false when there is no such connection.
	RelayLeft func(peer.ID) (left time.Duration, ok bool)
}

// ErrRelayLimit is a claim not sent because the relay carrying the only
// connection to the miner would cut it before the lease ends.
var ErrRelayLimit = errors.New("reached only through a relay whose limit ends the connection before the lease would")

// Reservation is one session's hold on a miner.
type Reservation struct {
	ID         string    `json:"id"`                // the claim's session id, which names the reservation
	Session    string    `json:"session,omitempty"` // the user session it serves, if any
	Miner      string    `json:"miner"`
	Generation uint64    `json:"generation"`
	Model      string    `json:"model,omitempty"`
	LeaseEnd   time.Time `json:"lease_end"`
	Created    time.Time `json:"created"`
	State      string    `json:"state"`            // "active", "released", "expired", "lost"
	Ended      time.Time `json:"ended,omitzero"`   // when it left "active"
	Detail     string    `json:"detail,omitempty"` // why it ended, if not by a confirmed release
	Grant      []byte    `json:"-"`                // the miner's signed grant envelope
}

// entry is one reservation held in memory.
type entry struct {
	res   Reservation
	miner peer.ID
	lease time.Duration

	// Guarded by Router.mu.
	releasing bool
	cancel    context.CancelFunc // stops the renew loop; nil when none runs
	done      chan struct{}      // closed when the renew loop has returned

	saveMu sync.Mutex // orders the store writes of this entry
	pruned bool       // guarded by saveMu: deleted from the store, never write again
}

// Router reserves miners and holds their leases. It is safe for concurrent use.
type Router struct {
	d    Deps
	self peer.ID
	log  *slog.Logger

	mu      sync.Mutex
	res     map[string]*entry
	running bool
	runCtx  context.Context // the renew loops' parent while running
	cancel  context.CancelFunc
	wg      sync.WaitGroup // renew loops
	history int
	latency latencies
	// inflight names the pending claims a Reserve or settle is working on.
	inflight map[string]bool
	// refused names pending claims their miner refused, whose records settle
	// deletes together: a refusal costs no synced write of its own.
	refused map[string]bool
}

// New checks d and loads the reservations in the store; the active ones are
// renewed again once Start is called.
func New(d Deps) (*Router, error) {
	switch {
	case d.Network == "":
		return nil, errors.New("router: network name is empty")
	case d.Check.Network != d.Network:
		return nil, fmt.Errorf("router: checker is for network %q, not %q", d.Check.Network, d.Network)
	case d.Host == nil || d.Key == nil || d.Store == nil || d.Pool == nil:
		return nil, errors.New("router: host, key, store and pool are required")
	case d.Check.Params.Lease.Std() <= 0 || d.Check.Params.LeaseMax.Std() < d.Check.Params.Lease.Std():
		return nil, fmt.Errorf("router: lease %s and lease_max %s", d.Check.Params.Lease, d.Check.Params.LeaseMax)
	}
	self, err := peer.IDFromPrivateKey(d.Key)
	if err != nil {
		return nil, fmt.Errorf("router: identity: %w", err)
	}
	if self != d.Host.ID() {
		return nil, fmt.Errorf("router: key is %s but the host is %s", self, d.Host.ID())
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	r := &Router{d: d, self: self, log: d.Log, res: map[string]*entry{}, inflight: map[string]bool{}, refused: map[string]bool{}, history: maxHistory}
	err = d.Store.Scan([]byte("res/"), func(k, v []byte) error {
		e, err := r.load(v)
		if err != nil {
			r.log.Warn("dropping a damaged reservation", "key", string(k), "err", err)
			return nil
		}
		r.res[e.res.ID] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("router: load reservations: %w", err)
	}
	r.prune()
	return r, nil
}

func (r *Router) now() time.Time { return r.d.Check.Time() }

// Start renews every active reservation until Stop.
func (r *Router) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.running, r.runCtx, r.cancel = true, runCtx, cancel
	r.wg.Add(1)
	go r.settleLoop(runCtx)
	for _, e := range r.res {
		if e.res.State == StateActive && !e.releasing {
			// The lease may be near its end after a restart: renew at once.
			r.startLoopLocked(runCtx, e, 0)
		}
	}
	return nil
}

// Stop stops renewing and waits for the renew loops to return. It releases
// nothing: a router started again over the same store resumes its leases.
func (r *Router) Stop(ctx context.Context) error {
	r.mu.Lock()
	if !r.running {
		r.mu.Unlock()
		return nil
	}
	r.running = false
	r.cancel()
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("router: stop: %w", ctx.Err())
	}
	r.mu.Lock()
	for _, e := range r.res {
		if e.done == nil {
			continue
		}
		select {
		case <-e.done: // a loop of this run; a Start since may have begun another
			e.cancel, e.done = nil, nil
		default:
		}
	}
	r.mu.Unlock()
	return nil
}

// Reservations lists every reservation held, newest first.
func (r *Router) Reservations() []Reservation {
	r.mu.Lock()
	out := make([]Reservation, 0, len(r.res))
	for _, e := range r.res {
		out = append(out, e.res)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Reservation) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Get returns one reservation.
func (r *Router) Get(id string) (Reservation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.res[id]
	if !ok {
		return Reservation{}, false
	}
	return e.res, true
}

// Reserve claims an available miner for model ("" for any) with a lease (0
// for the network's default) and returns the granted reservation, already
// stored and being renewed. If no candidate grants a claim, the error wraps
// ErrNoMiner and says what each candidate answered.
func (r *Router) Reserve(ctx context.Context, model string, lease time.Duration) (Reservation, error) {
	return r.ReserveFor(ctx, Request{Model: model, Lease: lease})
}

// Request asks for one reservation.
type Request struct {
	Model   string        // "" for any
	Lease   time.Duration // 0 for the network's default
	Session string        // the user session the reservation serves, if any
	Exclude []peer.ID     // miners not to claim, e.g. those that failed the session
}

// The outcomes of a ReserveFor, as Outcome names them for metrics.
const (
	OutcomeGranted  = "granted"
	OutcomeNoMiner  = "no_miner"
	OutcomeCanceled = "canceled" // its caller gave up first, as a user who hung up
	OutcomeError    = "error"
)

// Outcome names how a ReserveFor ended.
func Outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeGranted
	case errors.Is(err, ErrNoMiner):
		return OutcomeNoMiner
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	default:
		return OutcomeError
	}
}

// ReserveFor claims an available miner as q asks; see Reserve.
func (r *Router) ReserveFor(ctx context.Context, q Request) (Reservation, error) {
	start := time.Now()
	res, err := r.reserveFor(ctx, q)
	if r.d.ObserveReserve != nil {
		r.d.ObserveReserve(res, time.Since(start), err)
	}
	return res, err
}

func (r *Router) reserveFor(ctx context.Context, q Request) (Reservation, error) {
	model, lease := q.Model, q.Lease
	if lease == 0 {
		lease = r.d.Check.Params.Lease.Std()
	}
	if lease < protocol.MinLease || lease > r.d.Check.Params.LeaseMax.Std() || lease.Milliseconds() > math.MaxUint32 {
		return Reservation{}, fmt.Errorf("%w: %s, must be from %s to %s", ErrBadLease, lease, protocol.MinLease, r.d.Check.Params.LeaseMax)
	}
	lease = lease.Truncate(time.Millisecond)
	r.mu.Lock()
	running := r.running
	r.mu.Unlock()
	if !running {
		return Reservation{}, ErrNotRunning
	}
	cands := r.candidates(ctx, model, q.Exclude)
	if len(cands) == 0 {
		if model == "" {
			return Reservation{}, fmt.Errorf("%w: none is free in the pool", ErrNoMiner)
		}
		return Reservation{}, fmt.Errorf("%w: none is free in the pool for model %q", ErrNoMiner, model)
	}
	var failures []string
	for _, m := range cands {
		if err := ctx.Err(); err != nil {
			return Reservation{}, fmt.Errorf("reserve: %w (%s)", err, summary(failures))
		}
		if r.d.RelayLeft != nil {
			if left, ok := r.d.RelayLeft(m.ID); ok && left < lease {
				failures = append(failures, fmt.Sprintf("%s: %v (%s left, lease %s)", short(m.ID), ErrRelayLimit, left.Truncate(time.Second), lease))
				continue
			}
		}
		res, err := r.claim(ctx, m, q, lease)
		if err == nil {
			return res, nil
		}
		r.log.Debug("claim not granted", logging.Opt("session", q.Session), "miner", m.ID, "generation", m.Generation, "err", err)
		failures = append(failures, fmt.Sprintf("%s: %v", short(m.ID), err))
	}
	return Reservation{}, fmt.Errorf("%w: %s", ErrNoMiner, summary(failures))
}

// claim asks one miner for a reservation and, on a grant, stores it and
// starts renewing it.
func (r *Router) claim(ctx context.Context, m pool.Miner, q Request, lease time.Duration) (Reservation, error) {
	model := q.Model
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	session, err := randomBytes(16)
	if err != nil {
		return Reservation{}, err
	}
	nonce, err := randomBytes(16)
	if err != nil {
		return Reservation{}, err
	}
	now := r.now()
	cl := &pb.Claim{
		Network:    r.d.Network,
		Session:    hex.EncodeToString(session),
		Router:     []byte(r.self),
		Miner:      []byte(m.ID),
		Generation: m.Generation,
		LeaseMs:    uint32(lease.Milliseconds()),
		Nonce:      nonce,
		ExpiresMs:  protocol.Ms(now.Add(r.d.Check.Params.ClaimLifetime.Std())),
		Model:      model,
	}
	env, err := protocol.Seal(cl, r.d.Key)
	if err != nil {
		return Reservation{}, err
	}
	// Written before the claim leaves: a router that dies before it stores
	// the grant finds the claim on restart and settles it (see settle).
	p := pending{Claim: env, Miner: m.ID.String(), Session: q.Session, Model: model, LeaseMs: lease.Milliseconds()}
	if err := r.savePending(cl.Session, p); err != nil {
		return Reservation{}, err
	}
	grant, err := r.sendClaim(ctx, m.ID, env, protocol.Time(cl.ExpiresMs))
	switch {
	case errors.Is(err, errUnreachable):
		// The miner may have granted it: settle finds out.
		r.finishPending(cl.Session)
		return Reservation{}, err
	case err != nil:
		r.refusePending(cl.Session)
		return Reservation{}, err
	}
	res, err := r.adopt(ctx, cl.Session, p, grant, m.ID, now)
	if err != nil {
		r.finishPending(cl.Session)
		return Reservation{}, err
	}
	r.log.Info("reserved", "reservation", res.ID, logging.Opt("session", q.Session), "miner", m.ID, "generation", res.Generation, "lease_end", res.LeaseEnd)
	return res, nil
}

// adopt stores a granted claim as an active reservation, drops its pending
// record and starts renewing it.
func (r *Router) adopt(ctx context.Context, id string, p pending, grant protocol.Signed[*pb.Grant], miner peer.ID, created time.Time) (Reservation, error) {
	lease := time.Duration(p.LeaseMs) * time.Millisecond
	e := &entry{
		res: Reservation{
			ID:         id,
			Session:    p.Session,
			Miner:      miner.String(),
			Generation: grant.Msg.Generation,
			Model:      p.Model,
			LeaseEnd:   protocol.Time(grant.Msg.LeaseEndMs),
			Created:    created,
			State:      StateActive,
			Grant:      grant.Raw,
		},
		miner: miner,
		lease: lease,
	}
	if err := r.saveSettling(e, true); err != nil {
		// A grant this router cannot keep: give it back rather than let
		// the miner sit reserved until its lease ends.
		if _, rerr := r.sendRelease(context.WithoutCancel(ctx), e, pb.Outcome_CANCELLED); rerr == nil {
			r.dropPending(id)
		}
		return Reservation{}, fmt.Errorf("store reservation: %w", err)
	}
	r.finishPending(id)
	r.mu.Lock()
	r.res[e.res.ID] = e
	if r.running {
		r.startLoopLocked(r.runCtx, e, lease/3)
	}
	res := e.res
	r.mu.Unlock()
	return res, nil
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random: %w", err)
	}
	return b, nil
}
