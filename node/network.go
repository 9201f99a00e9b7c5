package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
)

// foreignBlock is how long a peer of another network is refused after
// parting: long enough that the bootstrapper and the DHT do not dial it
// again at once, short enough that an operator who fixes its definition is
// back within a minute.
const foreignBlock = time.Minute

// partGrace is how long a peer of another network stays connected once
// found out: time for its own identify of this node to finish, so that it
// learns this node's hash too and can tell its operator. Nothing else
// passes meanwhile: the two share no protocol.
const partGrace = 2 * time.Second

// networkWatch parts with peers of another network. Every node serves the
// marker protocol of its definition's hash; identify tells each side the
// other's protocols, and so its hash, right after connecting. Peers of two
// definitions share no other protocol (every ID carries the network ID), so
// nothing they send each other is judged, scored or answered; the watch
// makes the parting explicit, logged once, and visible in health.
type networkWatch struct {
	host      *p2p.Host
	hash      string
	bootstrap map[peer.ID]string // bootstrap peer → the address configured for it
	log       *slog.Logger

	mu      sync.Mutex
	foreign map[peer.ID]string // peer → the hash it announced
}

func (n *Node) startNetworkWatch(ctx context.Context) (*networkWatch, error) {
	w := &networkWatch{
		host: n.host, hash: n.netHash, log: n.log.With("module", "p2p"),
		bootstrap: map[peer.ID]string{}, foreign: map[peer.ID]string{},
	}
	infos, _ := p2p.ParseBootstrapAddrs(n.cfg.EffectiveP2P().Bootstrap) // validated with the config
	for _, ai := range infos {
		if len(ai.Addrs) > 0 {
			w.bootstrap[ai.ID] = ai.Addrs[0].String() + "/p2p/" + ai.ID.String()
		}
	}
	n.host.SetStreamHandler(protocol.NetworkMarker(n.netHash), func(s network.Stream) { _ = s.Reset() })
	def := n.cfg.Definition()
	n.host.SetStreamHandler(protocol.DefinitionProtocol, func(s network.Stream) { serveDefinition(s, def) })
	err := p2p.OnEvents(ctx, n.host.EventBus(), []any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerProtocolsUpdated)}, func(ev any) {
		switch e := ev.(type) {
		case event.EvtPeerIdentificationCompleted:
			w.check(e.Peer, e.Protocols)
		case event.EvtPeerProtocolsUpdated:
			w.check(e.Peer, e.Added)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("network watch: %w", err)
	}
	return w, nil
}

// check parts with p if its protocols name another network hash.
func (w *networkWatch) check(p peer.ID, protos []libp2pprotocol.ID) {
	theirs := ""
	for _, id := range protos {
		if h, ok := strings.CutPrefix(string(id), protocol.NetworkMarkerPrefix); ok {
			theirs = h
			if h == w.hash {
				w.mu.Lock()
				delete(w.foreign, p)
				w.mu.Unlock()
				return
			}
		}
	}
	if theirs == "" {
		return // not an Ephemera node, or one from before definitions
	}
	w.mu.Lock()
	_, known := w.foreign[p]
	w.foreign[p] = theirs
	w.mu.Unlock()
	time.AfterFunc(partGrace, func() { w.host.BlockPeer(p, foreignBlock) })
	if known {
		return
	}
	if addr, ok := w.bootstrap[p]; ok {
		w.log.Error("bootstrap node is on another network: this node's definition differs from the network's; re-run `ephemera init --join` (or --network with the network's file) with --force",
			"bootstrap", addr, "its_hash", theirs, "our_hash", w.hash)
		return
	}
	w.log.Warn("parted with a peer of another network", "peer", p, "its_hash", theirs, "our_hash", w.hash)
}

// foreignPeers are the peers parted with, and their hashes.
func (w *networkWatch) foreignPeers() map[peer.ID]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[peer.ID]string, len(w.foreign))
	for p, h := range w.foreign {
		out[p] = h
	}
	return out
}

// bootstrapDisagreement names a bootstrap node that is on another network.
func (w *networkWatch) bootstrapDisagreement() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]peer.ID, 0, len(w.foreign))
	for p := range w.foreign {
		if _, ok := w.bootstrap[p]; ok {
			ids = append(ids, p)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	p := ids[0]
	return fmt.Errorf("bootstrap %s is on network %s, this node on %s: its definition differs; re-run `ephemera init --join` with --force",
		w.bootstrap[p], w.foreign[p], w.hash)
}
