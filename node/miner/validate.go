package miner

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// validateTimeout bounds one challenge exchange on the miner's side.
const validateTimeout = 2 * time.Minute

// challengeReadTimeout bounds reading the challenge itself: an oracle sends
// it at once, and a peer that does not must not hold the stream.
const challengeReadTimeout = 5 * time.Second

// handleValidate answers an oracle's challenge: every task through the
// backend, timed, in one signed answer. A challenge the miner should not
// answer (not from an oracle of the set, not for it, not for its current
// generation) gets the stream reset.
func (m *Miner) handleValidate(s network.Stream) {
	defer s.Close()
	// The challenge is read and checked before it may take a slot, so only
	// an oracle of the set can occupy the engine, not any peer that opens
	// streams and sends nothing.
	_ = s.SetDeadline(time.Now().Add(challengeReadTimeout))
	raw, err := protocol.ReadStream(s, bufio.NewReader(s), protocol.MaxChallengeSize)
	if err != nil {
		s.Reset()
		return
	}
	ch, err := m.checkChallenge(raw, s.Conn().RemotePeer())
	if err != nil {
		m.log.Debug("challenge refused", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	select {
	case m.sem <- struct{}{}:
		defer func() { <-m.sem }()
	default:
		// More concurrent challenges from the oracle set than rendezvous
		// assigns: the oracle counts this as a failure.
		m.log.Warn("challenge refused: every validation slot is busy", "peer", s.Conn().RemotePeer())
		s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(validateTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), validateTimeout)
	defer cancel()
	answer, err := m.answer(ctx, ch, protocol.Digest(raw))
	if err != nil {
		m.log.Warn("answering challenge", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	if err := protocol.WriteMsg(s, answer); err != nil {
		s.Reset()
	}
}

func (m *Miner) checkChallenge(raw []byte, from peer.ID) (*pb.Challenge, error) {
	sc, err := protocol.Open[pb.Challenge](raw)
	if err != nil {
		return nil, err
	}
	c := sc.Msg
	switch {
	case c.Network != m.d.Check.Network:
		return nil, fmt.Errorf("network %q", c.Network)
	case string(c.Oracle) != string(sc.Signer) || !m.d.Check.Params.IsOracle(sc.Signer):
		return nil, fmt.Errorf("signer %s is not an oracle", sc.Signer)
	case sc.Signer != from:
		return nil, fmt.Errorf("challenge relayed by %s", from)
	case string(c.Miner) != string(m.self):
		return nil, fmt.Errorf("challenge is for another miner")
	case len(c.Tasks) == 0 || len(c.Tasks) > 64:
		return nil, fmt.Errorf("%d tasks", len(c.Tasks))
	}
	st := m.State()
	if c.Generation != st.Generation {
		return nil, fmt.Errorf("generation %d, current is %d", c.Generation, st.Generation)
	}
	if st.State != pb.MinerState_VALIDATING && st.State != pb.MinerState_AVAILABLE {
		return nil, fmt.Errorf("not validating (%s)", st.State)
	}
	return c, nil
}

// answer runs every task of the challenge through the backend.
func (m *Miner) answer(ctx context.Context, c *pb.Challenge, digest []byte) ([]byte, error) {
	models := m.d.Backend.Models()
	model := ""
	if len(models) > 0 {
		model = models[0]
	}
	a := &pb.Answer{Network: c.Network, ChallengeDigest: digest, Miner: []byte(m.self), Model: model}
	for _, t := range c.Tasks {
		start := time.Now()
		resp, err := m.d.Backend.Generate(ctx, inference.GenerateRequest{
			Model:    model,
			Messages: []inference.Message{{Role: "user", Content: t.Prompt}},
		})
		text := resp.Text
		if err != nil {
			text = "" // a failed task is graded as wrong, not fatal to the set
		}
		a.Outputs = append(a.Outputs, text)
		a.LatenciesMs = append(a.LatenciesMs, uint32(time.Since(start).Milliseconds()))
	}
	return protocol.Seal(a, m.d.Key)
}
