package pool

import (
	"context"
	"errors"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// Publisher sends a message on a topic of this node's network.
type Publisher func(ctx context.Context, topic string, data []byte) error

// Judge takes one kind of signed message that arrives by gossip into the
// pool: New makes the record to decode into, and Take is given the signer
// and the message as received. Take's error is classed by protocol's
// ErrReject and ErrIgnore.
type Judge struct {
	New  func() record.Record
	Take func(signer peer.ID, rec record.Record, raw []byte) error
}

// Judges returns the judge of every kind gossip carries, by its signing
// domain (protocol.TopicKinds says which topic carries which). Evidence
// found while judging is signed with key and published on the topic of the
// messages it is about, so that every node learns of it.
func (p *Pool) Judges(key crypto.PrivKey, publish Publisher) map[string]Judge {
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
	// A message that conflicts with one already held travels on as
	// evidence, not on its own.
	conflict := func(topic string, ev *pb.Evidence, err error) error {
		report(topic, ev)
		if ev != nil {
			return errEquivocation
		}
		return err
	}
	judges := map[string]Judge{}
	add := func(j Judge) { judges[j.New().Domain()] = j }
	add(judgeOf(func(s protocol.Signed[*pb.Attestation]) error {
		ev, err := p.AddAttestation(s)
		return conflict(protocol.TopicAttestations, ev, err)
	}))
	add(judgeOf(func(s protocol.Signed[*pb.Grant]) error {
		ev, err := p.AddGrant(s)
		return conflict(protocol.TopicReservations, ev, err)
	}))
	add(judgeOf(p.AddRelease))
	add(judgeOf(p.AddAvailability))
	add(judgeOf(func(s protocol.Signed[*pb.Evidence]) error {
		if _, ours := p.reporting.Load(string(s.Digest())); ours {
			return nil
		}
		_, _, err := p.AddEvidence(s.Msg)
		return err
	}))
	return judges
}

// errEquivocation: the message is validly signed but conflicts with one held;
// it travels on as evidence, not on its own.
var errEquivocation = errors.New("ignore: conflicts with a message already held; evidence published")

// judgeOf adapts a typed pool method to a Judge.
func judgeOf[T any, M protocol.Message[T]](add func(protocol.Signed[M]) error) Judge {
	return Judge{
		New: func() record.Record { return &protocol.Record[T, M]{} },
		Take: func(signer peer.ID, rec record.Record, raw []byte) error {
			return add(protocol.Signed[M]{Msg: rec.(*protocol.Record[T, M]).Msg, Signer: signer, Raw: raw})
		},
	}
}
