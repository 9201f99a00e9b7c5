// Package oracle is the oracle role: at every validation round it challenges
// the miners that rendezvous hashing assigns to it, grades their answers with
// the challenge bank, and signs and gossips an attestation with its verdict.
//
// An oracle never signs two verdicts for one (miner, generation, round): the
// verdict is written to the store in the same transaction that checks none was
// signed before, and is published only after that commit (see signing.go).
package oracle

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// MaxConcurrent is how many validations the round loop runs at once.
const MaxConcurrent = 8

// exchangeSlack is added to the latency budget of all tasks to bound one
// validation: dialling, protocol negotiation and transfer.
const exchangeSlack = 5 * time.Second

// publishTimeout bounds publishing a verdict once it is signed and stored.
const publishTimeout = 5 * time.Second

// Deps are what an oracle needs from its node.
type Deps struct {
	Network string
	Check   protocol.Checker
	Host    host.Host
	Key     crypto.PrivKey
	Store   *store.Store
	Pool    *pool.Pool
	Bank    *challenge.Bank
	// Embed is the oracle's reference embedder for the embedding grader;
	// nil uses the built-in inference engine's.
	Embed func(ctx context.Context, texts []string) ([][]float32, error)
	// Publish sends data on the attestations topic.
	Publish func(ctx context.Context, data []byte) error
	Log     *slog.Logger
	Now     func() time.Time // nil = time.Now
}

// Stats count what the oracle did since it was created.
type Stats struct {
	Validations int // validations started (challenges about to be sent)
	Passed      int // validations that reached a passing verdict
	Failed      int // validations that reached a failing verdict
	Signed      int // new attestations signed and stored (not counting stored ones returned again)
	Evictions   int // evictions sent to miners whose router held more than its share
}

// Oracle validates miners and signs attestations.
type Oracle struct {
	d    Deps
	self peer.ID
	log  *slog.Logger

	validations, passed, failed, signed atomic.Int64
	evictions                           atomic.Int64 // evictions sent to miners of routers over their share

	notOracleLogged atomic.Bool

	mu       sync.Mutex
	inflight map[string]bool // signedPrefix (miner, generation) of the validations the loop is running
	started  bool
	cancel   context.CancelFunc
	loopDone chan struct{}
	wg       sync.WaitGroup // validations started by the loop
	sched    *schedule
}

// New checks d and returns an oracle; Start runs it.
func New(d Deps) (*Oracle, error) {
	switch {
	case d.Network == "":
		return nil, errors.New("oracle: network name is empty")
	case d.Check.Network != d.Network:
		return nil, fmt.Errorf("oracle: checker is for network %q, not %q", d.Check.Network, d.Network)
	case d.Host == nil, d.Key == nil, d.Store == nil, d.Pool == nil, d.Bank == nil, d.Publish == nil:
		return nil, errors.New("oracle: host, key, store, pool, bank and publish are all required")
	case d.Check.Params.RoundPeriod.Std() <= 0 || d.Check.Params.AttestationLifetime.Std() <= 0:
		return nil, errors.New("oracle: params need a positive round period and attestation lifetime")
	}
	self, err := peer.IDFromPrivateKey(d.Key)
	if err != nil {
		return nil, fmt.Errorf("oracle: key: %w", err)
	}
	if self != d.Host.ID() {
		return nil, fmt.Errorf("oracle: key is %s but the host is %s", self, d.Host.ID())
	}
	if d.Embed == nil {
		d.Embed = inference.NewBuiltin().Embed
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Oracle{
		d: d, self: self, log: d.Log.With("role", "oracle"),
		inflight: map[string]bool{}, sched: newSchedule(),
	}, nil
}

// Stats returns the counters, for the API and the dashboard.
func (o *Oracle) Stats() Stats {
	return Stats{
		Validations: int(o.validations.Load()),
		Passed:      int(o.passed.Load()),
		Failed:      int(o.failed.Load()),
		Signed:      int(o.signed.Load()),
		Evictions:   int(o.evictions.Load()),
	}
}

func (o *Oracle) params() protocol.Params { return o.d.Check.Params }

// Start runs the round loop in the background until Stop is called or ctx
// ends: once at once, then at every round boundary. It returns at once; a
// second call does nothing.
func (o *Oracle) Start(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started {
		return nil
	}
	o.started = true
	ctx, o.cancel = context.WithCancel(ctx)
	o.loopDone = make(chan struct{})
	go o.loop(ctx)
	o.wg.Go(func() { o.judgeShares(ctx) })
	return nil
}

// Stop ends the round loop, cancels the validations in flight (a cancelled
// validation signs nothing) and waits for them to return. A verdict already
// being stored is still stored and published.
func (o *Oracle) Stop(ctx context.Context) error {
	o.mu.Lock()
	cancel, done := o.cancel, o.loopDone
	o.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("oracle: stop: %w", ctx.Err())
	}
	o.wg.Wait()
	return nil
}

