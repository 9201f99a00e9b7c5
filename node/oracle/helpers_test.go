package oracle

import (
	"bufio"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
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

// published records what an oracle publishes; onPublish, if set, also runs.
type published struct {
	mu        sync.Mutex
	envs      [][]byte
	onPublish func([]byte)
}

func (p *published) publish(_ context.Context, data []byte) error {
	p.mu.Lock()
	p.envs = append(p.envs, slices.Clone(data))
	f := p.onPublish
	p.mu.Unlock()
	if f != nil {
		f(data)
	}
	return nil
}

func (p *published) all() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.envs)
}

type rig struct {
	key   crypto.PrivKey
	host  host.Host
	check protocol.Checker
	store *store.Store
	pool  *pool.Pool
	pub   *published
	o     *Oracle
}

// newRig builds an oracle with key on a fresh host (or h, if given), a store
// in dir and the given params.
func newRig(t testing.TB, key crypto.PrivKey, h host.Host, dir string, p protocol.Params, now func() time.Time) *rig {
	t.Helper()
	if h == nil {
		h = testkit.Host(t, key)
	}
	r := &rig{key: key, host: h, pub: &published{}}
	r.check = protocol.Checker{Network: testNet, Params: p}
	r.store = testkit.Store(t, dir)
	var err error
	r.pool, err = pool.New(r.store, r.check, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.o, err = New(Deps{
		Network: testNet, Check: r.check, Host: h, Key: key, Store: r.store, Pool: r.pool,
		Bank: challenge.Default(), Embed: inference.NewBuiltin().Embed, Publish: r.pub.publish, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
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
	m.host.SetStreamHandler(protocol.ValidateProtocol(testNet), m.handle)
	return m
}

func (m *fakeMiner) handle(s network.Stream) {
	defer s.Close()
	raw, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
	if err != nil {
		s.Reset()
		return
	}
	ch, err := protocol.Open[pb.Challenge](raw)
	if err != nil {
		s.Reset()
		return
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
		return
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
				s.Reset()
				return
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
	env, err := protocol.Seal(ans, key)
	if err != nil {
		s.Reset()
		return
	}
	_ = protocol.WriteMsg(s, env)
}

// knows tells h where m listens.
func knows(h host.Host, m *fakeMiner) {
	h.Peerstore().AddAddrs(m.id, m.host.Addrs(), peerstore.PermanentAddrTTL)
}

func openAtt(t testing.TB, env []byte) protocol.Signed[*pb.Attestation] {
	t.Helper()
	s, err := protocol.Open[pb.Attestation](env)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
