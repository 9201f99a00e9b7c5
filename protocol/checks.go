package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Checks sort what is wrong with a message the way gossip validators must:
var (
	// ErrReject marks a message that is provably bad (a wrong signer, a
	// malformed field, another network): its sender is penalised.
	ErrReject = errors.New("reject")
	// ErrIgnore marks a message that is merely useless (stale, early,
	// a duplicate): it is dropped quietly.
	ErrIgnore = errors.New("ignore")
)

func rejectf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrReject}, args...)...)
}

func ignoref(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrIgnore}, args...)...)
}

// Ms converts a time to the protocol's Unix milliseconds.
func Ms(t time.Time) int64 { return t.UnixMilli() }

// Time converts protocol milliseconds to a time.
func Time(ms int64) time.Time { return time.UnixMilli(ms) }

// PeerID decodes a binary peer ID field.
func PeerID(b []byte) (peer.ID, error) {
	id, err := peer.IDFromBytes(b)
	if err != nil {
		return "", rejectf("bad peer ID: %v", err)
	}
	return id, nil
}

// Checker applies the stateless checks of one network at one moment.
type Checker struct {
	Network string
	Params  Params
	Now     func() time.Time
	// Cache, if set, spares re-verifying attestation signatures already
	// verified; copies of the Checker share it.
	Cache *SigCache
}

// Time is the Checker's clock: Now, or the wall clock when Now is unset.
// Whoever judges or dates messages with the Checker reads the time here.
func (c Checker) Time() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c Checker) network(n string) error {
	if n != c.Network {
		return rejectf("network %q, this is %q", n, c.Network)
	}
	return nil
}

// notFuture ignores a message issued further ahead than the clock skew allows.
func (c Checker) notFuture(issuedMs int64) error {
	if Time(issuedMs).After(c.Time().Add(c.Params.ClockSkew.Std())) {
		return ignoref("issued %s in the future", Time(issuedMs).Sub(c.Time()).Round(time.Millisecond))
	}
	return nil
}

// byOracle checks what every oracle's message must be: for this network,
// naming as its oracle the peer that signed it, one of the oracle set.
func (c Checker) byOracle(what, network string, oracleField []byte, signer peer.ID) error {
	if err := c.network(network); err != nil {
		return err
	}
	oracle, err := PeerID(oracleField)
	if err != nil {
		return err
	}
	if oracle != signer {
		return rejectf("%s names oracle %s but is signed by %s", what, oracle, signer)
	}
	if !c.Params.IsOracle(oracle) {
		return rejectf("signer %s is not in the oracle set", oracle)
	}
	return nil
}

// Attestation checks a signed attestation: signed by an oracle of the set
// about a valid miner, unexpired, not from the future.
func (c Checker) Attestation(s Signed[*pb.Attestation]) error {
	a := s.Msg
	if err := c.byOracle("attestation", a.Network, a.Oracle, s.Signer); err != nil {
		return err
	}
	if _, err := PeerID(a.Miner); err != nil {
		return err
	}
	if a.ScoreMilli > 1000 {
		return rejectf("score %d over 1000", a.ScoreMilli)
	}
	if len(a.ChallengeDigest) != 32 {
		return rejectf("challenge digest of %d bytes", len(a.ChallengeDigest))
	}
	if a.ExpiresMs <= a.IssuedMs || Time(a.ExpiresMs).Sub(Time(a.IssuedMs)) > c.Params.AttestationLifetime.Std()+c.Params.ClockSkew.Std() {
		return rejectf("lifetime %s out of bounds", Time(a.ExpiresMs).Sub(Time(a.IssuedMs)))
	}
	if err := c.notFuture(a.IssuedMs); err != nil {
		return err
	}
	if !Time(a.ExpiresMs).After(c.Time()) {
		return ignoref("expired")
	}
	return nil
}

