package protocol

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Params are the rules of one network, the same on every node of it: who the
// oracles are, how many must agree, and the protocol's clocks. They are the
// [params] section of config.toml.
type Params struct {
	// Oracles lists the peer IDs of the network's oracle set.
	Oracles []string `toml:"oracles"`
	// Quorum is how many distinct oracles must pass a miner's generation.
	Quorum int `toml:"quorum"`
	// OraclesPerRound is how many oracles rendezvous hashing assigns to a
	// miner in a round; 0 means quorum + 1, capped at the oracle set.
	OraclesPerRound int `toml:"oracles_per_round"`
	// RoundPeriod is the length of a validation round.
	RoundPeriod duration.Duration `toml:"round_period"`
	// AttestationLifetime is how long an attestation counts.
	AttestationLifetime duration.Duration `toml:"attestation_lifetime"`
	// Lease is the default lease; LeaseMax the longest a miner grants.
	Lease    duration.Duration `toml:"lease"`
	LeaseMax duration.Duration `toml:"lease_max"`
	// ClaimLifetime is how long a claim may take to reach the miner.
	ClaimLifetime duration.Duration `toml:"claim_lifetime"`
	// RevalidationBackoff is the first cooling-off period after a failed
	// validation; it doubles with each failure up to RevalidationBackoffMax.
	RevalidationBackoff    duration.Duration `toml:"revalidation_backoff"`
	RevalidationBackoffMax duration.Duration `toml:"revalidation_backoff_max"`
	// ChallengesPerValidation and PassThreshold shape one validation.
	ChallengesPerValidation int     `toml:"challenges_per_validation"`
	PassThreshold           float64 `toml:"pass_threshold"`
	// ChallengeBank is a challenge bank file; "" uses the embedded one.
	ChallengeBank string `toml:"challenge_bank"`
	// RecordLifetime is how long an availability record is valid;
	// miners republish it at a third of that.
	RecordLifetime duration.Duration `toml:"record_lifetime"`
	// ProvideValidity is how long a DHT provider record of a pool lives;
	// available miners provide again at a third of that.
	ProvideValidity duration.Duration `toml:"provide_validity"`
	// ClockSkew is how far in the future a message's time may be.
	ClockSkew duration.Duration `toml:"clock_skew"`
	// PenaltyPeriod is how long oracles refuse to attest an equivocating miner.
	PenaltyPeriod duration.Duration `toml:"penalty_period"`
	// Routers lists the peer IDs of the only routers miners take claims
	// from; empty means any.
	Routers []string `toml:"routers"`
	// MaxRouterShare is the fraction of the pool one router may hold at
	// once, and RouterShareFloor how many miners it may hold whatever the
	// pool's size (see RouterLimit). Without a limit one identity claims
	// every available miner and renews for ever.
	MaxRouterShare   float64 `toml:"max_router_share"`
	RouterShareFloor int     `toml:"router_share_floor"`
}

// MinLease is the shortest lease a claim or renewal may ask for: renewals
// come every third of a lease, and a millisecond lease would be a flood.
const MinLease = time.Second

// DefaultParams suit a small network; the oracle set is empty and must be
// filled in (the testnet fills it from the oracle keys it generates).
func DefaultParams() Params {
	return Params{
		Oracles:                 []string{},
		Quorum:                  2,
		RoundPeriod:             duration.Duration(5 * time.Second),
		AttestationLifetime:     duration.Duration(30 * time.Minute),
		Lease:                   duration.Duration(30 * time.Second),
		LeaseMax:                duration.Duration(10 * time.Minute),
		ClaimLifetime:           duration.Duration(10 * time.Second),
		RevalidationBackoff:     duration.Duration(10 * time.Second),
		RevalidationBackoffMax:  duration.Duration(5 * time.Minute),
		ChallengesPerValidation: 5,
		PassThreshold:           0.8,
		RecordLifetime:          duration.Duration(3 * time.Minute),
		ProvideValidity:         duration.Duration(90 * time.Second),
		ClockSkew:               duration.Duration(30 * time.Second),
		PenaltyPeriod:           duration.Duration(time.Hour),
		Routers:                 []string{},
		MaxRouterShare:          0.5,
		RouterShareFloor:        3,
	}
}

