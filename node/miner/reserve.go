package miner

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/record"
)

// reserveTimeout bounds one request on the reserve protocol.
const reserveTimeout = 10 * time.Second

// handleReserve answers one claim, renewal or release with a signed reply.
func (m *Miner) handleReserve(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(reserveTimeout))
	raw, err := protocol.ReadStream(s, bufio.NewReader(s), protocol.MaxReserveRequestSize)
	if err != nil {
		s.Reset()
		return
	}
	reply, err := m.reserveRequest(raw)
	if err != nil {
		m.log.Debug("reserve request dropped", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	if err := protocol.WriteMsg(s, reply); err != nil {
		s.Reset()
	}
}

// reserveRequest dispatches on the envelope's payload type.
func (m *Miner) reserveRequest(raw []byte) ([]byte, error) {
	env, err := record.UnmarshalEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("not an envelope: %w", err)
	}
	kindClaim, _ := protocol.KindOf(&pb.Claim{})
	kindRenew, _ := protocol.KindOf(&pb.Renew{})
	kindRelease, _ := protocol.KindOf(&pb.Release{})
	switch {
	case bytes.Equal(env.PayloadType, kindClaim.PayloadType):
		return m.Claim(raw)
	case bytes.Equal(env.PayloadType, kindRenew.PayloadType):
		return m.renew(raw)
	case bytes.Equal(env.PayloadType, kindRelease.PayloadType):
		return m.release(raw)
	default:
		return nil, fmt.Errorf("payload type %q", env.PayloadType)
	}
}

// Claim decides a router's claim: a compare-and-set from available at the
// claimed generation to reserved, committed with sync before the signed grant
// leaves. Anything else gets a signed refusal that says why. The same claim
// sent again gets the same grant, so a router whose reply was lost (or whose
// miner crashed after committing) loses nothing by retrying.
func (m *Miner) Claim(raw []byte) ([]byte, error) {
	claim, err := protocol.Open[pb.Claim](raw)
	if err != nil {
		return m.refuse(nil, pb.RefusalReason_BAD_SIGNATURE, err.Error())
	}
	digest := claim.Digest()
	// A claim already granted gets its grant back even if it has expired
	// since: the router's retry must find the grant, not a refusal.
	if s := m.State(); s.State == pb.MinerState_RESERVED && bytes.Equal(s.ClaimDigest, digest) {
		m.gossip(m.d.PublishReservations, s.Grant)
		return s.Grant, nil
	}
	if err := m.d.Check.Claim(claim, m.self); err != nil {
		reason := pb.RefusalReason_BAD_CLAIM
		if errors.Is(err, protocol.ErrIgnore) {
			reason = pb.RefusalReason_EXPIRED_CLAIM
		}
		return m.refuse(digest, reason, err.Error())
	}
	if why := m.refusesRouter(claim.Signer, time.Now()); why != "" {
		return m.refuse(digest, pb.RefusalReason_BUSY, why)
	}
	var grant []byte
	var refusal pb.RefusalReason
	var detail string
	fresh := false
	_, err = m.commit(func(s State, now time.Time) (State, error) {
		switch {
		case s.State == pb.MinerState_RESERVED && bytes.Equal(s.ClaimDigest, digest):
			grant = s.Grant
			return s, errNoChange
		case s.State == pb.MinerState_RESERVED:
			refusal, detail = pb.RefusalReason_BUSY, "reserved for another session"
			return s, errNoChange
		case s.State != pb.MinerState_AVAILABLE:
			refusal, detail = pb.RefusalReason_NOT_VALIDATED, "state "+s.State.String()
			return s, errNoChange
		case claim.Msg.Generation != s.Generation:
			refusal, detail = pb.RefusalReason_WRONG_GENERATION, fmt.Sprintf("current generation is %d", s.Generation)
			return s, errNoChange
		}
		leaseEnd := now.Add(time.Duration(claim.Msg.LeaseMs) * time.Millisecond)
		g, err := protocol.Seal(&pb.Grant{
			Network:     m.d.Check.Network,
			Miner:       []byte(m.self),
			Router:      claim.Msg.Router,
			Session:     claim.Msg.Session,
			Generation:  s.Generation,
			LeaseEndMs:  protocol.Ms(leaseEnd),
			ClaimDigest: digest,
			Claim:       raw,
		}, m.d.Key)
		if err != nil {
			return s, err
		}
		s = s.enter(pb.MinerState_RESERVED, now)
		s.Session, s.Router, s.LeaseEnd, s.ClaimDigest, s.Grant = claim.Msg.Session, claim.Signer, leaseEnd, digest, g
		grant, fresh = g, true
		return s, nil
	})
	switch {
	case err != nil && !errors.Is(err, errNoChange):
		// Not committed: this grant must never leave, or a later claim
		// could be granted the same generation.
		return nil, err
	case grant != nil:
		if fresh {
			m.log.Info("miner state", "to", "reserved", "reservation", claim.Msg.Session, "peer", claim.Signer)
		}
		m.gossip(m.d.PublishReservations, grant) // again on a retry: a lost grant is found again
		return grant, nil
	case errors.Is(err, errNoChange):
		return m.refuse(digest, refusal, detail)
	default:
		return nil, err
	}
}

