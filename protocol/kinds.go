package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Kind names how one message type is signed: its envelope signing domain and
// payload type. A signature made for one kind never verifies as another.
type Kind struct {
	Domain      string
	PayloadType []byte
}

func kind(name string) Kind {
	return Kind{Domain: "ephemera-" + name, PayloadType: []byte("/ephemera/" + name + "/1")}
}

// The kinds of the protocol, by message.
var kinds = map[protoreflect.FullName]Kind{
	(&pb.Challenge{}).ProtoReflect().Descriptor().FullName():    kind("challenge"),
	(&pb.Answer{}).ProtoReflect().Descriptor().FullName():       kind("answer"),
	(&pb.Attestation{}).ProtoReflect().Descriptor().FullName():  kind("attestation"),
	(&pb.Availability{}).ProtoReflect().Descriptor().FullName(): kind("availability"),
	(&pb.Claim{}).ProtoReflect().Descriptor().FullName():        kind("claim"),
	(&pb.Grant{}).ProtoReflect().Descriptor().FullName():        kind("grant"),
	(&pb.Refusal{}).ProtoReflect().Descriptor().FullName():      kind("refusal"),
	(&pb.Renew{}).ProtoReflect().Descriptor().FullName():        kind("renew"),
	(&pb.Release{}).ProtoReflect().Descriptor().FullName():      kind("release"),
	(&pb.Receipt{}).ProtoReflect().Descriptor().FullName():      kind("receipt"),
	(&pb.Evidence{}).ProtoReflect().Descriptor().FullName():     kind("evidence"),
	(&pb.Eviction{}).ProtoReflect().Descriptor().FullName():     kind("eviction"),
	(&pb.SessionTask{}).ProtoReflect().Descriptor().FullName():  kind("session-task"),
	(&pb.TaskResult{}).ProtoReflect().Descriptor().FullName():   kind("task-result"),
	(&pb.TaskCommit{}).ProtoReflect().Descriptor().FullName():   kind("task-commit"),
	(&pb.Reveal{}).ProtoReflect().Descriptor().FullName():       kind("reveal"),
	(&pb.TaskError{}).ProtoReflect().Descriptor().FullName():    kind("task-error"),
}

// KindOf is the kind of msg. Every message of package pb has one except
// those only ever nested or framed: Task, ChatMessage and SessionFrame.
func KindOf(msg proto.Message) (Kind, bool) {
	k, ok := kinds[msg.ProtoReflect().Descriptor().FullName()]
	return k, ok
}

// Message is a protocol message type, as a pointer to its generated struct.
type Message[T any] interface {
	*T
	proto.Message
}

// Record adapts a message to libp2p's record.Record, for sealing in and
// opening from signed envelopes.
type Record[T any, M Message[T]] struct{ Msg M }

// Domain is the message's signing domain.
func (r *Record[T, M]) Domain() string { return mustKind(M(new(T))).Domain }

// Codec is the message's envelope payload type.
func (r *Record[T, M]) Codec() []byte { return mustKind(M(new(T))).PayloadType }

// MarshalRecord encodes deterministically, so one message has one encoding.
func (r *Record[T, M]) MarshalRecord() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(r.Msg)
}

// UnmarshalRecord decodes strictly: fields this version does not know are an
// error, so a signed message means the same to every receiver.
func (r *Record[T, M]) UnmarshalRecord(b []byte) error {
	m := M(new(T))
	if err := proto.Unmarshal(b, m); err != nil {
		return err
	}
	if hasUnknown(m.ProtoReflect()) {
		return errors.New("unknown fields")
	}
	r.Msg = m
	return nil
}

// hasUnknown reports whether m, or any message nested in it, holds fields
// this version does not know.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					found = hasUnknown(mv.Message())
					return !found
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i, l := 0, v.List(); i < l.Len() && !found; i++ {
					found = hasUnknown(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

func mustKind(m proto.Message) Kind {
	k, ok := KindOf(m)
	if !ok {
		// Only reachable by a programming error: a message type with no kind.
		panic(fmt.Sprintf("protocol: %s has no kind", m.ProtoReflect().Descriptor().FullName()))
	}
	return k
}

// Seal signs msg with key and returns the envelope's bytes.
func Seal[T any, M Message[T]](msg M, key crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(&Record[T, M]{Msg: msg}, key)
	if err != nil {
		return nil, fmt.Errorf("seal %s: %w", msg.ProtoReflect().Descriptor().Name(), err)
	}
	return env.Marshal()
}

// Signed is an opened envelope: the message, who signed it and the bytes.
type Signed[M any] struct {
	Msg    M
	Signer peer.ID
	Raw    []byte // the envelope as received
}

// Digest is the SHA-256 of the envelope bytes, which names the message.
func (s Signed[M]) Digest() []byte { return Digest(s.Raw) }

// Open checks data is an envelope of M's kind with a valid signature and
// decodes it. It never panics on any input.
func Open[T any, M Message[T]](data []byte) (Signed[M], error) {
	rec := &Record[T, M]{}
	env, err := record.ConsumeTypedEnvelope(data, rec)
	if err != nil {
		return Signed[M]{}, fmt.Errorf("%s envelope: %w", M(new(T)).ProtoReflect().Descriptor().Name(), err)
	}
	if !bytes.Equal(env.PayloadType, rec.Codec()) {
		return Signed[M]{}, fmt.Errorf("%s envelope: payload type %q", M(new(T)).ProtoReflect().Descriptor().Name(), env.PayloadType)
	}
	// Every identity of the network is Ed25519: one key type, one
	// signature cost, and peer IDs that embed the key.
	if env.PublicKey.Type() != crypto.Ed25519 {
		return Signed[M]{}, fmt.Errorf("envelope key: %s, Ephemera signs with Ed25519", env.PublicKey.Type())
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return Signed[M]{}, fmt.Errorf("envelope key: %w", err)
	}
	return Signed[M]{Msg: rec.Msg, Signer: signer, Raw: data}, nil
}

// PayloadType reads which kind of message an envelope says it holds, without
// checking its signature: to choose the Open to call, which checks it.
func PayloadType(envelope []byte) ([]byte, error) {
	var e recordpb.Envelope
	if err := proto.Unmarshal(envelope, &e); err != nil {
		return nil, fmt.Errorf("not an envelope: %w", err)
	}
	return e.GetPayloadType(), nil
}

// Digest names a signed message by the SHA-256 of its envelope bytes.
func Digest(envelope []byte) []byte {
	h := sha256.Sum256(envelope)
	return h[:]
}
