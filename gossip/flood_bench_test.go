package gossip

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

const (
	floodRate       = 10000           // invalid envelopes per second the flooder aims at
	floodBurst      = 10              // envelopes published between two pacing checks
	floodHonestRate = 20              // valid attestations per second, from each honest host in turn
	floodWindow     = 5 * time.Second // one iteration: honest traffic at floodHonestRate
	floodGraylist   = 15 * time.Second
)

// floodNeighbours are the honest hosts (propNet indices) the extra peer dials.
var floodNeighbours = []int{0, 7, 14, 21}

// floodFlight is one honest message on its way to every other host.
type floodFlight struct {
	from  int
	start time.Time
	n     int           // deliveries so far, the publisher's own excluded
	done  chan struct{} // closed at the (propHosts-1)-th delivery
	late  bool          // given up on: later deliveries are not counted
}

// floodSample is one publish → delivery latency.
type floodSample struct {
	start time.Time // when the message was published
	lat   time.Duration
}

// floodRecorder times deliveries of many messages in flight at once.
type floodRecorder struct {
	mu       sync.Mutex
	inflight map[string]*floodFlight // by message data
	samples  []floodSample
	strays   int // deliveries of no honest message in flight: must stay 0
}

func (r *floodRecorder) delivered(i int, data []byte) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.inflight[string(data)]
	switch {
	case f == nil || f.n == propHosts-1:
		r.strays++
	case i == f.from || f.late:
	default:
		r.samples = append(r.samples, floodSample{f.start, now.Sub(f.start)})
		if f.n++; f.n == propHosts-1 {
			close(f.done)
		}
	}
}

// window publishes msgs at floodHonestRate, each from the next host in turn,
// then waits (at most propTimeout) for every other host to deliver each. A
// delivery that never came counts as propTimeout late; it returns how many.
func (r *floodRecorder) window(b *testing.B, publish []func(context.Context, []byte) error, msgs [][]byte, next *int) int {
	b.Helper()
	ctx := context.Background()
	flights := make([]*floodFlight, len(msgs))
	t0 := time.Now()
	for k, m := range msgs {
		if d := time.Until(t0.Add(time.Duration(k) * time.Second / floodHonestRate)); d > 0 {
			time.Sleep(d)
		}
		f := &floodFlight{from: *next % propHosts, done: make(chan struct{})}
		*next++
		flights[k] = f
		r.mu.Lock()
		f.start = time.Now()
		r.inflight[string(m)] = f
		r.mu.Unlock()
		if err := publish[f.from](ctx, m); err != nil {
			b.Fatalf("host %d publishing: %v", f.from, err)
		}
	}
	wait, cancel := context.WithTimeout(ctx, propTimeout)
	defer cancel()
	missing := 0
	for _, f := range flights {
		select {
		case <-f.done:
			continue
		case <-wait.Done():
		}
		r.mu.Lock()
		if f.n < propHosts-1 && !f.late {
			f.late = true
			missing += propHosts - 1 - f.n
			for range propHosts - 1 - f.n {
				r.samples = append(r.samples, floodSample{f.start, propTimeout})
			}
		}
		r.mu.Unlock()
	}
	return missing
}

// floodTracer counts the flooder's messages that reached the wire.
type floodTracer struct{ sent, dropped atomic.Int64 }

func (t *floodTracer) SendRPCCompleted(rpc *pubsub.RPC, _ peer.ID, _ time.Duration) {
	t.sent.Add(int64(len(rpc.Publish)))
}
func (t *floodTracer) DropRPC(rpc *pubsub.RPC, _ peer.ID)       { t.dropped.Add(int64(len(rpc.Publish))) }
func (t *floodTracer) OnNewOutboundStream(peer.ID, protocol.ID) {}
func (t *floodTracer) OnClosedOutboundStream(peer.ID)           {}
func (t *floodTracer) Join(string)                              {}
func (t *floodTracer) Leave(string)                             {}
func (t *floodTracer) Graft(peer.ID, string)                    {}
func (t *floodTracer) Prune(peer.ID, string)                    {}
func (t *floodTracer) ValidateMessage(*pubsub.Message)          {}
func (t *floodTracer) DeliverMessage(*pubsub.Message)           {}
func (t *floodTracer) RejectMessage(*pubsub.Message, string)    {}
func (t *floodTracer) DuplicateMessage(*pubsub.Message)         {}
func (t *floodTracer) ThrottlePeer(peer.ID)                     {}
func (t *floodTracer) RecvRPC(*pubsub.RPC)                      {}
func (t *floodTracer) SendRPC(*pubsub.RPC, peer.ID)             {}
func (t *floodTracer) UndeliverableMessage(*pubsub.Message)     {}

