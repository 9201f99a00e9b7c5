package protocol_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// kindCase seals and opens one message type through the generic API.
type kindCase struct {
	name string
	msg  proto.Message
	seal func(k crypto.PrivKey) ([]byte, error)
	open func(raw []byte) (proto.Message, peer.ID, error)
}

func kc[T any, M protocol.Message[T]](m M) kindCase {
	return kindCase{
		name: string(m.ProtoReflect().Descriptor().Name()),
		msg:  m,
		seal: func(k crypto.PrivKey) ([]byte, error) { return protocol.Seal(m, k) },
		open: func(raw []byte) (proto.Message, peer.ID, error) {
			s, err := protocol.Open[T, M](raw)
			return s.Msg, s.Signer, err
		},
	}
}

// everyKind is one filled-in message of every signed kind.
func everyKind(tb testing.TB, f *fixture) []kindCase {
	claimRaw := testkit.Seal(tb, f.claim(), f.Router.Key)
	a0 := testkit.Seal(tb, f.att(0), f.Oracles[0].Key)
	failing := f.att(0)
	failing.Pass = false
	a1 := testkit.Seal(tb, failing, f.Oracles[0].Key)
	return []kindCase{
		kc(&pb.Challenge{Network: testNet, Oracle: []byte(f.Oracles[0].ID), Miner: []byte(f.Miner.ID), Generation: 7, Round: 100,
			Nonce: []byte("n"), Tasks: []*pb.Task{{Family: "arith", Seed: 42, Prompt: "1+1?"}, {Family: "echo", Prompt: "hi"}},
			IssuedMs: ms(testNow), LatencyBudgetMs: 2000}),
		kc(&pb.Answer{Network: testNet, ChallengeDigest: testkit.Digest32("c"), Miner: []byte(f.Miner.ID), Model: "llama",
			Outputs: []string{"2", "hi"}, LatenciesMs: []uint32{10, 20}}),
		kc(f.att(0)),
		kc(f.avail(tb)),
		kc(f.claim()),
		kc(f.grant(claimRaw)),
		kc(&pb.Refusal{Network: testNet, Miner: []byte(f.Miner.ID), ClaimDigest: protocol.Digest(claimRaw),
			Reason: pb.RefusalReason_BUSY, Detail: "busy", State: pb.MinerState_RESERVED, Generation: 7}),
		kc(&pb.Renew{Network: testNet, Session: "s", Router: []byte(f.Router.ID), Miner: []byte(f.Miner.ID), Generation: 7,
			LeaseMs: 1000, IssuedMs: ms(testNow)}),
		kc(f.release()),
		kc(&pb.Receipt{Network: testNet, Miner: []byte(f.Miner.ID), RequestDigest: testkit.Digest32("r"), Ok: true, Detail: "ok",
			LeaseEndMs: ms(testNow), Generation: 7, State: pb.MinerState_RESERVED}),
		kc(&pb.Evidence{Network: testNet, Kind: pb.EvidenceKind_DOUBLE_VERDICT, First: a0, Second: a1}),
	}
}

