package protocol

import (
	"crypto/sha256"
	"fmt"

	"github.com/ipfs/go-cid"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	mh "github.com/multiformats/go-multihash"
)

// ValidateProtocol carries an oracle's challenge and the miner's answer.
// Version 2: a miner that speaks it follows no gossip topic and learns its
// verdicts only on the notice protocol, which an oracle of version 1 never
// sends; the bump keeps the two from validating each other for nothing.
func ValidateProtocol(network string) libp2pprotocol.ID {
	return libp2pprotocol.ID("/ephemera/" + network + "/validate/2.0.0")
}

// ReserveProtocol carries claims, renewals and releases.
func ReserveProtocol(network string) libp2pprotocol.ID {
	return libp2pprotocol.ID("/ephemera/" + network + "/reserve/1.0.0")
}

// SessionProtocol carries a session's tasks from a router to a miner it holds.
func SessionProtocol(network string) libp2pprotocol.ID {
	return libp2pprotocol.ID("/ephemera/" + network + "/session/1.0.0")
}

// NoticeProtocol carries an oracle's verdicts about one miner to that miner:
// its attestations and evictions. A miner follows no gossip topic, so this
// is how it learns them.
func NoticeProtocol(network string) libp2pprotocol.ID {
	return libp2pprotocol.ID("/ephemera/" + network + "/notice/1.0.0")
}

// AvailabilityNamespace is the DHT record namespace of availability records:
// the key of a miner's record is "/avail/" followed by its binary peer ID.
const AvailabilityNamespace = "avail"

// AvailabilityKey is the DHT key of miner's availability record.
func AvailabilityKey(miner []byte) string { return "/" + AvailabilityNamespace + "/" + string(miner) }

// PoolCID is the CID an available miner provides for a model: CIDv1, raw
// codec, SHA-256 of "ephemera/<net>/pool/<model>".
func PoolCID(network, model string) cid.Cid {
	sum := sha256.Sum256([]byte(fmt.Sprintf("ephemera/%s/pool/%s", network, model)))
	hash, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil {
		// mh.Encode fails only for an unknown code or a wrong digest length.
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, hash)
}

// DefinitionProtocol serves a node's network definition (network.toml) to
// whoever asks, a newcomer before it knows the network's name or hash
// above all: hence no network in the ID.
const DefinitionProtocol libp2pprotocol.ID = "/ephemera/definition/1.0.0"

// MaxDefinitionSize bounds a served definition: a few hundred oracles'
// peer IDs and bootstrap addresses fit many times over.
const MaxDefinitionSize = 256 << 10

// NetworkMarkerPrefix begins the marker protocol of a network hash.
const NetworkMarkerPrefix = "/ephemera/network/"

// NetworkMarker is a protocol that every member serves and none speaks:
// through identify it tells a peer which definition this node follows.
func NetworkMarker(hash string) libp2pprotocol.ID {
	return libp2pprotocol.ID(NetworkMarkerPrefix + hash)
}
