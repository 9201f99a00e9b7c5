package p2p

import (
	"cmp"
	"slices"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/network"
)

// slotKeeper keeps room for newcomers among inbound connections. The
// resource manager refuses an inbound connection beyond its cap, and the
// connection manager trims only connections older than its grace period,
// in the background: 247 fresh connections took a bootstrap to its cap of
// 256 and an honest newcomer's dial was refused. So whenever an inbound
// connection leaves fewer than `reserve` free slots under the cap, the
// keeper closes, at once, the inbound connection worth least: an
// unprotected peer's, lowest in the connection manager's score (the DHT
// and gossip tag the peers they use), the oldest first among equals. The
// newcomer itself and protected peers (bootstraps, oracles) are never
// chosen.
type slotKeeper struct {
	cm      connmgr.ConnManager
	cap     int // the resource manager's inbound cap
	reserve int // slots kept free under it
}

func newSlotKeeper(cm connmgr.ConnManager, inboundCap int) *slotKeeper {
	return &slotKeeper{cm: cm, cap: inboundCap, reserve: max(inboundCap/16, 2)}
}

func (k *slotKeeper) notifiee() network.Notifiee {
	return &network.NotifyBundle{ConnectedF: k.connected}
}

func (k *slotKeeper) connected(n network.Network, c network.Conn) {
	if c.Stat().Direction != network.DirInbound {
		return
	}
	var inbound []network.Conn
	for _, o := range n.Conns() {
		if o.Stat().Direction == network.DirInbound && !o.IsClosed() {
			inbound = append(inbound, o)
		}
	}
	excess := len(inbound) - (k.cap - k.reserve)
	if excess <= 0 {
		return
	}
	candidates := slices.DeleteFunc(inbound, func(o network.Conn) bool {
		return o == c || o.RemotePeer() == c.RemotePeer() || k.cm.IsProtected(o.RemotePeer(), "")
	})
	score := func(o network.Conn) int {
		if ti := k.cm.GetTagInfo(o.RemotePeer()); ti != nil {
			return ti.Value
		}
		return 0
	}
	slices.SortFunc(candidates, func(a, b network.Conn) int {
		return cmp.Or(cmp.Compare(score(a), score(b)), a.Stat().Opened.Compare(b.Stat().Opened))
	})
	for _, o := range candidates[:min(excess, len(candidates))] {
		go o.Close() // a notifiee must not block the swarm
	}
}