func TestKindsDistinct(t *testing.T) {
	f := newFixture(t)
	domains, types := map[string]string{}, map[string]string{}
	for _, c := range everyKind(t, f) {
		k, ok := protocol.KindOf(c.msg)
		if !ok {
			t.Fatalf("%s has no kind", c.name)
		}
		if k.Domain == "" || len(k.PayloadType) == 0 {
			t.Errorf("%s: empty kind %+v", c.name, k)
		}
		if prev, dup := domains[k.Domain]; dup {
			t.Errorf("%s and %s share domain %q", c.name, prev, k.Domain)
		}
		if prev, dup := types[string(k.PayloadType)]; dup {
			t.Errorf("%s and %s share payload type %q", c.name, prev, k.PayloadType)
		}
		domains[k.Domain], types[string(k.PayloadType)] = c.name, c.name
	}
	if _, ok := protocol.KindOf(&pb.Task{}); ok {
		t.Error("Task, never sent alone, has a kind")
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, c := range everyKind(t, f) {
		t.Run(c.name, func(t *testing.T) {
			raw, err := c.seal(f.Miner.Key)
			if err != nil {
				t.Fatal(err)
			}
			got, signer, err := c.open(raw)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if signer != f.Miner.ID {
				t.Errorf("signer %s, want %s", signer, f.Miner.ID)
			}
			if !proto.Equal(got, c.msg) {
				t.Errorf("round trip changed the message:\n got %v\nwant %v", got, c.msg)
			}
			// Deterministic: sealing again gives the same payload, hence (Ed25519
			// being deterministic) the same envelope.
			again, err := c.seal(f.Miner.Key)
			if err != nil || !bytes.Equal(again, raw) {
				t.Errorf("sealing twice gave different envelopes (err %v)", err)
			}
		})
	}
}

func TestSignedDigest(t *testing.T) {
	f := newFixture(t)
	raw := testkit.Seal(t, f.att(0), f.Oracles[0].Key)
	s := testkit.Open[pb.Attestation](t, raw)
	want := sha256.Sum256(raw)
	if !bytes.Equal(s.Digest(), want[:]) || !bytes.Equal(protocol.Digest(raw), want[:]) || !bytes.Equal(s.Raw, raw) {
		t.Error("digest is not the SHA-256 of the envelope bytes")
	}
}

// TestOpenOtherKind: a message sealed as one kind never opens as another,
// whether labelled with its own payload type or relabelled with the other's.
func TestOpenOtherKind(t *testing.T) {
	f := newFixture(t)
	cases := everyKind(t, f)
	for _, sealed := range cases {
		raw, err := sealed.seal(f.Miner.Key)
		if err != nil {
			t.Fatal(err)
		}
		sk, _ := protocol.KindOf(sealed.msg)
		payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(sealed.msg)
		if err != nil {
			t.Fatal(err)
		}
		for _, opened := range cases {
			if opened.name == sealed.name {
				continue
			}
			ok, _ := protocol.KindOf(opened.msg)
			t.Run(sealed.name+"_as_"+opened.name, func(t *testing.T) {
				if _, _, err := opened.open(raw); err == nil {
					t.Error("opened a message of another kind")
				}
				// Signed in the sealed kind's domain but carrying the opened
				// kind's payload type: the signature must not verify.
				relabelled := sealRaw(t, sk.Domain, ok.PayloadType, payload, f.Miner.Key)
				if _, _, err := opened.open(relabelled); err == nil {
					t.Error("signature of another domain verified")
				}
				// Signed in the opened kind's domain under the sealed kind's payload type.
				mislabelled := sealRaw(t, ok.Domain, sk.PayloadType, payload, f.Miner.Key)
				if _, _, err := opened.open(mislabelled); err == nil {
					t.Error("opened an envelope whose payload type is another kind's")
				}
			})
		}
	}
}

func TestOpenTampered(t *testing.T) {
	f := newFixture(t)
	a := f.att(0)
	raw := testkit.Seal(t, a, f.Oracles[0].Key)
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	a.ScoreMilli = 901 // same encoded length as 900
	forged, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, payload)
	if i < 0 || len(forged) != len(payload) {
		t.Fatal("payload not found in envelope")
	}
	tampered := bytes.Clone(raw)
	copy(tampered[i:], forged)
	if _, err := protocol.Open[pb.Attestation](tampered); err == nil {
		t.Error("opened an envelope whose payload was changed")
	}
	// No single-bit change anywhere in the envelope yields a valid message.
	for i := range raw {
		for bit := range 8 {
			b := bytes.Clone(raw)
			b[i] ^= 1 << bit
			if s, err := protocol.Open[pb.Attestation](b); err == nil {
				t.Errorf("flipping bit %d of byte %d still opens, as %v", bit, i, s.Msg)
			}
		}
	}
	if _, err := protocol.Open[pb.Attestation](raw); err != nil {
		t.Fatalf("the untouched envelope: %v", err)
	}
}

