package protocol

import "github.com/ephemera-network/ephemera/protocol/pb"

// The gossip topics every node of a network joins. A topic goes by its
// short name in /v1/overview and in metrics labels; on the wire it is
// TopicID(network, name).
const (
	TopicAttestations = "attestations" // oracles' verdicts, and evidence of double verdicts
	TopicReservations = "reservations" // grants and releases, and evidence of double grants
	TopicPool         = "pool"         // miners' availability records, on every transition
)

// Topics lists the topics in the order nodes join them and show them.
var Topics = []string{TopicAttestations, TopicReservations, TopicPool}

// TopicID is the gossipsub topic of name on network, so two networks never mix.
func TopicID(network, name string) string {
	return "/ephemera/" + network + "/" + name + "/1"
}

// TopicKinds are the message kinds each topic carries; a message of any
// other kind on it is rejected. Evidence rides the topic of the messages it
// is about.
var TopicKinds = map[string][]Kind{
	TopicAttestations: {mustKind(&pb.Attestation{}), mustKind(&pb.Evidence{})},
	TopicReservations: {mustKind(&pb.Grant{}), mustKind(&pb.Release{}), mustKind(&pb.Evidence{})},
	TopicPool:         {mustKind(&pb.Availability{})},
}

// TopicOf is the first topic that carries the messages of kind k (for a
// kind of its own, the only one); "" for a kind gossip does not carry.
func TopicOf(k Kind) string {
	for _, t := range Topics {
		for _, tk := range TopicKinds[t] {
			if tk.Domain == k.Domain {
				return t
			}
		}
	}
	return ""
}
