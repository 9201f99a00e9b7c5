package protocol_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestAttestation(t *testing.T) {
	f := newFixture(t)
	life, skew := f.lifetime(), f.skew()
	tests := []struct {
		name   string
		mutate func(a *pb.Attestation)
		signer func() crypto.PrivKey // default: oracle 0
		want   string
	}{
		{"valid", nil, nil, "ok"},
		{"failing verdict is still valid", func(a *pb.Attestation) { a.Pass, a.ScoreMilli = false, 0 }, nil, "ok"},
		{"forged: names oracle 1, signed by oracle 0", func(a *pb.Attestation) { a.Oracle = []byte(f.Oracles[1].ID) }, nil, "reject"},
		{"forged: names oracle 0, signed by an outsider", nil, func() crypto.PrivKey { return f.Other.Key }, "reject"},
		{"unknown oracle", func(a *pb.Attestation) { a.Oracle = []byte(f.Other.ID) }, func() crypto.PrivKey { return f.Other.Key }, "reject"},
		{"another network", func(a *pb.Attestation) { a.Network = "othernet" }, nil, "reject"},
		{"empty network", func(a *pb.Attestation) { a.Network = "" }, nil, "reject"},
		{"expired", func(a *pb.Attestation) {
			a.IssuedMs, a.ExpiresMs = ms(testNow.Add(-life-time.Minute)), ms(testNow.Add(-time.Minute))
		}, nil, "ignore"},
		{"expires exactly now", func(a *pb.Attestation) { a.IssuedMs, a.ExpiresMs = ms(testNow.Add(-life)), ms(testNow) }, nil, "ignore"},
		{"expires a millisecond from now", func(a *pb.Attestation) {
			a.IssuedMs, a.ExpiresMs = ms(testNow.Add(-life)), ms(testNow.Add(time.Millisecond))
		}, nil, "ok"},
		{"from the future beyond the skew", func(a *pb.Attestation) {
			a.IssuedMs = ms(testNow.Add(skew + time.Millisecond))
			a.ExpiresMs = a.IssuedMs + life.Milliseconds()
		}, nil, "ignore"},
		{"far future", func(a *pb.Attestation) {
			a.IssuedMs = ms(testNow.Add(1000 * time.Hour))
			a.ExpiresMs = a.IssuedMs + life.Milliseconds()
		}, nil, "ignore"},
		{"ahead by exactly the skew", func(a *pb.Attestation) {
			a.IssuedMs = ms(testNow.Add(skew))
			a.ExpiresMs = a.IssuedMs + life.Milliseconds()
		}, nil, "ok"},
		{"ahead within the skew", func(a *pb.Attestation) {
			a.IssuedMs = ms(testNow.Add(skew / 2))
			a.ExpiresMs = a.IssuedMs + life.Milliseconds()
		}, nil, "ok"},
		{"lifetime exactly lifetime+skew", func(a *pb.Attestation) { a.ExpiresMs = a.IssuedMs + (life + skew).Milliseconds() }, nil, "ok"},
		{"lifetime longer than lifetime+skew", func(a *pb.Attestation) {
			a.ExpiresMs = a.IssuedMs + (life + skew).Milliseconds() + 1
		}, nil, "reject"},
		{"lifetime of a year", func(a *pb.Attestation) { a.ExpiresMs = a.IssuedMs + (365 * 24 * time.Hour).Milliseconds() }, nil, "reject"},
		{"expires when issued", func(a *pb.Attestation) { a.ExpiresMs = a.IssuedMs }, nil, "reject"},
		{"expires before issued", func(a *pb.Attestation) { a.ExpiresMs = a.IssuedMs - 1 }, nil, "reject"},
		{"extreme times", func(a *pb.Attestation) { a.IssuedMs, a.ExpiresMs = -1<<63, 1<<63-1 }, nil, "reject"},
		{"no digest", func(a *pb.Attestation) { a.ChallengeDigest = nil }, nil, "reject"},
		{"31-byte digest", func(a *pb.Attestation) { a.ChallengeDigest = a.ChallengeDigest[:31] }, nil, "reject"},
		{"33-byte digest", func(a *pb.Attestation) { a.ChallengeDigest = append(a.ChallengeDigest, 0) }, nil, "reject"},
		{"no miner", func(a *pb.Attestation) { a.Miner = nil }, nil, "reject"},
		{"garbage miner", func(a *pb.Attestation) { a.Miner = []byte("not a peer id") }, nil, "reject"},
		{"truncated miner", func(a *pb.Attestation) { a.Miner = a.Miner[:len(a.Miner)-1] }, nil, "reject"},
		{"garbage oracle", func(a *pb.Attestation) { a.Oracle = []byte{0x12, 0x20} }, nil, "reject"},
		{"score 1000", func(a *pb.Attestation) { a.ScoreMilli = 1000 }, nil, "ok"},
		{"score 1001", func(a *pb.Attestation) { a.ScoreMilli = 1001 }, nil, "reject"},
		{"score max uint32", func(a *pb.Attestation) { a.ScoreMilli = 1<<32 - 1 }, nil, "reject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.att(0)
			if tt.mutate != nil {
				tt.mutate(a)
			}
			k := f.Oracles[0].Key
			if tt.signer != nil {
				k = tt.signer()
			}
			s := testkit.Open[pb.Attestation](t, testkit.Seal(t, a, k))
			err := f.check.Attestation(s)
			if got := testkit.Class(err); got != tt.want {
				t.Errorf("got %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

// TestCheckerRealClock: a Checker without Now uses the wall clock.
func TestCheckerRealClock(t *testing.T) {
	f := newFixture(t)
	c := f.check
	c.Now = nil
	a := f.att(0)
	a.IssuedMs, a.ExpiresMs = ms(time.Now().Add(-time.Second)), ms(time.Now().Add(time.Minute))
	if err := c.Attestation(testkit.Open[pb.Attestation](t, testkit.Seal(t, a, f.Oracles[0].Key))); err != nil {
		t.Errorf("current attestation on the wall clock: %v", err)
	}
	if err := c.Attestation(testkit.Open[pb.Attestation](t, testkit.Seal(t, f.att(0), f.Oracles[0].Key))); testkit.Class(err) != "ignore" && testkit.Class(err) != "reject" {
		t.Errorf("attestation of %s judged now: %v", testNow, err)
	}
}

func TestQuorum(t *testing.T) {
	f := newFixture(t)
	sealAtt := func(i int, mutate func(*pb.Attestation)) []byte {
		a := f.att(i)
		if mutate != nil {
			mutate(a)
		}
		return testkit.Seal(t, a, f.Oracles[i].Key)
	}
	pass := func(i int) []byte { return sealAtt(i, nil) }
	a0 := pass(0)
	tests := []struct {
		name    string
		envs    [][]byte
		want    []peer.ID
		wantErr bool
	}{
		{"three distinct oracles", [][]byte{pass(0), pass(1), pass(2)}, f.OracleIDs()[:3], false},
		{"all five", [][]byte{pass(4), pass(3), pass(2), pass(1), pass(0)}, []peer.ID{f.Oracles[4].ID, f.Oracles[3].ID, f.Oracles[2].ID, f.Oracles[1].ID, f.Oracles[0].ID}, false},
		{"none", nil, nil, true},
		{"two", [][]byte{pass(0), pass(1)}, f.OracleIDs()[:2], true},
		{"replayed envelope counts once", [][]byte{a0, a0, a0, pass(1)}, f.OracleIDs()[:2], true},
		{"one oracle, three rounds, counts once", [][]byte{
			a0, sealAtt(0, func(a *pb.Attestation) { a.Round = 101 }), sealAtt(0, func(a *pb.Attestation) { a.Round = 102 }), pass(1),
		}, f.OracleIDs()[:2], true},
		{"failing verdict ignored", [][]byte{pass(0), pass(1), sealAtt(2, func(a *pb.Attestation) { a.Pass = false })}, f.OracleIDs()[:2], true},
		{"other generation ignored", [][]byte{pass(0), pass(1), sealAtt(2, func(a *pb.Attestation) { a.Generation = 6 })}, f.OracleIDs()[:2], true},
		{"other miner ignored", [][]byte{pass(0), pass(1), sealAtt(2, func(a *pb.Attestation) { a.Miner = []byte(f.Router.ID) })}, f.OracleIDs()[:2], true},
		{"expired ignored", [][]byte{pass(0), pass(1), sealAtt(2, func(a *pb.Attestation) {
			a.IssuedMs, a.ExpiresMs = ms(testNow.Add(-f.lifetime()-time.Minute)), ms(testNow.Add(-time.Minute))
		})}, f.OracleIDs()[:2], true},
		{"future ignored", [][]byte{pass(0), pass(1), sealAtt(2, func(a *pb.Attestation) {
			a.IssuedMs = ms(testNow.Add(time.Hour))
			a.ExpiresMs = a.IssuedMs + 1000
		})}, f.OracleIDs()[:2], true},
		{"other network ignored", [][]byte{pass(0), pass(1), sealAtt(2, func(a *pb.Attestation) { a.Network = "othernet" })}, f.OracleIDs()[:2], true},
		{"forged ignored", [][]byte{pass(0), pass(1), testkit.Seal(t, f.att(2), f.Oracles[3].Key)}, f.OracleIDs()[:2], true},
		{"outsider ignored", [][]byte{pass(0), pass(1), testkit.Seal(t, func() *pb.Attestation {
			a := f.att(0)
			a.Oracle = []byte(f.Other.ID)
			return a
		}(), f.Other.Key)}, f.OracleIDs()[:2], true},
		{"quorum despite noise", [][]byte{pass(0), a0, sealAtt(1, func(a *pb.Attestation) { a.Pass = false }), pass(2),
			sealAtt(3, func(a *pb.Attestation) { a.Generation = 8 }), pass(4)}, []peer.ID{f.Oracles[0].ID, f.Oracles[2].ID, f.Oracles[4].ID}, false},
		{"an envelope of another kind spoils the set", [][]byte{pass(0), pass(1), pass(2), testkit.Seal(t, f.claim(), f.Router.Key)}, nil, true},
		{"garbage spoils the set", [][]byte{pass(0), pass(1), pass(2), []byte("junk")}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.check.Quorum(f.Miner.ID, 7, tt.envs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			// A quorum that was signed but has partly expired is stale
			// (ignore); one that was never there is a lie (reject).
			wantClass := "reject"
			if tt.name == "expired ignored" || tt.name == "future ignored" {
				wantClass = "ignore"
			}
			if err != nil && testkit.Class(err) != wantClass {
				t.Errorf("error %v is not a %s", err, wantClass)
			}
			if tt.want != nil && !slices.Equal(got, tt.want) {
				t.Errorf("oracles %v, want %v", got, tt.want)
			}
		})
	}
	// The miner and generation asked about matter.
	if _, err := f.check.Quorum(f.Router.ID, 7, f.sealedAtts(t, 0, 1, 2)); err == nil {
		t.Error("quorum for another miner")
	}
	if _, err := f.check.Quorum(f.Miner.ID, 8, f.sealedAtts(t, 0, 1, 2)); err == nil {
		t.Error("quorum for another generation")
	}
}

func TestAvailability(t *testing.T) {
	f := newFixture(t)
	rl, skew := f.check.Params.RecordLifetime.Std(), f.skew()
	tests := []struct {
		name   string
		mutate func(a *pb.Availability)
		signer func() crypto.PrivKey // default: the miner
		want   string
	}{
		{"available with quorum", nil, nil, "ok"},
		{"available with all five", func(a *pb.Availability) { a.Attestations = f.sealedAtts(t, 0, 1, 2, 3, 4) }, nil, "ok"},
		{"available without attestations", func(a *pb.Availability) { a.Attestations = nil }, nil, "reject"},
		{"available below quorum", func(a *pb.Availability) { a.Attestations = f.sealedAtts(t, 0, 1) }, nil, "reject"},
		{"available, quorum by replay", func(a *pb.Availability) { a.Attestations = f.sealedAtts(t, 0, 0, 0) }, nil, "reject"},
		{"available, attested for another generation", func(a *pb.Availability) { a.Generation = 8 }, nil, "reject"},
		{"available, garbage attestation", func(a *pb.Availability) { a.Attestations = append(a.Attestations, []byte("x")) }, nil, "reject"},
		{"validating without attestations", func(a *pb.Availability) { a.State, a.Attestations = pb.MinerState_VALIDATING, nil }, nil, "ok"},
		{"every non-available state needs none", func(a *pb.Availability) { a.State, a.Attestations = pb.MinerState_COOLING_OFF, nil }, nil, "ok"},
		{"reserved", func(a *pb.Availability) { a.State, a.Attestations = pb.MinerState_RESERVED, nil }, nil, "ok"},
		{"unspecified state", func(a *pb.Availability) { a.State = pb.MinerState_MINER_STATE_UNSPECIFIED }, nil, "reject"},
		{"unknown state", func(a *pb.Availability) { a.State = 6 }, nil, "reject"},
		{"negative state", func(a *pb.Availability) { a.State = -1 }, nil, "reject"},
		{"signed by another key", nil, func() crypto.PrivKey { return f.Other.Key }, "reject"},
		{"signed by an oracle", nil, func() crypto.PrivKey { return f.Oracles[0].Key }, "reject"},
		{"garbage miner", func(a *pb.Availability) { a.Miner = []byte("x") }, nil, "reject"},
		{"another network", func(a *pb.Availability) { a.Network = "othernet" }, nil, "reject"},
		{"expired", func(a *pb.Availability) {
			a.IssuedMs, a.ExpiresMs = ms(testNow.Add(-rl-time.Second)), ms(testNow.Add(-time.Second))
		}, nil, "ignore"},
		{"expires exactly now", func(a *pb.Availability) { a.IssuedMs, a.ExpiresMs = ms(testNow.Add(-rl)), ms(testNow) }, nil, "ignore"},
		{"from the future", func(a *pb.Availability) {
			a.IssuedMs = ms(testNow.Add(skew + time.Millisecond))
			a.ExpiresMs = a.IssuedMs + rl.Milliseconds()
		}, nil, "ignore"},
		{"lifetime too long", func(a *pb.Availability) { a.ExpiresMs = a.IssuedMs + (rl + skew).Milliseconds() + 1 }, nil, "reject"},
		{"lifetime exactly record lifetime + skew", func(a *pb.Availability) { a.ExpiresMs = a.IssuedMs + (rl + skew).Milliseconds() }, nil, "ok"},
		{"expires before issued", func(a *pb.Availability) { a.ExpiresMs = a.IssuedMs - 1 }, nil, "reject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.avail(t)
			if tt.mutate != nil {
				tt.mutate(a)
			}
			k := f.Miner.Key
			if tt.signer != nil {
				k = tt.signer()
			}
			s := testkit.Open[pb.Availability](t, testkit.Seal(t, a, k))
			err := f.check.Availability(s)
			if got := testkit.Class(err); got != tt.want {
				t.Errorf("got %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestAvailabilityValidator(t *testing.T) {
	f := newFixture(t)
	v := protocol.AvailabilityValidator{Check: f.check}
	key := protocol.AvailabilityKey([]byte(f.Miner.ID))
	if key != "/avail/"+string(f.Miner.ID) {
		t.Fatalf("key %q", key)
	}
	withSeq := func(seq uint64, mutate func(*pb.Availability), k crypto.PrivKey) []byte {
		a := f.avail(t)
		a.Seq = seq
		if mutate != nil {
			mutate(a)
		}
		return testkit.Seal(t, a, k)
	}
	valid := withSeq(1, nil, f.Miner.Key)

	t.Run("Validate", func(t *testing.T) {
		tests := []struct {
			name  string
			key   string
			value []byte
			want  string
		}{
			{"valid", key, valid, "ok"},
			{"key of another peer", protocol.AvailabilityKey([]byte(f.Router.ID)), valid, "reject"},
			{"key in another namespace", "/pk/" + string(f.Miner.ID), valid, "reject"},
			{"empty key", "", valid, "reject"},
			{"record signed by another key under its key", protocol.AvailabilityKey([]byte(f.Other.ID)),
				withSeq(1, nil, f.Other.Key), "reject"},
			{"no quorum", key, withSeq(1, func(a *pb.Availability) { a.Attestations = nil }, f.Miner.Key), "reject"},
			{"expired", key, withSeq(1, func(a *pb.Availability) { a.ExpiresMs = ms(testNow) }, f.Miner.Key), "ignore"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := v.Validate(tt.key, tt.value)
				if got := testkit.Class(err); got != tt.want {
					t.Errorf("got %s (%v), want %s", got, err, tt.want)
				}
			})
		}
		for _, junk := range [][]byte{nil, {}, []byte("junk"), testkit.Seal(t, f.att(0), f.Oracles[0].Key)} {
			if err := v.Validate(key, junk); err == nil {
				t.Errorf("validated %q", junk)
			}
		}
	})

	t.Run("Select", func(t *testing.T) {
		seq2, seq3 := withSeq(2, nil, f.Miner.Key), withSeq(3, nil, f.Miner.Key)
		invalid9 := withSeq(9, func(a *pb.Availability) { a.Attestations = nil }, f.Miner.Key)
		forged9 := withSeq(9, nil, f.Other.Key)
		expired9 := withSeq(9, func(a *pb.Availability) { a.ExpiresMs = ms(testNow) }, f.Miner.Key)
		tests := []struct {
			name    string
			values  [][]byte
			want    int
			wantErr bool
		}{
			{"one", [][]byte{valid}, 0, false},
			{"highest seq wins", [][]byte{valid, seq3, seq2}, 1, false},
			{"highest seq wins, last", [][]byte{valid, seq2, seq3}, 2, false},
			{"invalid higher seqs skipped", [][]byte{invalid9, valid, forged9, seq2, expired9, []byte("junk"), nil}, 3, false},
			{"first of equal seqs", [][]byte{seq2, valid, seq2}, 0, false},
			{"seq 0 is a valid choice", [][]byte{[]byte("junk"), withSeq(0, nil, f.Miner.Key)}, 1, false},
			{"none valid", [][]byte{invalid9, forged9, []byte("junk")}, 0, true},
			{"empty", nil, 0, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := v.Select(key, tt.values)
				if (err != nil) != tt.wantErr {
					t.Fatalf("err %v, want error %v", err, tt.wantErr)
				}
				if err == nil && got != tt.want {
					t.Errorf("selected %d, want %d", got, tt.want)
				}
			})
		}
	})
}

func TestClaim(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		mutate func(c *pb.Claim)
		signer func() crypto.PrivKey // default: the router
		self   func() peer.ID        // default: the miner
		want   string
	}{
		{"valid", nil, nil, nil, "ok"},
		{"valid, any miner", nil, nil, func() peer.ID { return "" }, "ok"},
		{"signed by another key", nil, func() crypto.PrivKey { return f.Other.Key }, nil, "reject"},
		{"names another router", func(c *pb.Claim) { c.Router = []byte(f.Other.ID) }, nil, nil, "reject"},
		{"garbage router", func(c *pb.Claim) { c.Router = []byte("r") }, nil, nil, "reject"},
		{"for another miner", nil, nil, func() peer.ID { return f.Other.ID }, "reject"},
		{"garbage miner", func(c *pb.Claim) { c.Miner = []byte("m") }, nil, func() peer.ID { return "" }, "reject"},
		{"another network", func(c *pb.Claim) { c.Network = "othernet" }, nil, nil, "reject"},
		{"no session", func(c *pb.Claim) { c.Session = "" }, nil, nil, "reject"},
		{"128-byte session", func(c *pb.Claim) { c.Session = string(bytes.Repeat([]byte("s"), 128)) }, nil, nil, "ok"},
		{"129-byte session", func(c *pb.Claim) { c.Session = string(bytes.Repeat([]byte("s"), 129)) }, nil, nil, "reject"},
		{"7-byte nonce", func(c *pb.Claim) { c.Nonce = make([]byte, 7) }, nil, nil, "reject"},
		{"8-byte nonce", func(c *pb.Claim) { c.Nonce = make([]byte, 8) }, nil, nil, "ok"},
		{"64-byte nonce", func(c *pb.Claim) { c.Nonce = make([]byte, 64) }, nil, nil, "ok"},
		{"65-byte nonce", func(c *pb.Claim) { c.Nonce = make([]byte, 65) }, nil, nil, "reject"},
		{"no lease", func(c *pb.Claim) { c.LeaseMs = 0 }, nil, nil, "reject"},
		{"lease of lease_max", func(c *pb.Claim) { c.LeaseMs = uint32(f.check.Params.LeaseMax.Std().Milliseconds()) }, nil, nil, "ok"},
		{"lease over lease_max", func(c *pb.Claim) { c.LeaseMs = uint32(f.check.Params.LeaseMax.Std().Milliseconds()) + 1 }, nil, nil, "reject"},
		{"lease max uint32", func(c *pb.Claim) { c.LeaseMs = 1<<32 - 1 }, nil, nil, "reject"},
		{"expired", func(c *pb.Claim) { c.ExpiresMs = ms(testNow) }, nil, nil, "ignore"},
		{"expires at the limit", func(c *pb.Claim) {
			c.ExpiresMs = ms(testNow.Add(f.check.Params.ClaimLifetime.Std() + f.skew()))
		}, nil, nil, "ok"},
		{"expires too far ahead", func(c *pb.Claim) {
			c.ExpiresMs = ms(testNow.Add(f.check.Params.ClaimLifetime.Std()+f.skew())) + 1
		}, nil, nil, "reject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.claim()
			if tt.mutate != nil {
				tt.mutate(c)
			}
			k := f.Router.Key
			if tt.signer != nil {
				k = tt.signer()
			}
			self := f.Miner.ID
			if tt.self != nil {
				self = tt.self()
			}
			err := f.check.Claim(testkit.Open[pb.Claim](t, testkit.Seal(t, c, k)), self)
			if got := testkit.Class(err); got != tt.want {
				t.Errorf("got %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestGrant(t *testing.T) {
	f := newFixture(t)
	claimWith := func(mutate func(*pb.Claim), k crypto.PrivKey) []byte {
		c := f.claim()
		if mutate != nil {
			mutate(c)
		}
		return testkit.Seal(t, c, k)
	}
	claimRaw := claimWith(nil, f.Router.Key)
	tests := []struct {
		name   string
		grant  func() *pb.Grant
		signer func() crypto.PrivKey // default: the miner
		want   string
	}{
		{"valid", func() *pb.Grant { return f.grant(claimRaw) }, nil, "ok"},
		{"signed by another key", func() *pb.Grant { return f.grant(claimRaw) }, func() crypto.PrivKey { return f.Other.Key }, "reject"},
		{"signed by the router", func() *pb.Grant { return f.grant(claimRaw) }, func() crypto.PrivKey { return f.Router.Key }, "reject"},
		{"garbage miner", func() *pb.Grant { g := f.grant(claimRaw); g.Miner = []byte("m"); return g }, nil, "reject"},
		{"another network", func() *pb.Grant { g := f.grant(claimRaw); g.Network = "othernet"; return g }, nil, "reject"},
		{"claim digest of another claim", func() *pb.Grant {
			g := f.grant(claimRaw)
			g.ClaimDigest = protocol.Digest(claimWith(func(c *pb.Claim) { c.Session = "other" }, f.Router.Key))
			return g
		}, nil, "reject"},
		{"no claim digest", func() *pb.Grant { g := f.grant(claimRaw); g.ClaimDigest = nil; return g }, nil, "reject"},
		{"digest of the claim payload, not the envelope", func() *pb.Grant {
			g := f.grant(claimRaw)
			g.ClaimDigest = testkit.Digest32("payload")
			return g
		}, nil, "reject"},
		{"no claim", func() *pb.Grant { g := f.grant(claimRaw); g.Claim = nil; return g }, nil, "reject"},
		{"garbage claim", func() *pb.Grant { return f.grant([]byte("not a claim")) }, nil, "reject"},
		{"claim of another kind", func() *pb.Grant { return f.grant(testkit.Seal(t, f.att(0), f.Oracles[0].Key)) }, nil, "reject"},
		{"claim of another network", func() *pb.Grant {
			return f.grant(claimWith(func(c *pb.Claim) { c.Network = "othernet" }, f.Router.Key))
		}, nil, "reject"},
		{"claim for another miner", func() *pb.Grant {
			return f.grant(claimWith(func(c *pb.Claim) { c.Miner = []byte(f.Other.ID) }, f.Router.Key))
		}, nil, "reject"},
		{"claim for another generation", func() *pb.Grant {
			return f.grant(claimWith(func(c *pb.Claim) { c.Generation = 8 }, f.Router.Key))
		}, nil, "reject"},
		{"claim of another session", func() *pb.Grant {
			return f.grant(claimWith(func(c *pb.Claim) { c.Session = "session-2" }, f.Router.Key))
		}, nil, "reject"},
		{"grant names another router", func() *pb.Grant { g := f.grant(claimRaw); g.Router = []byte(f.Other.ID); return g }, nil, "reject"},
		{"grant of another generation", func() *pb.Grant { g := f.grant(claimRaw); g.Generation = 8; return g }, nil, "reject"},
		{"grant of another session", func() *pb.Grant { g := f.grant(claimRaw); g.Session = "x"; return g }, nil, "reject"},
		{"claim not signed by its router", func() *pb.Grant { return f.grant(claimWith(nil, f.Other.Key)) }, nil, "reject"},
		{"claim signed by the miner itself", func() *pb.Grant { return f.grant(claimWith(nil, f.Miner.Key)) }, nil, "reject"},
		{"claim by another router, consistently named", func() *pb.Grant {
			g := f.grant(claimWith(func(c *pb.Claim) { c.Router = []byte(f.Other.ID) }, f.Other.Key))
			g.Router = []byte(f.Other.ID)
			return g
		}, nil, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := f.Miner.Key
			if tt.signer != nil {
				k = tt.signer()
			}
			g := tt.grant()
			claim, err := f.check.Grant(testkit.Open[pb.Grant](t, testkit.Seal(t, g, k)))
			if got := testkit.Class(err); got != tt.want {
				t.Errorf("got %s (%v), want %s", got, err, tt.want)
			}
			if err == nil && (claim.Signer != peer.ID(g.Router) || !bytes.Equal(claim.Raw, g.Claim)) {
				t.Errorf("returned claim signed by %s, raw equal %v", claim.Signer, bytes.Equal(claim.Raw, g.Claim))
			}
		})
	}
}

func TestRelease(t *testing.T) {
	f := newFixture(t)
	byMiner := func(r *pb.Release) { r.Signer, r.Outcome = []byte(f.Miner.ID), pb.Outcome_EXPIRED }
	tests := []struct {
		name   string
		mutate func(r *pb.Release)
		signer func() crypto.PrivKey // default: the router
		want   string
	}{
		{"by the router", nil, nil, "ok"},
		{"by the miner", byMiner, func() crypto.PrivKey { return f.Miner.Key }, "ok"},
		{"every outcome", func(r *pb.Release) { r.Outcome = pb.Outcome_CANCELLED }, nil, "ok"},
		{"by neither", func(r *pb.Release) { r.Signer = []byte(f.Other.ID) }, func() crypto.PrivKey { return f.Other.Key }, "reject"},
		{"by an oracle", func(r *pb.Release) { r.Signer = []byte(f.Oracles[0].ID) }, func() crypto.PrivKey { return f.Oracles[0].Key }, "reject"},
		{"names the router, signed by another", nil, func() crypto.PrivKey { return f.Other.Key }, "reject"},
		{"names the miner, signed by the router", byMiner, nil, "reject"},
		{"the miner vouching for its own session", func(r *pb.Release) { r.Signer = []byte(f.Miner.ID) }, func() crypto.PrivKey { return f.Miner.Key }, "reject"},
		{"a router claiming the lease expired", func(r *pb.Release) { r.Outcome = pb.Outcome_EXPIRED }, nil, "reject"},
		{"garbage signer", func(r *pb.Release) { r.Signer = []byte("s") }, nil, "reject"},
		{"another network", func(r *pb.Release) { r.Network = "othernet" }, nil, "reject"},
		{"unspecified outcome", func(r *pb.Release) { r.Outcome = pb.Outcome_OUTCOME_UNSPECIFIED }, nil, "reject"},
		{"unknown outcome", func(r *pb.Release) { r.Outcome = 5 }, nil, "reject"},
		{"from the future", func(r *pb.Release) { r.IssuedMs = ms(testNow.Add(f.skew() + time.Millisecond)) }, nil, "ignore"},
		{"within the skew", func(r *pb.Release) { r.IssuedMs = ms(testNow.Add(f.skew())) }, nil, "ok"},
		// The router signs for a miner that is no peer: there is no
		// reservation it can speak to.
		{"router's release names a garbage miner", func(r *pb.Release) { r.Miner = []byte("not a peer") }, nil, "reject"},
		{"router's release names no miner", func(r *pb.Release) { r.Miner = nil }, nil, "reject"},
		{"miner's release names a garbage router", func(r *pb.Release) { byMiner(r); r.Router = []byte("x") }, func() crypto.PrivKey { return f.Miner.Key }, "reject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.release()
			if tt.mutate != nil {
				tt.mutate(r)
			}
			k := f.Router.Key
			if tt.signer != nil {
				k = tt.signer()
			}
			err := f.check.Release(testkit.Open[pb.Release](t, testkit.Seal(t, r, k)))
			if got := testkit.Class(err); got != tt.want {
				t.Errorf("got %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestEvidence(t *testing.T) {
	f := newFixture(t)
	claimA := testkit.Seal(t, f.claim(), f.Router.Key)
	cb := f.claim()
	cb.Session, cb.Nonce = "session-2", []byte("another-nonce-99")
	claimB := testkit.Seal(t, cb, f.Router.Key)
	grantB := f.grant(claimB)
	grantB.Session = "session-2"
	grant := func(g *pb.Grant, mutate func(*pb.Grant), k crypto.PrivKey) []byte {
		if mutate != nil {
			mutate(g)
		}
		return testkit.Seal(t, g, k)
	}
	gA := grant(f.grant(claimA), nil, f.Miner.Key)
	gB := grant(grantB, nil, f.Miner.Key)
	gALater := grant(f.grant(claimA), func(g *pb.Grant) { g.LeaseEndMs += 1000 }, f.Miner.Key)
	gBGen8 := grant(grantB, func(g *pb.Grant) { g.Generation = 8 }, f.Miner.Key)
	// An outsider signing grants in the miner's name cannot frame it.
	framedA := grant(f.grant(claimA), nil, f.Other.Key)
	framedB := grant(f.grant(claimB), func(g *pb.Grant) { g.Session = "session-2" }, f.Other.Key)

	verdict := func(i int, mutate func(*pb.Attestation), k crypto.PrivKey) []byte {
		a := f.att(i)
		if mutate != nil {
			mutate(a)
		}
		return testkit.Seal(t, a, k)
	}
	pass0 := verdict(0, nil, f.Oracles[0].Key)
	fail0 := verdict(0, func(a *pb.Attestation) { a.Pass, a.ScoreMilli = false, 100 }, f.Oracles[0].Key)
	failSameScore0 := verdict(0, func(a *pb.Attestation) { a.Pass = false }, f.Oracles[0].Key)
	pass0Again := verdict(0, func(a *pb.Attestation) { a.IssuedMs++; a.ExpiresMs++ }, f.Oracles[0].Key)
	pass0OtherScore := verdict(0, func(a *pb.Attestation) { a.ScoreMilli = 950 }, f.Oracles[0].Key)
	fail1 := verdict(1, func(a *pb.Attestation) { a.Pass = false }, f.Oracles[1].Key)
	fail0NextRound := verdict(0, func(a *pb.Attestation) { a.Pass, a.Round = false, 101 }, f.Oracles[0].Key)
	fail0NextGen := verdict(0, func(a *pb.Attestation) { a.Pass, a.Generation = false, 8 }, f.Oracles[0].Key)
	fail0OtherMiner := verdict(0, func(a *pb.Attestation) { a.Pass, a.Miner = false, []byte(f.Router.ID) }, f.Oracles[0].Key)
	fail0OtherNet := verdict(0, func(a *pb.Attestation) { a.Pass, a.Network = false, "othernet" }, f.Oracles[0].Key)
	forgedPass0 := verdict(0, nil, f.Other.Key)
	forgedFail0 := verdict(0, func(a *pb.Attestation) { a.Pass = false }, f.Other.Key)

	tests := []struct {
		name          string
		kind          pb.EvidenceKind
		first, second []byte
		network       string
		want          peer.ID // "" for not evidence
	}{
		{"double grant", pb.EvidenceKind_DOUBLE_GRANT, gA, gB, "", f.Miner.ID},
		{"double grant, either order", pb.EvidenceKind_DOUBLE_GRANT, gB, gA, "", f.Miner.ID},
		{"same claim twice", pb.EvidenceKind_DOUBLE_GRANT, gA, gALater, "", ""},
		{"one grant twice", pb.EvidenceKind_DOUBLE_GRANT, gA, gA, "", ""},
		{"grants of two generations", pb.EvidenceKind_DOUBLE_GRANT, gA, gBGen8, "", ""},
		{"grants forged by an outsider", pb.EvidenceKind_DOUBLE_GRANT, framedA, framedB, "", ""},
		{"one grant forged", pb.EvidenceKind_DOUBLE_GRANT, gA, framedB, "", ""},
		{"grants as verdicts", pb.EvidenceKind_DOUBLE_VERDICT, gA, gB, "", ""},
		{"grant and garbage", pb.EvidenceKind_DOUBLE_GRANT, gA, []byte("junk"), "", ""},
		{"grants on another network", pb.EvidenceKind_DOUBLE_GRANT, gA, gB, "othernet", ""},
		{"double verdict", pb.EvidenceKind_DOUBLE_VERDICT, pass0, fail0, "", f.Oracles[0].ID},
		{"double verdict, same score", pb.EvidenceKind_DOUBLE_VERDICT, failSameScore0, pass0, "", f.Oracles[0].ID},
		{"same pass, another score", pb.EvidenceKind_DOUBLE_VERDICT, pass0, pass0OtherScore, "", f.Oracles[0].ID},
		{"same verdict re-signed", pb.EvidenceKind_DOUBLE_VERDICT, pass0, pass0Again, "", ""},
		{"one verdict twice", pb.EvidenceKind_DOUBLE_VERDICT, pass0, pass0, "", ""},
		{"mixed signers", pb.EvidenceKind_DOUBLE_VERDICT, pass0, fail1, "", ""},
		{"two rounds", pb.EvidenceKind_DOUBLE_VERDICT, pass0, fail0NextRound, "", ""},
		{"two generations", pb.EvidenceKind_DOUBLE_VERDICT, pass0, fail0NextGen, "", ""},
		{"two miners", pb.EvidenceKind_DOUBLE_VERDICT, pass0, fail0OtherMiner, "", ""},
		{"a verdict of another network", pb.EvidenceKind_DOUBLE_VERDICT, pass0, fail0OtherNet, "", ""},
		{"verdicts forged by an outsider", pb.EvidenceKind_DOUBLE_VERDICT, forgedPass0, forgedFail0, "", ""},
		{"verdicts as grants", pb.EvidenceKind_DOUBLE_GRANT, pass0, fail0, "", ""},
		{"unspecified kind", pb.EvidenceKind_EVIDENCE_KIND_UNSPECIFIED, pass0, fail0, "", ""},
		{"unknown kind", 3, pass0, fail0, "", ""},
		{"empty", pb.EvidenceKind_DOUBLE_VERDICT, nil, nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			network := testNet
			if tt.network != "" {
				network = tt.network
			}
			e := &pb.Evidence{Network: network, Kind: tt.kind, First: tt.first, Second: tt.second}
			got, err := f.check.Evidence(e)
			if tt.want == "" {
				if err == nil || testkit.Class(err) != "reject" {
					t.Errorf("accepted as evidence against %s (err %v)", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("offender %s, err %v; want %s", got, err, tt.want)
			}
			// Evidence survives sealing by anyone.
			s := testkit.Open[pb.Evidence](t, testkit.Seal(t, e, f.Other.Key))
			if again, err := f.check.Evidence(s.Msg); err != nil || again != tt.want {
				t.Errorf("sealed evidence: %s, %v", again, err)
			}
		})
	}
}

// A network that pins its routers: a miner refuses another router's claim,
// and gossip refuses a grant to one.
func TestPinnedRouters(t *testing.T) {
	f := newFixture(t)
	check := f.check
	check.Params.Routers = []string{f.Other.ID.String()}
	raw := testkit.Seal(t, f.claim(), f.Router.Key)
	claim := testkit.Open[pb.Claim](t, raw)
	if err := f.check.Claim(claim, f.Miner.ID); err != nil {
		t.Fatalf("the claim, with no routers pinned: %v", err)
	}
	if err := check.Claim(claim, f.Miner.ID); testkit.Class(err) != "reject" || !strings.Contains(err.Error(), "not one of the network's routers") {
		t.Errorf("a claim from a router not pinned: %v", err)
	}
	grant := testkit.Signed(t, f.grant(raw), f.Miner.Key)
	if _, err := check.Grant(grant); testkit.Class(err) != "reject" {
		t.Errorf("a grant to a router not pinned: %v", err)
	}
	check.Params.Routers = append(check.Params.Routers, f.Router.ID.String())
	if err := check.Claim(claim, f.Miner.ID); err != nil {
		t.Errorf("a claim from a pinned router: %v", err)
	}
	if _, err := check.Grant(grant); err != nil {
		t.Errorf("a grant to a pinned router: %v", err)
	}
}
