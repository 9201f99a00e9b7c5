package pool

import (
	"encoding/json"

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
}

// Score is in [0, 1]: a Laplace-smoothed pass rate times a smoothed session
// success rate; zero for a peer ever caught equivocating.
func (r Reputation) Score() float64 {
	if r.Equivocations > 0 {
		return 0
	}
	validation := float64(r.Passes+1) / float64(r.Passes+r.Fails+2)
	sessions := float64(r.Completed+1) / float64(r.Completed+r.Failed+r.Expired+r.Faults+1)
	return validation * sessions
}

// Reputation returns the reputation held for id.
func (p *Pool) Reputation(id peer.ID) Reputation {
	var r Reputation
	if b, err := p.store.Get(repKey(id)); err == nil {
		_ = json.Unmarshal(b, &r) // a damaged entry counts as a fresh start
	}
	return r
}

func (p *Pool) updateReputation(id peer.ID, f func(*Reputation)) {
	p.repMu.Lock()
	defer p.repMu.Unlock()
	r := p.Reputation(id)
	f(&r)
	b, _ := json.Marshal(r)
	if err := p.store.Put(repKey(id), b); err != nil {
		p.log.Warn("store reputation", "peer", id, "err", err)
	}
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

func (p *Pool) recordSession(miner peer.ID, o pb.Outcome) {
	p.updateReputation(miner, func(r *Reputation) {
		switch o {
		case pb.Outcome_COMPLETED, pb.Outcome_CANCELLED:
			r.Completed++
		case pb.Outcome_FAILED:
			r.Failed++
		case pb.Outcome_EXPIRED:
			r.Expired++
		}
	})
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
