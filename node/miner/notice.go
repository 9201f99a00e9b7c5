package miner

import (
	"bufio"
	"bytes"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// noticeTimeout bounds reading one notice: an oracle writes it at once.
const noticeTimeout = 5 * time.Second

// handleNotice takes one verdict an oracle sends about this miner: an
// attestation, which goes into the miner's pool view as one from gossip
// would, or an eviction. Only an oracle of the set may send one, and only
// its own: the stream is reset before reading anything else.
func (m *Miner) handleNotice(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	if !m.d.Check.Params.IsOracle(from) {
		s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(noticeTimeout))
	raw, err := protocol.ReadStream(s, bufio.NewReader(s), protocol.MaxNoticeSize)
	if err != nil {
		s.Reset()
		return
	}
	if err := m.notice(raw, from); err != nil {
		m.log.Debug("notice refused", "peer", from, "err", err)
	}
}

var (
	kindAttestation, _ = protocol.KindOf(&pb.Attestation{})
	kindEviction, _    = protocol.KindOf(&pb.Eviction{})
)

// notice dispatches one notice on its payload type.
func (m *Miner) notice(raw []byte, from peer.ID) error {
	pt, err := protocol.PayloadType(raw)
	if err != nil {
		return err
	}
	switch {
	case bytes.Equal(pt, kindAttestation.PayloadType):
		a, err := protocol.OpenCached[pb.Attestation](m.d.Check.Cache, raw)
		if err != nil {
			return err
		}
		if a.Signer != from || !bytes.Equal(a.Msg.Miner, []byte(m.self)) {
			return fmt.Errorf("attestation by %s about another miner, or relayed", a.Signer)
		}
		// A double verdict would be evidence; gossip carries that, and a
		// miner reports nothing: the duplicate is only refused here.
		_, err = m.d.Pool.AddAttestation(a)
		return err
	case bytes.Equal(pt, kindEviction.PayloadType):
		e, err := protocol.OpenCached[pb.Eviction](m.d.Check.Cache, raw)
		if err != nil {
			return err
		}
		if e.Signer != from {
			return fmt.Errorf("eviction by %s relayed", e.Signer)
		}
		return m.evict(e)
	default:
		return fmt.Errorf("payload type %q is not a notice", pt)
	}
}
