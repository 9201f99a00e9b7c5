package p2p

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/internal/names"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Reachability is how the node can be reached, as far as it knows: what it
// listens on, what it announces, what peers see of it, and what AutoNAT v2
// found when peers dialled each address back.
type Reachability struct {
	Listen    []string `json:"listen"`
	Announced []string `json:"announced"`
	// Observed are the addresses peers saw this node's connections come
	// from (through a NAT, its router's side).
	Observed []string `json:"observed"`
	// Reachable, Unreachable and Unknown are AutoNAT v2's verdicts on the
	// node's public addresses (it never judges private ones).
	Reachable   []string `json:"reachable"`
	Unreachable []string `json:"unreachable"`
	Unknown     []string `json:"unknown"`
	// Reachability is AutoNAT's verdict on the node as a whole: public,
	// private or unknown.
	Reachability string `json:"reachability"`
	// RelayAddrs are the node's addresses through relays it holds a
	// reservation on.
	RelayAddrs []string `json:"relay_addrs"`
	// RelayService says whether this node relays for others.
	RelayService bool `json:"relay_service"`
	// Checked says whether AutoNAT has given any verdict yet.
	Checked bool `json:"checked"`
}

// Dialable reports whether peers can dial the node: an address AutoNAT
// confirmed, or a relay reservation. Before AutoNAT's first verdict the
// answer is not known, and ok is false.
func (r Reachability) Dialable() (dialable, ok bool) {
	if len(r.Reachable) > 0 || len(r.RelayAddrs) > 0 || r.Reachability == "public" {
		return true, true
	}
	return false, r.Checked
}

// reachTracker keeps the host's latest reachability events.
type reachTracker struct {
	mu           sync.Mutex
	reachable    []ma.Multiaddr
	unreachable  []ma.Multiaddr
	unknown      []ma.Multiaddr
	relayAddrs   []ma.Multiaddr
	reachability network.Reachability
	checked      bool
	observed     map[string]bool  // addresses peers saw this node's connections come from
	punched      map[peer.ID]bool // peers a hole punch connected us with, while connected
}

// Trace records the peers a hole punch succeeded with (holepunch's
// EventTracer). A direct connection to a peer behind NAT may also be one
// the peer dialled itself; only this tells the two apart.
func (t *reachTracker) Trace(evt *holepunch.Event) {
	if e, ok := evt.Evt.(*holepunch.EndHolePunchEvt); ok && e.Success {
		t.mu.Lock()
		if t.punched == nil {
			t.punched = map[peer.ID]bool{}
		}
		t.punched[evt.Remote] = true
		t.mu.Unlock()
	}
}

// BehindNAT reports whether the node is reached through relays: AutoNAT
// found it private, or it holds relay reservations.
func (h *Host) BehindNAT() bool {
	h.reach.mu.Lock()
	defer h.reach.mu.Unlock()
	return h.reach.reachability == network.ReachabilityPrivate || len(h.reach.relayAddrs) > 0
}

// HolePunched reports whether the node's direct connection with p came
// from a hole punch.
func (h *Host) HolePunched(p peer.ID) bool {
	h.reach.mu.Lock()
	defer h.reach.mu.Unlock()
	return h.reach.punched[p]
}

// maxObserved bounds the observed addresses kept: a peer could report any.
const maxObserved = 32

func (t *reachTracker) run(ctx context.Context, h host.Host) error {
	return OnEvents(ctx, h.EventBus(), []any{
		new(event.EvtHostReachableAddrsChanged),
		new(event.EvtLocalReachabilityChanged),
		new(event.EvtAutoRelayAddrsUpdated),
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtPeerConnectednessChanged),
	}, func(ev any) {
		t.mu.Lock()
		defer t.mu.Unlock()
		switch e := ev.(type) {
		case event.EvtHostReachableAddrsChanged:
			t.reachable, t.unreachable, t.unknown = e.Reachable, e.Unreachable, e.Unknown
			t.checked = t.checked || len(e.Reachable)+len(e.Unreachable) > 0
		case event.EvtLocalReachabilityChanged:
			t.reachability = e.Reachability
			t.checked = t.checked || e.Reachability != network.ReachabilityUnknown
		case event.EvtAutoRelayAddrsUpdated:
			t.relayAddrs = e.RelayAddrs
		case event.EvtPeerIdentificationCompleted:
			t.observe(e.ObservedAddr)
		case event.EvtPeerConnectednessChanged:
			if e.Connectedness == network.NotConnected {
				delete(t.punched, e.Peer) // a new connection is judged anew
			}
		}
	})
}

// observe records that a peer saw this node at a; call with t.mu held.
func (t *reachTracker) observe(a ma.Multiaddr) {
	if a == nil || manet.IsIPLoopback(a) || len(t.observed) >= maxObserved {
		return
	}
	if t.observed == nil {
		t.observed = map[string]bool{}
	}
	t.observed[a.String()] = true
}