// Quorum returns the distinct oracles whose passing, valid attestations in
// envs support miner at generation, and an error if they are fewer than the
// quorum.
func (c Checker) Quorum(miner peer.ID, generation uint64, envs [][]byte) ([]peer.ID, error) {
	var oracles []peer.ID
	live, signed := map[peer.ID]bool{}, map[peer.ID]bool{}
	for _, raw := range envs {
		s, err := openCached[pb.Attestation](c.Cache, raw)
		if err != nil {
			return nil, rejectf("attestation: %v", err)
		}
		if !bytes.Equal(s.Msg.Miner, []byte(miner)) || s.Msg.Generation != generation || !s.Msg.Pass {
			continue
		}
		err = c.Attestation(s)
		if err != nil && !errors.Is(err, ErrIgnore) {
			continue // forged or from outside the oracle set: never counts
		}
		signed[s.Signer] = true
		if err == nil && !live[s.Signer] {
			live[s.Signer] = true
			oracles = append(oracles, s.Signer)
		}
	}
	switch {
	case len(signed) < c.Params.Quorum:
		return oracles, rejectf("%d passing attestations for generation %d, quorum is %d", len(signed), generation, c.Params.Quorum)
	case len(oracles) < c.Params.Quorum:
		// The quorum was there, but some attestations have since expired,
		// perhaps on the way here: stale, not malicious.
		return oracles, ignoref("%d of %d passing attestations for generation %d still valid, quorum is %d",
			len(oracles), len(signed), generation, c.Params.Quorum)
	}
	return oracles, nil
}

// Availability checks a miner's signed availability record: an AVAILABLE
// record must carry a quorum of passing attestations for its generation.
func (c Checker) Availability(s Signed[*pb.Availability]) error {
	a := s.Msg
	if err := c.network(a.Network); err != nil {
		return err
	}
	miner, err := PeerID(a.Miner)
	if err != nil {
		return err
	}
	if miner != s.Signer {
		return rejectf("record of %s signed by %s", miner, s.Signer)
	}
	if a.State < pb.MinerState_JOINING || a.State > pb.MinerState_COOLING_OFF {
		return rejectf("unknown state %d", a.State)
	}
	if a.ExpiresMs <= a.IssuedMs || Time(a.ExpiresMs).Sub(Time(a.IssuedMs)) > c.Params.RecordLifetime.Std()+c.Params.ClockSkew.Std() {
		return rejectf("record lifetime out of bounds")
	}
	if err := c.notFuture(a.IssuedMs); err != nil {
		return err
	}
	if !Time(a.ExpiresMs).After(c.Time()) {
		return ignoref("record expired")
	}
	// At most one attestation per oracle, and only on an AVAILABLE record:
	// each is a signature every receiver may have to verify.
	if len(a.Attestations) > len(c.Params.Oracles) {
		return rejectf("%d attestations, the oracle set has %d", len(a.Attestations), len(c.Params.Oracles))
	}
	if a.State != pb.MinerState_AVAILABLE && len(a.Attestations) > 0 {
		return rejectf("attestations on a %s record", a.State)
	}
	if a.State == pb.MinerState_AVAILABLE {
		if _, err := c.Quorum(miner, a.Generation, a.Attestations); err != nil {
			return err
		}
	}
	return nil
}

// Claim checks a router's claim as its miner receives it.
func (c Checker) Claim(s Signed[*pb.Claim], self peer.ID) error {
	cl := s.Msg
	if err := c.network(cl.Network); err != nil {
		return err
	}
	router, err := PeerID(cl.Router)
	if err != nil {
		return err
	}
	if router != s.Signer {
		return rejectf("claim names router %s but is signed by %s", router, s.Signer)
	}
	if !c.Params.RouterAllowed(router) {
		return rejectf("router %s is not one of the network's routers", router)
	}
	miner, err := PeerID(cl.Miner)
	if err != nil {
		return err
	}
	if self != "" && miner != self {
		return rejectf("claim is for %s", miner)
	}
	if cl.Session == "" || len(cl.Session) > 128 {
		return rejectf("session id of %d bytes", len(cl.Session))
	}
	if len(cl.Nonce) < 8 || len(cl.Nonce) > 64 {
		return rejectf("nonce of %d bytes", len(cl.Nonce))
	}
	if lease := time.Duration(cl.LeaseMs) * time.Millisecond; lease < MinLease || lease > c.Params.LeaseMax.Std() {
		return rejectf("lease %dms, must be from %s to %s", cl.LeaseMs, MinLease, c.Params.LeaseMax)
	}
	if !Time(cl.ExpiresMs).After(c.Time()) {
		return ignoref("claim expired")
	}
	if Time(cl.ExpiresMs).After(c.Time().Add(c.Params.ClaimLifetime.Std() + c.Params.ClockSkew.Std())) {
		return rejectf("claim expiry too far ahead")
	}
	return nil
}

