package gossip

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/record"
)

const (
	propHosts   = 30 // hosts in the network
	propDials   = 6  // random peers each host dials
	propSeed    = 42 // the topology is the same for every run and both benchmarks
	propMinPeer = 3  // topic peers every host must see before timing
	propTimeout = 10 * time.Second
)

// propTopology is which hosts each host dials: propDials distinct others
// drawn from a seeded generator, checked to form one connected network.
func propTopology(b *testing.B) [][]int {
	b.Helper()
	rng := rand.New(rand.NewPCG(propSeed, propSeed))
	dials := make([][]int, propHosts)
	adj := make([][]int, propHosts)
	for i := range dials {
		for _, j := range rng.Perm(propHosts - 1)[:propDials] {
			if j >= i {
				j++ // skip ourselves
			}
			dials[i] = append(dials[i], j)
			adj[i], adj[j] = append(adj[i], j), append(adj[j], i)
		}
	}
	seen := map[int]bool{0: true}
	queue := []int{0}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, j := range adj[i] {
			if !seen[j] {
				seen[j] = true
				queue = append(queue, j)
			}
		}
	}
	if len(seen) != propHosts {
		b.Fatalf("seed %d gives a topology in %d-host parts; pick another", propSeed, len(seen))
	}
	return dials
}