// Reachability is the node's reachability now.
func (h *Host) Reachability() Reachability {
	r := Reachability{
		// The relay transport "listens" on /p2p-circuit: no address.
		Listen:       addrStrings(slices.DeleteFunc(h.Network().ListenAddresses(), isRelayAddr)),
		Announced:    addrStrings(h.Addrs()),
		Observed:     []string{},
		RelayService: h.relay != nil,
	}
	t := &h.reach
	t.mu.Lock()
	defer t.mu.Unlock()
	for a := range t.observed {
		r.Observed = append(r.Observed, a)
	}
	slices.Sort(r.Observed)
	r.Reachable, r.Unreachable, r.Unknown = addrStrings(t.reachable), addrStrings(t.unreachable), addrStrings(t.unknown)
	r.RelayAddrs = addrStrings(t.relayAddrs)
	r.Reachability = reachabilityName(t.reachability)
	r.Checked = t.checked
	return r
}

func reachabilityName(r network.Reachability) string {
	return names.Of(reachabilityNames, r, "unknown")
}

var reachabilityNames = map[network.Reachability]string{
	network.ReachabilityPublic:  "public",
	network.ReachabilityPrivate: "private",
}

func addrStrings(as []ma.Multiaddr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

// announceFactory rewrites what the host announces: announce replaces the
// direct addresses, extra adds to them, and relay addresses always stay.
// Loopback goes whenever there is anything else: no remote peer can dial
// it (identify already keeps it from them; this keeps it out of the rest).
func announceFactory(announce, extra []ma.Multiaddr) func([]ma.Multiaddr) []ma.Multiaddr {
	return func(addrs []ma.Multiaddr) []ma.Multiaddr {
		out := make([]ma.Multiaddr, 0, len(addrs)+len(announce)+len(extra))
		for _, a := range addrs {
			if isRelayAddr(a) || len(announce) == 0 {
				out = append(out, a)
			}
		}
		out = append(out, announce...)
		out = append(out, extra...)
		if slices.ContainsFunc(out, func(a ma.Multiaddr) bool { return !manet.IsIPLoopback(a) }) {
			out = slices.DeleteFunc(out, manet.IsIPLoopback)
		}
		return ma.Unique(out)
	}
}

func isRelayAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// natOptions turn on what a node behind NAT needs: AutoNAT v2 to learn
// which addresses peers can dial, a port mapping if asked for, relay
// reservations (on the bootstrap nodes first, then on relays met since)
// while no address is confirmed, and hole punching to replace a relayed
// connection with a direct one.
func natOptions(cfg Config, bootstrap []peer.AddrInfo, h *Host) []libp2p.Option {
	opts := []libp2p.Option{
		libp2p.EnableAutoNATv2(),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(holepunch.WithTracer(&h.reach)),
		libp2p.EnableAutoRelayWithPeerSource(h.relayCandidates(bootstrap),
			// One relay is enough to be dialled: don't wait minutes for
			// four candidates, as libp2p does for the public network.
			autorelay.WithMinCandidates(1),
			autorelay.WithNumRelays(2),
			autorelay.WithBootDelay(0),
			autorelay.WithBackoff(30*time.Second),
			autorelay.WithMinInterval(10*time.Second)),
	}
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	return opts
}

// relayCandidates offers AutoRelay the bootstrap nodes, then connected
// peers that serve the relay protocol. AutoRelay may ask while libp2p.New
// is still running (its host starts inside, and an early verdict of
// AutoNAT's starts AutoRelay), before New has set h.Host: it reads the
// host New publishes in h.built instead, and gets nothing until then (it
// asks again after its minimum interval).
func (h *Host) relayCandidates(bootstrap []peer.AddrInfo) autorelay.PeerSource {
	return func(ctx context.Context, num int) <-chan peer.AddrInfo {
		out := make(chan peer.AddrInfo, num)
		built := h.built.Load()
		if built == nil {
			close(out)
			return out
		}
		h := *built
		go func() {
			defer close(out)
			seen := map[peer.ID]bool{}
			// send offers ai once; false means stop.
			send := func(ai peer.AddrInfo) bool {
				if len(seen) >= num {
					return false
				}
				if seen[ai.ID] || ai.ID == h.ID() {
					return true
				}
				seen[ai.ID] = true
				select {
				case out <- ai:
					return true
				case <-ctx.Done():
					return false
				}
			}
			for _, ai := range bootstrap {
				if !send(ai) {
					return
				}
			}
			for _, p := range h.Network().Peers() {
				if ok, _ := h.Peerstore().SupportsProtocols(p, proto.ProtoIDv2Hop); len(ok) == 0 {
					continue
				}
				if !send(h.Peerstore().PeerInfo(p)) {
					return
				}
			}
		}()
		return out
	}
}

// startRelay runs the circuit relay v2 service with the configured limits.
// libp2p's own option starts it only once AutoNAT finds the node public,
// which never happens on a private network and takes a while anywhere: an
// operator who asks for a relay gets one at once.
func startRelay(h host.Host, cfg Config) (*relayv2.Relay, error) {
	rc := relayv2.DefaultResources()
	rc.MaxReservations = cfg.RelayMaxReservations
	rc.MaxCircuits = cfg.RelayMaxCircuits
	rc.Limit = &relayv2.RelayLimit{Duration: cfg.RelayLimitDuration.Std(), Data: int64(cfg.RelayLimitDataKB) << 10}
	return relayv2.New(h, relayv2.WithResources(rc))
}
