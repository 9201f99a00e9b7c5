package node

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	relayclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// How this node is connected to a peer (api.PoolMiner.Reach).
const (
	reachPublic      = "public"       // direct, to a peer that announces no relay address
	reachHolePunched = "hole-punched" // direct, made by a hole punch
	reachDirect      = "direct"       // direct, to a peer behind NAT that dialled it itself
	reachRelayed     = "relayed"      // through a relay only
)

// reachOf is how this node is connected to p now. A peer that announces
// relay addresses sits behind NAT: a direct connection with it came from a
// hole punch or from its own dial. The hole punch's tracer says which when
// this side ran it; when this node sits behind NAT too, only a hole punched
// in both NATs (by DCUtR, or by two dials crossing) can have made it.
func reachOf(h *p2p.Host, p peer.ID) string {
	direct, limited := false, false
	for _, c := range h.Network().ConnsToPeer(p) {
		if c.Stat().Limited || isCircuit(c.RemoteMultiaddr()) {
			limited = true
		} else {
			direct = true
		}
	}
	switch {
	case direct && slices.ContainsFunc(h.Peerstore().Addrs(p), isCircuit):
		if h.HolePunched(p) || h.BehindNAT() {
			return reachHolePunched
		}
		return reachDirect
	case direct:
		return reachPublic
	case limited:
		return reachRelayed
	}
	return ""
}

// relayLeft is how long the relayed connection that is this node's only
// way to p may still last under its relay's limit. A relay gives each
// relayed connection a time (and a data) limit, and resets it then; a
// reservation that would outlive it must go to another miner. ok is false
// when p has a direct connection, or none, or its relay set no limit.
func relayLeft(h *p2p.Host, p peer.ID) (time.Duration, bool) {
	var best time.Duration
	found := false
	for _, c := range h.Network().ConnsToPeer(p) {
		st := c.Stat()
		if !st.Limited && !isCircuit(c.RemoteMultiaddr()) {
			return 0, false // a direct connection: no relay limit applies
		}
		limit, ok := st.Extra[relayclient.StatLimitDuration].(time.Duration)
		if !ok || limit <= 0 {
			continue
		}
		if left := limit - time.Since(st.Opened); !found || left > best {
			best, found = left, true
		}
	}
	return max(best, 0), found
}

// relayedOnly reports whether p can be reached only through a relay: no
// direct connection, and nothing it announces that this node could dial
// but relay addresses. A private address counts only for a node that has
// no public one itself: on a LAN or one machine, private is all there is.
func relayedOnly(h *p2p.Host, p peer.ID) bool {
	switch reachOf(h, p) {
	case reachRelayed:
		return true
	case "":
		selfPublic := slices.ContainsFunc(h.Addrs(), manet.IsPublicAddr)
		addrs := h.Peerstore().Addrs(p)
		return len(addrs) > 0 && !slices.ContainsFunc(addrs, func(a ma.Multiaddr) bool {
			return !isCircuit(a) && (manet.IsPublicAddr(a) || !selfPublic)
		})
	}
	return false
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// limitedDialer lets a role's request/reply streams run over a relayed
// connection: a miner behind a NAT that hole punching can't cross (a
// symmetric one) is reached through its relay, within the relay's limits.
// Gossip does not get it: its steady traffic would exhaust those limits.
type limitedDialer struct{ host.Host }

func (d limitedDialer) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	return d.Host.NewStream(network.WithAllowLimitedConn(ctx, "ephemera control plane"), p, pids...)
}

// Network answers GET /v1/network.
func (n *Node) Network() api.NetworkInfo {
	r := n.host.Reachability()
	info := api.NetworkInfo{
		Network: n.cfg.Network, NetworkHash: n.netHash, DHTMode: n.dhtMode(),
		Listen: r.Listen, Announced: r.Announced, Observed: r.Observed,
		Reachable: r.Reachable, Unreachable: r.Unreachable, Unknown: r.Unknown, Reachability: r.Reachability,
		RelayAddrs: r.RelayAddrs, RelayService: r.RelayService,
		Dialable: "unknown", Bootstraps: []api.BootstrapInfo{}, Foreign: []api.ForeignPeer{},
	}
	if ok, known := r.Dialable(); known {
		info.Dialable = map[bool]string{true: "yes", false: "no"}[ok]
	}
	foreign := n.watch.foreignPeers()
	for _, b := range n.host.Bootstraps() {
		bi := api.BootstrapInfo{PeerID: b.Peer, Addrs: b.Addrs, Connected: b.Connected, Error: b.Error, Tried: b.Tried}
		if id, err := peer.Decode(b.Peer); err == nil {
			bi.NetworkHash = foreign[id]
		}
		info.Bootstraps = append(info.Bootstraps, bi)
	}
	for p, h := range foreign {
		info.Foreign = append(info.Foreign, api.ForeignPeer{PeerID: p.String(), NetworkHash: h})
	}
	slices.SortFunc(info.Foreign, func(a, b api.ForeignPeer) int { return strings.Compare(a.PeerID, b.PeerID) })
	return info
}

// unreachableGrace is how long a miner waits for AutoNAT and a relay
// reservation before it calls itself undialable: both need peers first.
const unreachableGrace = 30 * time.Second

// errUndialable is a miner's health when no peer can dial it.
var errUndialable = errors.New("no peer can dial this miner: AutoNAT found none of its addresses reachable and it holds no relay reservation; forward port 7600 (TCP and UDP) and set p2p.announce to the public address, or check that the network's bootstrap nodes run relay_service")

// dialable is nil unless the node is a miner that AutoNAT found
// undialable, with no relay to fall back on.
func (n *Node) dialable() error {
	if n.miner == nil || time.Since(n.started) < unreachableGrace {
		return nil
	}
	if ok, known := n.host.Reachability().Dialable(); known && !ok {
		return errUndialable
	}
	return nil
}

// watchDialable warns, once per change, when the miner becomes undialable.
func (n *Node) watchDialable(ctx context.Context) {
	log := n.log.With("module", "p2p")
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var was error
	for wait.Tick(ctx, t.C) {
		now := n.dialable()
		switch {
		case now != nil && was == nil:
			r := n.host.Reachability()
			log.Warn(now.Error(), "unreachable", r.Unreachable, "announced", r.Announced)
		case now == nil && was != nil:
			log.Info("peers can dial this miner again")
		}
		was = now
	}
}
