package gossip

import (
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// A node's own non-loopback addresses join the colocation whitelist, so
// that a testnet on one LAN address does not graylist itself.
func TestOwnNets(t *testing.T) {
	var listen []ma.Multiaddr
	for _, s := range []string{"/ip4/0.0.0.0/tcp/7600", "/ip4/127.0.0.1/tcp/1", "/ip4/10.1.2.3/tcp/0", "/ip6/2001:db8::7/udp/0/quic-v1"} {
		listen = append(listen, ma.StringCast(s))
	}
	nets := ownNets(listen)
	if len(nets) != 2 || nets[0].String() != "10.1.2.3/32" || nets[1].String() != "2001:db8::7/128" {
		t.Fatalf("own nets %v", nets)
	}
	wl := scoreParams(nil, nets...).IPColocationFactorWhitelist
	if len(wl) != 4 {
		t.Errorf("whitelist %v, want loopback and the two own addresses", wl)
	}
}
