package protocol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
)

// ErrNoStream is wrapped by the error of a Call or Send that could not open
// a stream to the peer: nothing was sent. After any other error the peer
// may have acted on the request.
var ErrNoStream = errors.New("no stream")

// noStream marks err as ErrNoStream and keeps its text.
type noStream struct{ error }

func (e noStream) Unwrap() error      { return e.error }
func (noStream) Is(target error) bool { return target == ErrNoStream }

// Call is one request and its reply, as every request/reply protocol of the
// network runs: it opens a stream to p for proto, writes req as one
// length-prefixed message, closes its side, and reads one reply of at most
// maxReply bytes. ctx bounds it all: its deadline is the stream's, and its
// end resets the stream. rtt runs from writing req to reading the reply, so
// it leaves out the dial.
func Call(ctx context.Context, h host.Host, p peer.ID, proto libp2pprotocol.ID, req []byte, maxReply int) (reply []byte, rtt time.Duration, err error) {
	s, err := open(ctx, h, p, proto)
	if err != nil {
		return nil, 0, err
	}
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	start := time.Now()
	if err := write(s, req); err != nil {
		return nil, 0, failed(ctx, s, "write request", err)
	}
	if err := s.CloseWrite(); err != nil {
		return nil, 0, failed(ctx, s, "close write", err)
	}
	if reply, err = ReadStream(s, bufio.NewReader(s), maxReply); err != nil {
		return nil, 0, failed(ctx, s, "read reply", err)
	}
	rtt = time.Since(start)
	_ = s.Close()
	return reply, rtt, nil
}

// CallRedial is Call for a request the peer may safely receive twice, made
// robust to a peer that restarted. Such a peer leaves connections that look
// open: a killed process's QUIC connection does until its idle timeout, or
// until the process that took over its port answers with a stateless reset.
// So if the call fails on a connection that was open before it (within
// staleWait, when staleWait > 0), the peer's connections are closed and the
// request is sent once more, on a fresh one, in what is left of ctx. The
// error wraps ErrNoStream only if neither attempt sent anything.
func CallRedial(ctx context.Context, h host.Host, p peer.ID, proto libp2pprotocol.ID, req []byte, maxReply int, staleWait time.Duration) (reply []byte, rtt time.Duration, err error) {
	if h.Network().Connectedness(p) != network.Connected {
		return Call(ctx, h, p, proto, req, maxReply)
	}
	first := ctx
	if staleWait > 0 {
		var cancel context.CancelFunc
		first, cancel = context.WithTimeout(ctx, staleWait)
		defer cancel()
	}
	reply, rtt, err = Call(first, h, p, proto, req, maxReply)
	if err == nil || ctx.Err() != nil {
		return reply, rtt, err
	}
	sent := !errors.Is(err, ErrNoStream)
	_ = h.Network().ClosePeer(p)
	reply, rtt, err = Call(ctx, h, p, proto, req, maxReply)
	if sent && errors.Is(err, ErrNoStream) {
		// The first attempt may have reached the peer.
		err = fmt.Errorf("%s, after a failed attempt on an old connection", err.Error())
	}
	return reply, rtt, err
}

// failed resets s and says what failed, and why ctx ended if it did: a
// reset it caused shows only as a reset stream.
func failed(ctx context.Context, s network.Stream, what string, err error) error {
	_ = s.Reset()
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w (%w)", what, err, ctx.Err())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Send opens a stream to p for proto and writes msg as its first message,
// for a conversation longer than one reply: the caller reads from r, may
// write more, and closes or resets s. ctx's deadline becomes the stream's.
func Send(ctx context.Context, h host.Host, p peer.ID, proto libp2pprotocol.ID, msg []byte) (s network.Stream, r *bufio.Reader, err error) {
	if s, err = open(ctx, h, p, proto); err != nil {
		return nil, nil, err
	}
	if err := write(s, msg); err != nil {
		_ = s.Reset()
		return nil, nil, fmt.Errorf("write request: %w", err)
	}
	return s, bufio.NewReader(s), nil
}

// open opens a stream with ctx's deadline.
func open(ctx context.Context, h host.Host, p peer.ID, proto libp2pprotocol.ID) (network.Stream, error) {
	s, err := h.NewStream(ctx, p, proto)
	if err != nil {
		return nil, noStream{err}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	return s, nil
}

// write writes msg in one Write, length and all: one packet for a small one.
func write(s network.Stream, msg []byte) error {
	w := bufio.NewWriter(s)
	if err := WriteMsg(w, msg); err != nil {
		return err
	}
	return w.Flush()
}
