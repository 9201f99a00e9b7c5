package gossip

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// BenchmarkEnvelopeValidate is the cost of judging one signed gossip message:
// decode the envelope, check the payload type, verify the signature, decode
// the record.
func BenchmarkEnvelopeValidate(b *testing.B) {
	data := benchEnvelope(b)
	v := EnvelopeValidator(noteKind())
	ctx := context.Background()
	for b.Loop() {
		if res, err := v(ctx, "", data); err != nil {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkEnvelopeValidateBaseline is the floor: one plain Ed25519 verify
// of a message of the same size.
func BenchmarkEnvelopeValidateBaseline(b *testing.B) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	msg := benchEnvelope(b)
	sig := ed25519.Sign(priv, msg)
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

func benchEnvelope(b testing.TB) []byte {
	b.Helper()
	text := make([]byte, 256) // about the size of an attestation
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	return testkit.SealRecord(b, &note{text: string(text)}, nil)
}

// BenchmarkGossipDelivery is one signed message from publish on one host to
// delivery on another over loopback TCP, through our validators and scoring.
func BenchmarkGossipDelivery(b *testing.B) {
	ha, hb := newHost(b), newHost(b)
	testkit.Connect(b, ha, hb)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan struct{}, 1)
	ga, err := New(ctx, ha, "bench", DefaultConfig(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ga.Close()
	gb, err := New(ctx, hb, "bench", DefaultConfig(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer gb.Close()
	ta, err := ga.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := gb.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), func(*pubsub.Message) { got <- struct{}{} }); err != nil {
		b.Fatal(err)
	}
	waitFor(b, "peer", func() bool { return len(ta.Peers()) == 1 })
	benchDeliveries(b, func(m []byte) error { return ta.Publish(ctx, m) }, func() error { <-got; return nil })
}

// benchDeliveries publishes b.N envelopes one at a time, each once the one
// before was delivered: the same loop for the node's gossip and plain
// gossipsub.
func benchDeliveries(b *testing.B, publish func([]byte) error, delivered func() error) {
	msgs := make([][]byte, b.N)
	for i := range msgs {
		msgs[i] = benchEnvelope(b)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := publish(msgs[i]); err != nil {
			b.Fatal(err)
		}
		if err := delivered(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGossipDeliveryBaseline is the same with plain gossipsub: default
// options, no validator, messages of the same size.
func BenchmarkGossipDeliveryBaseline(b *testing.B) {
	ha, hb := newHost(b), newHost(b)
	testkit.Connect(b, ha, hb)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	psa, err := pubsub.NewGossipSub(ctx, ha, pubsub.WithFloodPublish(true))
	if err != nil {
		b.Fatal(err)
	}
	psb, err := pubsub.NewGossipSub(ctx, hb)
	if err != nil {
		b.Fatal(err)
	}
	ta, err := psa.Join("bench")
	if err != nil {
		b.Fatal(err)
	}
	tb, err := psb.Join("bench")
	if err != nil {
		b.Fatal(err)
	}
	sub, err := tb.Subscribe()
	if err != nil {
		b.Fatal(err)
	}
	waitFor(b, "peer", func() bool { return len(ta.ListPeers()) == 1 })
	benchDeliveries(b, func(m []byte) error { return ta.Publish(ctx, m) }, func() error { _, err := sub.Next(ctx); return err })
}
