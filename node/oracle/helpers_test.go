package oracle

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/testkit"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

const testNet = "testnet"

func testParams(oracles ...peer.ID) protocol.Params {
	p := protocol.DefaultParams()
	for _, o := range oracles {
		p.Oracles = append(p.Oracles, o.String())
	}
	p.Quorum = 1
	return p
}

type rig struct {
	key   crypto.PrivKey
	host  host.Host
	check protocol.Checker
	store *store.Store
	pool  *pool.Pool
	pub   *testkit.Published
	o     *Oracle
}

// newRig builds an oracle with key on a fresh host (or h, if given), a store
// in dir and the given params.
func newRig(t testing.TB, key crypto.PrivKey, h host.Host, dir string, p protocol.Params, now func() time.Time) *rig {
	t.Helper()
	if h == nil {
		h = testkit.Host(t, key)
	}
	r := &rig{key: key, host: h, pub: &testkit.Published{}}
	r.check = protocol.Checker{Network: testNet, Params: p}
	r.store = testkit.Store(t, dir)
	var err error
	r.pool, err = pool.New(r.store, r.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.o, err = New(Deps{
		Network: testNet, Check: r.check, Host: h, Key: key, Store: r.store, Pool: r.pool,
		Bank: challenge.Default(), Embed: inference.NewBuiltin().Embed, Publish: r.pub.Publish, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// soleOracle is an oracle that is its network's only one, quorum one, on a
// fresh host and store.
func soleOracle(t testing.TB) *rig {
	t.Helper()
	key := testkit.NewKey(t)
	return newRig(t, key, nil, t.TempDir(), testParams(testkit.ID(t, key)), nil)
}

// start runs the oracle's round loop until it stops or the test ends.
func (r *rig) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.o.Stop(context.Background()) })
}

// stop stops the oracle, failing the test if it does not stop cleanly.
func (r *rig) stop(t testing.TB) {
	t.Helper()
	if err := r.o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// verdict is the oracle's verdict on miner at gen and round, failing the
// test if Validate gives none.
func (r *rig) verdict(t testing.TB, miner peer.ID, gen, round uint64) []byte {
	t.Helper()
	env, err := r.o.Validate(context.Background(), miner, gen, round)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// behaviour is how a fake miner answers a challenge.
type behaviour int

const (
	honest     behaviour = iota // answers with the built-in engine
	banana                      // answers "banana" to everything
	wrongKey                    // answers correctly, signed by another key
	silent                      // reads the challenge and never answers
	wrongCount                  // one output too few
)

// fakeMiner answers challenges on its own host.
type fakeMiner struct {
	id         peer.ID
	host       host.Host
	key, other crypto.PrivKey
	engine     *inference.Builtin
	behaviour  atomic.Int32
	challenges atomic.Int32
	received   chan struct{} // gets a value for each challenge read, if not full
	hold       chan struct{} // a silent miner waits on it; closed at cleanup
}

func newFakeMiner(t testing.TB, key crypto.PrivKey, b behaviour) *fakeMiner {
	t.Helper()
	if key == nil {
		key = testkit.NewKey(t)
	}
	m := &fakeMiner{key: key, other: testkit.NewKey(t), engine: inference.NewBuiltin(), received: make(chan struct{}, 16), hold: make(chan struct{})}
	m.host = testkit.Host(t, key)
	t.Cleanup(func() { close(m.hold) }) // runs before the host closes
	m.id = m.host.ID()
	m.behaviour.Store(int32(b))
	testkit.Serve(t, m.host, protocol.ValidateProtocol(testNet), m.answer)
	return m
}

// miner is a fake miner of behaviour b with key (fresh if nil) whose
// address the oracle knows.
func (r *rig) miner(t testing.TB, key crypto.PrivKey, b behaviour) *fakeMiner {
	t.Helper()
	m := newFakeMiner(t, key, b)
	testkit.Know(r.host, m.host)
	return m
}

// answer is the miner's answer to a challenge, as its behaviour makes it.
func (m *fakeMiner) answer(raw []byte) ([]byte, error) {
	ch, err := protocol.Open[pb.Challenge](raw)
	if err != nil {
		return nil, err
	}
	m.challenges.Add(1)
	select {
	case m.received <- struct{}{}:
	default:
	}
	b := behaviour(m.behaviour.Load())
	if b == silent {
		// The oracle has closed its side; hold ours open until the test ends.
		<-m.hold
		return nil, errors.New("silent")
	}
	ans := &pb.Answer{Network: testNet, ChallengeDigest: protocol.Digest(raw), Miner: []byte(m.id), Model: inference.BuiltinModel}
	for _, task := range ch.Msg.Tasks {
		start := time.Now()
		out := "banana"
		if b != banana {
			resp, err := m.engine.Generate(context.Background(), inference.GenerateRequest{
				Messages: []inference.Message{{Role: "user", Content: task.Prompt}},
			})
			if err != nil {
				return nil, err
			}
			out = resp.Text
		}
		ans.Outputs = append(ans.Outputs, out)
		ans.LatenciesMs = append(ans.LatenciesMs, uint32(time.Since(start).Milliseconds()))
	}
	if b == wrongCount {
		ans.Outputs = ans.Outputs[1:]
	}
	key := m.key
	if b == wrongKey {
		key = m.other
	}
	return protocol.Seal(ans, key)
}
