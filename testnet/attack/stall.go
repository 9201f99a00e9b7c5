package attack

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/oracle"
	"github.com/ephemera-network/ephemera/testnet"
)

// Stalling runs n throwaway miners that announce themselves validating,
// take the oracles' challenges and never answer: nodes wired as any miner
// is, whose engine never returns.
func Stalling(n int) Attack {
	var stallers []string
	for i := 1; i <= n; i++ {
		stallers = append(stallers, fmt.Sprintf("miner-%d", i))
	}
	calls := new(atomic.Int64)
	return Attack{
		Name:      fmt.Sprintf("%d-stallers", n), // no -N at the end: benchmark names drop it
		Summary:   fmt.Sprintf("%d identities take the oracles' challenges and never answer, while an honest miner is released", n),
		Spec:      testnet.Spec{Network: fmt.Sprintf("attack-stall%d", n), Bootstraps: 1, Oracles: 3, Miners: 1 + n, Routers: 1},
		InProcess: stallers,
		Backend:   func(string) inference.Backend { return stalled{inference.NewBuiltin(), calls} },
		Available: 1,
		Run:       func(ctx context.Context, e *Env) error { return stalling(ctx, e, stallers, calls) },
	}
}

// stalled is an engine that serves the builtin model's name and never
// answers: each call returns only when its caller gives up. It counts the
// calls, the challenges the stallers took.
type stalled struct {
	inference.Backend
	calls *atomic.Int64
}

func (s stalled) Generate(ctx context.Context, _ inference.GenerateRequest) (inference.GenerateResponse, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return inference.GenerateResponse{}, ctx.Err()
}

func (s stalled) GenerateStream(ctx context.Context, req inference.GenerateRequest, _ func(string) error) (inference.GenerateResponse, error) {
	return s.Generate(ctx, req)
}

func (s stalled) Embed(ctx context.Context, _ []string) ([][]float32, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

func stalling(ctx context.Context, e *Env, stallers []string, calls *atomic.Int64) error {
	const samples = 3
	// Quiet: the stallers are stopped, and the honest miner is released
	// and validated again.
	for _, name := range stallers {
		m, err := e.Member(name)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = m.Node.Stop(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("stop %s: %w", name, err)
		}
	}
	quiet, err := revalidations(ctx, e, samples)
	if err != nil {
		return fmt.Errorf("quiet network: %w", err)
	}
	// The attack: the stallers come back, and the oracles challenge them.
	for _, name := range stallers {
		if _, err := e.Net.Restart(ctx, name, e.launcher); err != nil {
			return err
		}
	}
	// Measured once the stallers hold as many slots as the oracles give
	// newcomers in all, or after a minute.
	busy := min(len(stallers), e.Net.Spec.Oracles*oracle.NewcomerSlots)
	for deadline := time.Now().Add(time.Minute); calls.Load() < int64(busy) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	e.Logf("the stallers took %d challenges before the measure", calls.Load())
	before := calls.Load()
	attacked, err := revalidations(ctx, e, samples)
	if err != nil {
		return fmt.Errorf("under attack: %w", err)
	}
	q, a := median(quiet), median(attacked)
	e.Result.Figure("quiet-revalidate-s", q.Seconds(), "s")
	e.Result.Figure("attacked-revalidate-s", a.Seconds(), "s")
	e.Result.Figure("ratio", a.Seconds()/q.Seconds(), "×")
	e.Result.Figure("staller-calls-while-measured", float64(calls.Load()-before), "engine calls")
	e.Result.Check(fmt.Sprintf("with %d stalling identities a released honest miner revalidates within 2× of its quiet time", len(stallers)),
		a <= 2*q, "median of %d: %s quiet (%v), %s attacked (%v)", samples, q.Round(time.Millisecond), round(quiet), a.Round(time.Millisecond), round(attacked))
	return nil
}

// revalidations reserves the honest miner through the router n times,
// releases it, and measures each time until it is available again.
func revalidations(ctx context.Context, e *Env, n int) ([]time.Duration, error) {
	router := client.New(e.Net.RouterURL())
	var out []time.Duration
	for range n {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := router.Reserve(rctx, api.ReserveRequest{Lease: "1m"})
		cancel()
		if err != nil {
			return out, fmt.Errorf("reserve the honest miner: %w", err)
		}
		rctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		_, err = router.Release(rctx, res.ID)
		cancel()
		if err != nil {
			return out, fmt.Errorf("release the honest miner: %w", err)
		}
		released := time.Now()
		// The bootstrap node's view, polled often: the times are short.
		pool := client.New(e.Net.Nodes()[0].Runtime().APIURL)
		for {
			ms, err := pool.Pool(ctx)
			i := slices.IndexFunc(ms, func(m api.PoolMiner) bool { return m.PeerID == res.Miner })
			if err == nil && i >= 0 && ms[i].State == "available" && ms[i].Generation > res.Generation {
				break
			}
			if time.Since(released) > 2*time.Minute {
				return out, fmt.Errorf("the honest miner is not available again %s after its release", time.Since(released).Round(time.Second))
			}
			time.Sleep(25 * time.Millisecond)
		}
		out = append(out, time.Since(released))
	}
	return out, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func round(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
