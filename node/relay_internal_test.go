package node

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// relayTestHost starts a host on loopback with cfg changed by mutate.
func relayTestHost(t *testing.T, mutate func(*p2p.Config), hostOpts ...libp2p.Option) *p2p.Host {
	t.Helper()
	cfg := p2p.DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	// DHT clients: a DHT server would be dialled directly by the others'
	// DHTs, and the dialer must have only the relayed connection.
	cfg.DHTMode = p2p.DHTModeClient
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := p2p.New(cfg, p2p.Options{Network: "relaytest", Key: testkit.NewKey(t), HostOptions: hostOpts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Three hosts: a relay, a private node holding a reservation on it (its
// bootstrap), and a third that reaches the private node's request/reply
// protocol through the relay, as an oracle reaches a miner behind a
// symmetric NAT. libp2p refuses such a stream unless the dialer allows a
// limited connection, as limitedDialer does; and the third node sees the
// private one as relayed.
func TestLimitedDialerReachesAPrivateNodeThroughARelay(t *testing.T) {
	relay := relayTestHost(t, func(c *p2p.Config) { c.RelayService = true })
	relayAddr := relay.Addrs()[0]
	private := relayTestHost(t, func(c *p2p.Config) {
		c.Bootstrap = []string{relayAddr.String() + "/p2p/" + relay.ID().String()}
	}, libp2p.ForceReachabilityPrivate())
	dialer := relayTestHost(t, nil)

	const proto = "/ephemera/relaytest/validate/1.0.0"
	private.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		b, _ := io.ReadAll(io.LimitReader(s, 64))
		_, _ = s.Write(append([]byte("answer to "), b...))
	})
	private.Start(context.Background())
	// AutoRelay protects the connection to each relay it holds a
	// reservation on. (It announces circuit addresses only through a
	// relay's public addresses, so on loopback there are none to read.)
	deadline := time.Now().Add(10 * time.Second)
	for !private.ConnManager().IsProtected(relay.ID(), "autorelay") {
		if time.Now().After(deadline) {
			t.Fatal("the private node got no reservation on its relay")
		}
		time.Sleep(20 * time.Millisecond)
	}

	circuit, err := ma.NewMultiaddr(relayAddr.String() + "/p2p/" + relay.ID().String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := dialer.Connect(ctx, peer.AddrInfo{ID: private.ID(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
		t.Fatalf("connect through the relay: %v", err)
	}
	if got := dialer.Network().Connectedness(private.ID()); got != network.Limited {
		t.Fatalf("connectedness through the relay = %v, want limited", got)
	}
	// Without the wrapper libp2p waits for a direct connection (hole
	// punching, which has no public address to work with here) and fails.
	plainCtx, plainCancel := context.WithTimeout(ctx, time.Second)
	defer plainCancel()
	if _, err := dialer.NewStream(plainCtx, private.ID(), proto); err == nil {
		t.Fatal("a plain stream opened over a limited connection; libp2p should refuse it")
	}
	s, err := limitedDialer{dialer}.NewStream(ctx, private.ID(), proto)
	if err != nil {
		t.Fatalf("stream through the relay: %v", err)
	}
	if _, err := s.Write([]byte("challenge")); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "answer to challenge" {
		t.Fatalf("reply through the relay = %q, %v", got, err)
	}
	if !dialer.Network().ConnsToPeer(private.ID())[0].Stat().Limited {
		t.Error("the reply came over a direct connection; the test proves nothing of the relay")
	}
	// The router learns how long the relay lets the connection last.
	limit := p2p.DefaultConfig().RelayLimitDuration.Std()
	if left, ok := relayLeft(dialer, private.ID()); !ok || left <= limit-time.Minute || left > limit {
		t.Errorf("relayLeft = %s, %v; want a little under the relay's %s", left, ok, limit)
	}
	if reachOf(dialer, private.ID()) != reachRelayed || !relayedOnly(dialer, private.ID()) {
		t.Errorf("reach %q, relayed only %v; want relayed", reachOf(dialer, private.ID()), relayedOnly(dialer, private.ID()))
	}
}
