package miner

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// stateKey holds the miner's lifecycle state: the one authority over it.
var stateKey = []byte("self/miner")

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
func loadState(txn *badger.Txn) (State, error) {
	item, err := txn.Get(stateKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return State{State: pb.MinerState_JOINING, Since: time.Now()}, nil
	}
	if err != nil {
		return State{}, err
	}
	var s State
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &s) })
	if err != nil {
		return State{}, fmt.Errorf("miner state: %w", err)
	}
	return s, nil
}

func saveState(txn *badger.Txn, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return txn.Set(stateKey, b)
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
