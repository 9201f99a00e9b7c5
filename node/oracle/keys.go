package oracle

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Keys the oracle keeps in the store; the keyspace is documented in
// store/doc.go.
//
// signed/<miner peer ID, base58>/<generation %020d>/<round %020d> holds the
// attestation envelope the oracle signed for that slot (see signOnce). The
// entries live twice the attestation lifetime: long enough to outlast every
// verdict they guard (an older one has expired everywhere, and a round
// number never comes back), while bounding the store's growth.

func signedKey(miner peer.ID, generation, round uint64) []byte {
	return fmt.Appendf(nil, "signed/%s/%020d/%020d", miner, generation, round)
}

// signedPrefix is the prefix of every signedKey of miner at generation.
func signedPrefix(miner peer.ID, generation uint64) []byte {
	return fmt.Appendf(nil, "signed/%s/%020d/", miner, generation)
}
