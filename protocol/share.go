package protocol

import (
	"bytes"
	"math"

	"github.com/ephemera-network/ephemera/protocol/pb"
)

// GrantIssuedMs is when the miner issued grant g, in Unix ms: its lease end
// less the lease its claim asked for. A renewal extends the miner's lease
// but never changes the grant, so every node that holds the grant reads the
// same time from it. A grant whose claim does not open reads as MaxInt64.
func GrantIssuedMs(g *pb.Grant) int64 {
	claim, err := Open[pb.Claim](g.Claim)
	if err != nil {
		return math.MaxInt64
	}
	return g.LeaseEndMs - int64(claim.Msg.LeaseMs)
}

// GrantRank is the place, from 1, of grant own among own and others, the
// grants by which one router holds its other miners: ordered by issue time
// (GrantIssuedMs), then by miner peer ID bytewise. Every node that holds the
// same grants ranks them alike, so the miners of a router that got more than
// its limit agree on which of them are its excess: those ranked beyond it.
func GrantRank(own *pb.Grant, others []*pb.Grant) int {
	t := GrantIssuedMs(own)
	rank := 1
	for _, g := range others {
		if bytes.Equal(g.Miner, own.Miner) {
			continue
		}
		if gt := GrantIssuedMs(g); gt < t || (gt == t && bytes.Compare(g.Miner, own.Miner) < 0) {
			rank++
		}
	}
	return rank
}
