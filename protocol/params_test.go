package protocol_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestParamsValidate(t *testing.T) {
	f := newFixture(t)
	ids := f.check.Params.Oracles
	d := func(x time.Duration) duration.Duration { return duration.Duration(x) }
	tests := []struct {
		name    string
		mutate  func(p *protocol.Params)
		wantErr string // "" for valid; else a substring of the error
	}{
		{"defaults with five oracles", nil, ""},
		{"defaults with no oracles", func(p *protocol.Params) { p.Oracles = nil }, ""},
		{"quorum of all oracles", func(p *protocol.Params) { p.Quorum = 5 }, ""},
		{"one oracle, quorum one", func(p *protocol.Params) { p.Oracles, p.Quorum = ids[:1], 1 }, ""},
		{"oracles per round above the set", func(p *protocol.Params) { p.OraclesPerRound = 9 }, ""},
		{"not a peer ID", func(p *protocol.Params) { p.Oracles = append(slices.Clone(ids), "oracle-5") }, "params.oracles"},
		{"empty oracle", func(p *protocol.Params) { p.Oracles = []string{""} }, "params.oracles"},
		{"oracle listed twice", func(p *protocol.Params) { p.Oracles = append(slices.Clone(ids), ids[2]) }, "listed twice"},
		{"quorum zero", func(p *protocol.Params) { p.Quorum = 0 }, "params.quorum"},
		{"quorum negative", func(p *protocol.Params) { p.Quorum = -1 }, "params.quorum"},
		{"quorum over the oracles", func(p *protocol.Params) { p.Quorum = 6 }, "params.quorum"},
		{"negative oracles per round", func(p *protocol.Params) { p.OraclesPerRound = -1 }, "params.oracles_per_round"},
		{"round period zero", func(p *protocol.Params) { p.RoundPeriod = 0 }, "params.round_period"},
		// RoundAt divides by the period in whole milliseconds.
		{"round period under a millisecond", func(p *protocol.Params) { p.RoundPeriod = d(500 * time.Microsecond) }, "params.round_period"},
		{"attestation lifetime negative", func(p *protocol.Params) { p.AttestationLifetime = d(-time.Second) }, "params.attestation_lifetime"},
		{"lease zero", func(p *protocol.Params) { p.Lease = 0 }, "params.lease"},
		{"lease max zero", func(p *protocol.Params) { p.LeaseMax = 0 }, "params.lease_max"},
		{"claim lifetime zero", func(p *protocol.Params) { p.ClaimLifetime = 0 }, "params.claim_lifetime"},
		{"backoff zero", func(p *protocol.Params) { p.RevalidationBackoff = 0 }, "params.revalidation_backoff"},
		{"backoff max zero", func(p *protocol.Params) { p.RevalidationBackoffMax = 0 }, "params.revalidation_backoff"},
		{"record lifetime zero", func(p *protocol.Params) { p.RecordLifetime = 0 }, "params.record_lifetime"},
		{"provide validity zero", func(p *protocol.Params) { p.ProvideValidity = 0 }, "params.provide_validity"},
		{"clock skew zero", func(p *protocol.Params) { p.ClockSkew = 0 }, "params.clock_skew"},
		{"penalty period zero", func(p *protocol.Params) { p.PenaltyPeriod = 0 }, "params.penalty_period"},
		{"lease over lease max", func(p *protocol.Params) { p.Lease = d(11 * time.Minute) }, "params.lease"},
		{"lease equal to lease max", func(p *protocol.Params) { p.Lease = p.LeaseMax }, ""},
		{"backoff over its max", func(p *protocol.Params) { p.RevalidationBackoff = d(6 * time.Minute) }, "params.revalidation_backoff"},
		{"record lifetime under 3s", func(p *protocol.Params) { p.RecordLifetime = d(2999 * time.Millisecond) }, "record_lifetime"},
		{"record lifetime 3s", func(p *protocol.Params) { p.RecordLifetime = d(3 * time.Second) }, ""},
		{"provide validity under 3s", func(p *protocol.Params) { p.ProvideValidity = d(time.Second) }, "provide_validity"},
		{"no challenges", func(p *protocol.Params) { p.ChallengesPerValidation = 0 }, "params.challenges_per_validation"},
		{"64 challenges", func(p *protocol.Params) { p.ChallengesPerValidation = 64 }, ""},
		{"65 challenges", func(p *protocol.Params) { p.ChallengesPerValidation = 65 }, "params.challenges_per_validation"},
		{"pass threshold zero", func(p *protocol.Params) { p.PassThreshold = 0 }, "params.pass_threshold"},
		{"pass threshold one", func(p *protocol.Params) { p.PassThreshold = 1 }, ""},
		{"pinned routers", func(p *protocol.Params) { p.Routers = ids[:2] }, ""},
		{"a router twice", func(p *protocol.Params) { p.Routers = []string{ids[0], ids[0]} }, "params.routers"},
		{"a router not a peer ID", func(p *protocol.Params) { p.Routers = []string{"router-1"} }, "params.routers"},
		{"router share one", func(p *protocol.Params) { p.MaxRouterShare = 1 }, ""},
		{"router share zero", func(p *protocol.Params) { p.MaxRouterShare = 0 }, "params.max_router_share"},
		{"router share over one", func(p *protocol.Params) { p.MaxRouterShare = 1.5 }, "params.max_router_share"},
		{"router share floor zero", func(p *protocol.Params) { p.RouterShareFloor = 0 }, "params.router_share_floor"},
		{"pass threshold over one", func(p *protocol.Params) { p.PassThreshold = 1.01 }, "params.pass_threshold"},
		{"pass threshold negative", func(p *protocol.Params) { p.PassThreshold = -0.5 }, "params.pass_threshold"},
		{"pass threshold NaN", func(p *protocol.Params) { p.PassThreshold = math.NaN() }, "params.pass_threshold"},
		{"pass threshold +Inf", func(p *protocol.Params) { p.PassThreshold = math.Inf(1) }, "params.pass_threshold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := f.check.Params
			p.Oracles = slices.Clone(ids)
			if tt.mutate != nil {
				tt.mutate(&p)
			}
			err := p.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("accepted; want an error about %s", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("error %q does not name %s", err, tt.wantErr)
			}
			// Valid params never make RoundAt panic.
			if err == nil {
				_ = p.RoundAt(testNow)
			}
		})
	}
	if err := protocol.DefaultParams().Validate(); err != nil {
		t.Errorf("default params: %v", err)
	}
}

