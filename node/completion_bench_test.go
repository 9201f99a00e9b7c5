package node_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
	"github.com/libp2p/go-libp2p/core/peer"
)

// benchWindow is how long one throughput figure is measured, after a
// second of warm-up.
const benchWindow = 5 * time.Second

// rateNet is a testnet of builtin miners and routers for the throughput
// benchmarks.
type rateNet struct {
	tn      *testnet.Testnet
	routers []*node.Node
	miners  int
}

func startRateNet(b *testing.B, name string, miners, routers int) rateNet {
	b.Helper()
	tn := localnet.Start(b, testnet.Spec{Network: name, Bootstraps: 1, Oracles: 3, Miners: miners, Routers: routers},
		&tunedLauncher{round: benchRound})
	return rateNet{tn: tn, routers: localnet.WithRole(tn, node.RoleRouter), miners: miners}
}

// waitAllAvailable waits until every miner is available in the testnet's pool.
func (rn rateNet) waitAllAvailable(b *testing.B) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchAvailTimeout)
	defer cancel()
	if _, err := rn.tn.WaitPool(ctx, "every miner available", func(m []api.PoolMiner) bool {
		return testnet.CountState(m, "available") == rn.miners
	}); err != nil {
		b.Fatal(err)
	}
}

// load runs clients goroutines calling do in a loop: a second of warm-up,
// then benchWindow measured. It reports completions/s, p50/p99 and the
// calls that failed.
func load(b *testing.B, clients int, do func() error) {
	b.Helper()
	var (
		mu     sync.Mutex
		lat    latencies
		done   atomic.Int64
		failed atomic.Int64
	)
	warm := time.Now().Add(time.Second)
	stop := warm.Add(benchWindow)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				start := time.Now()
				if !start.Before(stop) {
					return
				}
				err := do()
				if start.Before(warm) {
					continue
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				done.Add(1)
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(done.Load())/benchWindow.Seconds(), "completions/s")
	b.ReportMetric(float64(failed.Load()), "failed")
	lat.report(b)
}

// postChat is one chat completion through a router's HTTP API.
func postChat(client *http.Client, url string) error {
	body := `{"messages":[{"role":"user","content":"` + benchPrompt + `"}]}`
	resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), "42") {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, raw)
	}
	return nil
}

// sessionTask is one task on an open session, submitted and awaited in
// process: the session protocol without the endpoint.
func sessionTask(sm *session.Manager, id string) error {
	ctx := context.Background()
	t, err := sm.Submit(ctx, id, ask(benchPrompt))
	if err != nil {
		return err
	}
	t, err = sm.Task(ctx, id, t.ID, benchStepTimeout)
	if err != nil {
		return err
	}
	if t.State != session.TaskDone {
		return fmt.Errorf("task %s: %s", t.State, t.Error)
	}
	return nil
}

// BenchmarkCompletionsPerSecond is the chat endpoint under load: with 5
// and 20 builtin miners (of which a warm session holds at most 16), 16 and
// 64 clients post chat completions to one router for benchmarkWindow.
// Each figure has its raw rate beside it as <name>Baseline: the same
// clients send the same prompts as signed tasks straight to the same
// miners over the session protocol, each miner reserved beforehand and
// running one task at a time (no endpoint, no session manager, nothing
// stored); the goal is at least 0.7 of it. With 5 miners,
// miners=5/sequential is one session running one task after another: the
// rate 16 clients must at least reach.
func BenchmarkCompletionsPerSecond(b *testing.B) {
	for _, miners := range []int{5, 20} {
		rn := startRateNet(b, fmt.Sprintf("bench-cps%d", miners), miners, 1)
		r := rn.routers[0]
		sm := r.Sessions()
		held := min(miners, session.MaxNodes)
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
		for _, clients := range []int{16, 64} {
			name := fmt.Sprintf("miners=%d/clients=%d", miners, clients)
			b.Run(name+"Baseline", func(b *testing.B) {
				rn.waitAllAvailable(b)
				free := reserveAll(b, r, held)
				for b.Loop() {
					load(b, clients, func() error { return directTask(r, free) })
				}
			})
			b.Run(name, func(b *testing.B) {
				rn.waitAllAvailable(b)
				url := r.Runtime().APIURL
				for b.Loop() {
					load(b, clients, func() error { return postChat(client, url) })
				}
			})
		}
		if miners == 5 {
			b.Run("miners=5/sequential", func(b *testing.B) {
				rn.waitAllAvailable(b)
				s, err := sm.Create(context.Background(), session.Params{MaxTasks: session.MaxTasks, ReservePeriod: duration.Duration(time.Hour)})
				if err != nil {
					b.Fatal(err)
				}
				defer sm.End(context.Background(), s.ID)
				for b.Loop() {
					load(b, 1, func() error { return sessionTask(sm, s.ID) })
				}
			})
		}
	}
}

