package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/gossip"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// Publisher sends a message on a topic of this node's network.
type Publisher func(ctx context.Context, topic string, data []byte) error

// Kinds returns, for each gossip topic, the message kinds it carries, judged
// against this pool. Evidence found while judging is signed with key and
// published on the topic it concerns, so that every node learns of it.
func (p *Pool) Kinds(key crypto.PrivKey, publish Publisher) map[string][]gossip.Kind {
	report := func(topic string, ev *pb.Evidence) {
		if ev == nil {
			return
		}
		if _, isNew, err := p.AddEvidence(ev); err != nil || !isNew {
			return // not evidence after all, or already reported
		}
		raw, err := protocol.Seal(ev, key)
		if err != nil {
			p.log.Error("seal evidence", "err", err)
			return
		}
		// Our own validator will see this copy when we publish it, after
		// the pair is already held: let that one copy through.
		p.reporting.Store(string(protocol.Digest(raw)), true)
		// Not from inside the validator that found it, which would wait on itself.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := publish(ctx, topic, raw); err != nil {
				p.log.Warn("publish evidence", "topic", topic, "err", err)
			}
			p.reporting.Delete(string(protocol.Digest(raw)))
		}()
	}
	evidence := kindOf(func(s protocol.Signed[*pb.Evidence]) error {
		if _, ours := p.reporting.Load(string(s.Digest())); ours {
			return nil
		}
		_, _, err := p.AddEvidence(s.Msg)
		return err
	})
	return map[string][]gossip.Kind{
		gossip.Attestations: {
			kindOf(func(s protocol.Signed[*pb.Attestation]) error {
				ev, err := p.AddAttestation(s)
				report(gossip.Attestations, ev)
				if ev != nil {
					return errEquivocation
				}
				return err
			}),
			evidence,
		},
		gossip.Reservations: {
			kindOf(func(s protocol.Signed[*pb.Grant]) error {
				ev, err := p.AddGrant(s)
				report(gossip.Reservations, ev)
				if ev != nil {
					return errEquivocation
				}
				return err
			}),
			kindOf(p.AddRelease),
			evidence,
		},
		gossip.Pool: {kindOf(p.AddAvailability)},
	}
}

// errEquivocation: the message is validly signed but conflicts with one held;
// it travels on as evidence, not on its own.
var errEquivocation = errors.New("ignore: conflicts with a message already held; evidence published")

// kindOf adapts a typed pool method to a gossip kind, mapping the protocol's
// error classes to gossipsub's outcomes.
func kindOf[T any, M protocol.Message[T]](add func(protocol.Signed[M]) error) gossip.Kind {
	return gossip.Kind{
		New: func() record.Record { return &protocol.Record[T, M]{} },
		Check: func(_ context.Context, _ peer.ID, env *record.Envelope, rec record.Record, raw []byte) (pubsub.ValidationResult, error) {
			if env.PublicKey.Type() != crypto.Ed25519 {
				return pubsub.ValidationReject, fmt.Errorf("signed with a %s key; Ephemera signs with Ed25519", env.PublicKey.Type())
			}
			signer, err := peer.IDFromPublicKey(env.PublicKey)
			if err != nil {
				return pubsub.ValidationReject, err
			}
			err = add(protocol.Signed[M]{Msg: rec.(*protocol.Record[T, M]).Msg, Signer: signer, Raw: raw})
			switch {
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
