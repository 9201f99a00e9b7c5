package pool

import (
	"bytes"
	"fmt"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Keys the pool keeps in the store; the keyspace is documented in
// store/doc.go. Peer IDs are binary under pool/, penalty/ and rep/, base58
// elsewhere.
const (
	recordPrefix = "pool/" // each miner's latest availability record (savedRecord, JSON)
	attPrefix    = "att/"  // attestations seen (envelopes)
)

func recordKey(m peer.ID) []byte { return []byte(recordPrefix + string(m)) }
func attKey(miner peer.ID, gen uint64, oracle peer.ID, round uint64) []byte {
	return fmt.Appendf(nil, attPrefix+"%s/%020d/%s/%020d", miner, gen, oracle, round)
}
func grantKey(miner peer.ID, gen uint64) []byte {
	return fmt.Appendf(nil, "grant/%s/%020d", miner, gen)
}
func releaseKey(miner peer.ID, gen uint64) []byte {
	return fmt.Appendf(nil, "release/%s/%020d", miner, gen)
}
func penaltyKey(p peer.ID) []byte { return []byte("penalty/" + string(p)) }
func repKey(p peer.ID) []byte     { return []byte("rep/" + string(p)) }

// allRoutersKey holds the session ends of every router, as one Reputation.
const allRoutersKey = "repall"

func chargeKey(miner, router peer.ID) []byte {
	return []byte("charge/" + string(miner) + "/" + string(router))
}

// evidenceKey names a conflict by its two messages, in either order.
func evidenceKey(e *pb.Evidence) []byte {
	a, b := protocol.Digest(e.First), protocol.Digest(e.Second)
	if bytes.Compare(a, b) > 0 {
		a, b = b, a
	}
	return fmt.Appendf(nil, "evidence/%x%x", a, b)
}