func (o *Oracle) loop(ctx context.Context) {
	defer close(o.loopDone)
	period := o.params().RoundPeriod.Std()
	last, ticked := uint64(0), false
	t := time.NewTimer(0)
	defer t.Stop()
	for wait.Tick(ctx, t.C) {
		now := o.d.Now()
		// The timer can fire a hair before the boundary by o.d.Now's clock:
		// a round is handled once, when that clock has reached it.
		if r := o.params().RoundAt(now); !ticked || r != last {
			last, ticked = r, true
			o.tick(ctx, r)
		}
		now = o.d.Now()
		next := time.UnixMilli((now.UnixMilli()/period.Milliseconds() + 1) * period.Milliseconds())
		t.Reset(max(next.Sub(now), time.Millisecond))
	}
}

// acquire takes a validation slot for m (see schedule.acquire): a proven
// miner waits for one as long as ctx lasts, a newcomer until round ends.
func (o *Oracle) acquire(ctx context.Context, m pool.Miner, round uint64) func() {
	if o.proven(m) {
		return o.sched.acquire(ctx, true)
	}
	period := o.params().RoundPeriod.Std()
	end := time.UnixMilli(int64(round+1) * period.Milliseconds())
	// Bounded by a period, for a clock that is not the wall clock (tests').
	nctx, cancel := context.WithTimeout(ctx, min(end.Sub(o.d.Now()), period))
	defer cancel()
	return o.sched.acquire(nctx, false)
}

// tick starts a validation of every miner this oracle should validate in
// round, as far as its slots allow (see schedule): proven miners first, in
// a fresh random order, then newcomers; a miner backing off after failing
// here is left out until its backoff ends.
func (o *Oracle) tick(ctx context.Context, round uint64) {
	p := o.params()
	if !p.IsOracle(o.self) {
		if o.notOracleLogged.CompareAndSwap(false, true) {
			o.log.Info("not in the oracle set; validating no one", "self", o.self)
		}
		return
	}
	oracles := p.OracleIDs()
	miners := o.d.Pool.Records()
	o.sched.forget(miners)
	o.sched.order(miners, o.proven)
	for _, m := range miners {
		if o.sched.waiting(m.ID, o.d.Now()) || !o.due(m, oracles, round) {
			continue
		}
		// One validation of a (miner, generation) at a time: a slow one
		// started in an earlier round is not doubled in this one.
		key := string(signedPrefix(m.ID, m.Generation))
		o.mu.Lock()
		busy := o.inflight[key]
		o.mu.Unlock()
		if busy {
			continue
		}
		release := o.acquire(ctx, m, round)
		if ctx.Err() != nil {
			if release != nil {
				release()
			}
			return
		}
		if release == nil {
			continue // a newcomer, and no newcomer slot freed this round: a later round
		}
		if p.RoundAt(o.d.Now()) != round {
			// Waited past the round for a free slot: the next tick takes over.
			release()
			return
		}
		o.mu.Lock()
		o.inflight[key] = true
		o.mu.Unlock()
		o.wg.Add(1)
		go func(m pool.Miner) {
			defer func() {
				o.mu.Lock()
				delete(o.inflight, key)
				o.mu.Unlock()
				release()
				o.wg.Done()
			}()
			pass, err := o.validate(ctx, m.ID, m.Generation, round)
			switch {
			case err == nil && pass:
				o.sched.passed(m.ID)
			case err == nil:
				// A wrong answer, a reset, or no answer before the deadline:
				// the same backoff the miner would sit out after a failure
				// quorum, so a staller cannot take a slot every round.
				o.sched.failed(m.ID, o.d.Now(), p.Backoff)
			case ctx.Err() == nil:
				// No verdict (unreachable, our bank failed): not the
				// miner's doing for sure, and an unreachable miner holds a
				// slot only while a dial fails, so no backoff.
				o.log.Warn("validation", "miner", m.ID, "generation", m.Generation, "round", round, "err", err)
			}
		}(m)
	}
}

