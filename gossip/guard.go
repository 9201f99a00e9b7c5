package gossip

import (
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// PeerBlocker keeps a peer away at the connection level: it closes the
// peer's connections and refuses new ones, both ways, for d. *p2p.Host is one.
type PeerBlocker interface {
	BlockPeer(p peer.ID, d time.Duration)
}

// PrefixBlocker keeps a network away at the connection level: it closes the
// connections with addresses in it and refuses new ones, both ways, for d.
// *p2p.Host is one.
type PrefixBlocker interface {
	BlockPrefix(n netip.Prefix, d time.Duration)
}

// REJECTs are counted per address and per subnet as well as per peer, so
// that fresh keys from one place run out: an address passes its limit at
// addressFactor times a peer's, a subnet at subnetFactor times. IPv6 hosts
// are commonly handed a /64, so that is an IPv6 "address".
const (
	addressFactor = 2 // 26 REJECTs from one IPv4 address or IPv6 /64
	subnetFactor  = 4 // 51 from one IPv4 /24 or IPv6 /48
	addressBits4  = 32
	addressBits6  = 64
	subnetBits4   = 24
	subnetBits6   = 48
)

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
	h        host.Host
	block    PeerBlocker   // nil: connections are closed, and reconnections closed again
	blockNet PrefixBlocker // nil: the peers there are cut off one by one, at their first REJECT
	period   time.Duration
	limit    float64 // the faded count of REJECTs past which a peer is cut off
	decay    float64 // the factor by which the count of REJECTs falls per decayInterval
	now      func() time.Time
	// addrsOf are the IPs of a peer's connections; exempt are networks whose
	// REJECTs count per peer only (loopback and the node's own addresses,
	// where a local testnet's peers all are).
	addrsOf func(peer.ID) []netip.Addr
	exempt  []netip.Prefix
	metrics *metrics
	log     *slog.Logger

	mu      sync.Mutex
	invalid map[peer.ID]decaying      // REJECTed messages each peer forwarded
	cut     map[peer.ID]time.Time     // cut-offs in force, until when
	netBad  map[netip.Prefix]decaying // REJECTed messages from each address and subnet
	netCut  map[netip.Prefix]time.Time
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
	blockNet, _ := h.(PrefixBlocker)
	g := &guard{
		h: h, block: block, blockNet: blockNet, period: CutOffPeriod,
		limit: invalidToGraylist(), decay: topicScoreParams().InvalidMessageDeliveriesDecay,
		now: time.Now, metrics: m, log: log,
		invalid: map[peer.ID]decaying{}, cut: map[peer.ID]time.Time{},
		netBad: map[netip.Prefix]decaying{}, netCut: map[netip.Prefix]time.Time{},
	}
	g.addrsOf = g.connAddrs
	for _, n := range append(loopbackNets(), ownNets(h.Network().ListenAddresses())...) {
		if a, ok := netip.AddrFromSlice(n.IP); ok {
			bits, _ := n.Mask.Size()
			g.exempt = append(g.exempt, netip.PrefixFrom(a.Unmap(), bits))
		}
	}
	return g
}

