// Package pool is every node's view of the ephemeral pool: the miners it
// knows with their latest signed availability records, the attestations,
// grants and releases seen on gossip, evidence of equivocation, and the
// reputation it derives from all of them. It is persisted in the store, and
// it judges gossip messages with the state their validity depends on
// (duplicates, older generations, conflicts).
package pool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// States, as the API names them.
var stateNames = map[pb.MinerState]string{
	pb.MinerState_JOINING:     "joining",
	pb.MinerState_VALIDATING:  "validating",
	pb.MinerState_AVAILABLE:   "available",
	pb.MinerState_RESERVED:    "reserved",
	pb.MinerState_COOLING_OFF: "cooling_off",
}

// StateName is the API name of a lifecycle state.
func StateName(s pb.MinerState) string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return "unknown"
}

// Miner is what this node knows of one miner.
type Miner struct {
	ID         peer.ID
	State      pb.MinerState
	Generation uint64
	Seq        uint64
	Models     []string
	// Oracles whose passing, unexpired attestations for the current generation this node holds.
	Oracles  []peer.ID
	LastSeen time.Time
	Expires  time.Time
	// Record is the signed availability record, as received.
	Record []byte
}

// EventKind says what changed in the pool.
type EventKind int

// The events a pool announces to its subscribers.
const (
	EventAvailability EventKind = iota + 1
	EventAttestation
	EventGrant
	EventRelease
	EventEvidence
)

// Event is one accepted change. Exactly one of its message fields is set.
type Event struct {
	Kind         EventKind
	Availability *protocol.Signed[*pb.Availability]
	Attestation  *protocol.Signed[*pb.Attestation]
	Grant        *protocol.Signed[*pb.Grant]
	Release      *protocol.Signed[*pb.Release]
	Evidence     *pb.Evidence
	Offender     peer.ID
}

// Pool is a node's view of the pool. It is safe for concurrent use.
type Pool struct {
	check protocol.Checker
	store *store.Store
	log   *slog.Logger

	mu     sync.Mutex
	miners map[peer.ID]*Miner
	subs   []func(Event)
	repMu  sync.Mutex // serialises read-modify-write of reputations
	// addMu makes each Add's look-up and write one step: gossipsub
	// validates many messages at once, and two conflicting ones must not
	// both find the slot empty.
	addMu sync.Mutex
	// reporting holds the digests of evidence this node is publishing.
	reporting sync.Map

	// held indexes the attestations in the store, verified once on the way
	// in, so that listing the pool never verifies a signature again.
	attMu sync.Mutex
	held  map[minerGen][]protocol.Signed[*pb.Attestation]
}

type minerGen struct {
	miner peer.ID
	gen   uint64
}

// forgetAfter is how long a miner whose record has lapsed stays listed.
const forgetAfter = time.Hour

