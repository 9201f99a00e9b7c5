package router

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

const (
	// discoverTimeout bounds the DHT lookup of a pool before a claim.
	discoverTimeout = 3 * time.Second
	// maxProviders is how many pool providers a lookup asks the DHT for.
	maxProviders = 20
)

func short(id peer.ID) string {
	s := id.String()
	if len(s) > 12 {
		return "…" + s[len(s)-8:]
	}
	return s
}

func summary(failures []string) string {
	const shown = 5
	if len(failures) <= shown {
		return fmt.Sprintf("%d tried: %s", len(failures), strings.Join(failures, "; "))
	}
	return fmt.Sprintf("%d tried: %s; and %d more", len(failures), strings.Join(failures[:shown], "; "), len(failures)-shown)
}

// candidates are the miners to claim, in order: the pool view's available
// miners (after a DHT lookup of the model's pool, if there is a DHT), less
// this node, the excluded ones and those it already holds. Those that fit
// (a reputation of at least minFit) come first, ordered by repeated power
// of two choices on reputation and measured latency; the rest follow as the
// fallback when no miner that fits grants a claim.
func (r *Router) candidates(ctx context.Context, model string, exclude []peer.ID) []pool.Miner {
	avail := r.d.Pool.Available(model)
	if r.d.DHT != nil && model != "" {
		if r.discover(ctx, model, avail) {
			avail = r.d.Pool.Available(model)
		}
	}
	r.mu.Lock()
	held := map[peer.ID]uint64{}
	for _, e := range r.res {
		if e.res.State == StateActive {
			held[e.miner] = e.res.Generation
		}
	}
	r.mu.Unlock()
	var fit, relayed, rest []pool.Miner
	scores := make(map[peer.ID]float64, len(avail))
	for _, m := range avail {
		if gen, ok := held[m.ID]; m.ID == r.self || (ok && gen == m.Generation) || slices.Contains(exclude, m.ID) {
			continue
		}
		rep := r.d.Pool.Reputation(m.ID).Score()
		scores[m.ID] = rep * r.latency.factor(m.ID)
		switch {
		case rep < minFit:
			rest = append(rest, m)
		case r.d.Relayed != nil && r.d.Relayed(m.ID):
			relayed = append(relayed, m)
		default:
			fit = append(fit, m)
		}
	}
	score := func(id peer.ID) float64 { return scores[id] }
	return slices.Concat(order(fit, score), order(relayed, score), order(rest, score))
}

// minFit is the reputation below which a miner is only a fallback: one that
// failed most of what this router saw of it.
const minFit = 0.25

// order sorts candidates by the power of two choices: the first is the
// better of two random candidates, the next the better of the loser and
// another random one, and so on. Load spreads over the pool while
// well-reputed, fast miners are preferred.
func order(cands []pool.Miner, score func(peer.ID) float64) []pool.Miner {
	rest := slices.Clone(cands)
	mrand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	out := make([]pool.Miner, 0, len(rest))
	for len(rest) > 1 {
		if score(rest[1].ID) > score(rest[0].ID) {
			rest[0], rest[1] = rest[1], rest[0]
		}
		out = append(out, rest[0])
		rest = rest[1:]
	}
	return append(out, rest...)
}

// discover looks up the providers of model's pool in the DHT and feeds the
// availability records of those the pool view does not list as available to
// the pool, which judges them. It reports whether it fetched any record.
func (r *Router) discover(ctx context.Context, model string, known []pool.Miner) bool {
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	skip := map[peer.ID]bool{r.self: true}
	for _, m := range known {
		skip[m.ID] = true
	}
	var wg sync.WaitGroup
	fetched := false
	for ai := range r.d.DHT.FindProvidersAsync(ctx, protocol.PoolCID(r.d.Network, model), maxProviders) {
		if skip[ai.ID] {
			continue
		}
		skip[ai.ID] = true
		if len(ai.Addrs) > 0 {
			r.d.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		}
		fetched = true
		id := ai.ID
		wg.Go(func() {
			raw, err := r.d.DHT.GetValue(ctx, protocol.AvailabilityKey([]byte(id)))
			if err != nil {
				return
			}
			rec, err := protocol.Open[pb.Availability](raw)
			if err != nil || rec.Signer != id {
				return
			}
			_ = r.d.Pool.AddAvailability(rec) // the pool judges it; stale or invalid records are its business
		})
	}
	wg.Wait()
	return fetched
}