func TestOracleIDs(t *testing.T) {
	f := newFixture(t)
	if got := f.check.Params.OracleIDs(); !slices.Equal(got, f.OracleIDs()) {
		t.Errorf("OracleIDs %v, want %v", got, f.OracleIDs())
	}
	for _, o := range f.OracleIDs() {
		if !f.check.Params.IsOracle(o) {
			t.Errorf("%s is not an oracle", o)
		}
	}
	for _, id := range []peer.ID{f.Miner.ID, f.Other.ID, ""} {
		if f.check.Params.IsOracle(id) {
			t.Errorf("%q is an oracle", id)
		}
	}
}

func TestRouterAllowedAndLimit(t *testing.T) {
	f := newFixture(t)
	p := f.check.Params
	if !p.RouterAllowed(f.Router.ID) || !p.RouterAllowed(f.Other.ID) {
		t.Error("a network that pins no routers refuses one")
	}
	p.Routers = []string{f.Router.ID.String()}
	if !p.RouterAllowed(f.Router.ID) || p.RouterAllowed(f.Other.ID) {
		t.Error("pinned routers: the listed one refused or another allowed")
	}
	p = protocol.DefaultParams()
	for size, want := range map[int]int{0: 3, 1: 3, 3: 3, 5: 3, 6: 3, 7: 4, 10: 5, 11: 6, 100: 50} {
		if got := p.RouterLimit(size); got != want {
			t.Errorf("default limit in a pool of %d: %d, want %d", size, got, want)
		}
	}
	p.MaxRouterShare, p.RouterShareFloor = 0.3, 1
	for size, want := range map[int]int{1: 1, 3: 1, 4: 2, 10: 3} {
		if got := p.RouterLimit(size); got != want {
			t.Errorf("limit at 0.3 in a pool of %d: %d, want %d", size, got, want)
		}
	}
}

