package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// claimTimeout bounds one claim to one miner, the retry of a lost
	// reply included.
	claimTimeout = 5 * time.Second
	// requestTimeout bounds one renewal or release.
	requestTimeout = 5 * time.Second
)

// sendClaim sends a sealed claim to miner and returns its verified grant.
// The miner answers the same claim with the same grant, so a reply lost
// after the claim was sent is asked for again with the same envelope.
func (r *Router) sendClaim(ctx context.Context, miner peer.ID, env []byte, expires time.Time) (protocol.Signed[*pb.Grant], error) {
	var (
		reply []byte
		err   error
	)
	for attempt := 0; ; attempt++ {
		var sent bool
		start := time.Now()
		reply, sent, err = r.exchange(ctx, miner, env)
		if err == nil {
			r.latency.observe(miner, time.Since(start))
		}
		if err == nil || !sent || attempt == 1 || ctx.Err() != nil || !r.now().Before(expires) {
			break
		}
	}
	if err != nil {
		return protocol.Signed[*pb.Grant]{}, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	return r.verifyGrant(reply, miner, env)
}

var (
	kindGrant, _   = protocol.KindOf(&pb.Grant{})
	kindRefusal, _ = protocol.KindOf(&pb.Refusal{})
)

// verifyGrant accepts a reply only if it is a valid grant, signed by the
// miner dialled, for exactly the claim sent. A refusal becomes an error
// that names its reason.
func (r *Router) verifyGrant(reply []byte, miner peer.ID, claimEnv []byte) (protocol.Signed[*pb.Grant], error) {
	payloadType, err := protocol.PayloadType(reply)
	if err != nil {
		return protocol.Signed[*pb.Grant]{}, fmt.Errorf("reply: %w", err)
	}
	digest := protocol.Digest(claimEnv)
	switch {
	case bytes.Equal(payloadType, kindRefusal.PayloadType):
		ref, err := protocol.Open[pb.Refusal](reply)
		switch {
		case err != nil:
			return protocol.Signed[*pb.Grant]{}, fmt.Errorf("refusal: %w", err)
		case ref.Signer != miner:
			return protocol.Signed[*pb.Grant]{}, fmt.Errorf("refusal signed by %s, not the miner", ref.Signer)
		}
		msg := "refused " + ref.Msg.Reason.String()
		if ref.Msg.Detail != "" {
			msg += " (" + ref.Msg.Detail + ")"
		}
		if ref.Msg.ClaimDigest != nil && !bytes.Equal(ref.Msg.ClaimDigest, digest) {
			msg += " for another claim"
		}
		return protocol.Signed[*pb.Grant]{}, errors.New(msg)
	case !bytes.Equal(payloadType, kindGrant.PayloadType):
		return protocol.Signed[*pb.Grant]{}, fmt.Errorf("reply of payload type %q", payloadType)
	}
	g, err := protocol.Open[pb.Grant](reply)
	if err != nil {
		return g, fmt.Errorf("grant: %w", err)
	}
	if g.Signer != miner {
		return g, fmt.Errorf("grant signed by %s, not the miner dialled", g.Signer)
	}
	if _, err := r.d.Check.Grant(g); err != nil {
		return g, fmt.Errorf("grant: %w", err)
	}
	if !bytes.Equal(g.Msg.ClaimDigest, digest) {
		return g, errors.New("grant is for another claim")
	}
	if !protocol.Time(g.Msg.LeaseEndMs).After(r.now()) {
		return g, errors.New("grant's lease already ended")
	}
	return g, nil
}

// staleConnWait is how long a request on an existing connection may go
// unanswered before the connection is presumed dead: a QUIC connection to a
// miner that was killed looks open until its idle timeout.
const staleConnWait = 3 * time.Second

// exchange sends one request to miner on the reserve protocol and reads one
// reply. sent reports whether a stream was opened, after which the request
// may have reached the miner and been acted on. A request that fails on an
// existing connection is sent once more on a fresh one
// (protocol.CallRedial); every request of the protocol may safely be sent
// twice.
func (r *Router) exchange(ctx context.Context, miner peer.ID, req []byte) (reply []byte, sent bool, err error) {
	reply, _, err = protocol.CallRedial(ctx, r.d.Host, miner, protocol.ReserveProtocol(r.d.Network), req, protocol.MaxReserveReplySize, staleConnWait)
	return reply, !errors.Is(err, protocol.ErrNoStream), err
}

// verifyReceipt accepts a reply only if it is the miner's receipt for req.
func (r *Router) verifyReceipt(reply []byte, miner peer.ID, req []byte) (*pb.Receipt, error) {
	rc, err := protocol.Open[pb.Receipt](reply)
	switch {
	case err != nil:
		return nil, fmt.Errorf("receipt: %w", err)
	case rc.Signer != miner || !bytes.Equal(rc.Msg.Miner, []byte(miner)):
		return nil, fmt.Errorf("receipt signed by %s, not the miner", rc.Signer)
	case rc.Msg.Network != r.d.Network:
		return nil, fmt.Errorf("receipt for network %q", rc.Msg.Network)
	case !bytes.Equal(rc.Msg.RequestDigest, protocol.Digest(req)):
		return nil, errors.New("receipt is for another request")
	}
	return rc.Msg, nil
}

// request seals msg, sends it to e's miner and returns the verified receipt.
func request[T any, M protocol.Message[T]](ctx context.Context, r *Router, e *entry, msg M) (*pb.Receipt, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	env, err := protocol.Seal(msg, r.d.Key)
	if err != nil {
		return nil, err
	}
	reply, _, err := r.exchange(ctx, e.miner, env)
	if err != nil {
		return nil, err
	}
	return r.verifyReceipt(reply, e.miner, env)
}

func (r *Router) sendRenew(ctx context.Context, e *entry) (*pb.Receipt, error) {
	return request(ctx, r, e, &pb.Renew{
		Network:    r.d.Network,
		Session:    e.res.ID,
		Router:     []byte(r.self),
		Miner:      []byte(e.miner),
		Generation: e.res.Generation,
		LeaseMs:    uint32(e.lease.Milliseconds()),
		IssuedMs:   protocol.Ms(r.now()),
	})
}

func (r *Router) sendRelease(ctx context.Context, e *entry, outcome pb.Outcome) (*pb.Receipt, error) {
	return request(ctx, r, e, &pb.Release{
		Network:    r.d.Network,
		Session:    e.res.ID,
		Signer:     []byte(r.self),
		Miner:      []byte(e.miner),
		Router:     []byte(r.self),
		Generation: e.res.Generation,
		Outcome:    outcome,
		IssuedMs:   protocol.Ms(r.now()),
	})
}
