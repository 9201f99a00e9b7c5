// Package router is the router role: it reserves an ephemeral miner for a
// user session with a signed claim, keeps the lease alive with renewals, and
// ends it with a release, all on the reserve stream protocol. Every
// reservation is written to the store before it is handed out, so a router
// that restarts resumes renewing what it holds.
package router

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
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
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

const (
	// claimTimeout bounds one claim to one miner, the retry of a lost
	// reply included.
	claimTimeout = 5 * time.Second
	// requestTimeout bounds one renewal or release.
	requestTimeout = 5 * time.Second
	// discoverTimeout bounds the DHT lookup of a pool before a claim.
	discoverTimeout = 3 * time.Second
	// maxProviders is how many pool providers a lookup asks the DHT for.
	maxProviders = 20
	// maxHistory is how many ended reservations are kept, in memory and in
	// the store; older ones are deleted.
	maxHistory = 1000
	// retryBase is the first wait after a failed renewal; it doubles, up to
	// the renewal interval.
	retryBase = 250 * time.Millisecond
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
	Host    host.Host
	DHT     *dht.IpfsDHT // nil: only the pool view is used to find miners
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

// saved is a reservation as the store keeps it, under res/<id>.
type saved struct {
	Reservation
	GrantEnv []byte `json:"grant"`
	LeaseMs  int64  `json:"lease_ms"`
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

func (r *Router) load(v []byte) (*entry, error) {
	var s saved
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, err
	}
	miner, err := peer.Decode(s.Miner)
	if err != nil {
		return nil, fmt.Errorf("miner: %w", err)
	}
	if s.ID == "" {
		return nil, errors.New("no session id")
	}
	lease := time.Duration(s.LeaseMs) * time.Millisecond
	if lease <= 0 {
		lease = r.d.Check.Params.Lease.Std()
	}
	s.Reservation.Grant = s.GrantEnv
	switch s.State {
	case StateActive, StateReleased, StateExpired, StateLost:
	default:
		return nil, fmt.Errorf("state %q", s.State)
	}
	return &entry{res: s.Reservation, miner: miner, lease: lease}, nil
}

func (r *Router) now() time.Time {
	if r.d.Check.Now != nil {
		return r.d.Check.Now()
	}
	return time.Now()
}

// Start renews every active reservation until Stop.
func (r *Router) Start(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return
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

// startLoopLocked starts e's renew loop; r.mu is held.
func (r *Router) startLoopLocked(runCtx context.Context, e *entry, first time.Duration) {
	ctx, cancel := context.WithCancel(runCtx)
	e.cancel, e.done = cancel, make(chan struct{})
	r.wg.Add(1)
	go r.renewLoop(ctx, e, e.done, first)
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

func short(id peer.ID) string {
	s := id.String()
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}

func summary(failures []string) string {
	const shown = 5
	if len(failures) <= shown {
		return fmt.Sprintf("%d tried: %s", len(failures), strings.Join(failures, "; "))
	}
	return fmt.Sprintf("%d tried: %s; and %d more", len(failures), strings.Join(failures[:shown], "; "), len(failures)-shown)
}

// candidates are the miners to claim, in order: the pool view's available
// miners (after a DHT lookup of the model's pool, if there is a DHT), less
// this node, the excluded ones and those it already holds. Those that fit
// (a reputation of at least minFit) come first, ordered by repeated power
// of two choices on reputation and measured latency; the rest follow as the
// fallback when no miner that fits grants a claim.
func (r *Router) candidates(ctx context.Context, model string, exclude []peer.ID) []pool.Miner {
	avail := r.d.Pool.Available(model)
	if r.d.DHT != nil && model != "" {
		if r.discover(ctx, model, avail) {
			avail = r.d.Pool.Available(model)
		}
	}
	r.mu.Lock()
	held := map[peer.ID]uint64{}
	for _, e := range r.res {
		if e.res.State == StateActive {
			held[e.miner] = e.res.Generation
		}
	}
	r.mu.Unlock()
	var fit, relayed, rest []pool.Miner
	scores := make(map[peer.ID]float64, len(avail))
	for _, m := range avail {
		if gen, ok := held[m.ID]; m.ID == r.self || (ok && gen == m.Generation) || slices.Contains(exclude, m.ID) {
			continue
		}
		rep := r.d.Pool.Reputation(m.ID).Score()
		scores[m.ID] = rep * r.latency.factor(m.ID)
		switch {
		case rep < minFit:
			rest = append(rest, m)
		case r.d.Relayed != nil && r.d.Relayed(m.ID):
			relayed = append(relayed, m)
		default:
			fit = append(fit, m)
		}
	}
	score := func(id peer.ID) float64 { return scores[id] }
	return slices.Concat(order(fit, score), order(relayed, score), order(rest, score))
}

// minFit is the reputation below which a miner is only a fallback: one that
// failed most of what this router saw of it.
const minFit = 0.25

// order sorts candidates by the power of two choices: the first is the
// better of two random candidates, the next the better of the loser and
// another random one, and so on. Load spreads over the pool while
// well-reputed, fast miners are preferred.
func order(cands []pool.Miner, score func(peer.ID) float64) []pool.Miner {
	rest := slices.Clone(cands)
	mrand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	out := make([]pool.Miner, 0, len(rest))
	for len(rest) > 1 {
		if score(rest[1].ID) > score(rest[0].ID) {
			rest[0], rest[1] = rest[1], rest[0]
		}
		out = append(out, rest[0])
		rest = rest[1:]
	}
	return append(out, rest...)
}

// discover looks up the providers of model's pool in the DHT and feeds the
// availability records of those the pool view does not list as available to
// the pool, which judges them. It reports whether it fetched any record.
func (r *Router) discover(ctx context.Context, model string, known []pool.Miner) bool {
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	skip := map[peer.ID]bool{r.self: true}
	for _, m := range known {
		skip[m.ID] = true
	}
	var wg sync.WaitGroup
	fetched := false
	for ai := range r.d.DHT.FindProvidersAsync(ctx, protocol.PoolCID(r.d.Network, model), maxProviders) {
		if skip[ai.ID] {
			continue
		}
		skip[ai.ID] = true
		if len(ai.Addrs) > 0 {
			r.d.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		}
		fetched = true
		id := ai.ID
		wg.Go(func() {
			raw, err := r.d.DHT.GetValue(ctx, protocol.AvailabilityKey([]byte(id)))
			if err != nil {
				return
			}
			rec, err := protocol.Open[pb.Availability](raw)
			if err != nil || rec.Signer != id {
				return
			}
			_ = r.d.Pool.AddAvailability(rec) // the pool judges it; stale or invalid records are its business
		})
	}
	wg.Wait()
	return fetched
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

// sendClaim sends a sealed claim to miner and returns its verified grant.
// The miner answers the same claim with the same grant, so a reply lost
// after the claim was sent is asked for again with the same envelope.
func (r *Router) sendClaim(ctx context.Context, miner peer.ID, env []byte, expires time.Time) (protocol.Signed[*pb.Grant], error) {
	var (
		reply []byte
		err   error
	)
	for attempt := 0; ; attempt++ {
		var sent bool
		start := time.Now()
		reply, sent, err = r.exchange(ctx, miner, env)
		if err == nil {
			r.latency.observe(miner, time.Since(start))
		}
		if err == nil || !sent || attempt == 1 || ctx.Err() != nil || !r.now().Before(expires) {
			break
		}
	}
	if err != nil {
		return protocol.Signed[*pb.Grant]{}, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	return r.verifyGrant(reply, miner, env)
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

var (
	kindGrant, _   = protocol.KindOf(&pb.Grant{})
	kindRefusal, _ = protocol.KindOf(&pb.Refusal{})
)

// verifyGrant accepts a reply only if it is a valid grant, signed by the
// miner dialled, for exactly the claim sent. A refusal becomes an error
// that names its reason.
func (r *Router) verifyGrant(reply []byte, miner peer.ID, claimEnv []byte) (protocol.Signed[*pb.Grant], error) {
	payloadType, err := protocol.PayloadType(reply)
	if err != nil {
		return protocol.Signed[*pb.Grant]{}, fmt.Errorf("reply: %w", err)
	}
	digest := protocol.Digest(claimEnv)
	switch {
	case bytes.Equal(payloadType, kindRefusal.PayloadType):
		ref, err := protocol.Open[pb.Refusal](reply)
		switch {
		case err != nil:
			return protocol.Signed[*pb.Grant]{}, fmt.Errorf("refusal: %w", err)
		case ref.Signer != miner:
			return protocol.Signed[*pb.Grant]{}, fmt.Errorf("refusal signed by %s, not the miner", ref.Signer)
		}
		msg := "refused " + ref.Msg.Reason.String()
		if ref.Msg.Detail != "" {
			msg += " (" + ref.Msg.Detail + ")"
		}
		if ref.Msg.ClaimDigest != nil && !bytes.Equal(ref.Msg.ClaimDigest, digest) {
			msg += " for another claim"
		}
		return protocol.Signed[*pb.Grant]{}, errors.New(msg)
	case !bytes.Equal(payloadType, kindGrant.PayloadType):
		return protocol.Signed[*pb.Grant]{}, fmt.Errorf("reply of payload type %q", payloadType)
	}
	g, err := protocol.Open[pb.Grant](reply)
	if err != nil {
		return g, fmt.Errorf("grant: %w", err)
	}
	if g.Signer != miner {
		return g, fmt.Errorf("grant signed by %s, not the miner dialled", g.Signer)
	}
	if _, err := r.d.Check.Grant(g); err != nil {
		return g, fmt.Errorf("grant: %w", err)
	}
	if !bytes.Equal(g.Msg.ClaimDigest, digest) {
		return g, errors.New("grant is for another claim")
	}
	if !protocol.Time(g.Msg.LeaseEndMs).After(r.now()) {
		return g, errors.New("grant's lease already ended")
	}
	return g, nil
}

// staleConnWait is how long a request on an existing connection may go
// unanswered before the connection is presumed dead: a QUIC connection to a
// miner that was killed looks open until its idle timeout.
const staleConnWait = 3 * time.Second

// exchange sends one request to miner on the reserve protocol and reads one
// reply. sent reports whether the request was written, after which the
// miner may have acted on it. If an existing connection does not answer in
// time, it is closed and the request sent once more on a fresh one; every
// request of the protocol may safely be sent twice.
func (r *Router) exchange(ctx context.Context, miner peer.ID, req []byte) (reply []byte, sent bool, err error) {
	if r.d.Host.Network().Connectedness(miner) == network.Connected {
		actx, cancel := context.WithTimeout(ctx, staleConnWait)
		reply, sent, err = r.exchangeOnce(actx, miner, req)
		cancel()
		if err == nil || ctx.Err() != nil {
			return reply, sent, err
		}
		r.log.Debug("no answer on an existing connection; dialling afresh", "miner", miner, "err", err)
		_ = r.d.Host.Network().ClosePeer(miner)
	}
	reply, sent2, err := r.exchangeOnce(ctx, miner, req)
	return reply, sent || sent2, err
}

func (r *Router) exchangeOnce(ctx context.Context, miner peer.ID, req []byte) (reply []byte, sent bool, err error) {
	h := r.d.Host
	if r.d.DHT != nil && h.Network().Connectedness(miner) != network.Connected && len(h.Peerstore().Addrs(miner)) == 0 {
		if ai, err := r.d.DHT.FindPeer(ctx, miner); err == nil {
			h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		}
	}
	s, err := h.NewStream(ctx, miner, protocol.ReserveProtocol(r.d.Network))
	if err != nil {
		return nil, false, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	w := bufio.NewWriter(s)
	if err := protocol.WriteMsg(w, req); err != nil {
		s.Reset()
		return nil, false, err
	}
	if err := w.Flush(); err != nil {
		s.Reset()
		return nil, true, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, true, err
	}
	reply, err = protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
	if err != nil {
		s.Reset()
		return nil, true, err
	}
	_ = s.Close()
	return reply, true, nil
}

// verifyReceipt accepts a reply only if it is the miner's receipt for req.
func (r *Router) verifyReceipt(reply []byte, miner peer.ID, req []byte) (*pb.Receipt, error) {
	rc, err := protocol.Open[pb.Receipt](reply)
	switch {
	case err != nil:
		return nil, fmt.Errorf("receipt: %w", err)
	case rc.Signer != miner || !bytes.Equal(rc.Msg.Miner, []byte(miner)):
		return nil, fmt.Errorf("receipt signed by %s, not the miner", rc.Signer)
	case rc.Msg.Network != r.d.Network:
		return nil, fmt.Errorf("receipt for network %q", rc.Msg.Network)
	case !bytes.Equal(rc.Msg.RequestDigest, protocol.Digest(req)):
		return nil, errors.New("receipt is for another request")
	}
	return rc.Msg, nil
}

// request seals msg, sends it to e's miner and returns the verified receipt.
func request[T any, M protocol.Message[T]](ctx context.Context, r *Router, e *entry, msg M) (*pb.Receipt, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	env, err := protocol.Seal(msg, r.d.Key)
	if err != nil {
		return nil, err
	}
	reply, _, err := r.exchange(ctx, e.miner, env)
	if err != nil {
		return nil, err
	}
	return r.verifyReceipt(reply, e.miner, env)
}

func (r *Router) sendRenew(ctx context.Context, e *entry) (*pb.Receipt, error) {
	return request(ctx, r, e, &pb.Renew{
		Network:    r.d.Network,
		Session:    e.res.ID,
		Router:     []byte(r.self),
		Miner:      []byte(e.miner),
		Generation: e.res.Generation,
		LeaseMs:    uint32(e.lease.Milliseconds()),
		IssuedMs:   protocol.Ms(r.now()),
	})
}

func (r *Router) sendRelease(ctx context.Context, e *entry, outcome pb.Outcome) (*pb.Receipt, error) {
	return request(ctx, r, e, &pb.Release{
		Network:    r.d.Network,
		Session:    e.res.ID,
		Signer:     []byte(r.self),
		Miner:      []byte(e.miner),
		Router:     []byte(r.self),
		Generation: e.res.Generation,
		Outcome:    outcome,
		IssuedMs:   protocol.Ms(r.now()),
	})
}

// renewLoop renews e every third of its lease until the reservation ends or
// ctx is cancelled. A failed renewal is retried sooner; once the lease has
// passed with no confirmed renewal the reservation has expired, and one the
// miner refuses is lost.
func (r *Router) renewLoop(ctx context.Context, e *entry, done chan struct{}, first time.Duration) {
	defer r.wg.Done()
	defer close(done)
	interval := max(e.lease/3, time.Millisecond)
	t := time.NewTimer(first)
	defer t.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rc, err := r.sendRenew(ctx, e)
		now := r.now()
		r.mu.Lock()
		leaseEnd := e.res.LeaseEnd
		r.mu.Unlock()
		var wait time.Duration
		switch {
		case err == nil && rc.Ok:
			fails = 0
			if end := protocol.Time(rc.LeaseEndMs); end.After(now) {
				r.extend(e, end)
			} else {
				r.log.Warn("renewal receipt with a past lease end", "reservation", e.res.ID, logging.Opt("session", e.res.Session), "miner", e.miner, "lease_end", end)
			}
			wait = interval
		case err == nil:
			state := StateLost
			if !now.Before(leaseEnd) {
				state = StateExpired
			}
			r.end(e, state, "renewal refused: "+rc.Detail)
			return
		case ctx.Err() != nil:
			return
		case !now.Before(leaseEnd):
			r.end(e, StateExpired, "renewal failed: "+err.Error())
			return
		default:
			fails++
			r.log.Warn("renewal failed", "reservation", e.res.ID, logging.Opt("session", e.res.Session), "miner", e.miner, "attempt", fails, "err", err)
			wait = min(interval, retryBase<<min(fails-1, 16))
			// One more attempt just after the lease ends decides it.
			wait = max(min(wait, leaseEnd.Sub(now)+time.Millisecond), time.Millisecond)
		}
		t.Reset(wait)
	}
}

// extend records a renewed lease.
func (r *Router) extend(e *entry, leaseEnd time.Time) {
	r.mu.Lock()
	if e.res.State != StateActive {
		r.mu.Unlock()
		return
	}
	e.res.LeaseEnd = leaseEnd
	r.mu.Unlock()
	if err := r.save(e); err != nil {
		r.log.Error("store renewed reservation", "reservation", e.res.ID, "err", err)
	}
}

// end moves an active reservation to state and stores it; it reports
// whether it did.
func (r *Router) end(e *entry, state, detail string) (Reservation, bool, error) {
	r.mu.Lock()
	if e.res.State != StateActive {
		res := e.res
		r.mu.Unlock()
		return res, false, nil
	}
	e.res.State, e.res.Ended, e.res.Detail = state, r.now(), detail
	res := e.res
	r.mu.Unlock()
	err := r.save(e)
	if err != nil {
		r.log.Error("store ended reservation", "reservation", res.ID, "err", err)
	}
	r.log.Info("reservation ended", "reservation", res.ID, logging.Opt("session", res.Session), "miner", res.Miner, "state", state, "detail", detail)
	r.prune()
	return res, true, err
}

// save writes e's current state to the store, one synced Put.
func (r *Router) save(e *entry) error { return r.saveSettling(e, false) }

// saveSettling is save; with settled it also deletes the entry's pending
// claim in the same synced transaction, so that a crash leaves either the
// claim or the reservation, never both.
func (r *Router) saveSettling(e *entry, settled bool) error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	if e.pruned {
		return nil
	}
	r.mu.Lock()
	s := saved{Reservation: e.res, GrantEnv: e.res.Grant, LeaseMs: e.lease.Milliseconds()}
	r.mu.Unlock()
	return r.d.Store.Update(func(txn *store.Txn) error {
		if err := store.PutJSON(txn, resKey(s.ID), s); err != nil {
			return err
		}
		if !settled {
			return nil
		}
		return txn.Delete(pendKey(s.ID))
	})
}

// prune forgets the oldest ended reservations beyond the history size.
func (r *Router) prune() {
	r.mu.Lock()
	var ended []*entry
	for _, e := range r.res {
		if e.res.State != StateActive {
			ended = append(ended, e)
		}
	}
	if len(ended) <= r.history {
		r.mu.Unlock()
		return
	}
	slices.SortFunc(ended, func(a, b *entry) int {
		return cmp.Or(a.res.Ended.Compare(b.res.Ended), a.res.Created.Compare(b.res.Created), strings.Compare(a.res.ID, b.res.ID))
	})
	drop := ended[:len(ended)-r.history]
	for _, e := range drop {
		delete(r.res, e.res.ID)
	}
	r.mu.Unlock()
	for _, e := range drop {
		e.saveMu.Lock()
		e.pruned = true
		if err := r.d.Store.Delete(resKey(e.res.ID)); err != nil {
			r.log.Warn("delete old reservation", "reservation", e.res.ID, "err", err)
		}
		e.saveMu.Unlock()
	}
}

// Release ends a reservation with outcome (completed, failed or
// cancelled). It is marked released even if the miner cannot be reached or
// refuses, and the error then wraps ErrNotConfirmed: the lease ends it on
// the miner's side.
func (r *Router) Release(ctx context.Context, id string, outcome pb.Outcome) (Reservation, error) {
	switch outcome {
	case pb.Outcome_COMPLETED, pb.Outcome_FAILED, pb.Outcome_CANCELLED:
	default:
		return Reservation{}, fmt.Errorf("%w: %s", ErrBadOutcome, outcome)
	}
	r.mu.Lock()
	e, ok := r.res[id]
	switch {
	case !ok:
		r.mu.Unlock()
		return Reservation{}, fmt.Errorf("%w: %q", ErrUnknownReservation, id)
	case e.res.State != StateActive:
		res := e.res
		r.mu.Unlock()
		return res, fmt.Errorf("%w: %s", ErrEnded, res.State)
	case e.releasing:
		res := e.res
		r.mu.Unlock()
		return res, fmt.Errorf("%w: a release is in progress", ErrEnded)
	}
	e.releasing = true
	cancel, done := e.cancel, e.done
	e.cancel, e.done = nil, nil
	r.mu.Unlock()
	// No renewal may race the release.
	if cancel != nil {
		cancel()
		<-done
	}
	r.mu.Lock()
	if e.res.State != StateActive { // the renew loop ended it first
		e.releasing = false
		res := e.res
		r.mu.Unlock()
		return res, fmt.Errorf("%w: %s", ErrEnded, res.State)
	}
	r.mu.Unlock()
	rc, err := r.sendRelease(ctx, e, outcome)
	var confirm error
	detail := ""
	switch {
	case err != nil:
		confirm = fmt.Errorf("%w: %v", ErrNotConfirmed, err)
		detail = "release not confirmed: " + err.Error()
	case !rc.Ok:
		confirm = fmt.Errorf("%w: refused: %s", ErrNotConfirmed, rc.Detail)
		detail = "release refused: " + rc.Detail
	}
	res, ended, serr := r.end(e, StateReleased, detail)
	r.mu.Lock()
	e.releasing = false
	r.mu.Unlock()
	if !ended {
		// The renew loop ended it first (lost or expired).
		return res, fmt.Errorf("%w: %s", ErrEnded, res.State)
	}
	if serr != nil {
		return res, errors.Join(confirm, fmt.Errorf("store released reservation: %w", serr))
	}
	return res, confirm
}
