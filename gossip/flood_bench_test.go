package gossip

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
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
	case f == nil:
		r.strays++
	// The publisher's own delivery can come after every other host's, on a
	// busy machine: it is no stray.
	case i == f.from || f.late:
	case f.n == propHosts-1:
		r.strays++
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
func (t *floodTracer) DropRPC(rpc *pubsub.RPC, _ peer.ID)             { t.dropped.Add(int64(len(rpc.Publish))) }
func (t *floodTracer) OnNewOutboundStream(peer.ID, libp2pprotocol.ID) {}
func (t *floodTracer) OnClosedOutboundStream(peer.ID)                 {}
func (t *floodTracer) Join(string)                                    {}
func (t *floodTracer) Leave(string)                                   {}
func (t *floodTracer) Graft(peer.ID, string)                          {}
func (t *floodTracer) Prune(peer.ID, string)                          {}
func (t *floodTracer) ValidateMessage(*pubsub.Message)                {}
func (t *floodTracer) DeliverMessage(*pubsub.Message)                 {}
func (t *floodTracer) RejectMessage(*pubsub.Message, string)          {}
func (t *floodTracer) DuplicateMessage(*pubsub.Message)               {}
func (t *floodTracer) ThrottlePeer(peer.ID)                           {}
func (t *floodTracer) RecvRPC(*pubsub.RPC)                            {}
func (t *floodTracer) SendRPC(*pubsub.RPC, peer.ID)                   {}
func (t *floodTracer) UndeliverableMessage(*pubsub.Message)           {}

var _ pubsub.RawTracer = (*floodTracer)(nil)

// forgedEnvelopes returns a maker of distinct invalid attestation envelopes:
// well-formed, of the attestation's kind and size, whose signature no longer
// covers the payload, so every honest hop pays a full verify to reject it.
func forgedEnvelopes(b testing.TB) func(k int) []byte {
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

// floodPeerEnv, set, makes the test binary the extra peer (TestFloodPeer).
const floodPeerEnv = "EPHEMERA_FLOOD_PEER"

// floodPeer is the extra peer, run as a process of its own at the lowest CPU
// priority: the benchmark measures what the flood costs the honest hosts
// (receiving, decrypting, decoding and judging it), not what publishing it
// costs the flooder, which on a real network runs on its own machine. In
// the benchmark's process, the flooder's router, its seen-cache and message
// cache of 10,000 messages a second and the garbage they make were charged
// to the honest hosts. The flood rate that reached the wire is reported, so
// a flooder starved of CPU does not pass for a defended network.
type floodPeer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	id  peer.ID
}

