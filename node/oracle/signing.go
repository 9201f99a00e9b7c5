package oracle

import (
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/proto"
)

// Slashing protection, as Ethereum validators keep it: before it signs a
// verdict, the oracle looks in its store for one it signed for the same
// (miner, generation, round), in the same store transaction that then writes
// the new one. The store syncs every commit, so even across a crash or a
// restart the oracle never signs two verdicts for one (miner, generation,
// round), which would be evidence of equivocation against it. The envelope is
// published only after the commit. The keys are in keys.go.

// signOnce returns the envelope stored at key if there is one (fresh false);
// otherwise it seals att, stores it at key and returns it (fresh true), all
// in one transaction.
func (o *Oracle) signOnce(key []byte, att *pb.Attestation) (env []byte, fresh bool, err error) {
	ttl := 2 * o.params().AttestationLifetime.Std()
	for range 5 {
		env, fresh = nil, false
		err = o.d.Store.Update(func(txn *store.Txn) error {
			stored, ok, err := txn.Get(key)
			if err != nil || ok {
				env = stored
				return err
			}
			env, err = protocol.Seal(att, o.d.Key)
			if err != nil {
				return err
			}
			fresh = true
			return txn.PutWithTTL(key, env, ttl)
		})
		// A conflict means another validation of the same key committed
		// first: read again, and return its envelope.
		if !errors.Is(err, store.ErrConflict) {
			break
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("oracle: sign attestation: %w", err)
	}
	return env, fresh, nil
}

// lastPass returns when this oracle issued its latest passing verdict for
// miner at generation, in any round, among those unexpired at now; ok is
// false if there is none.
func (o *Oracle) lastPass(miner peer.ID, generation uint64, now time.Time) (issued time.Time, ok bool) {
	_ = o.d.Store.Scan(signedPrefix(miner, generation), func(_, v []byte) error {
		// Our own store holds only what this oracle signed: read the
		// verdict, no need to verify our own signature on every tick.
		env, err := record.UnmarshalEnvelope(v)
		if err != nil {
			return nil
		}
		var a pb.Attestation
		if proto.Unmarshal(env.RawPayload, &a) == nil && a.Pass && protocol.Time(a.ExpiresMs).After(now) {
			issued, ok = later(issued, protocol.Time(a.IssuedMs)), true
		}
		return nil
	})
	return issued, ok
}
