package testkit

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Host is a libp2p host with key on 127.0.0.1, TCP, an OS-chosen port, closed
// when the test ends. A nil key makes a fresh one; opts come after the
// defaults and may override them.
func Host(tb testing.TB, key crypto.PrivKey, opts ...libp2p.Option) host.Host {
	tb.Helper()
	if key == nil {
		key = NewKey(tb)
	}
	all := append([]libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableMetrics(),
	}, opts...)
	h, err := libp2p.New(all...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}

// Connect dials b from a, failing the test if it can't.
func Connect(tb testing.TB, a, b host.Host) {
	tb.Helper()
	if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		tb.Fatal(err)
	}
}

// Know puts b's addresses in a's peerstore without dialling.
func Know(a, b host.Host) {
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), 1<<62)
}