// Grant checks a miner's grant and the router's claim inside it.
func (c Checker) Grant(s Signed[*pb.Grant]) (Signed[*pb.Claim], error) {
	g := s.Msg
	if err := c.network(g.Network); err != nil {
		return Signed[*pb.Claim]{}, err
	}
	miner, err := PeerID(g.Miner)
	if err != nil {
		return Signed[*pb.Claim]{}, err
	}
	if miner != s.Signer {
		return Signed[*pb.Claim]{}, rejectf("grant of %s signed by %s", miner, s.Signer)
	}
	claim, err := Open[pb.Claim](g.Claim)
	if err != nil {
		return claim, rejectf("claim in grant: %v", err)
	}
	cl := claim.Msg
	switch {
	case !bytes.Equal(Digest(g.Claim), g.ClaimDigest):
		return claim, rejectf("claim digest does not match the claim")
	case cl.Network != g.Network, !bytes.Equal(cl.Miner, g.Miner), !bytes.Equal(cl.Router, g.Router),
		cl.Session != g.Session, cl.Generation != g.Generation:
		return claim, rejectf("grant does not match its claim")
	case !bytes.Equal(cl.Router, []byte(claim.Signer)):
		return claim, rejectf("claim in grant not signed by its router")
	case !c.Params.RouterAllowed(claim.Signer):
		return claim, rejectf("grant to %s, not one of the network's routers", claim.Signer)
	}
	return claim, nil
}

// Release checks a release: signed by the reservation's router or its miner.
func (c Checker) Release(s Signed[*pb.Release]) error {
	r := s.Msg
	if err := c.network(r.Network); err != nil {
		return err
	}
	signer, err := PeerID(r.Signer)
	if err != nil {
		return err
	}
	if signer != s.Signer {
		return rejectf("release names signer %s but is signed by %s", signer, s.Signer)
	}
	if _, err := PeerID(r.Miner); err != nil {
		return err
	}
	if _, err := PeerID(r.Router); err != nil {
		return err
	}
	if !bytes.Equal(r.Signer, r.Miner) && !bytes.Equal(r.Signer, r.Router) {
		return rejectf("release signed by neither the miner nor the router")
	}
	if r.Outcome < pb.Outcome_COMPLETED || r.Outcome > pb.Outcome_CANCELLED {
		return rejectf("unknown outcome %d", r.Outcome)
	}
	// A miner ends a reservation only by its lease running out, and a router
	// never claims that one did: so no miner can vouch for its own sessions.
	byMiner := bytes.Equal(r.Signer, r.Miner)
	if byMiner != (r.Outcome == pb.Outcome_EXPIRED) {
		return rejectf("outcome %s signed by the %s", r.Outcome, map[bool]string{true: "miner", false: "router"}[byMiner])
	}
	return c.notFuture(r.IssuedMs)
}

// Eviction checks an oracle's eviction: signed by the oracle it names, one
// of the set, about a grant ranked beyond its router's limit, not from the
// future and not older than a claim may be (a stale verdict judged a view
// that has moved on).
func (c Checker) Eviction(s Signed[*pb.Eviction]) error {
	e := s.Msg
	if err := c.byOracle("eviction", e.Network, e.Oracle, s.Signer); err != nil {
		return err
	}
	if _, err := PeerID(e.Miner); err != nil {
		return err
	}
	if _, err := PeerID(e.Router); err != nil {
		return err
	}
	switch {
	case len(e.ClaimDigest) != 32:
		return rejectf("claim digest of %d bytes", len(e.ClaimDigest))
	case e.Held <= e.Limit || e.Rank <= e.Limit || e.Rank > e.Held:
		return rejectf("rank %d of %d held is not beyond the limit %d", e.Rank, e.Held, e.Limit)
	case int(e.Limit) != c.Params.RouterLimit(int(e.Pool)):
		return rejectf("limit %d, the network's for a pool of %d is %d", e.Limit, e.Pool, c.Params.RouterLimit(int(e.Pool)))
	}
	if err := c.notFuture(e.IssuedMs); err != nil {
		return err
	}
	if c.Time().Sub(Time(e.IssuedMs)) > c.Params.ClaimLifetime.Std()+c.Params.ClockSkew.Std() {
		return ignoref("issued %s ago", c.Time().Sub(Time(e.IssuedMs)).Round(time.Millisecond))
	}
	return nil
}

