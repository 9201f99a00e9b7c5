package p2p

import "testing"

// Only the specific IPs a node listens on are exempt from the per-IP
// limits; wildcards and loopback (which libp2p exempts itself) add nothing.
func TestOwnAddrLimits(t *testing.T) {
	if opts := ownAddrLimits([]string{"/ip4/0.0.0.0/tcp/7600", "/ip4/127.0.0.1/udp/0/quic-v1", "/ip6/::/tcp/7600"}); opts != nil {
		t.Errorf("wildcard and loopback listeners change libp2p's limits: %d options", len(opts))
	}
	if opts := ownAddrLimits([]string{"/ip4/10.1.2.3/tcp/0", "/ip6/2001:db8::7/udp/0/quic-v1"}); len(opts) != 2 {
		t.Errorf("%d options for two own addresses, want the connection and the rate limits", len(opts))
	}
	for addr, want := range map[string]string{
		"/ip4/10.1.2.3/tcp/7600":         "10.1.2.3",
		"/ip6/2001:db8::7/udp/0/quic-v1": "2001:db8::7",
		"/dns4/example.org/tcp/7600":     "",
		"not a multiaddr":                "",
	} {
		got := ""
		if ip, ok := listenIP(addr); ok {
			got = ip.String()
		}
		if got != want {
			t.Errorf("%s: IP %q, want %q", addr, got, want)
		}
	}
}
