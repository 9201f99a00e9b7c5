package p2p

import (
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Gater is the host's connection gater: it refuses connections, both ways,
// with peers, and with networks (an address, a subnet), blocked until a time
// that has not yet come. A block expires by itself, so a peer cut off for
// misbehaving can come back once the reason has had time to fade.
type Gater struct {
	now func() time.Time // time.Now; a test's clock

	mu    sync.Mutex
	until map[peer.ID]time.Time
	nets  map[netip.Prefix]time.Time
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// NewGater returns a gater that blocks nobody yet.
func NewGater() *Gater {
	return &Gater{now: time.Now, until: map[peer.ID]time.Time{}, nets: map[netip.Prefix]time.Time{}}
}

// BlockPrefix refuses connections with addresses in n, both ways, for d from
// now, or longer if n is already blocked beyond that. It does not close the
// connections there are.
func (g *Gater) BlockPrefix(n netip.Prefix, d time.Duration) {
	now := g.now()
	n = n.Masked()
	g.mu.Lock()
	defer g.mu.Unlock()
	maps.DeleteFunc(g.nets, func(_ netip.Prefix, t time.Time) bool { return !now.Before(t) })
	if end := now.Add(d); end.After(g.nets[n]) {
		g.nets[n] = end
	}
}

// addrAllowed reports whether a is outside every blocked network. An address
// without an IP (a relayed one's is its relay's, checked as such) passes.
func (g *Gater) addrAllowed(a ma.Multiaddr) bool {
	if a == nil {
		return true
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return true
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return true
	}
	addr = addr.Unmap()
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for n, t := range g.nets {
		if now.Before(t) && n.Contains(addr) {
			return false
		}
	}
	return true
}

// Block refuses p's connections for d from now, or longer if p is already
// blocked beyond that. It does not close the connections p has.
func (g *Gater) Block(p peer.ID, d time.Duration) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	// Expired blocks go here rather than on a timer: the map holds no more
	// than the peers blocked since the last Block.
	maps.DeleteFunc(g.until, func(_ peer.ID, t time.Time) bool { return !now.Before(t) })
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

// InterceptAddrDial refuses to dial an address in a blocked network.
func (g *Gater) InterceptAddrDial(_ peer.ID, a ma.Multiaddr) bool { return g.addrAllowed(a) }

// InterceptAccept refuses an inbound connection from a blocked network;
// others wait until their peer is known.
func (g *Gater) InterceptAccept(c network.ConnMultiaddrs) bool {
	return c == nil || g.addrAllowed(c.RemoteMultiaddr())
}

// InterceptSecured refuses a connection, either way, with a blocked peer
// once the handshake has named it, or with a blocked network.
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	return g.allowed(p) && (c == nil || g.addrAllowed(c.RemoteMultiaddr()))
}

// InterceptUpgraded allows every connection that got this far.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