var _ pubsub.RawTracer = (*floodTracer)(nil)

// forgedEnvelopes returns a maker of distinct invalid attestation envelopes:
// well-formed, of the attestation's kind and size, whose signature no longer
// covers the payload, so every honest hop pays a full verify to reject it.
func forgedEnvelopes(b *testing.B) func(k int) []byte {
	b.Helper()
	tmpl := propEnvelopes(b, -1, 1)[0]
	at := bytes.Index(tmpl, []byte("propagation "))
	if at < 0 {
		b.Fatal("no payload text in the envelope")
	}
	at += len("propagation ")
	forge := func(k int) []byte {
		out := slices.Clone(tmpl)
		copy(out[at:at+12], fmt.Sprintf("%12d", k))
		out[at+12] = 'X' // never equal to the signed text, even for k = -1
		return out
	}
	if res, err := EnvelopeValidator(noteKind())(context.Background(), "", forge(0)); res != pubsub.ValidationReject {
		b.Fatalf("forged envelope judged %v (%v), want reject", res, err)
	}
	return forge
}

// runFlooded is the propagation network (propHosts hosts through our gossip)
// plus one extra peer, running plain gossipsub with no validator, dialled to
// floodNeighbours. Honest hosts publish valid attestations at a steady rate
// for floodWindow per iteration; with flood, the extra peer publishes forged
// ones at floodRate from the first iteration to the last. Without, it stays
// connected and silent: the clean run.
func runFlooded(b *testing.B, flood bool) {
	hosts := propNet(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	rec := &floodRecorder{inflight: map[string]*floodFlight{}}
	publish := make([]func(context.Context, []byte) error, len(hosts))
	peers := make([]func() int, len(hosts))
	gs := make([]*Gossip, len(hosts))
	for i, h := range hosts {
		g, err := New(ctx, h, "bench", DefaultConfig(), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { g.Close() })
		t, err := g.Join(ctx, Attestations, EnvelopeValidator(noteKind()), func(m *pubsub.Message) { rec.delivered(i, m.Data) })
		if err != nil {
			b.Fatal(err)
		}
		gs[i] = g
		publish[i] = t.Publish
		peers[i] = func() int { return len(t.Peers()) }
	}

	// The extra peer: plain gossipsub, our message IDs and signature policy,
	// no validator, a queue deep enough that its own router drops nothing.
	fh := newHost(b)
	tracer := &floodTracer{}
	fps, err := pubsub.NewGossipSub(ctx, fh, pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithFloodPublish(true), pubsub.WithPeerOutboundQueueSize(1<<14),
		pubsub.WithRawTracer(tracer))
	if err != nil {
		b.Fatal(err)
	}
	ft, err := fps.Join(TopicID("bench", Attestations))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ft.Close() })
	for _, j := range floodNeighbours {
		connect(b, fh, hosts[j])
	}
	waitFor(b, "topic peers", func() bool {
		for _, p := range peers {
			if p() < propMinPeer {
				return false
			}
		}
		return len(ft.ListPeers()) == len(floodNeighbours)
	})

	// Warm up: every host publishes once, so meshes and connections are in use.
	next := 0
	if n := rec.window(b, publish, propEnvelopes(b, 0, propHosts), &next); n != 0 {
		b.Fatalf("warm-up: %d deliveries missing", n)
	}
	rec.mu.Lock()
	rec.samples, rec.inflight = rec.samples[:0], map[string]*floodFlight{}
	rec.mu.Unlock()

	// The flood and the graylist watch start with the measurement.
	floodCtx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	var published, failed atomic.Int64
	var graylisted atomic.Int64 // ns from flood start until all neighbours graylist it; 0 until then
	var floodStart, floodEnd time.Time
	var floodWG sync.WaitGroup
	if flood {
		forge := forgedEnvelopes(b)
		floodStart = time.Now()
		floodWG.Go(func() {
			for k := 0; floodCtx.Err() == nil; k++ {
				if k%floodBurst == 0 {
					if d := time.Until(floodStart.Add(time.Duration(k) * time.Second / floodRate)); d > 0 {
						time.Sleep(d)
					}
				}
				if err := ft.Publish(floodCtx, forge(k)); err != nil {
					failed.Add(1)
					continue
				}
				published.Add(1)
			}
		})
		floodWG.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-floodCtx.Done():
					return
				case <-tick.C:
				}
				all := true
				for _, j := range floodNeighbours {
					all = all && gs[j].PeerScore(fh.ID()) < GraylistThreshold()
				}
				if all {
					graylisted.Store(int64(time.Since(floodStart)))
					return
				}
			}
		})
	}

	undelivered := 0
	perWindow := int(floodHonestRate * floodWindow / time.Second)
	first := propHosts
	for b.Loop() {
		b.StopTimer()
		msgs := propEnvelopes(b, first, perWindow)
		first += perWindow
		b.StartTimer()
		undelivered += rec.window(b, publish, msgs, &next)
	}

	if flood {
		for graylisted.Load() == 0 && time.Since(floodStart) < floodGraylist {
			time.Sleep(10 * time.Millisecond)
		}
		stopFlood()
		floodEnd = time.Now()
		floodWG.Wait()
		if graylisted.Load() == 0 {
			scores := make([]float64, len(floodNeighbours))
			for k, j := range floodNeighbours {
				scores[k] = gs[j].PeerScore(fh.ID())
			}
			b.Fatalf("flooder not graylisted by every neighbour within %s: scores %v, threshold %v", floodGraylist, scores, GraylistThreshold())
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.strays != 0 {
		b.Fatalf("%d deliveries of no honest message in flight (an invalid one delivered?)", rec.strays)
	}
	pct := func(s []time.Duration, p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		slices.Sort(s)
		return float64(s[int(p*float64(len(s)-1))]) / float64(time.Millisecond)
	}
	var all, after []time.Duration // after: of messages published once the flooder was graylisted
	for _, s := range rec.samples {
		all = append(all, s.lat)
		if flood && s.start.After(floodStart.Add(time.Duration(graylisted.Load()))) {
			after = append(after, s.lat)
		}
	}
	b.ReportMetric(pct(all, 0.50), "p50-ms")
	b.ReportMetric(pct(all, 0.99), "p99-ms")
	b.ReportMetric(float64(undelivered), "undelivered")
	if flood {
		secs := floodEnd.Sub(floodStart).Seconds()
		b.ReportMetric(time.Duration(graylisted.Load()).Seconds(), "graylisted-s")
		// The flood goes on after graylisting: neighbours still read and
		// decode what they then drop, and the flooder runs on the same CPUs.
		b.ReportMetric(pct(after, 0.99), "p99-after-graylist-ms")
		b.ReportMetric(float64(tracer.sent.Load())/float64(len(floodNeighbours))/secs, "flood-msgs/s")
		b.Logf("flooder: %d published (%.0f/s, %d failed) over %.1fs; %d sent, %d dropped on the wire to %d neighbours",
			published.Load(), float64(published.Load())/secs, failed.Load(), secs, tracer.sent.Load(), tracer.dropped.Load(), len(floodNeighbours))
	}
}

// BenchmarkFloodedPropagation is valid signed attestations published at
// floodHonestRate/s, each by one of the propagation benchmark's 30 hosts in
// turn, while an extra peer dialled to 4 of them publishes forged
// attestation envelopes (well-formed, bad signature, all distinct) at up to
// 10,000/s through plain gossipsub. p50-ms and p99-ms are over every publish
// → delivery latency of the honest messages (an undelivered one counts as
// propTimeout); graylisted-s is the time from the first forged envelope until
// every neighbour's score for the flooder is below GraylistThreshold (read
// through PeerScore, so at most a second late); flood-msgs/s is forged
// envelopes that reached the wire, per neighbour, per second.
func BenchmarkFloodedPropagation(b *testing.B) { runFlooded(b, true) }

// BenchmarkFloodedPropagationBaseline is the same network, honest traffic and
// extra peer, which stays silent: the clean run.
func BenchmarkFloodedPropagationBaseline(b *testing.B) { runFlooded(b, false) }