// propNet is propHosts hosts on loopback TCP, connected by propTopology.
func propNet(b *testing.B) []host.Host {
	b.Helper()
	hosts := make([]host.Host, propHosts)
	for i := range hosts {
		hosts[i] = newHost(b)
	}
	var wg sync.WaitGroup
	errs := make(chan error, propHosts*propDials)
	for i, ds := range propTopology(b) {
		for _, j := range ds {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), propTimeout)
				defer cancel()
				if err := hosts[i].Connect(ctx, hosts[j].Peerstore().PeerInfo(hosts[j].ID())); err != nil {
					errs <- fmt.Errorf("host %d dialling %d: %w", i, j, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return hosts
}

// propRound is one published message on its way to every other host.
type propRound struct {
	data  []byte
	from  int // the publisher's index, whose own delivery does not count
	want  int // deliveries that complete the round
	start time.Time
	done  chan struct{} // closed at the want-th delivery

	mu  sync.Mutex
	lat []time.Duration // publish → delivery, in arrival order
}

// propRecorder times deliveries of the round in flight.
type propRecorder struct {
	cur     atomic.Pointer[propRound]
	strays  atomic.Int64 // deliveries of no round in flight: must stay 0
	samples []time.Duration
}

// delivered is called by host i's handler for every message it delivers.
func (r *propRecorder) delivered(i int, data []byte) {
	now := time.Now()
	rd := r.cur.Load()
	if rd == nil || !bytes.Equal(rd.data, data) {
		r.strays.Add(1)
		return
	}
	if i == rd.from {
		return
	}
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if len(rd.lat) == rd.want {
		r.strays.Add(1)
		return
	}
	rd.lat = append(rd.lat, now.Sub(rd.start))
	if len(rd.lat) == rd.want {
		close(rd.done)
	}
}

// propEnvelopes seals n fresh notes of an attestation's size (every one
// distinct: message IDs are content hashes).
func propEnvelopes(b testing.TB, first, n int) [][]byte {
	b.Helper()
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		b.Fatal(err)
	}
	out := make([][]byte, n)
	text := make([]byte, 256)
	for i := range out {
		copy(text, fmt.Sprintf("propagation %12d ", first+i))
		for j := 26; j < len(text); j++ {
			text[j] = 'a' + byte(j%26)
		}
		env, err := record.Seal(&note{text: string(text)}, sk)
		if err != nil {
			b.Fatal(err)
		}
		if out[i], err = env.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// runPropagation publishes one envelope per iteration, from each host in
// turn, and waits until every other host has delivered it. It reports the
// p50 and p99 of every publish → delivery latency.
func runPropagation(b *testing.B, rec *propRecorder, publish []func(context.Context, []byte) error, peers []func() int) {
	b.Helper()
	waitFor(b, "topic peers", func() bool {
		for _, p := range peers {
			if p() < propMinPeer {
				return false
			}
		}
		return true
	})
	ctx := context.Background()
	const batch = 1024
	msgs := propEnvelopes(b, 0, batch)
	round := func(i int) {
		rd := &propRound{data: msgs[i], from: i % propHosts, want: propHosts - 1,
			lat: make([]time.Duration, 0, propHosts-1), done: make(chan struct{})}
		rd.start = time.Now()
		rec.cur.Store(rd)
		if err := publish[rd.from](ctx, rd.data); err != nil {
			b.Fatal(err)
		}
		select {
		case <-rd.done:
		case <-time.After(propTimeout):
			rd.mu.Lock()
			n := len(rd.lat)
			rd.mu.Unlock()
			b.Fatalf("message %d from host %d: %d of %d hosts delivered it within %s", i, rd.from, n, rd.want, propTimeout)
		}
		rd.mu.Lock()
		rec.samples = append(rec.samples, rd.lat...)
		rd.mu.Unlock()
	}
	// Warm up: every host publishes once, so meshes and connections are in use.
	for i := range propHosts {
		round(i)
	}
	msgs = msgs[propHosts:]
	rec.samples = rec.samples[:0]
	i := 0
	for b.Loop() {
		if i == len(msgs) {
			b.StopTimer()
			msgs = append(msgs, propEnvelopes(b, len(msgs)+propHosts, batch)...)
			b.StartTimer()
		}
		round(i)
		i++
	}
	if n := rec.strays.Load(); n != 0 {
		b.Fatalf("%d deliveries of no message in flight", n)
	}
	slices.Sort(rec.samples)
	pct := func(p float64) float64 {
		return float64(rec.samples[int(p*float64(len(rec.samples)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkAttestationPropagation is one signed attestation-sized envelope
// published by one of 30 hosts (each dialling 6 random others over loopback
// TCP) until all 29 others have delivered it, through our gossip: our
// parameters, peer scoring, content-hash IDs and the envelope validator on
// every hop. p50-ms and p99-ms are over every publish → delivery latency.
func BenchmarkAttestationPropagation(b *testing.B) {
	hosts := propNet(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	rec := &propRecorder{}
	_, publish, peers := joinOurs(b, ctx, hosts, rec.delivered)
	runPropagation(b, rec, publish, peers)
}

// joinOurs runs our gossip on every host, joined to the attestations topic
// with deliver told of each message host i receives.
func joinOurs(b *testing.B, ctx context.Context, hosts []host.Host, deliver func(i int, data []byte)) ([]*Gossip, []func(context.Context, []byte) error, []func() int) {
	b.Helper()
	gs := make([]*Gossip, len(hosts))
	publish := make([]func(context.Context, []byte) error, len(hosts))
	peers := make([]func() int, len(hosts))
	for i, h := range hosts {
		g, err := New(ctx, h, "bench", DefaultConfig(), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { g.Close() })
		t, err := g.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), func(m *pubsub.Message) { deliver(i, m.Data) })
		if err != nil {
			b.Fatal(err)
		}
		gs[i], publish[i] = g, t.Publish
		peers[i] = func() int { return len(t.Peers()) }
	}
	return gs, publish, peers
}

// BenchmarkAttestationPropagationBaseline is the same network and messages
// through plain gossipsub: default options (flood publish on, as ours), no
// validator.
func BenchmarkAttestationPropagationBaseline(b *testing.B) {
	hosts := propNet(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	rec := &propRecorder{}
	publish := make([]func(context.Context, []byte) error, len(hosts))
	peers := make([]func() int, len(hosts))
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait) // after every subscription is cancelled (cleanups run last first)
	for i, h := range hosts {
		ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithFloodPublish(true))
		if err != nil {
			b.Fatal(err)
		}
		t, err := ps.Join(protocol.TopicID("bench", protocol.TopicAttestations))
		if err != nil {
			b.Fatal(err)
		}
		sub, err := t.Subscribe()
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					return
				}
				rec.delivered(i, m.Data)
			}
		})
		b.Cleanup(func() { sub.Cancel(); t.Close() })
		publish[i] = func(ctx context.Context, data []byte) error { return t.Publish(ctx, data) }
		peers[i] = func() int { return len(t.ListPeers()) }
	}
	runPropagation(b, rec, publish, peers)
}
