package p2p

import (
	"cmp"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestGaterBlockExpires(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := NewGater()
	g.now = func() time.Time { return now }
	p, q := testPeer(t), testPeer(t)

	g.Block(p, time.Minute)
	if !g.InterceptPeerDial(q) || !g.InterceptSecured(network.DirInbound, q, nil) {
		t.Fatal("a peer never blocked was refused")
	}
	if g.InterceptPeerDial(p) || g.InterceptSecured(network.DirInbound, p, nil) || g.InterceptSecured(network.DirOutbound, p, nil) {
		t.Fatal("a blocked peer was let through")
	}
	// A shorter block does not cut a longer one short.
	g.Block(p, time.Second)
	now = now.Add(59 * time.Second)
	if g.InterceptPeerDial(p) {
		t.Fatal("the block ended early")
	}
	now = now.Add(time.Second)
	if !g.InterceptPeerDial(p) || !g.InterceptSecured(network.DirInbound, p, nil) {
		t.Fatal("the block did not expire")
	}
	g.Block(q, time.Minute) // and sweeps p's expired block away
	if _, ok := g.until[p]; ok || len(g.until) != 1 {
		t.Fatalf("blocks held: %v, want q's only", g.until)
	}
}

func testPeer(t *testing.T) peer.ID { return testkit.ID(t, testkit.NewKey(t)) }

// testConfig is the config of a DHT server on loopback.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.DHTMode = DHTModeServer
	return cfg
}

// startHost starts a host of cfg with opts, on network "test" and with a
// fresh key unless opts says otherwise, closed when the test ends.
func startHost(t *testing.T, cfg Config, opts Options) *Host {
	t.Helper()
	opts.Network = cmp.Or(opts.Network, "test")
	if opts.Key == nil {
		opts.Key = testkit.NewKey(t)
	}
	h, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func testHost(t *testing.T) *Host { return startHost(t, testConfig(), Options{}) }

// A blocked peer is disconnected and refused both ways; others are not.
func TestBlockPeer(t *testing.T) {
	a, b, c := testHost(t), testHost(t), testHost(t)
	ctx := context.Background()
	for _, h := range []*Host{b, c} {
		if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	a.BlockPeer(b.ID(), time.Hour)
	if got := a.Network().Connectedness(b.ID()); got == network.Connected {
		t.Fatal("the blocked peer is still connected")
	}
	if until, ok := a.BlockedUntil(b.ID()); !ok || time.Until(until) < 59*time.Minute {
		t.Fatalf("blocked until %v (%v), want an hour from now", until, ok)
	}
	// The handshake names the peer to a only once b has finished its own
	// part, so b may see a connection for a moment: a closes it at once.
	waitUntil(t, "b to see itself disconnected", func() bool { return b.Network().Connectedness(a.ID()) != network.Connected })
	_ = b.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.Addrs()})
	waitUntil(t, "b's new connection to be closed", func() bool { return b.Network().Connectedness(a.ID()) != network.Connected })
	if n := len(a.Network().ConnsToPeer(b.ID())); n != 0 {
		t.Fatalf("the host holds %d connections with the peer it blocked", n)
	}
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err == nil {
		t.Fatal("the host dialled a peer it blocked")
	}
	if got := a.Network().Connectedness(c.ID()); got != network.Connected {
		t.Fatalf("an unblocked peer is %v, want connected", got)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A blocked network is refused both ways, by address, until its block ends.
func TestGaterBlockPrefixExpires(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := NewGater()
	g.now = func() time.Time { return now }
	p := testPeer(t)
	in, out := ma.StringCast("/ip4/198.51.100.7/tcp/4001"), ma.StringCast("/ip4/198.51.101.7/udp/4001/quic-v1")
	conn := func(a ma.Multiaddr) network.ConnMultiaddrs { return connAddrs{remote: a} }

	g.BlockPrefix(netip.MustParsePrefix("198.51.100.0/24"), time.Minute)
	if g.InterceptAccept(conn(in)) || g.InterceptAddrDial(p, in) || g.InterceptSecured(network.DirOutbound, p, conn(in)) {
		t.Fatal("an address of a blocked subnet was let through")
	}
	if !g.InterceptAccept(conn(out)) || !g.InterceptAddrDial(p, out) || !g.InterceptSecured(network.DirInbound, p, conn(out)) {
		t.Fatal("an address outside the blocked subnet was refused")
	}
	now = now.Add(time.Minute)
	if !g.InterceptAccept(conn(in)) || !g.InterceptAddrDial(p, in) {
		t.Fatal("the subnet's block did not expire")
	}
}

type connAddrs struct{ remote ma.Multiaddr }

func (c connAddrs) LocalMultiaddr() ma.Multiaddr  { return ma.StringCast("/ip4/127.0.0.1/tcp/1") }
func (c connAddrs) RemoteMultiaddr() ma.Multiaddr { return c.remote }
