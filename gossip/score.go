package gossip

import (
	"net"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Score decay is computed on this beat.
const decayInterval = time.Second

// Thresholds follow Ethereum's consensus clients: a peer that keeps sending
// invalid messages falls past gossip, then publish, then graylist, where
// everything it sends is dropped unread.
func scoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             -4000,
		PublishThreshold:            -8000,
		GraylistThreshold:           -16000,
		AcceptPXThreshold:           100,
		OpportunisticGraftThreshold: 5,
	}
}

// scoreParams builds the peer-score parameters for the given topics; own
// are the networks of the node's own addresses, where peers are colocated
// by design. They are built per node and handed to WithPeerScore: nothing
// changes the library's package variables, so many nodes share one process
// safely.
func scoreParams(topics []string, own ...*net.IPNet) *pubsub.PeerScoreParams {
	p := &pubsub.PeerScoreParams{
		Topics:            make(map[string]*pubsub.TopicScoreParams, len(topics)),
		TopicScoreCap:     100,
		AppSpecificScore:  func(peer.ID) float64 { return 0 },
		AppSpecificWeight: 1,
		// Many peers behind one address are suspicious on the internet, but
		// every peer of a local testnet shares loopback, or the one address
		// of the machine it runs on (ephemera testnet --host).
		IPColocationFactorWeight:    -50,
		IPColocationFactorThreshold: 10,
		IPColocationFactorWhitelist: append(loopbackNets(), own...),
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:               decayInterval,
		DecayToZero:                 0.01,
		RetainScore:                 time.Hour,
	}
	for _, t := range topics {
		p.Topics[t] = topicScoreParams()
	}
	return p
}

// topicScoreParams rewards time in mesh and first deliveries a little and
// punishes invalid messages hard. Mesh delivery-rate penalties stay off: our
// topics are quiet between sessions, and silence is not misbehaviour.
func topicScoreParams() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight:                    1,
		TimeInMeshWeight:               0.01,
		TimeInMeshQuantum:              time.Second,
		TimeInMeshCap:                  3600,
		FirstMessageDeliveriesWeight:   1,
		FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:      50,
		InvalidMessageDeliveriesWeight: -100,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Hour),
	}
}

func loopbackNets() []*net.IPNet {
	_, v4, _ := net.ParseCIDR("127.0.0.0/8")
	_, v6, _ := net.ParseCIDR("::1/128")
	return []*net.IPNet{v4, v6}
}

// ownNets are the single-address networks of the IPs a node listens on,
// wildcards and loopback aside: a peer there runs on the same machine.
func ownNets(listen []ma.Multiaddr) []*net.IPNet {
	var out []*net.IPNet
	for _, a := range listen {
		ip, err := manet.ToIP(a)
		if err != nil || ip.IsUnspecified() || ip.IsLoopback() {
			continue
		}
		bits := 8 * len(ip)
		if v4 := ip.To4(); v4 != nil {
			ip, bits = v4, 32
		}
		out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
	}
	return out
}
