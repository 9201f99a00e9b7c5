package attack

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// GarbageFrames floods a miner's streams with 1 MiB frames of garbage.
func GarbageFrames() Attack {
	return Attack{
		Name:    "garbage-frames",
		Summary: "1 MiB garbage frames on every stream protocol of a miner, for 15 s",
		Quick:   true,
		Spec:    named(small, "attack-frames"),
		Run:     garbageFrames,
	}
}

func garbageFrames(ctx context.Context, e *Env) error {
	const (
		flood   = 15 * time.Second
		writers = 8
		frame   = 1 << 20
		boundMB = 30.0
	)
	target := "miner-0"
	m, err := e.Member(target)
	if err != nil {
		return err
	}
	info, err := addrInfo(m.Node.Runtime().Addrs)
	if err != nil {
		return err
	}
	h, err := e.newAttacker()
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.Connect(ctx, info); err != nil {
		return fmt.Errorf("connect to %s: %w", target, err)
	}
	net := e.Net.Definition.ID()
	protos := []libp2pprotocol.ID{protocol.ReserveProtocol(net), protocol.SessionProtocol(net), protocol.ValidateProtocol(net)}
	before, err := e.rss(target)
	if err != nil {
		return err
	}
	garbage := make([]byte, frame)
	rand.Read(garbage)
	fctx, cancel := context.WithTimeout(ctx, flood)
	defer cancel()
	var sent atomic.Int64
	var wg sync.WaitGroup
	var firstErr sync.Once
	for i := range writers {
		wg.Go(func() {
			n, err := floodStreams(fctx, h, info.ID, protos[i%len(protos)], garbage)
			sent.Add(n)
			if err != nil {
				firstErr.Do(func() { e.Logf("%s: %v", protos[i%len(protos)], err) })
			}
		})
	}
	peak := before
	for fctx.Err() == nil {
		if r, err := e.rss(target); err == nil {
			peak = max(peak, r)
		}
		time.Sleep(250 * time.Millisecond)
	}
	wg.Wait()
	time.Sleep(3 * time.Second)
	after, err := e.rss(target)
	if err != nil {
		return err
	}
	peak = max(peak, after)
	e.Result.Figure("sent-MB", float64(sent.Load())/(1<<20), "MB")
	e.Result.Figure("miner-rss-delta-MB", peak-before, "MB")
	e.Result.Figure("miner-rss-after-delta-MB", after-before, "MB")
	e.Result.Check(fmt.Sprintf("a garbage flood leaves a miner under +%.0f MB", boundMB), peak-before < boundMB,
		"%.0f MB sent: RSS %.1f → peak %.1f MB, %.1f MB 3 s after", float64(sent.Load())/(1<<20), before, peak, after)
	// The miner still takes part: it is available again in the pool.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	err = waitAvailable(wctx, e.Net, e.Net.Spec.Miners)
	e.Result.Check("the miner stays available", err == nil, "%v", errOrOK(err))
	return nil
}

// floodStreams opens streams of proto to p, one after another, and writes
// garbage on each until the miner resets it or ctx ends. It returns the bytes
// written and the first error other than the end of ctx.
func floodStreams(ctx context.Context, h host.Host, p peer.ID, proto libp2pprotocol.ID, garbage []byte) (int64, error) {
	var sent int64
	var first error
	note := func(err error) {
		if first == nil && ctx.Err() == nil {
			first = err
		}
	}
	for ctx.Err() == nil {
		s, err := h.NewStream(ctx, p, proto)
		if err != nil {
			note(err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			s.SetWriteDeadline(time.Now().Add(2 * time.Second))
			n, err := s.Write(garbage)
			sent += int64(n)
			if err != nil {
				note(err)
				break
			}
		}
		s.Reset()
	}
	return sent, first
}

// addrInfo is the peer and its addresses from full multiaddrs.
func addrInfo(addrs []string) (peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return peer.AddrInfo{}, err
		}
		mas = append(mas, m)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil || len(infos) != 1 {
		return peer.AddrInfo{}, fmt.Errorf("addresses %v: not one peer (%v)", addrs, err)
	}
	return infos[0], nil
}

func errOrOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}
