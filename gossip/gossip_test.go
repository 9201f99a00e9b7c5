package gossip

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// note is a signed message kind used only by these tests.
type note struct{ text string }

func (n *note) Domain() string                 { return "ephemera-test-note" }
func (n *note) Codec() []byte                  { return []byte{0x03, 0x99} }
func (n *note) MarshalRecord() ([]byte, error) { return []byte(n.text), nil }
func (n *note) UnmarshalRecord(b []byte) error {
	if len(b) == 0 {
		return errors.New("empty note")
	}
	n.text = string(b)
	return nil
}

// other has another domain and codec: its envelopes must not pass as notes.
type other struct{ note }

func (o *other) Domain() string { return "ephemera-test-other" }
func (o *other) Codec() []byte  { return []byte{0x03, 0x98} }

func noteKind() Kind {
	return Kind{
		New: func() record.Record { return &note{} },
		Check: func(_ context.Context, _ peer.ID, _ *record.Envelope, rec record.Record, _ []byte) (pubsub.ValidationResult, error) {
			if strings.HasPrefix(rec.(*note).text, "old:") {
				return pubsub.ValidationIgnore, errors.New("stale")
			}
			return pubsub.ValidationAccept, nil
		},
	}
}

// gatedHost refuses the peers gossip cuts off, as *p2p.Host does, without
// the rest of a node's host (DHT, resource limits).
type gatedHost struct {
	host.Host
	gater *p2p.Gater
}

func (h gatedHost) BlockPeer(p peer.ID, d time.Duration) {
	h.gater.Block(p, d)
	h.Network().ClosePeer(p)
}

func newHost(t testing.TB) host.Host {
	t.Helper()
	gater := p2p.NewGater()
	return gatedHost{testkit.Host(t, nil, libp2p.ConnectionGater(gater)), gater}
}

type inbox struct {
	mu   sync.Mutex
	msgs []string
}

func (in *inbox) handle(m *pubsub.Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, string(m.Data))
}

func (in *inbox) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.msgs)
}

func newGossip(t *testing.T, h host.Host, reg prometheus.Registerer, in *inbox) (*Gossip, *Topic) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(ctx, h, "testnet", DefaultConfig(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := g.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), in.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); cancel() })
	return g, topic
}

// waitFor gives gossip's meshes and heartbeats 15 s.
// newPublisher is gossip on h for a node that subscribes to nothing (a
// miner), joined to the attestations topic only to publish.
func newPublisher(t *testing.T, h host.Host) (*Gossip, *Topic) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(ctx, h, "testnet", DefaultConfig(), nil, nil, Fanout())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); cancel() })
	topic, err := g.JoinToPublish(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()))
	if err != nil {
		t.Fatal(err)
	}
	return g, topic
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, what, 15*time.Second, cond)
}

func TestTopicIDCarriesNetwork(t *testing.T) {
	if got := protocol.TopicID("devnet", protocol.TopicAttestations); got != "/ephemera/devnet/attestations/1" {
		t.Fatalf("TopicID = %q", got)
	}
}

func TestMessageIDIsContentHash(t *testing.T) {
	a := &pb.Message{Data: []byte("x"), From: []byte("alice")}
	b := &pb.Message{Data: []byte("x"), From: []byte("bob")}
	if MessageID(a) != MessageID(b) {
		t.Fatal("same content, different IDs")
	}
	if h := sha256.Sum256([]byte("x")); MessageID(a) != string(h[:]) {
		t.Fatal("ID is not the SHA-256 of the data")
	}
}

func TestScoreParamsAreValid(t *testing.T) {
	// pubsub validates parameters when a router is built; New fails on bad ones.
	h := newHost(t)
	if _, err := New(context.Background(), h, "x", DefaultConfig(), nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestEnvelopeValidator(t *testing.T) {
	v := EnvelopeValidator(noteKind())
	cases := []struct {
		name string
		data []byte
		want pubsub.ValidationResult
	}{
		{"signed note", testkit.SealRecord(t, &note{text: "hello"}, nil), pubsub.ValidationAccept},
		{"stale note", testkit.SealRecord(t, &note{text: "old:hello"}, nil), pubsub.ValidationIgnore},
		{"garbage", []byte("not an envelope"), pubsub.ValidationReject},
		{"empty", nil, pubsub.ValidationReject},
		{"kind not on this topic", testkit.SealRecord(t, &other{note{text: "hi"}}, nil), pubsub.ValidationReject},
		{"payload the kind cannot decode", testkit.SealRecord(t, &note{text: ""}, nil), pubsub.ValidationReject},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := v(context.Background(), "", c.data)
			if got != c.want {
				t.Fatalf("got %v (%v), want %v", got, err, c.want)
			}
			if got != pubsub.ValidationAccept && err == nil {
				t.Fatal("a refusal must say why")
			}
		})
	}
}