// connAddrs are the IPs p's direct connections come from; a relayed
// connection's is the relay's, which says nothing of p.
func (g *guard) connAddrs(p peer.ID) []netip.Addr {
	var out []netip.Addr
	for _, c := range g.h.Network().ConnsToPeer(p) {
		ra := c.RemoteMultiaddr()
		if _, err := ra.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		ip, err := manet.ToIP(ra)
		if err != nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// netsOf are the address and the subnet of each of ips that counts.
func (g *guard) netsOf(ips []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, ip := range ips {
		if g.isExempt(ip) {
			continue
		}
		a, s := addressBits6, subnetBits6
		if ip.Is4() {
			a, s = addressBits4, subnetBits4
		}
		pa, _ := ip.Prefix(a)
		ps, _ := ip.Prefix(s)
		out = append(out, pa, ps)
	}
	return out
}

func (g *guard) isExempt(ip netip.Addr) bool {
	for _, e := range g.exempt {
		if e.Contains(ip) {
			return true
		}
	}
	return false
}

// netLimit is the count of REJECTs past which a network is cut off.
func (g *guard) netLimit(n netip.Prefix) float64 {
	if n.Bits() == addressBits4 && n.Addr().Is4() || n.Bits() == addressBits6 && n.Addr().Is6() {
		return addressFactor * g.limit
	}
	return subnetFactor * g.limit
}

// netKind names a network's kind in logs and metrics.
func netKind(n netip.Prefix) string {
	if n.Bits() == subnetBits4 && n.Addr().Is4() || n.Bits() == subnetBits6 && n.Addr().Is6() {
		return "subnet"
	}
	return "address"
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
	nets := g.netsOf(g.addrsOf(from))
	now := g.now()
	g.mu.Lock()
	d := decaying{n: g.invalid[from].now(now, g.decay) + 1, at: now}
	g.invalid[from] = d
	var over []netip.Prefix
	var counts []float64
	inCut := netip.Prefix{}
	for _, n := range nets {
		nd := decaying{n: g.netBad[n].now(now, g.decay) + 1, at: now}
		g.netBad[n] = nd
		if until, ok := g.netCut[n]; ok && now.Before(until) {
			inCut = n
		} else if nd.n > g.netLimit(n) {
			over, counts = append(over, n), append(counts, nd.n)
		}
	}
	g.mu.Unlock()
	switch {
	case d.n > g.limit:
		g.cutOff(from, "invalid", slog.Int("rejected", int(math.Round(d.n))))
	case inCut.IsValid():
		// A fresh key from a network cut off already (it came in before
		// the block, or this host refuses no networks): its first REJECT
		// is its last.
		g.cutOff(from, "network", slog.String("network", inCut.String()))
	}
	for i, n := range over {
		g.cutOffNet(n, counts[i])
	}
}

// cutOffNet cuts off a network whose peers' REJECTs together passed its
// limit: every peer connected from it, and, through the host's
// PrefixBlocker, every connection from it for the period. Logged once and
// counted by kind, "address" or "subnet"; each peer there is counted as a
// cut-off of reason "network", without a line of its own.
func (g *guard) cutOffNet(n netip.Prefix, rejected float64) {
	now := g.now()
	until := now.Add(g.period)
	g.mu.Lock()
	if u, ok := g.netCut[n]; ok && now.Before(u) {
		g.mu.Unlock()
		return
	}
	g.netCut[n] = until
	g.mu.Unlock()
	kind := netKind(n)
	g.metrics.netCut.WithLabelValues(kind).Inc()
	g.log.Warn("gossip network cut off: connections from it closed and refused",
		"network", n.String(), "kind", kind, "rejected", int(math.Round(rejected)), "until", until.UTC().Format(time.RFC3339))
	go func() {
		if g.blockNet != nil {
			g.blockNet.BlockPrefix(n, g.period)
		}
		for _, p := range g.h.Network().Peers() {
			for _, ip := range g.addrsOf(p) {
				if n.Contains(ip) {
					g.cutQuietly(p, until)
					break
				}
			}
		}
	}()
}

// cutQuietly cuts off p, one of a network's peers, without counting or
// logging it on its own: the network's cut-off was.
func (g *guard) cutQuietly(p peer.ID, until time.Time) {
	g.mu.Lock()
	u, ok := g.cut[p]
	if !ok || u.Before(until) {
		g.cut[p] = until
	}
	g.mu.Unlock()
	if !ok || !g.now().Before(u) {
		g.metrics.cutOff.WithLabelValues("network").Inc()
	}
	if g.block != nil {
		g.block.BlockPeer(p, g.period)
		return
	}
	g.close(p)
}

// scored takes a score snapshot and cuts off every connected peer below the
// graylist threshold, whatever brought it there (invalid messages, broken
// gossip promises). One already cut off that is connected again (a host
// without a PeerBlocker, or a connection that was being set up as the block
// came) is closed again, quietly.
func (g *guard) scored(scores map[peer.ID]float64) {
	now := g.now()
	g.mu.Lock()
	maps.DeleteFunc(g.invalid, func(_ peer.ID, d decaying) bool { return d.now(now, g.decay) < 1 })
	maps.DeleteFunc(g.cut, func(_ peer.ID, until time.Time) bool { return !now.Before(until) })
	maps.DeleteFunc(g.netBad, func(_ netip.Prefix, d decaying) bool { return d.now(now, g.decay) < 1 })
	maps.DeleteFunc(g.netCut, func(_ netip.Prefix, until time.Time) bool { return !now.Before(until) })
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
