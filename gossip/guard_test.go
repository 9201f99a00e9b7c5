package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// A node hands gossip.New its *p2p.Host, which is how cut-off peers are
// refused: no other wiring.
var _ PeerBlocker = (*p2p.Host)(nil)

// nodeHost is a node's own host, with its gater, DHT and limits.
func nodeHost(t *testing.T) *p2p.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := p2p.DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	h, err := p2p.New(cfg, p2p.Options{Network: "testnet", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// A peer that floods invalid messages is cut off: disconnected, refused
// both ways, counted and logged once. An honest peer of the same node stays
// connected and its messages still arrive.
func TestFloodingPeerCutOff(t *testing.T) {
	node, honest, flooder := nodeHost(t), newHost(t), newHost(t)
	testkit.Connect(t, honest, node)
	testkit.Connect(t, flooder, node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	reg := prometheus.NewRegistry()
	var logs testkit.LogBuffer
	var in inbox
	g, err := New(ctx, node, "testnet", DefaultConfig(), reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if _, err := g.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), in.handle); err != nil {
		t.Fatal(err)
	}
	_, honestTopic := newGossip(t, honest, nil, &inbox{})

	// The flooder runs gossipsub without our validators.
	ps, err := pubsub.NewGossipSub(ctx, flooder, pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor())
	if err != nil {
		t.Fatal(err)
	}
	flood, err := ps.Join(protocol.TopicID("testnet", protocol.TopicAttestations))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flooder to see the node", func() bool { return len(flood.ListPeers()) == 1 })
	waitFor(t, "the honest peer to see the node", func() bool { return len(honestTopic.Peers()) == 1 })
	for i := range 200 {
		if err := flood.Publish(ctx, fmt.Appendf(nil, "junk %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, "the flooder to be disconnected", func() bool {
		return node.Network().Connectedness(flooder.ID()) != network.Connected
	})
	if until, ok := node.BlockedUntil(flooder.ID()); !ok || time.Until(until) < CutOffPeriod-time.Minute {
		t.Fatalf("flooder blocked until %v (%v), want about %s from now", until, ok, CutOffPeriod)
	}
	// Refused both ways: the node does not dial it, and closes its dials at
	// once (it may see the connection for the moment the handshake takes).
	if err := node.Connect(ctx, peer.AddrInfo{ID: flooder.ID(), Addrs: flooder.Addrs()}); err == nil {
		t.Fatal("the node dialled the peer it cut off")
	}
	waitFor(t, "the flooder to see itself disconnected", func() bool {
		return flooder.Network().Connectedness(node.ID()) != network.Connected
	})
	_ = flooder.Connect(ctx, peer.AddrInfo{ID: node.ID(), Addrs: node.Addrs()})
	waitFor(t, "the flooder's new connection to be closed", func() bool {
		return flooder.Network().Connectedness(node.ID()) != network.Connected
	})
	if n := len(node.Network().ConnsToPeer(flooder.ID())); n != 0 {
		t.Fatalf("the node holds %d connections with the peer it cut off", n)
	}

	// The honest peer is still there, and heard.
	if got := node.Network().Connectedness(honest.ID()); got != network.Connected {
		t.Fatalf("the honest peer is %v, want connected", got)
	}
	if err := honestTopic.Publish(ctx, testkit.SealRecord(t, &note{text: "still heard"}, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the honest message", func() bool { return in.count() == 1 })

	// Counted and logged once, however many messages the flooder sent.
	time.Sleep(2 * scoreInspectPeriod) // the score inspection sees it graylisted, too
	if n := cutOffs(t, reg); n != 1 {
		t.Fatalf("cut-off counter = %v, want 1", n)
	}
	if n := logs.Count("gossip peer cut off"); n != 1 {
		t.Fatalf("cut-off logged %d times, want once", n)
	}
}

func TestInvalidToGraylist(t *testing.T) {
	n := invalidToGraylist()
	score := func(n float64) float64 {
		tp := topicScoreParams()
		return scoreParams(nil).TopicScoreCap + n*n*tp.InvalidMessageDeliveriesWeight*tp.TopicWeight
	}
	if score(n) >= GraylistThreshold() || score(n-1) < GraylistThreshold() {
		t.Fatalf("%v REJECTs: score at most %v, one fewer %v; graylist threshold %v", n, score(n), score(n-1), GraylistThreshold())
	}
}

// cutOffs sums the cut-off counter over its reasons.
func cutOffs(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "ephemera_gossip_peers_cut_off_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}