// TestOpenUnknownFields: strict decoding refuses fields this version does
// not know, anywhere in the message, even under a valid signature.
func TestOpenUnknownFields(t *testing.T) {
	f := newFixture(t)
	attKind, _ := protocol.KindOf(&pb.Attestation{})
	chKind, _ := protocol.KindOf(&pb.Challenge{})
	attPayload, err := proto.MarshalOptions{Deterministic: true}.Marshal(f.att(0))
	if err != nil {
		t.Fatal(err)
	}
	challenge := &pb.Challenge{Network: testNet, Oracle: []byte(f.Oracles[0].ID), Miner: []byte(f.Miner.ID),
		Tasks: []*pb.Task{{Family: "arith", Seed: 1, Prompt: "1+1?"}}}
	task, err := proto.Marshal(challenge.Tasks[0])
	if err != nil {
		t.Fatal(err)
	}
	challengeWith := func(task []byte) []byte {
		c := proto.Clone(challenge).(*pb.Challenge)
		c.Tasks = nil
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 7, protowire.BytesType) // tasks
		return protowire.AppendBytes(b, task)
	}
	unknownVarint := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)
	unknownBytes := protowire.AppendBytes(protowire.AppendTag(nil, 1000, protowire.BytesType), []byte("x"))
	// Field 7 (score_milli) is a varint: sent as bytes it is not the known field.
	wrongWireType := protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), []byte{1})

	open := func(raw []byte) error { _, err := protocol.Open[pb.Attestation](raw); return err }
	openCh := func(raw []byte) error { _, err := protocol.Open[pb.Challenge](raw); return err }
	tests := []struct {
		name    string
		kind    protocol.Kind
		payload []byte
		open    func([]byte) error
		wantErr bool
	}{
		{"control: known fields only", attKind, attPayload, open, false},
		{"unknown varint field", attKind, append(bytes.Clone(attPayload), unknownVarint...), open, true},
		{"unknown bytes field", attKind, append(bytes.Clone(attPayload), unknownBytes...), open, true},
		{"unknown field first", attKind, append(bytes.Clone(unknownVarint), attPayload...), open, true},
		{"known number, wrong wire type", attKind, append(bytes.Clone(attPayload), wrongWireType...), open, true},
		{"malformed protobuf", attKind, append(bytes.Clone(attPayload), 0x08), open, true},
		{"invalid UTF-8 in a string", attKind, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "\xff"), open, true},
		{"control: nested task", chKind, challengeWith(task), openCh, false},
		{"unknown field in a nested task", chKind, challengeWith(append(bytes.Clone(task), unknownVarint...)), openCh, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := sealRaw(t, tt.kind.Domain, tt.kind.PayloadType, tt.payload, f.Oracles[0].Key)
			if err := tt.open(raw); (err != nil) != tt.wantErr {
				t.Errorf("open error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestOpenJunk(t *testing.T) {
	f := newFixture(t)
	valid := testkit.Seal(t, f.att(0), f.Oracles[0].Key)
	huge := make([]byte, 8<<20)
	for i := range huge {
		huge[i] = byte(i * 7)
	}
	// A well-formed envelope header claiming a huge payload it does not carry.
	lying := protowire.AppendTag(nil, 3, protowire.BytesType)
	lying = protowire.AppendVarint(lying, 1<<40)
	inputs := map[string][]byte{
		"nil":                nil,
		"empty":              {},
		"one byte":           {0x0a},
		"text":               []byte("hello, ephemera"),
		"truncated":          valid[:len(valid)/2],
		"trailing garbage":   append(bytes.Clone(valid), 0xff, 0xff),
		"huge pseudo-random": huge,
		"huge zeros":         make([]byte, 4<<20),
		"huge 0xff":          bytes.Repeat([]byte{0xff}, 4<<20),
		"lying length":       lying,
		"valid + huge tail":  append(bytes.Clone(valid), huge...),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			for _, c := range everyKind(t, f) {
				if _, _, err := c.open(in); err == nil {
					t.Errorf("%s opened junk", c.name)
				}
			}
		})
	}
}

// TestOpenOtherKeyTypes: only Ed25519 signers open; a valid signature by
// another key type is refused.
func TestOpenOtherKeyTypes(t *testing.T) {
	f := newFixture(t)
	for _, typ := range []int{crypto.Ed25519, crypto.Secp256k1, crypto.ECDSA} {
		t.Run(fmt.Sprint(typ), func(t *testing.T) {
			k, _, err := crypto.GenerateKeyPair(typ, 256)
			if err != nil {
				t.Fatal(err)
			}
			raw := testkit.Seal(t, f.att(0), k)
			s, err := protocol.Open[pb.Attestation](raw)
			if typ != crypto.Ed25519 {
				if err == nil {
					t.Fatalf("a %d key's envelope opened", typ)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Signer != testkit.ID(t, k) {
				t.Errorf("signer %s, want %s", s.Signer, testkit.ID(t, k))
			}
		})
	}
}
