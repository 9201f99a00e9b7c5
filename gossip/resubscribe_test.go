package gossip

import (
	"slices"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A node that only publishes (a miner) must keep knowing a subscriber that
// was killed and restarted on the same port, or its records stop reaching
// it. Gossipsub learns a peer's subscriptions once, from the first message
// on the peer's stream. The dead process's QUIC connection lives on until
// the publisher next sends on it and the new process resets it; by then the
// new process has connected and said hello, and gossipsub, seeing the peer
// still connected, forgets its subscriptions and never hears them again. In
// the chaos run a miner so came to know 1 subscriber of 5.
func TestPublisherRelearnsARestartedSubscriber(t *testing.T) {
	pub := testkit.QUICHost(t, nil)
	_, topic := newPublisher(t, pub)
	ctx := t.Context()

	key := testkit.NewKey(t)
	id := testkit.ID(t, key)
	known := func() bool { return slices.Contains(topic.Peers(), id) }
	port := testkit.NewUDPPort(t, pub)
	first := testkit.QUICHost(t, key)
	newGossip(t, first, nil, &inbox{})
	port.Serve(t, first)
	if err := pub.Connect(ctx, peer.AddrInfo{ID: id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subscriber known", known)
	time.Sleep(2 * reviveInterval) // and known a while, as in a running network
	old := pub.Network().ConnsToPeer(id)[0]

	// Killed; back on a new connection, which it dials, while the
	// publisher's connection to the dead process still looks open.
	port.Crash()
	second := testkit.QUICHost(t, key)
	newGossip(t, second, nil, &inbox{})
	testkit.Connect(t, second, pub)
	waitFor(t, "a second connection", func() bool { return len(pub.Network().ConnsToPeer(id)) == 2 })
	time.Sleep(500 * time.Millisecond) // its hello read
	// Now the port answers again, and the publisher's next packet on the old
	// connection, if not a tiny one, gets its stateless reset.
	port.Serve(t, second)
	if s, err := old.NewStream(ctx); err == nil {
		_, _ = s.Write(make([]byte, 200))
		_ = s.Close()
	}
	waitFor(t, "the old connection gone", func() bool { return len(pub.Network().ConnsToPeer(id)) == 1 })

	const steady = 3 * time.Second
	var since time.Time
	waitFor(t, "the subscriber known again, for "+steady.String(), func() bool {
		switch {
		case !known():
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		}
		return !since.IsZero() && time.Since(since) >= steady
	})
}
