package node_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/store"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
	"github.com/libp2p/go-libp2p/core/crypto"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
)

// These benchmarks run whole in-process testnets: each one starts its
// testnet once and uses b.Loop, so the benchmark function runs once per
// -count however many iterations b.Loop settles on. Every wait is bounded.

const (
	benchStepTimeout  = 20 * time.Second // one reserve or release
	benchAvailTimeout = 60 * time.Second // a miner becoming available
)

// benchNet is a running testnet of 1 bootstrap, 3 oracles, 1 miner and
// 1 router, stopped when the benchmark ends.
type benchNet struct {
	tn     *testnet.Testnet
	miner  *node.Node
	router *node.Node
}

func startBenchNet(b *testing.B, network string, l *tunedLauncher) benchNet {
	b.Helper()
	tn := localnet.Start(b, testnet.Spec{Network: network, Bootstraps: 1, Oracles: 3, Miners: 1, Routers: 1}, l)
	net := benchNet{tn: tn}
	if ms, rs := localnet.WithRole(tn, node.RoleMiner), localnet.WithRole(tn, node.RoleRouter); len(ms) > 0 && len(rs) > 0 {
		net.miner, net.router = ms[0], rs[0]
	}
	if net.miner == nil || net.router == nil {
		b.Fatal("testnet has no miner or no router")
	}
	return net
}