func TestRoundAt(t *testing.T) {
	p := protocol.DefaultParams() // 5s rounds
	tests := []struct {
		t    time.Time
		want uint64
	}{
		{time.UnixMilli(0), 0},
		{time.UnixMilli(4999), 0},
		{time.UnixMilli(5000), 1},
		{time.UnixMilli(9999), 1},
		{time.UnixMilli(10000), 2},
		{time.UnixMilli(1_700_000_000_000), 340_000_000},
		{time.UnixMilli(1_700_000_004_999), 340_000_000},
		{time.UnixMilli(1_700_000_005_000), 340_000_001},
		{time.UnixMilli(1_700_000_000_000).Add(999 * time.Microsecond), 340_000_000},
	}
	for _, tt := range tests {
		if got := p.RoundAt(tt.t); got != tt.want {
			t.Errorf("RoundAt(%d ms) = %d, want %d", tt.t.UnixMilli(), got, tt.want)
		}
	}
	// Every node agrees whatever its time zone.
	in := time.UnixMilli(1_700_000_002_500)
	if p.RoundAt(in.In(time.FixedZone("x", 5*3600))) != p.RoundAt(in.UTC()) {
		t.Error("round depends on the time zone")
	}
	p.RoundPeriod = duration.Duration(time.Minute)
	if got := p.RoundAt(time.UnixMilli(1_700_000_000_000)); got != 1_700_000_000_000/60_000 {
		t.Errorf("one-minute rounds: %d", got)
	}
}

