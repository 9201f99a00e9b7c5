package router

import (
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// latencyScale is the latency at which a miner's ranking is halved.
const latencyScale = 250 * time.Millisecond

// latencies keeps an exponentially weighted mean of the round trips this
// router measured to each miner: claims, and the tasks of its sessions.
type latencies struct {
	mu   sync.Mutex
	mean map[peer.ID]time.Duration
}

// observe folds one measured round trip into id's mean, weighting it 1/4.
func (l *latencies) observe(id peer.ID, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mean == nil {
		l.mean = map[peer.ID]time.Duration{}
	}
	if m, ok := l.mean[id]; ok {
		d = m + (d-m)/4
	}
	l.mean[id] = d
}

// factor is in (0, 1]: 1/(1 + latency/latencyScale). A miner never measured
// gets the median of those that were, so it is neither favoured nor shunned.
func (l *latencies) factor(id peer.ID) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.mean[id]
	if !ok {
		if len(l.mean) == 0 {
			return 1
		}
		all := make([]time.Duration, 0, len(l.mean))
		for _, v := range l.mean {
			all = append(all, v)
		}
		slices.Sort(all)
		d = all[len(all)/2]
	}
	return 1 / (1 + float64(d)/float64(latencyScale))
}

// ObserveLatency records a round trip measured to miner outside the router,
// such as a session task; it ranks the miner's future candidacy.
func (r *Router) ObserveLatency(miner peer.ID, d time.Duration) { r.latency.observe(miner, d) }