// Evidence checks that two signed messages conflict: two grants by one
// miner for one generation, or two different verdicts by one oracle for one
// (miner, generation, round). It returns the equivocating signer.
func (c Checker) Evidence(e *pb.Evidence) (peer.ID, error) {
	if err := c.network(e.Network); err != nil {
		return "", err
	}
	if bytes.Equal(e.First, e.Second) {
		return "", rejectf("evidence of one message twice")
	}
	switch e.Kind {
	case pb.EvidenceKind_DOUBLE_GRANT:
		a, errA := Open[pb.Grant](e.First)
		b, errB := Open[pb.Grant](e.Second)
		if err := errors.Join(errA, errB); err != nil {
			return "", rejectf("evidence grant: %v", err)
		}
		if a.Signer != b.Signer || !bytes.Equal(a.Msg.Miner, b.Msg.Miner) || a.Msg.Generation != b.Msg.Generation ||
			a.Msg.Network != c.Network || b.Msg.Network != c.Network || !bytes.Equal(a.Msg.Miner, []byte(a.Signer)) {
			return "", rejectf("grants do not conflict")
		}
		if bytes.Equal(a.Msg.ClaimDigest, b.Msg.ClaimDigest) {
			return "", rejectf("grants are for the same claim")
		}
		return a.Signer, nil
	case pb.EvidenceKind_DOUBLE_VERDICT:
		a, errA := Open[pb.Attestation](e.First)
		b, errB := Open[pb.Attestation](e.Second)
		if err := errors.Join(errA, errB); err != nil {
			return "", rejectf("evidence attestation: %v", err)
		}
		if a.Signer != b.Signer || !bytes.Equal(a.Msg.Oracle, []byte(a.Signer)) || !bytes.Equal(a.Msg.Miner, b.Msg.Miner) ||
			a.Msg.Generation != b.Msg.Generation || a.Msg.Round != b.Msg.Round ||
			a.Msg.Network != c.Network || b.Msg.Network != c.Network {
			return "", rejectf("attestations do not conflict")
		}
		if a.Msg.Pass == b.Msg.Pass && a.Msg.ScoreMilli == b.Msg.ScoreMilli {
			return "", rejectf("attestations agree")
		}
		return a.Signer, nil
	default:
		return "", rejectf("unknown evidence kind %d", e.Kind)
	}
}

// AvailabilityValidator is the DHT record validator of the availability
// namespace: it accepts only a valid record signed by the miner the key names
// (an AVAILABLE one attested by a quorum), and selects the highest sequence.
type AvailabilityValidator struct{ Check Checker }

// Validate implements record.Validator.
func (v AvailabilityValidator) Validate(key string, value []byte) error {
	s, err := openCached[pb.Availability](v.Check.Cache, value)
	if err != nil {
		return err
	}
	if key != AvailabilityKey([]byte(s.Signer)) {
		return rejectf("record of %s under another key", s.Signer)
	}
	return v.Check.Availability(s)
}

// Select implements record.Validator: the highest valid sequence wins.
// The DHT has usually validated the values already; with a signature cache
// validating again costs no signature check.
func (v AvailabilityValidator) Select(key string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	for i, val := range values {
		if v.Validate(key, val) != nil {
			continue
		}
		s, _ := openCached[pb.Availability](v.Check.Cache, val)
		if best < 0 || s.Msg.Seq > bestSeq {
			best, bestSeq = i, s.Msg.Seq
		}
	}
	if best < 0 {
		return 0, errors.New("no valid availability record")
	}
	return best, nil
}
