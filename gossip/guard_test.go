package gossip

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// steppingClock is a clock that moves on by step each time it is read, so
// the guard's counts fade between REJECTs however fast the test runs.
func steppingClock(step time.Duration) func() time.Time {
	start := time.Now()
	var reads atomic.Int64
	return func() time.Time { return start.Add(time.Duration(reads.Add(1)) * step) }
}

// rawTopics joins the named topics on h with a gossipsub that has none of
// our validators, as an attacker's would.
func rawTopics(t *testing.T, ctx context.Context, h host.Host, names ...string) []*pubsub.Topic {
	t.Helper()
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*pubsub.Topic, len(names))
	for i, n := range names {
		if out[i], err = ps.Join(protocol.TopicID("testnet", n)); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// counted is the guard's faded count of p's REJECTs, rounded.
func (g *guard) counted(p peer.ID) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return int(math.Round(g.invalid[p].now(g.now(), g.decay)))
}

// PROTOCOL §11: a peer is cut off at its 13th REJECTed message, however its
// REJECTs are spread over topics, and not at its 12th. Seven and six on two
// topics do not graylist it (the score's penalty is per topic), so only the
// guard's count can cut it off; that count fades between REJECTs, which is
// why it once came to a hair under 13 at the 13th.
func TestCutOffAtThirteenthRejectOverTwoTopics(t *testing.T) {
	node, flooder := nodeHost(t), newHost(t)
	testkit.Connect(t, flooder, node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	g, err := start(ctx, node, "testnet", DefaultConfig(), reg, nil, func(gd *guard) { gd.now = steppingClock(10 * time.Millisecond) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	names := []string{protocol.TopicAttestations, protocol.TopicReservations}
	for _, n := range names {
		if _, err := g.Join(ctx, n, EnvelopeValidator(noteKind()), nil); err != nil {
			t.Fatal(err)
		}
	}
	topics := rawTopics(t, ctx, flooder, names...)
	for _, tp := range topics {
		waitFor(t, "the flooder to see the node on "+tp.String(), func() bool { return len(tp.ListPeers()) == 1 })
	}

	for i := range 12 {
		if err := topics[i%2].Publish(ctx, fmt.Appendf(nil, "junk %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "12 REJECTs counted", func() bool { return g.guard.counted(flooder.ID()) == 12 })
	if n := cutOffs(t, reg); n != 0 {
		t.Fatalf("cut off after 12 REJECTs (%v cut-offs)", n)
	}
	if got := node.Network().Connectedness(flooder.ID()); got != network.Connected {
		t.Fatalf("after 12 REJECTs the peer is %v, want connected", got)
	}
	if s := g.PeerScore(flooder.ID()); s < GraylistThreshold() {
		t.Fatalf("6 and 6 REJECTs on two topics graylisted the peer (score %v)", s)
	}

	if err := topics[0].Publish(ctx, []byte("junk 12")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 13th REJECT to cut the peer off", func() bool { return cutOffs(t, reg) == 1 })
	waitFor(t, "the peer to be disconnected", func() bool {
		return node.Network().Connectedness(flooder.ID()) != network.Connected
	})
}
