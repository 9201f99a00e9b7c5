package oracle

import (
	"context"
	"time"

	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A router may hold only its share of the pool (protocol.Params.RouterLimit),
// and a router that sends claims to many miners at once gets more: each
// miner grants what it is asked. Miners follow no gossip, so they cannot
// count a router's grants; oracles follow them all. Every shareEvery an
// oracle ranks each router's grants (protocol.GrantRank) and sends an
// eviction to each miner whose grant ranks beyond the limit, once the grant
// is shareGrace old; the miner ends its reservation when a quorum of
// oracles agree (node/miner/share.go).
const (
	// shareGrace is how long an oracle holds a grant before judging it:
	// long enough for the other grants of a burst to arrive, so that every
	// oracle ranks the same grants.
	shareGrace = 2 * time.Second
	// shareEvery is how often an oracle judges the routers' shares.
	shareEvery = time.Second
	// evictAgain is how long an oracle waits before sending an eviction
	// again for a grant still held: the first may have been lost.
	evictAgain = 10 * time.Second
)

// shareSeen is what an oracle remembers of one grant it judges: when it
// first saw it, the largest pool it has seen since, and when it last sent
// an eviction for it. The limit is judged against that largest pool, so
// that a pool that shrinks for a moment (miners released by other routers
// revalidate out of it) ends none of a router's grants that were within
// its limit; the pool cannot be swelled to raise it (pool.Holders).
type shareSeen struct {
	first   time.Time
	pool    int
	evicted time.Time
}

// judgeShares runs until ctx ends.
func (o *Oracle) judgeShares(ctx context.Context) {
	seen := map[string]*shareSeen{}
	wait.Every(ctx, shareEvery, func(ctx context.Context) { o.judgeSharesOnce(ctx, seen) })
}

// judgeSharesOnce judges every router's holdings once; seen carries what it
// remembers of each grant (by claim digest) from one call to the next.
func (o *Oracle) judgeSharesOnce(ctx context.Context, seen map[string]*shareSeen) {
	if !o.params().IsOracle(o.self) {
		return
	}
	now := o.d.Now()
	size, holders := o.d.Pool.Holders()
	live := map[string]bool{}
	for router, grants := range holders {
		others := make([]*pb.Grant, len(grants))
		for i, g := range grants {
			others[i] = g.Msg
		}
		for _, g := range grants {
			key := string(g.Msg.ClaimDigest)
			live[key] = true
			s, ok := seen[key]
			if !ok {
				s = &shareSeen{first: now}
				seen[key] = s
			}
			s.pool = max(s.pool, size)
			limit := o.params().RouterLimit(s.pool)
			if len(grants) <= limit || now.Sub(s.first) < shareGrace || now.Sub(s.evicted) < evictAgain {
				continue
			}
			rank := protocol.GrantRank(g.Msg, others)
			if rank <= limit {
				continue
			}
			s.evicted = now
			o.evict(ctx, router, g, len(grants), s.pool, limit, rank)
		}
	}
	for key := range seen {
		if !live[key] {
			delete(seen, key)
		}
	}
}

// evict signs an eviction of grant g and sends it to its miner, in the
// background: a miner that does not answer must not hold up the others.
func (o *Oracle) evict(ctx context.Context, router peer.ID, g protocol.Signed[*pb.Grant], held, size, limit, rank int) {
	env, err := protocol.Seal(&pb.Eviction{
		Network: o.d.Network, Oracle: []byte(o.self), Miner: g.Msg.Miner, Generation: g.Msg.Generation,
		ClaimDigest: g.Msg.ClaimDigest, Router: []byte(router),
		Held: uint32(held), Pool: uint32(size), Limit: uint32(limit), Rank: uint32(rank),
		IssuedMs: protocol.Ms(o.d.Now()),
	}, o.d.Key)
	if err != nil {
		o.log.Error("sign eviction", "err", err)
		return
	}
	miner := g.Signer
	o.log.Info("router over its share: evicting a miner", "router", router, "miner", miner,
		"held", held, "pool", size, "limit", limit, "rank", rank)
	o.evictions.Add(1)
	o.wg.Go(func() {
		if err := o.notify(ctx, miner, env); err != nil {
			o.log.Debug("send eviction", "miner", miner, "err", err)
		}
	})
}

// noticeTimeout bounds sending one notice to a miner.
const noticeTimeout = 10 * time.Second

// notify sends a signed verdict about miner (an attestation or an eviction)
// to it on the notice protocol: a miner follows no gossip topic.
func (o *Oracle) notify(ctx context.Context, miner peer.ID, env []byte) error {
	ctx, cancel := context.WithTimeout(ctx, noticeTimeout)
	defer cancel()
	s, _, err := protocol.Send(ctx, o.d.Host, miner, protocol.NoticeProtocol(o.d.Network), env)
	if err != nil {
		return err
	}
	return s.Close()
}
