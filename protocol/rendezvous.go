package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// AssignedOracles picks, by rendezvous (highest random weight) hashing, the k
// oracles that validate miner at (generation, round). Every node computes the
// same set with no coordination; the set changes each round, so validation
// rotates across the oracle set and a silent oracle delays a miner by at
// most a round.
func AssignedOracles(oracles []peer.ID, miner peer.ID, generation, round uint64, k int) []peer.ID {
	type scored struct {
		id    peer.ID
		score [32]byte
	}
	k = max(k, 0)
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], generation)
	binary.BigEndian.PutUint64(buf[8:], round)
	all := make([]scored, len(oracles))
	for i, o := range oracles {
		h := sha256.New()
		h.Write([]byte(o))
		h.Write([]byte(miner))
		h.Write(buf[:])
		var s scored
		s.id = o
		copy(s.score[:], h.Sum(nil))
		all[i] = s
	}
	slices.SortFunc(all, func(a, b scored) int { return -bytes.Compare(a.score[:], b.score[:]) })
	out := make([]peer.ID, 0, min(k, len(all)))
	for _, s := range all[:min(k, len(all))] {
		out = append(out, s.id)
	}
	return out
}
