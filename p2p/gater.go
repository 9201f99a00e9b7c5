package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Gater is the host's connection gater: it refuses connections, both ways,
// with peers blocked until a time that has not yet come. A block expires by
// itself, so a peer cut off for misbehaving can come back once the reason
// has had time to fade.
type Gater struct {
	now func() time.Time // time.Now; a test's clock

	mu    sync.Mutex
	until map[peer.ID]time.Time
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// NewGater returns a gater that blocks nobody yet.
func NewGater() *Gater {
	return &Gater{now: time.Now, until: map[peer.ID]time.Time{}}
}

// Block refuses p's connections for d from now, or longer if p is already
// blocked beyond that. It does not close the connections p has.
func (g *Gater) Block(p peer.ID, d time.Duration) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	// Expired blocks go here rather than on a timer: the map holds no more
	// than the peers blocked since the last Block.
	for q, t := range g.until {
		if !now.Before(t) {
			delete(g.until, q)
		}
	}
	if end := now.Add(d); end.After(g.until[p]) {
		g.until[p] = end
	}
}

// BlockedUntil is when p's block ends, and whether p is blocked now.
func (g *Gater) BlockedUntil(p peer.ID) (time.Time, bool) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.until[p]
	return t, ok && now.Before(t)
}

func (g *Gater) allowed(p peer.ID) bool {
	_, blocked := g.BlockedUntil(p)
	return !blocked
}

// InterceptPeerDial refuses to dial a blocked peer.
func (g *Gater) InterceptPeerDial(p peer.ID) bool { return g.allowed(p) }

// InterceptAddrDial allows every address: the peer was checked already.
func (g *Gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept allows every inbound connection until its peer is known.
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses a connection, either way, with a blocked peer
// once the handshake has named it.
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}

// InterceptUpgraded allows every connection that got this far.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