// waitAvailable waits until the miner is available at generation gen, by its
// own state and in the router's pool view (which Reserve picks from), and
// returns the time the miner entered AVAILABLE.
func (net benchNet) waitAvailable(b *testing.B, gen uint64) time.Time {
	b.Helper()
	deadline := time.Now().Add(benchAvailTimeout)
	for {
		s := net.miner.MinerState()
		if s.State == pb.MinerState_AVAILABLE && s.Generation == gen {
			if m, ok := poolView(net.router.Pool()).Find(net.miner.ID().String()); ok && m.State == "available" && m.Generation == gen {
				return s.Since
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("miner not available at generation %d after %s: %s at %d; router's pool: %s",
				gen, benchAvailTimeout, s.State, s.Generation, poolView(net.router.Pool()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reserveRelease reserves the miner through the router and releases it.
func (net benchNet) reserveRelease(b *testing.B) router.Reservation {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchStepTimeout)
	defer cancel()
	r := net.router.Router()
	res, err := r.Reserve(ctx, "", 0)
	if err != nil {
		b.Fatalf("reserve: %v", err)
	}
	if _, err := r.Release(ctx, res.ID, pb.Outcome_COMPLETED); err != nil {
		b.Fatalf("release: %v", err)
	}
	return res
}

// BenchmarkMinerToAvailable is the miner lifecycle at the network's default
// parameters (5 s rounds, quorum 2 of 3 oracles). It starts one testnet and
// reports s-to-available: from the miner node's Start to its first
// AVAILABLE (oracles starting at the same time). Each iteration then
// reserves the miner through the router, releases it and waits for it to be
// AVAILABLE at the next generation: ns/op is that whole cycle and
// s-release-to-available its mean release → AVAILABLE part. The release
// comes just after the miner became available, itself just after a round
// boundary, so that part is about one round (the wait for the next round)
// plus a validation: the long end of what a release at a random time sees.
// One cycle takes seconds, so -benchtime 2s runs one iteration.
func BenchmarkMinerToAvailable(b *testing.B) {
	l := &tunedLauncher{}
	net := startBenchNet(b, "bench-avail", l)
	first := net.waitAvailable(b, 0)
	toAvailable := first.Sub(l.startedAt(net.miner))

	var sum time.Duration
	iters := 0
	gen := uint64(0)
	for b.Loop() {
		res := net.reserveRelease(b)
		if res.Generation != gen {
			b.Fatalf("reserved generation %d, want %d", res.Generation, gen)
		}
		released := time.Now()
		gen++
		avail := net.waitAvailable(b, gen)
		sum += avail.Sub(released)
		iters++
	}
	b.ReportMetric(toAvailable.Seconds(), "s-to-available")
	b.ReportMetric((sum / time.Duration(iters)).Seconds(), "s-release-to-available")
}

// benchRound is the validation round of the ReserveRelease testnets. The
// timed part (claim → grant → release → receipt) never waits on a round, but
// every released miner must be revalidated before the next iteration, which
// at the default 5 s round would allow only a handful of iterations a
// minute; only the oracles' schedule depends on it.
const benchRound = 250 * time.Millisecond

// BenchmarkReserveRelease is one Reserve and one Release through the router
// to the real miner: two signed exchanges on the reserve protocol, the
// miner's synced state commits, the router's synced reservation writes and
// the gossip of the grant and release. The miner's revalidation after each
// release is waited for outside the timer.
func BenchmarkReserveRelease(b *testing.B) {
	net := startBenchNet(b, "bench-rr", &tunedLauncher{round: benchRound})
	gen := uint64(0)
	net.waitAvailable(b, gen)
	for b.Loop() {
		res := net.reserveRelease(b)
		if res.Generation != gen {
			b.Fatalf("reserved generation %d, want %d", res.Generation, gen)
		}
		b.StopTimer()
		gen++
		net.waitAvailable(b, gen)
		b.StartTimer()
	}
}

// BenchmarkReserveReleaseBaseline is the floor of BenchmarkReserveRelease
// between the same two hosts (the router's and the miner's, in the same
// testnet): two plain libp2p stream round trips with the message sizes of a
// claim → grant and a release → receipt, framed the same way, plus two
// synced store writes of a reservation's size (store.Open on a temp dir).
// Nothing is signed, verified or gossiped.
func BenchmarkReserveReleaseBaseline(b *testing.B) {
	net := startBenchNet(b, "bench-rr", &tunedLauncher{round: benchRound})
	net.waitAvailable(b, 0)
	claim, grant, release, receipt := reserveMessages(b, net)

	s, err := store.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	saved, err := json.Marshal(struct {
		router.Reservation
		GrantEnv []byte `json:"grant"`
		LeaseMs  int64  `json:"lease_ms"`
	}{router.Reservation{
		ID: hex.EncodeToString(make([]byte, 16)), Miner: net.miner.ID().String(), Generation: 1,
		LeaseEnd: time.Now(), Created: time.Now(), State: router.StateActive,
	}, grant, 30000})
	if err != nil {
		b.Fatal(err)
	}

	// The miner's host answers every request with the reply of its size.
	const proto = libp2pprotocol.ID("/ephemera-bench/echo/1")
	replies := map[int][]byte{len(claim): grant, len(release): receipt}
	if len(replies) != 2 {
		b.Fatal("claim and release of the same size")
	}
	mh, rh := net.miner.Host(), net.router.Host()
	testkit.Serve(b, mh, proto, func(req []byte) ([]byte, error) { return replies[len(req)], nil })

	ctx := context.Background()
	roundTrip := func(req []byte, want int) {
		ctx, cancel := context.WithTimeout(ctx, benchStepTimeout)
		defer cancel()
		st, err := rh.NewStream(ctx, mh.ID(), proto)
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriter(st)
		if err := protocol.WriteMsg(w, req); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		// Like the router's exchange, though the handler may already have
		// closed its side: over QUIC that cancels our write side (the reply
		// still arrives), so an error here is not a failure.
		_ = st.CloseWrite()
		reply, err := protocol.ReadMsg(bufio.NewReader(st), protocol.MaxMessageSize)
		if err != nil {
			b.Fatal(err)
		}
		if len(reply) != want {
			b.Fatalf("reply of %d bytes, want %d", len(reply), want)
		}
		st.Close()
	}
	key := []byte("res/" + hex.EncodeToString(make([]byte, 16)))
	for b.Loop() {
		roundTrip(claim, len(grant))
		if err := s.Put(key, saved); err != nil {
			b.Fatal(err)
		}
		roundTrip(release, len(receipt))
		if err := s.Put(key, saved); err != nil {
			b.Fatal(err)
		}
	}
}

// reserveMessages builds a claim, grant, release and receipt like the ones
// the router and miner exchange (same fields, Ed25519 envelopes like the
// nodes' keys), for their sizes.
func reserveMessages(b *testing.B, net benchNet) (claim, grant, release, receipt []byte) {
	b.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		b.Fatal(err)
	}
	rid, mid := net.router.ID(), net.miner.ID()
	network := net.router.Config().Network
	now := time.Now()
	must := func(env []byte, err error) []byte {
		if err != nil {
			b.Fatal(err)
		}
		return env
	}
	session := hex.EncodeToString(make([]byte, 16))
	claim = must(protocol.Seal(&pb.Claim{
		Network: network, Session: session, Router: []byte(rid), Miner: []byte(mid), Generation: 1,
		LeaseMs: 30000, Nonce: make([]byte, 16), ExpiresMs: protocol.Ms(now.Add(10 * time.Second)),
	}, key))
	grant = must(protocol.Seal(&pb.Grant{
		Network: network, Miner: []byte(mid), Router: []byte(rid), Session: session, Generation: 1,
		LeaseEndMs: protocol.Ms(now.Add(30 * time.Second)), ClaimDigest: protocol.Digest(claim), Claim: claim,
	}, key))
	release = must(protocol.Seal(&pb.Release{
		Network: network, Session: session, Signer: []byte(rid), Miner: []byte(mid), Router: []byte(rid),
		Generation: 1, Outcome: pb.Outcome_COMPLETED, IssuedMs: protocol.Ms(now),
	}, key))
	receipt = must(protocol.Seal(&pb.Receipt{
		Network: network, Miner: []byte(mid), RequestDigest: protocol.Digest(release), Ok: true,
		LeaseEndMs: protocol.Ms(time.Time{}), Generation: 2, State: pb.MinerState_VALIDATING, // lease cleared on release
	}, key))
	return claim, grant, release, receipt
}
