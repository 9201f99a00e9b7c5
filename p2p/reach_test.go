package p2p

import (
	"slices"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestAnnounceFactory(t *testing.T) {
	addrs := func(ss ...string) []ma.Multiaddr {
		out := make([]ma.Multiaddr, len(ss))
		for i, s := range ss {
			out[i] = ma.StringCast(s)
		}
		return out
	}
	strs := func(as []ma.Multiaddr) []string {
		out := make([]string, len(as))
		for i, a := range as {
			out[i] = a.String()
		}
		slices.Sort(out)
		return out
	}
	const relay = "/ip4/192.0.0.65/udp/7600/quic-v1/p2p/12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK/p2p-circuit"
	listened := addrs("/ip4/127.0.0.1/tcp/7600", "/ip4/192.168.50.2/tcp/7600", relay)
	for _, tt := range []struct {
		name            string
		announce, extra []ma.Multiaddr
		in              []ma.Multiaddr
		want            []string
	}{
		{"loopback goes beside others", nil, nil, listened,
			[]string{"/ip4/192.168.50.2/tcp/7600", relay}},
		{"loopback alone stays", nil, nil, addrs("/ip4/127.0.0.1/tcp/1"), []string{"/ip4/127.0.0.1/tcp/1"}},
		{"announce replaces, relays stay", addrs("/ip4/198.51.100.7/tcp/7600"), nil, listened,
			[]string{"/ip4/198.51.100.7/tcp/7600", relay}},
		{"extra adds", nil, addrs("/dns4/miner.example/tcp/7600"), listened,
			[]string{"/dns4/miner.example/tcp/7600", "/ip4/192.168.50.2/tcp/7600", relay}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := strs(announceFactory(tt.announce, tt.extra)(tt.in))
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

func TestDialable(t *testing.T) {
	for _, tt := range []struct {
		name      string
		r         Reachability
		ok, known bool
	}{
		{"no verdict yet", Reachability{Reachability: "unknown"}, false, false},
		{"a confirmed address", Reachability{Reachable: []string{"/ip4/192.0.0.70/udp/7600/quic-v1"}, Checked: true}, true, true},
		{"public by AutoNAT v1", Reachability{Reachability: "public", Checked: true}, true, true},
		{"behind NAT with a relay", Reachability{Reachability: "private", RelayAddrs: []string{"/p2p-circuit"}, Checked: true}, true, true},
		{"behind NAT, no relay", Reachability{Reachability: "private", Unreachable: []string{"/ip4/192.0.0.80/udp/7600/quic-v1"}, Checked: true}, false, true},
	} {
		if ok, known := tt.r.Dialable(); ok != tt.ok || known != tt.known {
			t.Errorf("%s: Dialable() = %v, %v; want %v, %v", tt.name, ok, known, tt.ok, tt.known)
		}
	}
}

// What a host listens on is its sockets, not the relay transport's
// /p2p-circuit.
func TestReachabilityListensOnSocketsOnly(t *testing.T) {
	r := testHost(t).Reachability()
	if len(r.Listen) != 1 || !strings.HasPrefix(r.Listen[0], "/ip4/127.0.0.1/tcp/") {
		t.Errorf("Listen = %v, want the one loopback listener", r.Listen)
	}
}