func startFloodPeer(b *testing.B) *floodPeer {
	b.Helper()
	bin, args := os.Args[0], []string{"-test.run=^TestFloodPeer$", "-test.count=1"}
	if nice, err := exec.LookPath("nice"); err == nil {
		bin, args = nice, append([]string{"-n", "19", os.Args[0]}, args...)
	} else {
		b.Logf("no nice(1): the flooder runs at the benchmark's own priority")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), floodPeerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f := &floodPeer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() {
		in.Close() // the flooder exits when its input ends
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if f.id, err = peer.Decode(f.expect(b, "id")[0]); err != nil {
		b.Fatal(err)
	}
	return f
}

// send gives the flooder one command.
func (f *floodPeer) send(b *testing.B, cmd ...string) {
	b.Helper()
	if _, err := fmt.Fprintln(f.in, strings.Join(cmd, " ")); err != nil {
		b.Fatalf("flooder: %v", err)
	}
}

// expect reads the flooder's output until its line of the given kind, and
// returns that line's fields; the test framework's own lines are skipped.
func (f *floodPeer) expect(b *testing.B, kind string) []string {
	b.Helper()
	for f.out.Scan() {
		fields := strings.Fields(f.out.Text())
		if len(fields) >= 2 && fields[0] == "flood:" && fields[1] == kind {
			return fields[2:]
		}
	}
	b.Fatalf("flooder exited before saying %q (%v)", kind, f.out.Err())
	return nil
}

// TestFloodPeer is the extra peer of BenchmarkFloodedPropagation, when the
// benchmark runs the test binary again as its flooder; otherwise it skips.
// It reads commands on stdin (dial ADDR, wait N, flood, stop) and says what
// it did on stdout, one "flood: KIND ..." line each. The extra peer is plain
// gossipsub: our message IDs and signature policy, no validator, a queue
// deep enough that its own router drops nothing.
func TestFloodPeer(t *testing.T) {
	if os.Getenv(floodPeerEnv) == "" {
		t.Skip("the flooder of BenchmarkFloodedPropagation, run by it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHost(t)
	tracer := &floodTracer{}
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMessageIdFn(MessageID),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithFloodPublish(true), pubsub.WithPeerOutboundQueueSize(1<<14),
		pubsub.WithRawTracer(tracer))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(protocol.TopicID("bench", protocol.TopicAttestations))
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	say := func(kind string, args ...any) {
		fmt.Println(append([]any{"flood:", kind}, args...)...)
	}
	say("id", h.ID())

	floodCtx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	var published, failed atomic.Int64
	var flooding sync.WaitGroup
	var start time.Time
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd := strings.Fields(in.Text())
		switch {
		case len(cmd) == 2 && cmd[0] == "dial":
			info, err := peer.AddrInfoFromP2pAddr(ma.StringCast(cmd[1]))
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Connect(ctx, *info); err != nil {
				t.Fatal(err)
			}
		case len(cmd) == 2 && cmd[0] == "wait":
			n, _ := strconv.Atoi(cmd[1])
			waitFor(t, "topic peers", func() bool { return len(topic.ListPeers()) >= n })
			say("peers", len(topic.ListPeers()))
		case len(cmd) == 1 && cmd[0] == "flood":
			forge := forgedEnvelopes(t)
			start = time.Now()
			flooding.Go(func() {
				for k := 0; floodCtx.Err() == nil; k++ {
					if k%floodBurst == 0 {
						if d := time.Until(start.Add(time.Duration(k) * time.Second / floodRate)); d > 0 {
							time.Sleep(d)
						}
					}
					if err := topic.Publish(floodCtx, forge(k)); err != nil {
						failed.Add(1)
						continue
					}
					published.Add(1)
				}
			})
		case len(cmd) == 1 && cmd[0] == "stop":
			stopFlood()
			flooding.Wait()
			say("stats", published.Load(), failed.Load(), tracer.sent.Load(), tracer.dropped.Load())
			return
		default:
			t.Fatalf("flooder: unknown command %q", in.Text())
		}
	}
}

// runFlooded is the propagation network (propHosts hosts through our gossip)
// plus one extra peer (floodPeer, a process of its own), dialled to
// floodNeighbours. Honest hosts publish valid attestations at a steady rate
// for floodWindow per iteration; with flood, the extra peer publishes forged
// ones at floodRate from the first iteration to the last. Without, it stays
// connected and silent: the clean run.
func runFlooded(b *testing.B, flood bool) {
	hosts := propNet(b)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	rec := &floodRecorder{inflight: map[string]*floodFlight{}}
	gs, publish, peers := joinOurs(b, ctx, hosts, rec.delivered)

	fp := startFloodPeer(b)
	for _, j := range floodNeighbours {
		fp.send(b, "dial", fmt.Sprintf("%s/p2p/%s", hosts[j].Addrs()[0], hosts[j].ID()))
	}
	fp.send(b, "wait", strconv.Itoa(len(floodNeighbours)))
	fp.expect(b, "peers")
	waitFor(b, "topic peers", func() bool {
		for _, p := range peers {
			if p() < propMinPeer {
				return false
			}
		}
		return true
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
	var graylisted atomic.Int64 // ns from flood start until all neighbours graylist it; 0 until then
	var cutOff atomic.Int64     // ns from flood start until all neighbours have closed it; 0 until then
	var floodStart, floodEnd time.Time
	var floodWG sync.WaitGroup
	if flood {
		fp.send(b, "flood")
		floodStart = time.Now()
		floodWG.Go(func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for graylisted.Load() == 0 || cutOff.Load() == 0 {
				select {
				case <-floodCtx.Done():
					return
				case <-tick.C:
				}
				gray, cut := true, true
				for _, j := range floodNeighbours {
					gray = gray && gs[j].PeerScore(fp.id) < GraylistThreshold()
					cut = cut && hosts[j].Network().Connectedness(fp.id) != network.Connected
				}
				if gray && graylisted.Load() == 0 {
					graylisted.Store(int64(time.Since(floodStart)))
				}
				if cut && cutOff.Load() == 0 {
					cutOff.Store(int64(time.Since(floodStart)))
				}
			}
		})
	}

	undelivered := 0
	perWindow := int(floodHonestRate * floodWindow / time.Second)
	first := propHosts
	cpu0, wall0 := processCPU(b), time.Now()
	for b.Loop() {
		b.StopTimer()
		msgs := propEnvelopes(b, first, perWindow)
		first += perWindow
		b.StartTimer()
		undelivered += rec.window(b, publish, msgs, &next)
	}
	// The honest hosts' CPU, all of this process's since the flooder has its
	// own: unlike latency, it hardly moves with what else the machine runs.
	cpu := float64(processCPU(b)-cpu0) / float64(time.Since(wall0))

	var published, failed, sent, dropped int64
	if flood {
		for graylisted.Load() == 0 && time.Since(floodStart) < floodGraylist {
			time.Sleep(10 * time.Millisecond)
		}
		fp.send(b, "stop")
		floodEnd = time.Now()
		stats := fp.expect(b, "stats")
		stopFlood()
		floodWG.Wait()
		n := make([]int64, len(stats))
		for k, f := range stats {
			n[k], _ = strconv.ParseInt(f, 10, 64)
		}
		published, failed, sent, dropped = n[0], n[1], n[2], n[3]
		if graylisted.Load() == 0 {
			scores := make([]float64, len(floodNeighbours))
			for k, j := range floodNeighbours {
				scores[k] = gs[j].PeerScore(fp.id)
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
	b.ReportMetric(cpu, "cpus")
	if flood {
		secs := floodEnd.Sub(floodStart).Seconds()
		b.ReportMetric(time.Duration(graylisted.Load()).Seconds(), "graylisted-s")
		if c := cutOff.Load(); c != 0 {
			b.ReportMetric(time.Duration(c).Seconds(), "cut-off-s")
		}
		// The flood goes on after graylisting, to neighbours that still
		// read it unless they have cut the flooder off.
		b.ReportMetric(pct(after, 0.99), "p99-after-graylist-ms")
		b.ReportMetric(float64(sent)/float64(len(floodNeighbours))/secs, "flood-msgs/s")
		b.Logf("flooder: %d published (%.0f/s, %d failed) over %.1fs; %d sent, %d dropped on the wire to %d neighbours",
			published, float64(published)/secs, failed, secs, sent, dropped, len(floodNeighbours))
		if rate := float64(published) / secs; rate < 0.9*floodRate {
			b.Logf("the flooder, starved of CPU, published %.0f/s of the %d/s intended: these figures understate the flood", rate, floodRate)
		}
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFloodedPropagation is valid signed attestations published at
// floodHonestRate/s, each by one of the propagation benchmark's 30 hosts in
// turn, while an extra peer dialled to 4 of them publishes forged
// attestation envelopes (well-formed, bad signature, all distinct) at up to
// 10,000/s through plain gossipsub, from a process of its own at the lowest
// CPU priority (floodPeer). p50-ms and p99-ms are over every publish →
// delivery latency of the honest messages (an undelivered one counts as
// propTimeout); cpus is the CPUs the honest hosts kept busy meanwhile (this
// process's CPU time over the wall time); graylisted-s is the time from the
// first forged envelope until every neighbour's score for the flooder is
// below GraylistThreshold (read through PeerScore, so at most a second
// late), cut-off-s until every neighbour has closed its connections (absent
// if they never did); flood-msgs/s is forged envelopes that reached the
// wire, per neighbour, per second of the flood: it falls once the flooder is
// cut off.
func BenchmarkFloodedPropagation(b *testing.B) { runFlooded(b, true) }

// BenchmarkFloodedPropagationBaseline is the same network, honest traffic and
// extra peer (its process too), which stays silent: the clean run.
func BenchmarkFloodedPropagationBaseline(b *testing.B) { runFlooded(b, false) }
