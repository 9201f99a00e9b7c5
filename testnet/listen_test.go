package testnet

import (
	"slices"
	"testing"
)

// Every node listens on the host's IP, IPv4 or IPv6, on ports of its own.
func TestListen(t *testing.T) {
	for host, want := range map[string][]string{
		"":            {"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
		"10.1.2.3":    {"/ip4/10.1.2.3/tcp/0", "/ip4/10.1.2.3/udp/0/quic-v1"},
		"2001:db8::7": {"/ip6/2001:db8::7/tcp/0", "/ip6/2001:db8::7/udp/0/quic-v1"},
	} {
		if got := (Spec{Host: host}).listen(); !slices.Equal(got, want) {
			t.Errorf("host %q: listen %v, want %v", host, got, want)
		}
	}
}