func (m *Miner) refuse(digest []byte, reason pb.RefusalReason, detail string) ([]byte, error) {
	s := m.State()
	return protocol.Seal(&pb.Refusal{
		Network: m.d.Check.Network, Miner: []byte(m.self), ClaimDigest: digest,
		Reason: reason, Detail: detail, State: s.State, Generation: s.Generation,
	}, m.d.Key)
}

func (m *Miner) receipt(req []byte, ok bool, detail string) ([]byte, error) {
	s := m.State()
	var leaseEnd int64 // 0 when the miner holds no reservation
	if !s.LeaseEnd.IsZero() {
		leaseEnd = protocol.Ms(s.LeaseEnd)
	}
	return protocol.Seal(&pb.Receipt{
		Network: m.d.Check.Network, Miner: []byte(m.self), RequestDigest: protocol.Digest(req),
		Ok: ok, Detail: detail, LeaseEndMs: leaseEnd, Generation: s.Generation, State: s.State,
	}, m.d.Key)
}

// renew extends the lease of the reservation the router holds, up to the
// longest lease the network allows.
func (m *Miner) renew(raw []byte) ([]byte, error) {
	r, err := protocol.Open[pb.Renew](raw)
	if err != nil {
		return nil, err
	}
	var detail string
	_, err = m.commitQuiet(func(s State, now time.Time) (State, error) {
		lease := time.Duration(r.Msg.LeaseMs) * time.Millisecond
		switch {
		case r.Msg.Network != m.d.Check.Network || string(r.Msg.Router) != string(r.Signer):
			detail = "malformed renewal"
		case s.State != pb.MinerState_RESERVED || s.Session != r.Msg.Session || s.Router != r.Signer || s.Generation != r.Msg.Generation:
			detail = "no such reservation"
		case !now.Before(s.LeaseEnd):
			detail = "lease already ended"
		case lease < protocol.MinLease || lease > m.d.Check.Params.LeaseMax.Std():
			detail = fmt.Sprintf("lease %s out of bounds (%s to %s)", lease, protocol.MinLease, m.d.Check.Params.LeaseMax)
		default:
			s.LeaseEnd = now.Add(lease)
			return s, nil
		}
		return s, errNoChange
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return nil, err
	}
	return m.receipt(raw, detail == "", detail)
}

// release ends the reservation at the router's request: the generation goes
// up by one, so no attestation of the old one counts again, and the miner
// must be validated anew. The release is gossiped for every pool view.
func (m *Miner) release(raw []byte) ([]byte, error) {
	r, err := protocol.Open[pb.Release](raw)
	if err != nil {
		return nil, err
	}
	if err := m.d.Check.Release(r); err != nil {
		return m.receipt(raw, false, err.Error())
	}
	var detail string
	_, err = m.commit(func(s State, now time.Time) (State, error) {
		if s.State != pb.MinerState_RESERVED || s.Session != r.Msg.Session || s.Router != r.Signer ||
			s.Generation != r.Msg.Generation || string(r.Msg.Miner) != string(m.self) {
			detail = "no such reservation"
			return s, errNoChange
		}
		return s.revalidate(now), nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return nil, err
	}
	if detail == "" {
		m.log.Info("miner state", "from", "reserved", "to", "validating", "generation", m.State().Generation, "why", "released by router",
			"reservation", r.Msg.Session, "peer", r.Signer)
		m.gossip(m.d.PublishReservations, raw)
	}
	return m.receipt(raw, detail == "", detail)
}

// expire ends a reservation whose lease has run out, with a release the
// miner signs itself.
func (m *Miner) expire() {
	var rel []byte
	_, err := m.commit(func(s State, now time.Time) (State, error) {
		if s.State != pb.MinerState_RESERVED || now.Before(s.LeaseEnd) {
			return s, errNoChange
		}
		var err error
		rel, err = protocol.Seal(&pb.Release{
			Network: m.d.Check.Network, Session: s.Session, Signer: []byte(m.self), Miner: []byte(m.self),
			Router: []byte(s.Router), Generation: s.Generation, Outcome: pb.Outcome_EXPIRED, IssuedMs: protocol.Ms(now),
		}, m.d.Key)
		if err != nil {
			return s, err
		}
		return s.revalidate(now), nil
	})
	if err != nil {
		if !errors.Is(err, errNoChange) {
			m.log.Error("lease expiry", "err", err)
		}
		return
	}
	m.log.Info("miner state", "from", "reserved", "to", "validating", "generation", m.State().Generation, "why", "lease expired")
	m.gossip(m.d.PublishReservations, rel)
}