// New loads the pool view from s.
func New(s *store.Store, check protocol.Checker, log *slog.Logger) (*Pool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{check: check, store: s, log: log, miners: map[peer.ID]*Miner{}, held: map[minerGen][]protocol.Signed[*pb.Attestation]{}}
	err := s.Scan([]byte(recordPrefix), func(_, v []byte) error {
		var saved savedRecord
		if err := json.Unmarshal(v, &saved); err != nil {
			return nil // a damaged entry is dropped; the miner republishes
		}
		rec, err := protocol.Open[pb.Availability](saved.Envelope)
		if err != nil {
			return nil
		}
		p.miners[rec.Signer] = p.minerFrom(rec, saved.LastSeen)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load pool: %w", err)
	}
	err = s.Scan([]byte(attPrefix), func(_, v []byte) error {
		if a, err := protocol.Open[pb.Attestation](v); err == nil && check.Attestation(a) == nil {
			p.hold(a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load attestations: %w", err)
	}
	return p, nil
}

// forgetBefore drops the index's attestations of miner's older generations:
// they never count again. The store's copies lapse by their TTL.
func (p *Pool) forgetBefore(miner peer.ID, gen uint64) {
	p.attMu.Lock()
	defer p.attMu.Unlock()
	for k := range p.held {
		if k.miner == miner && k.gen < gen {
			delete(p.held, k)
		}
	}
}

// hold indexes a verified attestation, dropping the expired ones of its
// miner and generation as it goes.
func (p *Pool) hold(a protocol.Signed[*pb.Attestation]) {
	miner, _ := peer.IDFromBytes(a.Msg.Miner)
	k := minerGen{miner, a.Msg.Generation}
	now := time.Now()
	p.attMu.Lock()
	defer p.attMu.Unlock()
	kept := p.held[k][:0]
	for _, h := range p.held[k] {
		if protocol.Time(h.Msg.ExpiresMs).After(now) {
			kept = append(kept, h)
		}
	}
	p.held[k] = append(kept, a)
}

type savedRecord struct {
	Envelope []byte    `json:"envelope"`
	LastSeen time.Time `json:"last_seen"`
}

// Subscribe registers f for every accepted change. f runs on the goroutine
// that made the change and must not block.
func (p *Pool) Subscribe(f func(Event)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs = append(p.subs, f)
}

func (p *Pool) publish(ev Event) {
	p.mu.Lock()
	subs := slices.Clone(p.subs)
	p.mu.Unlock()
	for _, f := range subs {
		f(ev)
	}
}

func (p *Pool) minerFrom(rec protocol.Signed[*pb.Availability], seen time.Time) *Miner {
	a := rec.Msg
	return &Miner{
		ID: rec.Signer, State: a.State, Generation: a.Generation, Seq: a.Seq,
		Models: slices.Clone(a.Models), LastSeen: seen, Expires: protocol.Time(a.ExpiresMs), Record: rec.Raw,
	}
}

// AddAvailability takes a miner's record if it is valid and newer than the
// one held. It returns ErrIgnore-wrapped errors for stale records.
func (p *Pool) AddAvailability(rec protocol.Signed[*pb.Availability]) error {
	if err := p.check.Availability(rec); err != nil {
		return err
	}
	p.mu.Lock()
	old, ok := p.miners[rec.Signer]
	if ok && old.Seq >= rec.Msg.Seq {
		p.mu.Unlock()
		if old.Seq == rec.Msg.Seq && !bytes.Equal(old.Record, rec.Raw) {
			return fmt.Errorf("%w: two records with sequence %d", protocol.ErrReject, rec.Msg.Seq)
		}
		return fmt.Errorf("%w: sequence %d is not newer than %d", protocol.ErrIgnore, rec.Msg.Seq, old.Seq)
	}
	if ok && rec.Msg.Generation < old.Generation {
		p.mu.Unlock()
		return fmt.Errorf("%w: generation %d went back from %d", protocol.ErrReject, rec.Msg.Generation, old.Generation)
	}
	now := time.Now()
	// Stored under the lock, so that the store never keeps an older
	// sequence than the view when two records race.
	b, _ := json.Marshal(savedRecord{Envelope: rec.Raw, LastSeen: now})
	// A miner that stops publishing is forgotten a while after its record
	// lapses, so the view (and the store) never grows without bound.
	if err := p.store.PutWithTTL(recordKey(rec.Signer), b, time.Until(protocol.Time(rec.Msg.ExpiresMs))+forgetAfter); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("store record: %w", err)
	}
	p.miners[rec.Signer] = p.minerFrom(rec, now)
	p.mu.Unlock()
	p.forgetBefore(rec.Signer, rec.Msg.Generation)
	p.publish(Event{Kind: EventAvailability, Availability: &rec})
	return nil
}

// AddAttestation takes a valid attestation. A duplicate is ignored; one for a
// generation older than the miner's current one is ignored; a different
// verdict by the same oracle for the same (miner, generation, round) is
// equivocation, returned as evidence.
func (p *Pool) AddAttestation(att protocol.Signed[*pb.Attestation]) (*pb.Evidence, error) {
	p.addMu.Lock()
	defer p.addMu.Unlock()
	if err := p.check.Attestation(att); err != nil {
		return nil, err
	}
	a := att.Msg
	miner, _ := peer.IDFromBytes(a.Miner)
	p.mu.Lock()
	m, known := p.miners[miner]
	var current uint64
	if known {
		current = m.Generation
	}
	p.mu.Unlock()
	if known && a.Generation < current {
		return nil, fmt.Errorf("%w: generation %d is older than the miner's %d", protocol.ErrIgnore, a.Generation, current)
	}
	key := attKey(miner, a.Generation, att.Signer, a.Round)
	prev, err := p.store.Get(key)
	switch {
	case err == nil && bytes.Equal(prev, att.Raw):
		return nil, fmt.Errorf("%w: duplicate attestation", protocol.ErrIgnore)
	case err == nil:
		ev := &pb.Evidence{Network: a.Network, Kind: pb.EvidenceKind_DOUBLE_VERDICT, First: prev, Second: att.Raw}
		if _, cerr := p.check.Evidence(ev); cerr != nil {
			// Same verdict signed twice (say, re-sent after a restart): not a conflict.
			return nil, fmt.Errorf("%w: attestation already held", protocol.ErrIgnore)
		}
		return ev, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	ttl := time.Until(protocol.Time(a.ExpiresMs))
	if err := p.store.PutWithTTL(key, att.Raw, max(ttl, time.Second)); err != nil {
		return nil, fmt.Errorf("store attestation: %w", err)
	}
	p.hold(att)
	p.recordVerdict(att.Signer, miner, a.Pass)
	p.publish(Event{Kind: EventAttestation, Attestation: &att})
	return nil, nil
}

// Attestations returns the valid, unexpired attestations held for miner at generation.
func (p *Pool) Attestations(miner peer.ID, generation uint64) []protocol.Signed[*pb.Attestation] {
	now := time.Now()
	p.attMu.Lock()
	held := slices.Clone(p.held[minerGen{miner, generation}])
	p.attMu.Unlock()
	var out []protocol.Signed[*pb.Attestation]
	for _, a := range held {
		// An oracle caught signing two verdicts has no vote.
		if protocol.Time(a.Msg.ExpiresMs).After(now) && !p.Penalized(a.Signer) {
			out = append(out, a)
		}
	}
	return out
}

// PassingOracles are the distinct oracles with a passing, unexpired
// attestation held for miner at generation.
func (p *Pool) PassingOracles(miner peer.ID, generation uint64) []peer.ID {
	var out []peer.ID
	for _, a := range p.Attestations(miner, generation) {
		if a.Msg.Pass && !slices.Contains(out, a.Signer) {
			out = append(out, a.Signer)
		}
	}
	return out
}

// AddGrant takes a valid grant. A second grant by the same miner for the same
// generation, for another claim, is equivocation, returned as evidence.
func (p *Pool) AddGrant(g protocol.Signed[*pb.Grant]) (*pb.Evidence, error) {
	p.addMu.Lock()
	defer p.addMu.Unlock()
	if _, err := p.check.Grant(g); err != nil {
		return nil, err
	}
	if !protocol.Time(g.Msg.LeaseEndMs).After(time.Now()) {
		return nil, fmt.Errorf("%w: the grant's lease has ended", protocol.ErrIgnore)
	}
	key := grantKey(g.Signer, g.Msg.Generation)
	prev, err := p.store.Get(key)
	switch {
	case err == nil && bytes.Equal(prev, g.Raw):
		return nil, fmt.Errorf("%w: duplicate grant", protocol.ErrIgnore)
	case err == nil:
		old, oerr := protocol.Open[pb.Grant](prev)
		if oerr == nil && bytes.Equal(old.Msg.ClaimDigest, g.Msg.ClaimDigest) {
			return nil, fmt.Errorf("%w: grant for this claim already held", protocol.ErrIgnore)
		}
		return &pb.Evidence{Network: g.Msg.Network, Kind: pb.EvidenceKind_DOUBLE_GRANT, First: prev, Second: g.Raw}, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if err := p.store.PutWithTTL(key, g.Raw, 7*24*time.Hour); err != nil {
		return nil, fmt.Errorf("store grant: %w", err)
	}
	p.publish(Event{Kind: EventGrant, Grant: &g})
	return nil, nil
}

// Grant returns the grant held for miner at generation, if any.
func (p *Pool) Grant(miner peer.ID, generation uint64) (protocol.Signed[*pb.Grant], bool) {
	raw, err := p.store.Get(grantKey(miner, generation))
	if err != nil {
		return protocol.Signed[*pb.Grant]{}, false
	}
	g, err := protocol.Open[pb.Grant](raw)
	return g, err == nil
}

// AddRelease takes a valid release and updates the reputation it speaks to.
func (p *Pool) AddRelease(r protocol.Signed[*pb.Release]) error {
	p.addMu.Lock()
	defer p.addMu.Unlock()
	if err := p.check.Release(r); err != nil {
		return err
	}
	miner, _ := peer.IDFromBytes(r.Msg.Miner)
	// A release ends a reservation this node knows of: without the grant to
	// match, anyone could sign releases that blame (or praise) any miner.
	g, ok := p.Grant(miner, r.Msg.Generation)
	if !ok {
		return fmt.Errorf("%w: no grant held for %s at generation %d", protocol.ErrIgnore, miner, r.Msg.Generation)
	}
	if !bytes.Equal(g.Msg.Router, r.Msg.Router) || g.Msg.Session != r.Msg.Session {
		return fmt.Errorf("%w: release by %s does not match the grant", protocol.ErrReject, r.Signer)
	}
	if r.Signer == miner && protocol.Time(r.Msg.IssuedMs).Before(protocol.Time(g.Msg.LeaseEndMs)) {
		return fmt.Errorf("%w: the miner declared its lease expired before it ended", protocol.ErrReject)
	}
	key := releaseKey(miner, r.Msg.Generation)
	if _, err := p.store.Get(key); err == nil {
		return fmt.Errorf("%w: release already held", protocol.ErrIgnore)
	}
	if err := p.store.PutWithTTL(key, r.Raw, 7*24*time.Hour); err != nil {
		return err
	}
	router, _ := peer.IDFromBytes(g.Msg.Router) // checked with the grant
	p.recordSession(miner, router, r.Msg.Outcome)
	p.publish(Event{Kind: EventRelease, Release: &r})
	return nil
}

// AddEvidence takes valid evidence: the offender's reputation goes to zero
// and it is penalised for the penalty period. It reports whether the
// offender was news; valid evidence of a known offender is still valid, and
// is passed on, so that it reaches nodes that did not see the conflict.
func (p *Pool) AddEvidence(e *pb.Evidence) (peer.ID, bool, error) {
	p.addMu.Lock()
	defer p.addMu.Unlock()
	offender, err := p.check.Evidence(e)
	if err != nil {
		return "", false, err
	}
	// One copy of each conflict travels: the same pair re-sealed by other
	// reporters (or anyone, any number of times) is dropped quietly.
	pair := evidenceKey(e)
	if _, err := p.store.Get(pair); err == nil {
		return offender, false, fmt.Errorf("%w: evidence already held", protocol.ErrIgnore)
	}
	if err := p.store.PutWithTTL(pair, nil, p.check.Params.PenaltyPeriod.Std()); err != nil {
		return offender, false, err
	}
	if p.Penalized(offender) {
		return offender, false, nil
	}
	until := time.Now().Add(p.check.Params.PenaltyPeriod.Std())
	b, _ := until.MarshalText()
	if err := p.store.PutWithTTL(penaltyKey(offender), b, p.check.Params.PenaltyPeriod.Std()); err != nil {
		return offender, false, err
	}
	p.recordEquivocation(offender)
	p.log.Warn("equivocation", "peer", offender, "kind", e.Kind.String())
	p.publish(Event{Kind: EventEvidence, Evidence: e, Offender: offender})
	return offender, true, nil
}

// Penalized reports whether p was caught equivocating within the penalty period.
func (p *Pool) Penalized(id peer.ID) bool {
	_, err := p.store.Get(penaltyKey(id))
	return err == nil
}

// Miners lists every known miner, ordered by peer ID, with the oracles
// attesting its current generation.
func (p *Pool) Miners() []Miner {
	out := p.Records()
	for i := range out {
		out[i].Oracles = p.PassingOracles(out[i].ID, out[i].Generation)
	}
	return out
}

// Records lists every known miner, ordered by peer ID, as its record says,
// without the oracles (which cost a look-up per attestation).
func (p *Pool) Records() []Miner {
	p.mu.Lock()
	out := make([]Miner, 0, len(p.miners))
	forget := time.Now().Add(-forgetAfter)
	for id, m := range p.miners {
		if m.Expires.Before(forget) {
			delete(p.miners, id) // gone for an hour; its store entry has lapsed too
			continue
		}
		out = append(out, *m)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Miner) int { return bytes.Compare([]byte(a.ID), []byte(b.ID)) })
	return out
}

// Miner returns what this node knows of one miner.
func (p *Pool) Miner(id peer.ID) (Miner, bool) {
	p.mu.Lock()
	m, ok := p.miners[id]
	var out Miner
	if ok {
		out = *m
	}
	p.mu.Unlock()
	if ok {
		out.Oracles = p.PassingOracles(id, out.Generation)
	}
	return out, ok
}

// Available lists the miners whose latest unexpired record says available
// and that no evidence has caught equivocating.
func (p *Pool) Available(model string) []Miner {
	now := time.Now()
	var out []Miner
	for _, m := range p.Records() {
		if m.State != pb.MinerState_AVAILABLE || !m.Expires.After(now) || p.Penalized(m.ID) {
			continue
		}
		if model != "" && !slices.Contains(m.Models, model) {
			continue
		}
		out = append(out, m)
	}
	return out
}