func TestPerRoundAndFailureQuorum(t *testing.T) {
	five := newFixture(t).check.Params.Oracles
	tests := []struct {
		name                   string
		oracles                []string
		quorum, perRound       int
		wantPerRound, wantFail int
	}{
		{"default quorum+1", five, 2, 0, 3, 4},
		{"quorum 3 of 5", five, 3, 0, 4, 3},
		{"quorum+1 capped at the set", five, 5, 0, 5, 1},
		{"explicit", five, 2, 4, 4, 4},
		{"explicit capped", five, 2, 10, 5, 4},
		{"quorum 1 of 5", five, 1, 0, 2, 5},
		{"one oracle", five[:1], 1, 0, 1, 1},
		{"no oracles", nil, 2, 0, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := protocol.DefaultParams()
			p.Oracles, p.Quorum, p.OraclesPerRound = tt.oracles, tt.quorum, tt.perRound
			if got := p.PerRound(); got != tt.wantPerRound {
				t.Errorf("PerRound %d, want %d", got, tt.wantPerRound)
			}
			if got := p.FailureQuorum(); got != tt.wantFail {
				t.Errorf("FailureQuorum %d, want %d", got, tt.wantFail)
			}
			// Once FailureQuorum oracles failed, fewer than Quorum remain to pass.
			if n := len(tt.oracles); n > 0 && n-p.FailureQuorum() >= p.Quorum {
				t.Errorf("%d failures still leave %d oracles for a quorum of %d", p.FailureQuorum(), n-p.FailureQuorum(), p.Quorum)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	s := time.Second
	tests := []struct {
		name      string
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{"first", 10 * s, 5 * time.Minute, 1, 10 * s},
		{"second doubles", 10 * s, 5 * time.Minute, 2, 20 * s},
		{"third", 10 * s, 5 * time.Minute, 3, 40 * s},
		{"fifth", 10 * s, 5 * time.Minute, 5, 160 * s},
		{"sixth capped", 10 * s, 5 * time.Minute, 6, 5 * time.Minute},
		{"hundredth capped", 10 * s, 5 * time.Minute, 100, 5 * time.Minute},
		{"huge n capped", 10 * s, 5 * time.Minute, math.MaxInt, 5 * time.Minute},
		{"zero treated as first", 10 * s, 5 * time.Minute, 0, 10 * s},
		{"negative treated as first", 10 * s, 5 * time.Minute, -3, 10 * s},
		{"base equals max", time.Minute, time.Minute, 4, time.Minute},
		{"cap not a power of two", 3 * s, 10 * s, 3, 10 * s},
		{"just under the cap", 3 * s, 12 * s, 3, 12 * s},
		{"millisecond base, a day's cap", time.Millisecond, 24 * time.Hour, 64, 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := protocol.DefaultParams()
			p.RevalidationBackoff, p.RevalidationBackoffMax = duration.Duration(tt.base), duration.Duration(tt.max)
			if got := p.Backoff(tt.n); got != tt.want {
				t.Errorf("Backoff(%d) = %s, want %s", tt.n, got, tt.want)
			}
		})
	}
	// Monotonic up to the cap.
	p := protocol.DefaultParams()
	for n := 1; n < 40; n++ {
		if p.Backoff(n+1) < p.Backoff(n) || p.Backoff(n) > p.RevalidationBackoffMax.Std() {
			t.Fatalf("Backoff(%d) = %s, Backoff(%d) = %s", n, p.Backoff(n), n+1, p.Backoff(n+1))
		}
	}
}

func TestAssignedOracles(t *testing.T) {
	f := newFixture(t)
	oracles := f.OracleIDs()
	rng := rand.New(rand.NewPCG(1, 2))

	t.Run("size and membership", func(t *testing.T) {
		for k := 0; k <= 7; k++ {
			got := protocol.AssignedOracles(oracles, f.Miner.ID, 7, 100, k)
			if len(got) != min(k, len(oracles)) {
				t.Errorf("k=%d: %d oracles", k, len(got))
			}
			seen := map[peer.ID]bool{}
			for _, o := range got {
				if !slices.Contains(oracles, o) || seen[o] {
					t.Errorf("k=%d: %s is a stranger or repeated in %v", k, o, got)
				}
				seen[o] = true
			}
			// Assignments nest: the top k are the top k+1 minus one.
			if k > 0 && k <= len(oracles) {
				if prev := protocol.AssignedOracles(oracles, f.Miner.ID, 7, 100, k-1); !slices.Equal(prev, got[:k-1]) {
					t.Errorf("k=%d does not extend k=%d", k, k-1)
				}
			}
		}
		if got := protocol.AssignedOracles(nil, f.Miner.ID, 7, 100, 3); len(got) != 0 {
			t.Errorf("no oracles gave %v", got)
		}
	})

	t.Run("deterministic and independent of input order", func(t *testing.T) {
		want := protocol.AssignedOracles(oracles, f.Miner.ID, 7, 100, 3)
		for range 20 {
			shuffled := slices.Clone(oracles)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			before := slices.Clone(shuffled)
			got := protocol.AssignedOracles(shuffled, f.Miner.ID, 7, 100, 3)
			if !slices.Equal(got, want) {
				t.Fatalf("order %v gave %v, want %v", shuffled, got, want)
			}
			if !slices.Equal(shuffled, before) {
				t.Fatal("AssignedOracles reordered its input")
			}
		}
	})

	t.Run("rotates across rounds", func(t *testing.T) {
		picked := map[peer.ID]int{}
		sets := map[string]bool{}
		for round := uint64(0); round < 100; round++ {
			got := protocol.AssignedOracles(oracles, f.Miner.ID, 7, round, 2)
			for _, o := range got {
				picked[o]++
			}
			sets[strings.Join([]string{string(got[0]), string(got[1])}, ",")] = true
		}
		for _, o := range oracles {
			if picked[o] == 0 {
				t.Errorf("oracle %s never picked in 100 rounds", o)
			}
		}
		if len(sets) < 5 {
			t.Errorf("only %d distinct assignments in 100 rounds", len(sets))
		}
	})

	t.Run("depends on miner, generation and round", func(t *testing.T) {
		rank := func(m peer.ID, gen, round uint64) []peer.ID {
			return protocol.AssignedOracles(oracles, m, gen, round, 5)
		}
		var byMiner, byGen, byRound int
		for r := range uint64(20) {
			base := rank(f.Miner.ID, 7, r)
			if !slices.Equal(rank(f.Router.ID, 7, r), base) {
				byMiner++
			}
			if !slices.Equal(rank(f.Miner.ID, 8, r), base) {
				byGen++
			}
			if !slices.Equal(rank(f.Miner.ID, 7, r+1), base) {
				byRound++
			}
		}
		// Two random rankings of five agree with probability 1/120.
		if byMiner < 15 || byGen < 15 || byRound < 15 {
			t.Errorf("rankings changed %d/%d/%d times in 20 by miner/generation/round", byMiner, byGen, byRound)
		}
	})
}
