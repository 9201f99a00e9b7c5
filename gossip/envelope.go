package gossip

import (
	"context"
	"errors"
	"fmt"

	"github.com/ephemera-network/ephemera/protocol"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// Kind is one signed message type that a topic carries. Its record's Domain
// is the signing domain and its Codec the envelope's payload type, so a
// signature made for one kind never verifies as another.
type Kind struct {
	// New returns an empty record of this kind to decode into.
	New func() record.Record
	// Check judges a record whose signature has been verified; env names the
	// signer and data is the envelope as received.
	Check func(ctx context.Context, from peer.ID, env *record.Envelope, rec record.Record, data []byte) (pubsub.ValidationResult, error)
}

// EnvelopeValidator accepts only libp2p signed envelopes of the given kinds:
// anything else is provably bad and rejected, which costs the sender score.
func EnvelopeValidator(kinds ...Kind) Validator {
	byType := make(map[string]Kind, len(kinds))
	for _, k := range kinds {
		byType[string(k.New().Codec())] = k
	}
	return func(ctx context.Context, from peer.ID, data []byte) (pubsub.ValidationResult, error) {
		env, err := record.UnmarshalEnvelope(data)
		if err != nil {
			return pubsub.ValidationReject, fmt.Errorf("not a signed envelope: %w", err)
		}
		k, ok := byType[string(env.PayloadType)]
		if !ok {
			return pubsub.ValidationReject, fmt.Errorf("payload type %x is not carried on this topic", env.PayloadType)
		}
		rec := k.New()
		env, err = record.ConsumeTypedEnvelope(data, rec)
		if err != nil {
			return pubsub.ValidationReject, fmt.Errorf("envelope: %w", err)
		}
		return k.Check(ctx, from, env, rec, data)
	}
}

// Judged is the kind whose records take decodes into: take is given the
// signer and the message as received, and its error's class (protocol's
// ErrReject or ErrIgnore) decides the outcome. Only Ed25519 signers are
// taken, as Ephemera signs with nothing else.
func Judged(newRecord func() record.Record, take func(signer peer.ID, rec record.Record, data []byte) error) Kind {
	return Kind{
		New: newRecord,
		Check: func(_ context.Context, _ peer.ID, env *record.Envelope, rec record.Record, data []byte) (pubsub.ValidationResult, error) {
			if env.PublicKey.Type() != crypto.Ed25519 {
				return pubsub.ValidationReject, fmt.Errorf("signed with a %s key; Ephemera signs with Ed25519", env.PublicKey.Type())
			}
			signer, err := peer.IDFromPublicKey(env.PublicKey)
			if err != nil {
				return pubsub.ValidationReject, err
			}
			switch err := take(signer, rec, data); {
			case err == nil:
				return pubsub.ValidationAccept, nil
			case errors.Is(err, protocol.ErrReject):
				return pubsub.ValidationReject, err
			default:
				return pubsub.ValidationIgnore, err
			}
		},
	}
}
