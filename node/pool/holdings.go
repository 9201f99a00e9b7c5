package pool

import (
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Holders counts, in this node's view, the miners that make up the pool
// (size) and, for each router that holds some of them, the grants by which
// it does, in no particular order: what the oracles judge a router's share
// of the pool by (protocol.Params.RouterLimit, protocol.GrantRank).
//
// A miner makes up the pool if its record is unexpired, says AVAILABLE or
// RESERVED, it is not penalised, and this node holds a quorum of passing
// attestations for its generation: a record costs nothing to sign, a
// quorum of oracles' passes does, so throwaway identities cannot swell the
// pool to raise a router's limit. A router holds such a miner if this node
// holds a grant of the miner's current generation to it and no release of
// that generation: a record may say RESERVED a moment after the grant
// arrives, and a release ends the hold before the next record says so.
func (p *Pool) Holders() (size int, held map[peer.ID][]protocol.Signed[*pb.Grant]) {
	now := time.Now()
	held = map[peer.ID][]protocol.Signed[*pb.Grant]{}
	for _, m := range p.Records() {
		if !m.Expires.After(now) || p.Penalized(m.ID) ||
			(m.State != pb.MinerState_AVAILABLE && m.State != pb.MinerState_RESERVED) ||
			len(p.PassingOracles(m.ID, m.Generation)) < p.check.Params.Quorum {
			continue
		}
		size++
		if g, ok := p.holding(m.ID, m.Generation); ok {
			held[g.router] = append(held[g.router], g.grant)
		}
	}
	return size, held
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
