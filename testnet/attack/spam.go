package attack

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// RecordSpam puts valid availability records of fresh miner identities,
// each saying it is validating, into the DHT from a few throwaway peers.
func RecordSpam() Attack {
	return Attack{
		Name:    "record-spam",
		Summary: "20,000 valid 'validating' records of fresh identities put into the DHT, then their lifetime waited out",
		Spec:    named(small, "attack-spam"),
		Run:     recordSpam,
	}
}

func recordSpam(ctx context.Context, e *Env) error {
	const (
		records = 20000
		senders = 10
		workers = 16
		boundMB = 20.0
	)
	target := "bootstrap-0"
	before, heldBefore, err := e.records(target)
	if err != nil {
		return err
	}
	def := e.Net.Definition
	check := protocol.Checker{Network: def.ID(), Params: def.Params}
	var hosts []*p2p.Host
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	for range senders {
		h, err := spamHost(e, check)
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		for h.DHT.RoutingTable().Size() == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var firstErr sync.Once
	begin := time.Now()
	var put atomic.Int64
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				key, raw, err := spamRecord(def.ID(), def.Params.RecordLifetime.Std())
				if err != nil {
					continue
				}
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := hosts[i%senders].DHT.PutValue(pctx, key, raw); err == nil {
					put.Add(1)
				} else {
					firstErr.Do(func() { e.Logf("a put failed: %v", err) })
				}
				cancel()
			}
		})
	}
	for i := 0; i < records && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	e.Logf("%d records sent in %s (%d puts reached some node)", records, time.Since(begin).Round(time.Second), put.Load())
	time.Sleep(3 * time.Second)
	during, held, err := e.records(target)
	if err != nil {
		return err
	}
	// Wait out the records' lifetime, the clock skew allowed, and a sweep.
	life := def.Params.RecordLifetime.Std() + def.Params.ClockSkew.Std()
	wait := life + life/3 + 10*time.Second - time.Since(begin)
	e.Logf("the bootstrap holds %.0f records; waiting %s for them to lapse", held, wait.Round(time.Second))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
	}
	heldAfter, err := e.metric(target, "ephemera_dht_records")
	if err != nil {
		return err
	}
	e.Result.Figure("records-sent", records, "records")
	e.Result.Figure("bootstrap-records-held", held, "records")
	e.Result.Figure("bootstrap-rss-delta-MB", during-before, "MB")
	e.Result.Figure("bootstrap-records-after-lifetime", heldAfter, "records")
	e.Result.Check(fmt.Sprintf("%d spam records leave the bootstrap under +%.0f MB", records, boundMB), during-before < boundMB,
		"it holds %.0f records; RSS %.1f → %.1f MB (+%.1f)", held, before, during, during-before)
	// What is left are the honest miners' own records, signed again.
	e.Result.Check("the spam records are gone after their lifetime", heldAfter <= heldBefore+float64(e.Net.Spec.Miners),
		"%.0f records before the attack, %.0f after the puts, %.0f after %s", heldBefore, held, heldAfter, (life + life/3).Round(time.Second))
	return nil
}

// spamHost is a throwaway peer with the node's own host and DHT, in
// client mode, pointed at the testnet's bootstrap node.
func spamHost(e *Env, check protocol.Checker) (*p2p.Host, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	cfg := p2p.DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Bootstrap = e.Net.Definition.Bootstrap
	cfg.DHTMode = p2p.DHTModeClient
	h, err := p2p.New(cfg, p2p.Options{
		Network:    e.Net.Definition.ID(),
		Key:        key,
		Validators: map[string]record.Validator{protocol.AvailabilityNamespace: protocol.AvailabilityValidator{Check: check}},
	})
	if err != nil {
		return nil, err
	}
	h.SetStreamHandler(protocol.NetworkMarker(e.Net.Definition.Hash()), func(s network.Stream) { s.Reset() })
	h.Start(context.Background())
	return h, nil
}

// spamRecord is a fresh identity's signed record saying it is validating.
func spamRecord(network string, lifetime time.Duration) (string, []byte, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return "", nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	now := time.Now()
	raw, err := protocol.Seal(&pb.Availability{
		Network: network, Miner: []byte(id), Seq: 1, State: pb.MinerState_VALIDATING,
		Models: []string{inference.BuiltinModel}, IssuedMs: protocol.Ms(now), ExpiresMs: protocol.Ms(now.Add(lifetime)),
	}, key)
	return protocol.AvailabilityKey([]byte(id)), raw, err
}

// records is the memory (MB) of member name and the DHT records it holds.
func (e *Env) records(name string) (rss, held float64, err error) {
	if rss, err = e.rss(name); err != nil {
		return 0, 0, err
	}
	held, err = e.metric(name, "ephemera_dht_records")
	return rss, held, err
}
