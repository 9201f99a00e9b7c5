package pool

import (
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Holdings counts, in this node's view and leaving out the miner skip, the
// miners that make up the pool (size) and those of them router holds
// (held), for the network's limit on what one router may hold
// (protocol.Params.RouterLimit).
//
// A miner makes up the pool if its record is unexpired, says AVAILABLE or
// RESERVED, it is not penalised, and this node holds a quorum of passing
// attestations for its generation: a record costs nothing to sign, a
// quorum of oracles' passes does, so throwaway identities cannot swell the
// pool to raise a router's limit. Router holds such a miner if this node
// holds a grant of the miner's current generation to it and no release of
// that generation: a record may say RESERVED a moment after the grant
// arrives, and a release ends the hold before the next record says so.
func (p *Pool) Holdings(router, skip peer.ID) (held, size int) {
	grants, size := p.Held(router, skip)
	return len(grants), size
}

// Held is Holdings with the grants by which router holds its miners, in
// no particular order, for a miner to rank its own grant among them
// (protocol.RankGrant).
func (p *Pool) Held(router, skip peer.ID) (grants []protocol.Signed[*pb.Grant], size int) {
	now := time.Now()
	for _, m := range p.Records() {
		if m.ID == skip || !m.Expires.After(now) || p.Penalized(m.ID) ||
			(m.State != pb.MinerState_AVAILABLE && m.State != pb.MinerState_RESERVED) ||
			len(p.PassingOracles(m.ID, m.Generation)) < p.check.Params.Quorum {
			continue
		}
		size++
		if g, ok := p.holding(m.ID, m.Generation); ok && g.router == router {
			grants = append(grants, g.grant)
		}
	}
	return grants, size
}

// HeldBy is the router that holds miner at generation in this node's view:
// the router of the grant held for it, unless a release of that generation
// is held too; "" if none.
func (p *Pool) HeldBy(miner peer.ID, generation uint64) peer.ID {
	h, _ := p.holding(miner, generation)
	return h.router
}

type hold struct {
	router peer.ID
	grant  protocol.Signed[*pb.Grant]
}

func (p *Pool) holding(miner peer.ID, generation uint64) (hold, bool) {
	g, ok := p.Grant(miner, generation)
	if !ok {
		return hold{}, false
	}
	if _, err := p.store.Get(releaseKey(miner, generation)); err == nil {
		return hold{}, false
	}
	router, err := peer.IDFromBytes(g.Msg.Router)
	if err != nil {
		return hold{}, false
	}
	return hold{router: router, grant: g}, true
}
