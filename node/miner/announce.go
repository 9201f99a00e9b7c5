package miner

import (
	"context"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
)

// announceTimeout bounds one DHT put or provide.
const announceTimeout = 15 * time.Second

// announce tells the network a committed state: the record goes on gossip
// (every node's pool view) and into the DHT (routers' lookups). Called with
// m.mu held, so it only starts work.
func (m *Miner) announce(s State, record []byte) {
	m.lastRecord = time.Now()
	m.heardBy = m.poolPeers()
	m.gossip(m.d.PublishPool, record)
	if m.d.DHT != nil {
		m.spawn(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, announceTimeout)
			defer cancel()
			if err := m.d.DHT.PutValue(ctx, protocol.AvailabilityKey([]byte(m.self)), record); err != nil {
				m.log.Debug("put availability record", "err", err)
			}
		})
	}
	if s.State != pb.MinerState_AVAILABLE {
		// Provider records cannot be withdrawn; they lapse after the short
		// provide validity, and the record above says reserved at once.
		m.provided = time.Time{}
	}
}

// provide advertises the pool CIDs of the miner's models in the DHT.
func (m *Miner) provide(ctx context.Context) {
	m.mu.Lock()
	m.provided = time.Now()
	m.mu.Unlock()
	if m.d.DHT == nil {
		return
	}
	for _, model := range m.d.Backend.Models() {
		m.spawn(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, announceTimeout)
			defer cancel()
			if err := m.d.DHT.Provide(ctx, protocol.PoolCID(m.d.Check.Network, model), true); err != nil {
				m.log.Debug("provide pool", "model", model, "err", err)
			}
		})
	}
}

// gossip publishes data in the background; gossip is best effort, and the
// state it speaks of is already committed.
func (m *Miner) gossip(publish func(context.Context, []byte) error, data []byte) {
	if publish == nil {
		return
	}
	m.spawn(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, announceTimeout)
		defer cancel()
		if err := publish(ctx, data); err != nil {
			m.log.Debug("gossip", "err", err)
		}
	})
}

// spawn runs f in the background for as long as the miner runs; Stop
// cancels it and waits for it. Once Stop has begun, nothing new starts.
func (m *Miner) spawn(f func(ctx context.Context)) {
	m.spawnMu.Lock()
	defer m.spawnMu.Unlock()
	if m.ctx.Err() != nil {
		return
	}
	m.wg.Go(func() { f(m.ctx) })
}