// proven reports whether m has a record of passing: the pool has seen a
// passing verdict on it by an oracle of the set (at any generation, so a
// miner back from a session counts), and it has not failed here since. Only
// a real miner can earn that, so a proven miner gets the slots newcomers
// may not take; one that passed once and then stalls loses it at its first
// failure.
func (o *Oracle) proven(m pool.Miner) bool {
	return o.sched.failures(m.ID) == 0 && o.d.Pool.Reputation(m.ID).Passes > 0
}

// stuckRounds is how many round periods after this oracle's latest pass of
// a miner's generation a record of that miner still saying VALIDATING must
// be heard before the pass is taken to be lost (see due).
const stuckRounds = 2

// due reports whether this oracle should validate m in round: m is
// validating, its record unexpired, it is not penalised, this oracle is
// assigned to it, has signed nothing for (m, generation, round), and either
// holds no unexpired passing verdict of its own for m's generation or that
// pass looks lost.
//
// A pass is lost when gossip delivered it to no peer (a publish before the
// mesh has formed, say just after a restart, returns no error and reaches
// no one), and the miner then waits for it until it would have expired.
// Sending the same envelope again does not help: gossipsub drops a publish
// of content this node has delivered in the last two minutes, and after that
// the node's own pool validator ignores it as a duplicate. So if the miner
// is heard still VALIDATING at this generation in a record received
// stuckRounds round periods or more after our latest pass, the oracle
// validates it again in a new round, which signs a new verdict under a new
// (miner, generation, round): never a second one for a round already judged.
// Each new pass restarts the wait, and the miner re-signs its record at most
// once a second while its mesh forms and every record_lifetime/3 after, so
// this runs at most once per stuckRounds rounds and per record heard.
func (o *Oracle) due(m pool.Miner, oracles []peer.ID, round uint64) bool {
	now := o.d.Now()
	if m.State != pb.MinerState_VALIDATING || !m.Expires.After(now) || o.d.Pool.Penalized(m.ID) {
		return false
	}
	if !slices.Contains(protocol.AssignedOracles(oracles, m.ID, m.Generation, round, o.params().PerRound()), o.self) {
		return false
	}
	if _, err := o.d.Store.Get(signedKey(m.ID, m.Generation, round)); err == nil {
		return false
	}
	// Our own verdicts, from the store in case gossip has not brought them
	// back to the pool.
	last, passed := o.lastPass(m.ID, m.Generation, now)
	for _, a := range o.d.Pool.Attestations(m.ID, m.Generation) {
		if a.Signer == o.self && a.Msg.Pass {
			passed = true
			last = later(last, protocol.Time(a.Msg.IssuedMs))
		}
	}
	if !passed {
		return true
	}
	return m.LastSeen.After(last.Add(stuckRounds * o.params().RoundPeriod.Std()))
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Validate runs one validation of miner for (generation, round) now and
// returns the signed attestation envelope. If this oracle already signed a
// verdict for (miner, generation, round), that envelope is returned and no
// new one is signed. A miner that cannot be reached, is too slow, answers
// wrongly or signs wrongly gets a failing verdict; if ctx ends before a
// verdict is reached, there is none and ctx's error is returned.
func (o *Oracle) Validate(ctx context.Context, miner peer.ID, generation, round uint64) ([]byte, error) {
	env, _, err := o.judge(ctx, miner, generation, round)
	return env, err
}

// validate is Validate for the round loop, which needs only the verdict.
func (o *Oracle) validate(ctx context.Context, miner peer.ID, generation, round uint64) (pass bool, err error) {
	_, pass, err = o.judge(ctx, miner, generation, round)
	return pass, err
}

// judge is Validate, also returning whether the verdict is a pass.
func (o *Oracle) judge(ctx context.Context, miner peer.ID, generation, round uint64) ([]byte, bool, error) {
	if !o.params().IsOracle(o.self) {
		return nil, false, fmt.Errorf("oracle: %s is not in the oracle set", o.self)
	}
	key := signedKey(miner, generation, round)
	if env, err := o.d.Store.Get(key); err == nil {
		// Already judged: never a second verdict.
		a, err := protocol.Open[pb.Attestation](env)
		return env, err == nil && a.Msg.Pass, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	cfg := o.d.Bank.Config()
	n := o.params().ChallengesPerValidation
	if n <= 0 {
		n = cfg.ChallengesPerValidation
	}
	var seed [32]byte
	crand.Read(seed[:]) // never fails since Go 1.24
	tasks := o.d.Bank.Pick(rand.New(rand.NewChaCha8(seed)), n)
	if len(tasks) == 0 {
		return nil, false, errors.New("oracle: the challenge bank gave no tasks")
	}
	nonce := make([]byte, 32)
	crand.Read(nonce)
	ch := &pb.Challenge{
		Network: o.d.Network, Oracle: []byte(o.self), Miner: []byte(miner),
		Generation: generation, Round: round, Nonce: nonce,
		IssuedMs: protocol.Ms(o.d.Now()), LatencyBudgetMs: uint32(cfg.LatencyBudgetMS),
	}
	for _, t := range tasks {
		ch.Tasks = append(ch.Tasks, &pb.Task{Family: t.Family, Seed: t.Seed, Prompt: t.Prompt})
	}
	chEnv, err := protocol.Seal(ch, o.d.Key)
	if err != nil {
		return nil, false, err
	}
	digest := protocol.Digest(chEnv)
	o.validations.Add(1)

	timeout := time.Duration(cfg.LatencyBudgetMS)*time.Millisecond*time.Duration(len(tasks)) + exchangeSlack
	xctx, cancel := context.WithTimeout(ctx, timeout)
	ans, elapsed, err := o.exchange(xctx, miner, chEnv)
	cancel()
	if err == nil {
		err = checkAnswer(ans, o.d.Network, miner, digest, len(tasks))
	}
	if ctx.Err() != nil {
		return nil, false, ctx.Err() // shutdown, not the miner's fault: no verdict
	}
	if errors.Is(err, errUnreachable) {
		// We could not reach it, perhaps because our own routing does not
		// know it yet: no verdict, and another round (or oracle) will try.
		// An unreachable miner gets no passes, so it never becomes available.
		return nil, false, err
	}
	var (
		score float64
		pass  bool
		model string
	)
	if err != nil {
		o.log.Info("miner failed the exchange", "miner", miner, "generation", generation, "round", round, "err", err)
	} else {
		model = ans.Msg.Model
		lat := latencies(ans.Msg.LatenciesMs, elapsed)
		results, s, _, gerr := o.d.Bank.GradeAll(ctx, tasks, ans.Msg.Outputs, lat, o.d.Embed)
		if gerr != nil {
			// The bank or our embedder failed, not the miner: no verdict.
			if ctx.Err() != nil {
				return nil, false, ctx.Err()
			}
			return nil, false, fmt.Errorf("oracle: grade: %w", gerr)
		}
		// The pass threshold is the network's rule, not the bank's: every
		// oracle must judge a score alike.
		score, pass = s, s >= o.d.Check.Params.PassThreshold-1e-9
		for i, r := range results {
			if !r.Pass {
				o.log.Debug("task failed", "miner", miner, "family", tasks[i].Family, "reason", r.Reason)
			}
		}
	}
	now := o.d.Now()
	att := &pb.Attestation{
		Network: o.d.Network, Oracle: []byte(o.self), Miner: []byte(miner),
		Generation: generation, Round: round, Model: model,
		ScoreMilli: uint32(math.Round(max(0, min(1, score)) * 1000)), Pass: pass,
		IssuedMs:        protocol.Ms(now),
		ExpiresMs:       protocol.Ms(now.Add(o.params().AttestationLifetime.Std())),
		ChallengeDigest: digest,
	}
	env, fresh, err := o.signOnce(key, att)
	if err != nil {
		return nil, false, err
	}
	if !fresh {
		a, err := protocol.Open[pb.Attestation](env)
		return env, err == nil && a.Msg.Pass, nil
	}
	o.signed.Add(1)
	if pass {
		o.passed.Add(1)
	} else {
		o.failed.Add(1)
	}
	o.log.Info("attestation signed", "miner", miner, "generation", generation, "round", round,
		"pass", pass, "score_milli", att.ScoreMilli, "model", model)
	// Published even if ctx has just ended: it is signed and stored, and
	// gossip is best effort.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer pcancel()
	if err := o.d.Publish(pctx, env); err != nil {
		o.log.Warn("publish attestation", "miner", miner, "generation", generation, "round", round, "err", err)
	}
	// The miner follows no gossip: it learns its verdicts from us.
	if err := o.notify(context.WithoutCancel(ctx), miner, env); err != nil {
		o.log.Debug("send attestation to its miner", "miner", miner, "generation", generation, "round", round, "err", err)
	}
	return env, pass, nil
}

// errUnreachable: no stream to the miner could be opened.
var errUnreachable = errors.New("miner unreachable")

// exchange sends the challenge envelope to miner and reads its answer. The
// elapsed time runs from writing the challenge to reading the answer. A
// challenge that fails on an old connection is sent once more on a fresh
// one: a miner that restarted on the same port would otherwise fail on its
// dead predecessor's connection, through no fault of its own.
func (o *Oracle) exchange(ctx context.Context, miner peer.ID, chEnv []byte) (protocol.Signed[*pb.Answer], time.Duration, error) {
	var none protocol.Signed[*pb.Answer]
	raw, elapsed, err := protocol.CallRedial(ctx, o.d.Host, miner, protocol.ValidateProtocol(o.d.Network), chEnv, protocol.MaxAnswerSize, 0)
	switch {
	case errors.Is(err, protocol.ErrNoStream):
		return none, 0, fmt.Errorf("%w: %v", errUnreachable, err)
	case err != nil:
		return none, 0, err
	}
	ans, err := protocol.Open[pb.Answer](raw)
	if err != nil {
		return none, elapsed, fmt.Errorf("answer: %w", err)
	}
	return ans, elapsed, nil
}

// checkAnswer checks that ans is miner's answer to the challenge named by digest.
func checkAnswer(ans protocol.Signed[*pb.Answer], net string, miner peer.ID, digest []byte, tasks int) error {
	a := ans.Msg
	switch {
	case ans.Signer != miner:
		return fmt.Errorf("answer signed by %s, not the miner", ans.Signer)
	case a.Network != net:
		return fmt.Errorf("answer for network %q", a.Network)
	case !bytes.Equal(a.ChallengeDigest, digest):
		return errors.New("answer is to another challenge")
	case !bytes.Equal(a.Miner, []byte(miner)):
		return errors.New("answer names another miner")
	case len(a.Outputs) != tasks || len(a.LatenciesMs) != tasks:
		return fmt.Errorf("%d outputs and %d latencies for %d tasks", len(a.Outputs), len(a.LatenciesMs), tasks)
	}
	return nil
}

// latencies are the latencies graded: for each task, the latency the miner
// claims, or the oracle's measure of the whole exchange divided evenly over
// the tasks if that is larger. A miner cannot claim to be faster than the
// oracle saw it be; it can only make itself look slower.
func latencies(claimed []uint32, elapsed time.Duration) []time.Duration {
	share := elapsed / time.Duration(max(1, len(claimed)))
	out := make([]time.Duration, len(claimed))
	for i, ms := range claimed {
		out[i] = max(time.Duration(ms)*time.Millisecond, share)
	}
	return out
}
