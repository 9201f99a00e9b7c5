package p2p

import (
	"math"
	"net/netip"
	"time"

	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
	ma "github.com/multiformats/go-multiaddr"
)

// ownAddrLimits lifts libp2p's limits on connections from one IP (8 at
// once, and one every 5 s after a burst of 16) for the IPs this node
// listens on, as libp2p itself does for loopback: a peer connecting from
// one of them runs on this machine. Without it, a testnet of ten nodes on
// one LAN address (ephemera testnet --host) leaves a node that its
// bootstrap refuses, and any operator running several nodes on one address
// meets the same wall.
func ownAddrLimits(listen []string) []rcmgr.Option {
	v4 := append([]rcmgr.NetworkPrefixLimit{}, rcmgr.DefaultNetworkPrefixLimitV4...)
	v6 := append([]rcmgr.NetworkPrefixLimit{}, rcmgr.DefaultNetworkPrefixLimitV6...)
	rl := &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8")},
			{Prefix: netip.MustParsePrefix("::1/128")},
		},
		// libp2p's defaults (resource-manager/conn_rate_limiter.go).
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 0.2, Burst: 16}}},
			IPv6SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 56, Limit: rate.Limit{RPS: 0.2, Burst: 16}},
				{PrefixLength: 48, Limit: rate.Limit{RPS: 0.5, Burst: 80}},
			},
			GracePeriod: time.Minute,
		},
	}
	own := 0
	for _, a := range listen {
		ip, ok := listenIP(a)
		if !ok || ip.IsUnspecified() || ip.IsLoopback() {
			continue
		}
		own++
		p := netip.PrefixFrom(ip, ip.BitLen())
		if ip.Is4() {
			v4 = append(v4, rcmgr.NetworkPrefixLimit{Network: p, ConnCount: math.MaxInt})
		} else {
			v6 = append(v6, rcmgr.NetworkPrefixLimit{Network: p, ConnCount: math.MaxInt})
		}
		rl.NetworkPrefixLimits = append(rl.NetworkPrefixLimits, rate.PrefixLimit{Prefix: p}) // zero Limit: none
	}
	if own == 0 {
		return nil // libp2p's defaults
	}
	return []rcmgr.Option{rcmgr.WithNetworkPrefixLimit(v4, v6), rcmgr.WithConnRateLimiters(rl)}
}

// listenIP is the IP of a listen multiaddr such as /ip4/10.0.0.5/tcp/7600.
func listenIP(addr string) (netip.Addr, bool) {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, code := range []int{ma.P_IP4, ma.P_IP6} {
		if v, err := m.ValueForProtocol(code); err == nil {
			ip, err := netip.ParseAddr(v)
			return ip.Unmap(), err == nil
		}
	}
	return netip.Addr{}, false
}
