package session

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/miner"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The rig: real miners (node/miner) and a real router node (router, pool,
// session manager), each on its own libp2p host on 127.0.0.1 and its own
// Badger store. Oracles are keys the test holds: a miner is made available
// by handing its pool view passing attestations, and its availability
// records reach the router's pool view as gossip would carry them.

const testNetwork = "sesstest"

type testNet struct {
	oracles *testkit.Oracles
	check   protocol.Checker

	mu      sync.Mutex
	miners  []*testMiner
	routers []*testRouter
	pools   []*pool.Pool       // the routers' pool views the miners' records reach
	last    map[peer.ID][]byte // each miner's latest record
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	o := testkit.NewOracles(t, testNetwork, 2, 2, func(p *protocol.Params) { p.Lease = duration.Duration(5 * time.Second) })
	return &testNet{oracles: o, check: o.Checker(), last: map[peer.ID][]byte{}}
}

// publish is the miners' pool topic: every attached pool view gets the record.
func (n *testNet) publish(_ context.Context, data []byte) error {
	rec, err := protocol.Open[pb.Availability](data)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.last[rec.Signer]; ok {
		if o, err := protocol.Open[pb.Availability](old); err == nil && o.Msg.Seq > rec.Msg.Seq {
			return nil
		}
	}
	n.last[rec.Signer] = data
	for _, p := range n.pools {
		_ = p.AddAvailability(rec) // stale or duplicate records are the pool's business
	}
	return nil
}

func (n *testNet) attach(p *pool.Pool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pools = append(n.pools, p)
	for _, raw := range n.last {
		if rec, err := protocol.Open[pb.Availability](raw); err == nil {
			_ = p.AddAvailability(rec)
		}
	}
}

func (n *testNet) detach(p *pool.Pool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pools = slices.DeleteFunc(n.pools, func(x *pool.Pool) bool { return x == p })
}

// testMiner is a node running the miner role with the builtin engine.
type testMiner struct {
	n     *testNet
	key   crypto.PrivKey
	id    peer.ID
	host  host.Host
	store *store.Store
	pool  *pool.Pool // its own view, where the oracles' verdicts land
	m     *miner.Miner
	slow  *slowEngine
}

// slowEngine holds the builtin engine's every answer for delay.
type slowEngine struct {
	delay atomic.Int64 // nanoseconds
}

func (e *slowEngine) wait(ctx context.Context, _ inference.GenerateRequest) error {
	t := time.NewTimer(time.Duration(e.delay.Load()))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// setSlow makes the miner take d for every answer.
func (tm *testMiner) setSlow(d time.Duration) { tm.slow.delay.Store(int64(d)) }

// newMiner starts a miner, validating at generation 0.
func (n *testNet) newMiner(t testing.TB) *testMiner {
	t.Helper()
	key := testkit.NewKey(t)
	h := testkit.Host(t, key)
	st := testkit.Store(t, "")
	p, err := pool.New(st, n.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowEngine{}
	m, err := miner.New(miner.Deps{
		Check: n.check, Host: h, Key: key, Store: st, Pool: p, Backend: testkit.Builtin(slow.wait), PublishPool: n.publish,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) }) // before its store and host close
	tm := &testMiner{n: n, key: key, id: h.ID(), host: h, store: st, pool: p, m: m, slow: slow}
	n.mu.Lock()
	n.miners = append(n.miners, tm)
	routers := slices.Clone(n.routers)
	n.mu.Unlock()
	for _, tr := range routers {
		tr.know(tm)
	}
	return tm
}

// newPair is a fresh network of one miner, validating, and one router node
// with the test configuration.
func newPair(t testing.TB) (*testMiner, *testRouter) {
	t.Helper()
	n := newTestNet(t)
	x := n.newMiner(t)
	return x, n.newRouter(t, testConfig())
}

func (n *testNet) newMiners(t testing.TB, count int) []*testMiner {
	t.Helper()
	out := make([]*testMiner, count)
	for i := range out {
		out[i] = n.newMiner(t)
	}
	return out
}

// makeAvailable passes the miner's current generation by a quorum of
// oracles and waits until every router sees it available.
func (tm *testMiner) makeAvailable(t testing.TB) uint64 {
	t.Helper()
	gen := tm.m.State().Generation
	for _, raw := range tm.n.oracles.Passes(t, tm.id, gen) {
		if ev, err := tm.pool.AddAttestation(testkit.Open[pb.Attestation](t, raw)); err != nil || ev != nil {
			t.Fatalf("attestation: evidence %v, err %v", ev, err)
		}
	}
	tm.waitState(t, pb.MinerState_AVAILABLE, gen)
	tm.n.mu.Lock()
	routers := slices.Clone(tm.n.routers)
	tm.n.mu.Unlock()
	for _, tr := range routers {
		testkit.Eventually(t, "the router to see the miner available", 5*time.Second, func() bool {
			return slices.ContainsFunc(tr.pool.Available(""), func(m pool.Miner) bool {
				return m.ID == tm.id && m.Generation == gen
			})
		})
	}
	return gen
}

func (tm *testMiner) waitState(t testing.TB, st pb.MinerState, gen uint64) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("miner %s %s at generation %d", short(tm.id), st, gen), 5*time.Second, func() bool {
		s := tm.m.State()
		return s.State == st && s.Generation == gen
	})
}