func TestForgedSignatureRejected(t *testing.T) {
	data := testkit.SealRecord(t, &note{text: "hello"}, nil)
	env, err := record.UnmarshalEnvelope(data)
	if err != nil {
		t.Fatal(err)
	}
	env.RawPayload = []byte("hellO") // signature no longer covers the payload
	forged, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := EnvelopeValidator(noteKind())(context.Background(), "", forged); got != pubsub.ValidationReject {
		t.Fatalf("forged envelope: %v, want reject", got)
	}
}

func TestDeliveryAndRejectionAcrossHosts(t *testing.T) {
	ha, hb := newHost(t), newHost(t)
	testkit.Connect(t, ha, hb)
	regB := prometheus.NewRegistry()
	var inA, inB inbox
	gA, topicA := newGossip(t, ha, nil, &inA)
	gB, _ := newGossip(t, hb, regB, &inB)
	waitFor(t, "mesh", func() bool { return len(topicA.Peers()) == 1 })

	if err := topicA.Publish(context.Background(), testkit.SealRecord(t, &note{text: "hello"}, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery", func() bool { return inB.count() == 1 })
	if inA.count() != 1 {
		t.Fatalf("publisher saw %d of its own messages, want 1", inA.count())
	}
	// Our own validator refuses to publish garbage.
	if err := topicA.Publish(context.Background(), []byte("garbage")); err == nil {
		t.Fatal("publishing an invalid message succeeded")
	}
	accepted := testutil.ToFloat64(mustCounter(t, regB, protocol.TopicAttestations, "accept"))
	if accepted != 1 {
		t.Fatalf("accepted counter = %v, want 1", accepted)
	}
	// Counts reads the same counters, whether or not a registry exports them.
	if c := gB.Counts()[protocol.TopicAttestations]; c != (TopicCounts{Accept: 1}) {
		t.Errorf("receiver's counts %+v, want one accepted", c)
	}
	if c := gA.Counts()[protocol.TopicAttestations]; c.Published != 1 {
		t.Errorf("publisher's counts %+v, want one published", c)
	}
}

// A peer that floods invalid messages loses score until it is graylisted.
func TestInvalidSenderLosesScore(t *testing.T) {
	honest, attacker := newHost(t), newHost(t)
	testkit.Connect(t, attacker, honest)
	reg := prometheus.NewRegistry()
	var in inbox
	g, _ := newGossip(t, honest, reg, &in)

	// The attacker runs gossipsub without our validators.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps, err := pubsub.NewGossipSub(ctx, attacker, pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor())
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(protocol.TopicID("testnet", protocol.TopicAttestations))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "attacker sees the honest peer", func() bool { return len(topic.ListPeers()) == 1 })
	const sent = 200
	for i := range sent {
		if err := topic.Publish(ctx, []byte("junk-"+string(rune('a'+i%26))+time.Now().String())); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "attacker graylisted", func() bool { return g.PeerScore(attacker.ID()) < GraylistThreshold() })
	if n := in.count(); n != 0 {
		t.Fatalf("%d invalid messages were delivered", n)
	}
	if rejected := testutil.ToFloat64(mustCounter(t, reg, protocol.TopicAttestations, "reject")); rejected < 1 {
		t.Fatalf("reject counter = %v", rejected)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, topic, outcome string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ephemera_gossip_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["topic"] == topic && labels["outcome"] == outcome {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatalf("no ephemera_gossip_messages_total{topic=%q,outcome=%q}", topic, outcome)
	return nil
}

// A node hands gossip.New its *p2p.Host, which is how cut-off peers are
// refused: no other wiring.
var _ PeerBlocker = (*p2p.Host)(nil)

// nodeHost is a node's own host, with its gater, DHT and limits.
func nodeHost(t *testing.T) *p2p.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := p2p.DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	h, err := p2p.New(cfg, p2p.Options{Network: "testnet", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// A peer that floods invalid messages is cut off: disconnected, refused
// both ways, counted and logged once. An honest peer of the same node stays
// connected and its messages still arrive.
func TestFloodingPeerCutOff(t *testing.T) {
	node, honest, flooder := nodeHost(t), newHost(t), newHost(t)
	testkit.Connect(t, honest, node)
	testkit.Connect(t, flooder, node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	reg := prometheus.NewRegistry()
	var logs logging.Buffer
	var in inbox
	g, err := New(ctx, node, "testnet", DefaultConfig(), reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if _, err := g.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), in.handle); err != nil {
		t.Fatal(err)
	}
	_, honestTopic := newGossip(t, honest, nil, &inbox{})

	// The flooder runs gossipsub without our validators.
	ps, err := pubsub.NewGossipSub(ctx, flooder, pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor())
	if err != nil {
		t.Fatal(err)
	}
	flood, err := ps.Join(protocol.TopicID("testnet", protocol.TopicAttestations))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flooder to see the node", func() bool { return len(flood.ListPeers()) == 1 })
	waitFor(t, "the honest peer to see the node", func() bool { return len(honestTopic.Peers()) == 1 })
	for i := range 200 {
		if err := flood.Publish(ctx, fmt.Appendf(nil, "junk %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, "the flooder to be disconnected", func() bool {
		return node.Network().Connectedness(flooder.ID()) != network.Connected
	})
	if until, ok := node.BlockedUntil(flooder.ID()); !ok || time.Until(until) < CutOffPeriod-time.Minute {
		t.Fatalf("flooder blocked until %v (%v), want about %s from now", until, ok, CutOffPeriod)
	}
	// Refused both ways: the node does not dial it, and closes its dials at
	// once (it may see the connection for the moment the handshake takes).
	if err := node.Connect(ctx, peer.AddrInfo{ID: flooder.ID(), Addrs: flooder.Addrs()}); err == nil {
		t.Fatal("the node dialled the peer it cut off")
	}
	waitFor(t, "the flooder to see itself disconnected", func() bool {
		return flooder.Network().Connectedness(node.ID()) != network.Connected
	})
	_ = flooder.Connect(ctx, peer.AddrInfo{ID: node.ID(), Addrs: node.Addrs()})
	waitFor(t, "the flooder's new connection to be closed", func() bool {
		return flooder.Network().Connectedness(node.ID()) != network.Connected
	})
	if n := len(node.Network().ConnsToPeer(flooder.ID())); n != 0 {
		t.Fatalf("the node holds %d connections with the peer it cut off", n)
	}

	// The honest peer is still there, and heard.
	if got := node.Network().Connectedness(honest.ID()); got != network.Connected {
		t.Fatalf("the honest peer is %v, want connected", got)
	}
	if err := honestTopic.Publish(ctx, testkit.SealRecord(t, &note{text: "still heard"}, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the honest message", func() bool { return in.count() == 1 })

	// Counted and logged once, however many messages the flooder sent.
	time.Sleep(2 * scoreInspectPeriod) // the score inspection sees it graylisted, too
	if n := cutOffs(t, reg); n != 1 {
		t.Fatalf("cut-off counter = %v, want 1", n)
	}
	if n := logs.Count("gossip peer cut off"); n != 1 {
		t.Fatalf("cut-off logged %d times, want once", n)
	}
}

func TestInvalidToGraylist(t *testing.T) {
	n := invalidToGraylist()
	score := func(n float64) float64 {
		tp := topicScoreParams()
		return scoreParams(nil).TopicScoreCap + n*n*tp.InvalidMessageDeliveriesWeight*tp.TopicWeight
	}
	// The limit is the boundary itself: any count past it graylists, none
	// below does, and the 13th REJECT is the first whole one past it.
	if score(n+0.001) >= GraylistThreshold() || score(n-0.001) < GraylistThreshold() {
		t.Fatalf("limit %v: score just past it %v, just below it %v; graylist threshold %v", n, score(n+0.001), score(n-0.001), GraylistThreshold())
	}
	if n <= 12 || n >= 13 {
		t.Fatalf("limit %v, want between 12 and 13", n)
	}
	// 13 REJECTs within 20 s come to more than the limit, faded.
	f := topicScoreParams().InvalidMessageDeliveriesDecay
	if faded := 1 + 12*math.Pow(f, float64(20*time.Second/decayInterval)); faded <= n {
		t.Fatalf("13 REJECTs within 20 s count %v, not past the limit %v", faded, n)
	}
}

// cutOffs sums the cut-off counter over its reasons.
func cutOffs(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "ephemera_gossip_peers_cut_off_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// A node joined only to publish (a miner) gets its messages to the topic's
// subscribers by fanout, and receives none of theirs.
func TestJoinToPublish(t *testing.T) {
	hm, hb, hc := newHost(t), newHost(t), newHost(t)
	testkit.Connect(t, hm, hb)
	testkit.Connect(t, hm, hc)
	testkit.Connect(t, hb, hc)
	var inB, inC inbox
	_, topicB := newGossip(t, hb, nil, &inB)
	newGossip(t, hc, nil, &inC)
	gm, topicM := newPublisher(t, hm)
	ctx := t.Context()
	waitFor(t, "the subscribers known", func() bool { return len(topicM.Peers()) == 2 })
	if err := topicM.Publish(ctx, testkit.SealRecord(t, &note{text: "record"}, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery to both subscribers", func() bool { return inB.count() == 1 && inC.count() == 1 })
	if err := topicB.Publish(ctx, testkit.SealRecord(t, &note{text: "verdict"}, nil)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery to the other subscriber", func() bool { return inC.count() == 2 })
	time.Sleep(500 * time.Millisecond)
	if c := gm.Counts()[protocol.TopicAttestations]; c.Accept != c.Published || c.Published != 1 {
		t.Errorf("the publisher's counts %+v: it validated a message not its own", c)
	}
}