// Validate checks the parameters and names the first wrong one. An empty
// oracle set is allowed (a network still forming); nothing can then become
// available, and a node says so in its log.
func (p Params) Validate() error {
	if err := peerList("oracles", p.Oracles); err != nil {
		return err
	}
	if err := peerList("routers", p.Routers); err != nil {
		return err
	}
	if !(p.MaxRouterShare > 0 && p.MaxRouterShare <= 1) { // also refuses NaN
		return fmt.Errorf("params.max_router_share: %v, must be in (0, 1]", p.MaxRouterShare)
	}
	if p.RouterShareFloor < 1 {
		return fmt.Errorf("params.router_share_floor: %d, must be at least 1", p.RouterShareFloor)
	}
	if p.Quorum < 1 {
		return fmt.Errorf("params.quorum: %d, must be at least 1", p.Quorum)
	}
	if len(p.Oracles) > 0 && p.Quorum > len(p.Oracles) {
		return fmt.Errorf("params.quorum: %d, more than the %d oracles", p.Quorum, len(p.Oracles))
	}
	if p.OraclesPerRound < 0 {
		return fmt.Errorf("params.oracles_per_round: %d is negative", p.OraclesPerRound)
	}
	positive := []struct {
		name string
		d    duration.Duration
	}{
		{"round_period", p.RoundPeriod}, {"attestation_lifetime", p.AttestationLifetime},
		{"lease", p.Lease}, {"lease_max", p.LeaseMax}, {"claim_lifetime", p.ClaimLifetime},
		{"revalidation_backoff", p.RevalidationBackoff}, {"revalidation_backoff_max", p.RevalidationBackoffMax},
		{"record_lifetime", p.RecordLifetime}, {"provide_validity", p.ProvideValidity},
		{"clock_skew", p.ClockSkew}, {"penalty_period", p.PenaltyPeriod},
	}
	for _, f := range positive {
		if f.d.Std() <= 0 {
			return fmt.Errorf("params.%s: %s, must be positive", f.name, f.d)
		}
	}
	if p.RoundPeriod.Std() < time.Millisecond {
		// RoundAt counts rounds in whole milliseconds.
		return fmt.Errorf("params.round_period: %s, must be at least 1ms", p.RoundPeriod)
	}
	if p.Lease.Std() < MinLease {
		return fmt.Errorf("params.lease: %s, must be at least %s", p.Lease, MinLease)
	}
	if p.Lease.Std() > p.LeaseMax.Std() {
		return fmt.Errorf("params.lease: %s is longer than lease_max %s", p.Lease, p.LeaseMax)
	}
	if p.RevalidationBackoff.Std() > p.RevalidationBackoffMax.Std() {
		return fmt.Errorf("params.revalidation_backoff: %s is longer than revalidation_backoff_max %s", p.RevalidationBackoff, p.RevalidationBackoffMax)
	}
	if p.RecordLifetime.Std() < 3*time.Second || p.ProvideValidity.Std() < 3*time.Second {
		return errors.New("params.record_lifetime and provide_validity: must be at least 3s (they are refreshed at a third)")
	}
	if p.ChallengesPerValidation < 1 || p.ChallengesPerValidation > 64 {
		return fmt.Errorf("params.challenges_per_validation: %d, must be 1 to 64", p.ChallengesPerValidation)
	}
	if !(p.PassThreshold > 0 && p.PassThreshold <= 1) { // also refuses NaN
		return fmt.Errorf("params.pass_threshold: %v, must be in (0, 1]", p.PassThreshold)
	}
	return nil
}

// peerList checks a list of peer IDs: each decodes, none twice.
func peerList(name string, ids []string) error {
	seen := map[peer.ID]bool{}
	for _, s := range ids {
		id, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("params.%s: %q is not a peer ID", name, s)
		}
		if seen[id] {
			return fmt.Errorf("params.%s: %s is listed twice", name, s)
		}
		seen[id] = true
	}
	return nil
}

func decodeAll(ids []string) []peer.ID {
	out := make([]peer.ID, 0, len(ids))
	for _, s := range ids {
		if id, err := peer.Decode(s); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// OracleIDs is the oracle set, decoded. Call only on validated params.
func (p Params) OracleIDs() []peer.ID { return decodeAll(p.Oracles) }

// RouterAllowed reports whether miners take claims from id: any router if
// the network pins none, else only those it lists.
func (p Params) RouterAllowed(id peer.ID) bool {
	return len(p.Routers) == 0 || slices.Contains(decodeAll(p.Routers), id)
}

// RouterLimit is how many miners one router may hold at once in a pool of
// size miners: ceil(max_router_share × size), and never fewer than
// router_share_floor, so that a lone router of a small network can still
// run a session of a few miners. Oracles evict the miners a router holds
// beyond it (Eviction; node/oracle/share.go).
func (p Params) RouterLimit(size int) int {
	return max(p.RouterShareFloor, int(math.Ceil(p.MaxRouterShare*float64(size)-1e-9)))
}

// IsOracle reports whether id is in the oracle set.
func (p Params) IsOracle(id peer.ID) bool {
	// Compared decoded: a peer ID may be written in more than one encoding.
	return slices.Contains(p.OracleIDs(), id)
}

// RoundAt is the validation round at t: rounds are fixed windows of
// RoundPeriod since the Unix epoch, so every node agrees on them.
func (p Params) RoundAt(t time.Time) uint64 {
	return uint64(t.UnixMilli() / p.RoundPeriod.Std().Milliseconds())
}

// PerRound is how many oracles are assigned to a miner in each round.
func (p Params) PerRound() int {
	n := p.OraclesPerRound
	if n == 0 {
		n = p.Quorum + 1
	}
	return min(n, len(p.Oracles))
}

// FailureQuorum is how many failing verdicts make a pass quorum impossible
// for a generation, which sends the miner to cooling off.
func (p Params) FailureQuorum() int { return max(1, len(p.Oracles)-p.Quorum+1) }

// Backoff is the cooling-off period after the n-th consecutive failure (n >= 1).
func (p Params) Backoff(n int) time.Duration {
	d := p.RevalidationBackoff.Std()
	for i := 1; i < n && d < p.RevalidationBackoffMax.Std(); i++ {
		d *= 2
	}
	return min(d, p.RevalidationBackoffMax.Std())
}
