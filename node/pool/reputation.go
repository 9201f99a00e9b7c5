package pool

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Reputation is this node's local view of a peer, derived from what it has
// seen: verdicts on a miner, verdicts an oracle gave, sessions and
// equivocation. It is kept in the store under rep/<peer>.
type Reputation struct {
	Passes        int `json:"passes"`         // passing verdicts received (miner)
	Fails         int `json:"fails"`          // failing verdicts received (miner)
	Completed     int `json:"completed"`      // sessions released as completed
	Failed        int `json:"failed"`         // sessions released as failed
	Expired       int `json:"expired"`        // sessions that ended by lease expiry
	Faults        int `json:"faults"`         // answers this node's sessions rejected or out-voted
	Equivocations int `json:"equivocations"`  // conflicting signatures seen
	Verdicts      int `json:"verdicts_given"` // attestations signed (oracle)
	// Charged is what the failed and expired sessions cost the miner in
	// its score: each weighted by the standing of the router that held it,
	// and at most chargeCap from one router (see charge).
	Charged float64 `json:"charged"`
	// Ended and EndedBad count the sessions on a router's grants that this
	// node saw end, and how many of them ended FAILED or EXPIRED (router):
	// its standing when it blames a miner.
	Ended    int `json:"sessions_ended"`
	EndedBad int `json:"sessions_ended_bad"`
}

// Score is in [0, 1]: a Laplace-smoothed pass rate times a smoothed session
// success rate; zero for a peer ever caught equivocating. Failed and expired
// sessions count through Charged, not one for one: a router can end any
// session it reserved FAILED, at no cost to itself.
func (r Reputation) Score() float64 {
	if r.Equivocations > 0 {
		return 0
	}
	validation := float64(r.Passes+1) / float64(r.Passes+r.Fails+2)
	sessions := float64(r.Completed+1) / (float64(r.Completed+r.Faults+1) + r.Charged)
	return validation * sessions
}

// Reputation returns the reputation held for id.
func (p *Pool) Reputation(id peer.ID) Reputation { return p.reputationAt(repKey(id)) }

func (p *Pool) reputationAt(key []byte) Reputation {
	var r Reputation
	if b, err := p.store.Get(key); err == nil {
		if json.Unmarshal(b, &r) != nil {
			return Reputation{} // a damaged entry counts as a fresh start
		}
		var charged struct {
			Charged *float64 `json:"charged"`
		}
		if _ = json.Unmarshal(b, &charged); charged.Charged == nil {
			// Stored before sessions were charged: each counted in full.
			r.Charged = float64(r.Failed + r.Expired)
		}
	}
	return r
}

// updateReputation applies f to id's reputation and returns the result.
func (p *Pool) updateReputation(id peer.ID, f func(*Reputation)) Reputation {
	return p.updateAt(repKey(id), f)
}

func (p *Pool) updateAt(key []byte, f func(*Reputation)) Reputation {
	p.repMu.Lock()
	defer p.repMu.Unlock()
	r := p.reputationAt(key)
	f(&r)
	b, _ := json.Marshal(r)
	if err := p.store.Put(key, b); err != nil {
		p.log.Warn("store reputation", "key", string(key), "err", err)
	}
	return r
}

func (p *Pool) recordVerdict(oracle, miner peer.ID, pass bool) {
	p.updateReputation(miner, func(r *Reputation) {
		if pass {
			r.Passes++
		} else {
			r.Fails++
		}
	})
	p.updateReputation(oracle, func(r *Reputation) { r.Verdicts++ })
}

// chargeCap is the most that one router's failed and expired sessions take
// from a miner's score, in sessions: with it, no router alone can push a
// miner that passes its validations below a router's fit line (see Score:
// one pass and a charge of 1 still score 1/3 > 0.25).
const chargeCap = 1.0

// chargeWindow is how long a router's charges on a miner count toward its
// cap: after that the same router may charge it again.
const chargeWindow = 7 * 24 * time.Hour

// recordSession counts a session of miner on router's grant that ended with
// o. A FAILED or EXPIRED end is charged to the miner as charge says.
func (p *Pool) recordSession(miner, router peer.ID, o pb.Outcome) {
	bad := o == pb.Outcome_FAILED || o == pb.Outcome_EXPIRED
	count := func(r *Reputation) {
		r.Ended++
		if bad {
			r.EndedBad++
		}
	}
	byRouter := p.updateReputation(router, count)
	all := p.updateAt([]byte(allRoutersKey), count)
	var cost float64
	if bad {
		cost = p.charge(miner, router, standing(byRouter, all))
	}
	p.updateReputation(miner, func(r *Reputation) {
		switch o {
		case pb.Outcome_COMPLETED, pb.Outcome_CANCELLED:
			r.Completed++
		case pb.Outcome_FAILED:
			r.Failed++
		case pb.Outcome_EXPIRED:
			r.Expired++
		}
		r.Charged += cost
	})
}

// standing is the weight, in (0, 1], of a bad end on router's grant: how
// its rate of bad ends compares with every other router's, both smoothed
// (Laplace) so that a router with no record is not taken at its word:
//
//	own    = (bad ends by router + 1) / (ends by router + 2)
//	others = (bad ends by the rest + 1) / (ends by the rest + 2)
//	weight = min(1, others / own)
//
// A router that fails no more than the rest counts in full; one that fails
// everything it reserves, as a griefer does, counts for the others' rate.
func standing(router, all Reputation) float64 {
	own := float64(router.EndedBad+1) / float64(router.Ended+2)
	others := float64(max(0, all.EndedBad-router.EndedBad)+1) / float64(max(0, all.Ended-router.Ended)+2)
	return min(1, others/own)
}

// charge adds weight to what router has charged miner within the window,
// up to chargeCap, and returns what was added.
func (p *Pool) charge(miner, router peer.ID, weight float64) float64 {
	p.repMu.Lock()
	defer p.repMu.Unlock()
	key := chargeKey(miner, router)
	var before float64
	if b, err := p.store.Get(key); err == nil {
		before, _ = strconv.ParseFloat(string(b), 64)
	}
	add := max(0, min(weight, chargeCap-before))
	if add == 0 {
		return 0
	}
	if err := p.store.PutWithTTL(key, strconv.AppendFloat(nil, before+add, 'g', -1, 64), chargeWindow); err != nil {
		p.log.Warn("store charge", "miner", miner, "router", router, "err", err)
		return 0
	}
	return add
}

// RecordFault counts against miner an answer a session of this node
// rejected: a reveal that broke its commitment, or an answer out-voted by
// the other miners of the task.
func (p *Pool) RecordFault(miner peer.ID) {
	p.updateReputation(miner, func(r *Reputation) { r.Faults++ })
}

func (p *Pool) recordEquivocation(id peer.ID) {
	p.updateReputation(id, func(r *Reputation) { r.Equivocations++ })
}
