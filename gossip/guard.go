package gossip

import (
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PeerBlocker keeps a peer away at the connection level: it closes the
// peer's connections and refuses new ones, both ways, for d. *p2p.Host is one.
type PeerBlocker interface {
	BlockPeer(p peer.ID, d time.Duration)
}

// CutOffPeriod is how long a cut-off peer is refused. Its score outlives the
// disconnection (by an hour) and its invalid messages fade over an hour, so a
// flooder, with its hundreds of REJECTs, comes back still graylisted and is
// cut off again at once: one handshake per period is all it costs us. A peer
// cut off for a few REJECTs it forwarded in good faith (two nodes that judged
// a message differently) is back within the period, its score recovered.
const CutOffPeriod = 10 * time.Minute

// guard cuts off, at the connection level, a peer that gossip has given up
// on. Gossipsub drops a graylisted peer's messages before validating them,
// but only once they have been received, decrypted and decoded: a peer
// flooding thousands of messages a second costs its neighbours much the same
// after graylisting as before. Cut off, it costs nothing.
type guard struct {
	h       host.Host
	block   PeerBlocker // nil: connections are closed, and reconnections closed again
	period  time.Duration
	limit   float64 // the faded count of REJECTs past which a peer is cut off
	decay   float64 // the factor by which the count of REJECTs falls per decayInterval
	now     func() time.Time
	metrics *metrics
	log     *slog.Logger

	mu      sync.Mutex
	invalid map[peer.ID]decaying  // REJECTed messages each peer forwarded
	cut     map[peer.ID]time.Time // cut-offs in force, until when
}

// decaying is a count that fades as the score's invalid deliveries do.
type decaying struct {
	n  float64
	at time.Time
}

func (d decaying) now(t time.Time, factor float64) float64 {
	return d.n * math.Pow(factor, float64(t.Sub(d.at))/float64(decayInterval))
}

// invalidToGraylist is the count of REJECTed messages on one topic past
// which they alone put a peer below the graylist threshold, whatever positive
// score it has earned: √161 ≈ 12.69 with our parameters (n² × −100 <
// −16000 − 100). The count fades, so it is not a whole number: 13 REJECTs
// come to 13 only if they arrive at one instant, and to a hair less a few
// seconds apart. Cutting off past 12.69 rather than at 13 makes the 13th
// REJECT cut a peer off however its REJECTs are spread over topics (as long
// as they came within 20 s: 12 × (1 − 0.01^(20 s / 1 h)) < 13 − 12.69), and
// never the 12th.
func invalidToGraylist() float64 {
	tp, most := topicScoreParams(), scoreParams(nil).TopicScoreCap
	perSquare := -tp.InvalidMessageDeliveriesWeight * tp.TopicWeight
	return math.Sqrt((most - scoreThresholds().GraylistThreshold) / perSquare)
}

func newGuard(h host.Host, m *metrics, log *slog.Logger) *guard {
	block, _ := h.(PeerBlocker)
	return &guard{
		h: h, block: block, period: CutOffPeriod,
		limit: invalidToGraylist(), decay: topicScoreParams().InvalidMessageDeliveriesDecay,
		now: time.Now, metrics: m, log: log,
		invalid: map[peer.ID]decaying{}, cut: map[peer.ID]time.Time{},
	}
}

// rejected counts one REJECTed message that from forwarded. It is how a
// flooder is caught as soon as its invalid messages graylist it, rather than
// at the next score inspection, up to a second and thousands of messages later.
// REJECTs from different topics count together, which is stricter than the
// score, whose penalty is per topic (7 and 6 REJECTs on two topics do not
// graylist a peer; 13 on one do).
func (g *guard) rejected(from peer.ID) {
	if from == g.h.ID() {
		return // our own message: a bug here, not an attack (so is a validator's panic, not counted)
	}
	now := g.now()
	g.mu.Lock()
	d := decaying{n: g.invalid[from].now(now, g.decay) + 1, at: now}
	g.invalid[from] = d
	g.mu.Unlock()
	if d.n > g.limit {
		g.cutOff(from, "invalid", slog.Int("rejected", int(math.Round(d.n))))
	}
}

// scored takes a score snapshot and cuts off every connected peer below the
// graylist threshold, whatever brought it there (invalid messages, broken
// gossip promises). One already cut off that is connected again (a host
// without a PeerBlocker, or a connection that was being set up as the block
// came) is closed again, quietly.
func (g *guard) scored(scores map[peer.ID]float64) {
	now := g.now()
	g.mu.Lock()
	for p, d := range g.invalid {
		if d.now(now, g.decay) < 1 {
			delete(g.invalid, p)
		}
	}
	for p, until := range g.cut {
		if !now.Before(until) {
			delete(g.cut, p)
		}
	}
	g.mu.Unlock()
	for p, s := range scores {
		if s >= GraylistThreshold() || g.h.Network().Connectedness(p) != network.Connected {
			continue
		}
		if !g.cutOff(p, "graylisted", slog.Float64("score", s)) {
			go g.close(p)
		}
	}
}

// cutOff closes p's connections and, through the host's PeerBlocker, refuses
// it for the period, and counts and logs it. It does nothing and returns
// false if p's cut-off is in force already.
func (g *guard) cutOff(p peer.ID, reason string, why slog.Attr) bool {
	now := g.now()
	g.mu.Lock()
	if until, ok := g.cut[p]; ok && now.Before(until) {
		g.mu.Unlock()
		return false
	}
	until := now.Add(g.period)
	g.cut[p] = until
	g.mu.Unlock()
	g.metrics.cutOff.WithLabelValues(reason).Inc()
	g.log.Warn("gossip peer cut off: connections closed and refused",
		"peer", p, "reason", reason, why, "until", until.UTC().Format(time.RFC3339))
	// Closing waits on the connections; the caller is a validator or the
	// score inspector, which must not.
	go func() {
		if g.block != nil {
			g.block.BlockPeer(p, g.period)
			return
		}
		g.close(p)
	}()
	return true
}

// isCut reports whether p's cut-off is in force at now.
func (g *guard) isCut(p peer.ID, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.cut[p]
	return ok && now.Before(until)
}

func (g *guard) close(p peer.ID) {
	if err := g.h.Network().ClosePeer(p); err != nil {
		g.log.Debug("closing a cut-off peer's connections", "peer", p, "err", err)
	}
}