// BenchmarkMixedLoad is demand that comes and goes over two routers sharing
// 5 builtin miners: router A serves a burst of 16 clients for 2 s and falls
// quiet; router B then serves a burst of its own. It reports
// idle-held-while-waiting-s, how long A still held idle miners, beyond its
// idle_release, while B had requests waiting (goal 0);
// quiet-router-released-s, how soon after its last request A held no miner
// (about idle_release); back-in-pool-s, how soon after B's last request
// every miner was available in the pool again (idle_release, then a
// validation); and B's completions/s.
func BenchmarkMixedLoad(b *testing.B) {
	rn := startRateNet(b, "bench-mixed", 5, 2)
	a, bb := rn.routers[0], rn.routers[1]
	idle := a.Config().Router.IdleRelease.Std()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	burst := func(r *node.Node, d time.Duration) (done int64, last time.Time) {
		url := r.Runtime().APIURL
		stop := time.Now().Add(d)
		var n atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if postChat(client, url) == nil {
						n.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return n.Load(), time.Now()
	}
	for b.Loop() {
		rn.waitAllAvailable(b)
		aCount, aLast := burst(a, 2*time.Second)

		// B's burst starts at once; watch A's idle miners while B waits,
		// and when A has given every miner back.
		var idleBeyond, aReleased time.Duration
		watchDone := make(chan struct{})
		bDone := make(chan time.Time, 1)
		var bCount int64
		go func() {
			var last time.Time
			bCount, last = burst(bb, 2*time.Second)
			bDone <- last
		}()
		go func() {
			defer close(watchDone)
			const every = 20 * time.Millisecond
			for time.Since(aLast) < 2*time.Second+2*idle {
				as, bs := a.Sessions().Stats(), bb.Sessions().Stats()
				if bs.Queued > 0 && as.WarmMiners-as.WarmBusy > 0 && time.Since(aLast) > idle {
					idleBeyond += every
				}
				if as.WarmMiners == 0 && aReleased == 0 {
					aReleased = time.Since(aLast)
				}
				time.Sleep(every)
			}
		}()
		<-watchDone
		bLast := <-bDone

		// Once both are quiet, every miner comes back to the pool.
		rn.waitAllAvailable(b)
		b.ReportMetric(idleBeyond.Seconds(), "idle-held-while-waiting-s")
		b.ReportMetric(aReleased.Seconds(), "quiet-router-released-s")
		b.ReportMetric(time.Since(bLast).Seconds(), "back-in-pool-s")
		b.ReportMetric(float64(aCount)/2, "a-completions/s")
		b.ReportMetric(float64(bCount)/2, "b-completions/s")
	}
}

// reserveAll reserves n miners through the router's reservations for the
// direct baseline; they are released when the benchmark ends. The channel
// holds the reservations not running a task.
func reserveAll(b *testing.B, r *node.Node, n int) chan router.Reservation {
	b.Helper()
	free := make(chan router.Reservation, n)
	var held []router.Reservation
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), benchStepTimeout)
		res, err := r.Router().Reserve(ctx, "", 10*time.Minute)
		cancel()
		if err != nil {
			b.Fatalf("reserve: %v", err)
		}
		held = append(held, res)
		free <- res
	}
	b.Cleanup(func() {
		for _, res := range held {
			ctx, cancel := context.WithTimeout(context.Background(), benchStepTimeout)
			_, _ = r.Router().Release(ctx, res.ID, pb.Outcome_COMPLETED)
			cancel()
		}
	})
	return free
}

// directTask sends benchPrompt as a signed task to a free reserved miner
// over the session protocol, in stream mode, and reads its signed answer.
func directTask(r *node.Node, free chan router.Reservation) error {
	res := <-free
	defer func() { free <- res }()
	miner, err := peer.Decode(res.Miner)
	if err != nil {
		return err
	}
	h := r.Host()
	key := h.Peerstore().PrivKey(h.ID())
	net := r.NetworkID()
	env, err := protocol.Seal(&pb.SessionTask{
		Network: net, Session: res.ID, Router: []byte(h.ID()), Miner: []byte(miner), Generation: res.Generation,
		GrantDigest: protocol.Digest(res.Grant), Task: "bench/" + rand.Text(),
		Messages: []*pb.ChatMessage{{Role: "user", Content: benchPrompt}},
		Mode:     pb.TaskMode_TASK_MODE_STREAM, IssuedMs: protocol.Ms(time.Now()),
		DeadlineMs: protocol.Ms(time.Now().Add(benchStepTimeout)),
	}, key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), benchStepTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, miner, protocol.SessionProtocol(net))
	if err != nil {
		return err
	}
	defer s.Close()
	if err := protocol.WriteMsg(s, env); err != nil {
		return err
	}
	_ = s.CloseWrite()
	rd := bufio.NewReader(s)
	for {
		f, err := protocol.ReadFrame(rd)
		if err != nil {
			return err
		}
		if e, ok := f.Body.(*pb.SessionFrame_Envelope); ok {
			res, err := protocol.Open[pb.TaskResult](e.Envelope)
			if err != nil {
				return err
			}
			if !strings.Contains(res.Msg.Output, "42") {
				return fmt.Errorf("answer %q", res.Msg.Output)
			}
			return nil
		}
	}
}