func short(id peer.ID) string {
	s := id.String()
	return s[len(s)-6:]
}

// testRouter is a node running the router role and its session manager.
type testRouter struct {
	n     *testNet
	key   crypto.PrivKey
	dir   string
	host  host.Host
	store *store.Store
	pool  *pool.Pool
	r     *router.Router
	m     *Manager
	// crashed is set once crash has cut the node off.
	crashed bool
}

func testConfig() Config {
	return Config{MaxSessions: 8, MaxQueued: 16, QueueTimeout: 30 * time.Second}
}

// newRouter starts a router node with a fresh key and store.
func (n *testNet) newRouter(t testing.TB, cfg Config) *testRouter {
	t.Helper()
	return n.openRouter(t, testkit.NewKey(t), t.TempDir(), cfg)
}

// openRouter starts a router node with key over the store in dir.
func (n *testNet) openRouter(t testing.TB, key crypto.PrivKey, dir string, cfg Config) *testRouter {
	t.Helper()
	h := testkit.Host(t, key)
	n.mu.Lock()
	miners := slices.Clone(n.miners)
	n.mu.Unlock()
	for _, tm := range miners { // known before the router starts: its first settle dials them
		testkit.Know(h, tm.host)
	}
	st := testkit.Store(t, dir)
	p, err := pool.New(st, n.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Deps{Network: testNetwork, Check: n.check, Host: h, Key: key, Store: st, Pool: p})
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Stop(ctx)
	})
	m, err := New(Deps{
		Check: n.check, Host: h, Key: key, Store: st, Router: r, Pool: p,
		Embed: inference.NewBuiltin().Embed, Config: cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRouter{n: n, key: key, dir: dir, host: h, store: st, pool: p, r: r, m: m}
	n.mu.Lock()
	n.routers = append(n.routers, tr)
	n.mu.Unlock()
	n.attach(p)
	m.Start(context.Background())
	t.Cleanup(func() { testkit.Stop(t, 15*time.Second, m.Stop) })
	return tr
}

func (tr *testRouter) know(tm *testMiner) {
	testkit.Know(tr.host, tm.host)
}

// crash is a kill -9 of the router node: it hears no more gossip, its host
// is gone, its router's loops stop without releasing anything (as Stop
// does), and its store is closed. Its session manager is abandoned as it
// is: only what it wrote to the store survives.
func (tr *testRouter) crash(t testing.TB) {
	t.Helper()
	tr.n.detach(tr.pool)
	tr.n.mu.Lock()
	tr.n.routers = slices.DeleteFunc(tr.n.routers, func(x *testRouter) bool { return x == tr })
	tr.n.mu.Unlock()
	tr.crashed = true
	tr.host.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr.store.Close(); err != nil {
		t.Fatal(err)
	}
}

// create opens a session of p, failing the test if it cannot.
func (tr *testRouter) create(t testing.TB, p Params) Session {
	t.Helper()
	s, err := tr.m.Create(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// submit queues req in the session id, failing the test if it cannot.
func (tr *testRouter) submit(t testing.TB, id string, req TaskRequest) Task {
	t.Helper()
	task, err := tr.m.Submit(t.Context(), id, req)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// waitSession waits for the session to satisfy cond.
func (tr *testRouter) waitSession(t testing.TB, id, what string, timeout time.Duration, cond func(Session) bool) Session {
	t.Helper()
	var s Session
	testkit.Eventually(t, what, timeout, func() bool {
		var err error
		s, err = tr.m.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		return cond(s)
	})
	return s
}

func active(s Session) int {
	n := 0
	for _, h := range s.Miners {
		if h.State == HoldActive {
			n++
		}
	}
	return n
}

// waitTask waits for the task to finish.
func (tr *testRouter) waitTask(t testing.TB, session, id string) Task {
	t.Helper()
	task, err := tr.m.Task(t.Context(), session, id, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !task.finished() {
		t.Fatalf("task %s/%s did not finish: %+v", session, id, task)
	}
	return task
}

func ask(prompt string) TaskRequest {
	return TaskRequest{Messages: []inference.Message{{Role: "user", Content: prompt}}}
}
