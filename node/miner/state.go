package miner

import (
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// State is what the miner commits on every transition.
type State struct {
	State      pb.MinerState `json:"state"`
	Generation uint64        `json:"generation"`
	// Seq is the sequence number of the last availability record signed.
	Seq uint64 `json:"seq"`
	// Since is when the miner entered State.
	Since time.Time `json:"since"`
	// Failures counts consecutive failed validations, for the backoff.
	Failures  int       `json:"failures"`
	CoolUntil time.Time `json:"cool_until,omitzero"`
	// Attestations supporting AVAILABLE (signed envelopes).
	Attestations [][]byte `json:"attestations,omitempty"`
	// The reservation, while RESERVED.
	Session     string    `json:"session,omitempty"`
	Router      peer.ID   `json:"router,omitempty"`
	LeaseEnd    time.Time `json:"lease_end,omitzero"`
	ClaimDigest []byte    `json:"claim_digest,omitempty"`
	Grant       []byte    `json:"grant,omitempty"`
}

// loadState reads the committed state; a fresh miner starts joining.
func loadState(txn *store.Txn) (State, error) {
	s, ok, err := store.GetJSON[State](txn, stateKey)
	if err != nil {
		return State{}, fmt.Errorf("miner state: %w", err)
	}
	if !ok {
		return State{State: pb.MinerState_JOINING, Since: time.Now()}, nil
	}
	return s, nil
}

func saveState(txn *store.Txn, s State) error {
	return store.PutJSON(txn, stateKey, s)
}

// revalidate ends a reservation: the miner validates again at the next
// generation, with a fresh count of failures, as the lifecycle requires
// after every session.
func (s State) revalidate(now time.Time) State {
	s.Generation++
	s.Failures = 0
	return s.enter(pb.MinerState_VALIDATING, now)
}

// enter moves s to a new state, clearing what belonged to the old one.
func (s State) enter(st pb.MinerState, now time.Time) State {
	s.State = st
	s.Since = now
	if st != pb.MinerState_AVAILABLE {
		s.Attestations = nil
	}
	if st != pb.MinerState_RESERVED {
		s.Session, s.Router, s.LeaseEnd, s.ClaimDigest, s.Grant = "", "", time.Time{}, nil, nil
	}
	if st != pb.MinerState_COOLING_OFF {
		s.CoolUntil = time.Time{}
	}
	return s
}
