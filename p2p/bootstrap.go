package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

const (
	minBackoff  = time.Second
	dialTimeout = 10 * time.Second
	refreshWait = 30 * time.Second
)

// bootstrapper keeps a node connected, in the manner of boxo's bootstrap:
// dial the bootstrap peers, refresh the routing table, and repeat with
// exponential backoff while that fails or the peer count is low.
type bootstrapper struct {
	h        host.Host
	kad      *dht.IpfsDHT
	peers    []peer.AddrInfo
	minPeers int
	interval time.Duration
	log      *slog.Logger
	// blockedUntil says whether this node refuses a peer for now.
	blockedUntil func(peer.ID) (time.Time, bool)

	mu     sync.Mutex
	status map[peer.ID]*BootstrapStatus
}

// BootstrapStatus is what the node knows of one bootstrap peer.
type BootstrapStatus struct {
	Peer  string   `json:"peer_id"`
	Addrs []string `json:"addrs"`
	// Connected says whether the node has a connection with it now.
	Connected bool `json:"connected"`
	// Error is the last dial's error, "" once a dial worked.
	Error string `json:"error,omitempty"`
	// Tried is when the node last dialled it; zero if never.
	Tried time.Time `json:"tried"`
}

func newBootstrapper(h host.Host, kad *dht.IpfsDHT, peers []peer.AddrInfo, cfg Config, gater *Gater, log *slog.Logger) *bootstrapper {
	self := h.ID()
	others := make([]peer.AddrInfo, 0, len(peers))
	for _, p := range peers {
		if p.ID != self { // a bootstrap node may list itself in a shared config
			others = append(others, p)
		}
	}
	b := &bootstrapper{h: h, kad: kad, peers: others, minPeers: cfg.MinPeers, interval: cfg.BootstrapInterval.Std(), log: log,
		blockedUntil: gater.BlockedUntil, status: map[peer.ID]*BootstrapStatus{}}
	for _, p := range others {
		addrs := make([]string, len(p.Addrs))
		for i, a := range p.Addrs {
			addrs[i] = a.String() + "/p2p/" + p.ID.String()
		}
		b.status[p.ID] = &BootstrapStatus{Peer: p.ID.String(), Addrs: addrs}
	}
	return b
}

// statuses are the bootstrap peers' statuses, in the configured order.
func (b *bootstrapper) statuses() []BootstrapStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]BootstrapStatus, 0, len(b.peers))
	for _, p := range b.peers {
		st := *b.status[p.ID]
		st.Connected = b.h.Network().Connectedness(p.ID) == network.Connected
		out = append(out, st)
	}
	return out
}

// record keeps a dial's outcome and says so in the log when it changes:
// an unreachable bootstrap peer is named with its addresses and the error,
// even while another one works.
func (b *bootstrapper) record(p peer.AddrInfo, err error) {
	b.mu.Lock()
	st := b.status[p.ID]
	was := st.Error
	st.Tried = time.Now()
	st.Error = ""
	if err != nil {
		st.Error = ErrorLine(err)
	}
	now := st.Error
	b.mu.Unlock()
	switch {
	case now != "" && was == "":
		b.log.Warn("bootstrap peer unreachable; retrying", "bootstrap", strings.Join(st.Addrs, ","), "err", now)
	case now == "" && was != "":
		b.log.Info("bootstrap peer reached", "bootstrap", strings.Join(st.Addrs, ","))
	}
}

// ErrorLine is err on one line, for a log line or a user's error. libp2p
// puts each address's dial failure on a line of its own under "all dials
// failed", which alone says nothing: those failures are kept, address by
// address; any other error keeps its first line.
func ErrorLine(err error) string {
	var de *swarm.DialError
	if errors.As(err, &de) && len(de.DialErrors) > 0 {
		parts := make([]string, 0, len(de.DialErrors))
		for _, te := range de.DialErrors {
			cause, _, _ := strings.Cut(te.Cause.Error(), "\n")
			parts = append(parts, te.Address.String()+": "+cause)
		}
		return "all dials failed: " + strings.Join(parts, "; ")
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func (b *bootstrapper) run(ctx context.Context) {
	lost := b.watchDisconnects(ctx)
	if len(b.peers) == 0 {
		b.log.Info("no bootstrap peers configured; waiting for peers to dial in")
	}
	backoff := minBackoff
	for {
		wait := b.interval
		if b.round(ctx) {
			backoff = minBackoff
		} else {
			wait = backoff
			backoff = min(backoff*2, b.interval)
		}
		// Jitter keeps a testnet's nodes from bootstrapping in lockstep.
		wait += time.Duration(rand.Int64N(int64(wait)/5 + 1))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-lost:
			t.Stop()
		case <-t.C:
		}
	}
}

// round reports whether the node is well connected after trying to be.
func (b *bootstrapper) round(ctx context.Context) bool {
	if len(b.h.Network().Peers()) >= b.minPeers && b.kad.RoutingTable().Size() > 0 {
		return true
	}
	if len(b.peers) == 0 {
		return true // nothing to dial; others find us
	}
	connected := b.dialBootstrapPeers(ctx)
	if connected == 0 {
		b.log.Debug("no bootstrap peer reachable; retrying", "bootstrap_peers", len(b.peers))
		return false
	}
	// Ask the network for our neighbours so the routing table fills beyond
	// the bootstrap peers.
	select {
	case err := <-b.kad.RefreshRoutingTable():
		if err != nil && ctx.Err() == nil {
			b.log.Debug("routing table refresh", "err", err)
		}
	case <-time.After(refreshWait):
	case <-ctx.Done():
		return false
	}
	b.log.Debug("bootstrapped", "peers", len(b.h.Network().Peers()), "routing_table", b.kad.RoutingTable().Size())
	return b.kad.RoutingTable().Size() > 0
}

func (b *bootstrapper) dialBootstrapPeers(ctx context.Context) int {
	stopping := ctx
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	// This loop has its own backoff; the swarm's (5 s growing to 5 min per
	// address) would otherwise keep a node away from a bootstrap peer that
	// has come back.
	ctx = network.WithForceDirectDial(ctx, "bootstrap")
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		connected int
	)
	for _, p := range b.peers {
		wg.Go(func() {
			if until, blocked := b.blockedUntil(p.ID); blocked {
				// Dialling would only meet our own gater; say why instead.
				b.record(p, fmt.Errorf("not dialled until %s: it was cut off (another network definition, or misbehaviour)", until.Format(time.TimeOnly)))
				return
			}
			if b.h.Network().Connectedness(p.ID) != network.Connected {
				err := b.h.Connect(ctx, p)
				if err != nil && stopping.Err() != nil {
					return // the node is stopping: not the peer's fault
				}
				b.record(p, err)
				if err != nil {
					return
				}
			}
			mu.Lock()
			connected++
			mu.Unlock()
		})
	}
	wg.Wait()
	return connected
}

// watchDisconnects signals when the node drops below its minimum peer count,
// so it bootstraps again at once instead of at the next interval.
func (b *bootstrapper) watchDisconnects(ctx context.Context) <-chan struct{} {
	lost := make(chan struct{}, 1)
	err := OnEvents(ctx, b.h.EventBus(), []any{new(event.EvtPeerConnectednessChanged)}, func(ev any) {
		e := ev.(event.EvtPeerConnectednessChanged)
		if e.Connectedness == network.NotConnected && len(b.h.Network().Peers()) < b.minPeers {
			select {
			case lost <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		b.log.Warn("peer events unavailable; bootstrapping on the interval only", "err", err)
	}
	return lost
}
