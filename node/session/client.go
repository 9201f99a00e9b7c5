package session

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// errBadReveal marks a reveal that does not match its commitment: a fault
// of the miner, counted against its reputation.
var errBadReveal = errors.New("reveal does not match the commitment")

var (
	kindResult, _ = protocol.KindOf(&pb.TaskResult{})
	kindCommit, _ = protocol.KindOf(&pb.TaskCommit{})
	kindError, _  = protocol.KindOf(&pb.TaskError{})
)

// call is one task sent to one held miner.
type call struct {
	miner  peer.ID
	env    []byte // the signed SessionTask
	digest []byte
	start  time.Time

	// Filled as the call goes.
	result     protocol.Signed[*pb.TaskResult]
	commitment []byte
	roundTrip  time.Duration
}

// sealTask signs the task for one miner of the session.
func (m *Manager) sealTask(t *Task, h *held, mode pb.TaskMode, deadline time.Time) (*call, error) {
	msgs := make([]*pb.ChatMessage, len(t.Messages))
	for i, msg := range t.Messages {
		msgs[i] = &pb.ChatMessage{Role: msg.Role, Content: msg.Content}
	}
	env, err := protocol.Seal(&pb.SessionTask{
		Network:     m.d.Check.Network,
		Session:     h.res.ID,
		Router:      []byte(m.self),
		Miner:       []byte(h.miner),
		Generation:  h.res.Generation,
		GrantDigest: protocol.Digest(h.res.Grant),
		Task:        t.Session + "/" + t.ID,
		Model:       t.Model,
		Messages:    msgs,
		MaxTokens:   uint32(t.MaxTokens),
		Mode:        mode,
		IssuedMs:    protocol.Ms(m.now()),
		DeadlineMs:  protocol.Ms(deadline),
	}, m.d.Key)
	if err != nil {
		return nil, err
	}
	return &call{miner: h.miner, env: env, digest: protocol.Digest(env)}, nil
}

// open starts a call: a session stream to the miner with the task written.
func (m *Manager) open(ctx context.Context, c *call) (network.Stream, *bufio.Reader, error) {
	c.start = time.Now()
	s, r, err := protocol.Send(ctx, m.d.Host, c.miner, protocol.SessionProtocol(m.d.Check.Network), c.env)
	switch {
	case errors.Is(err, protocol.ErrNoStream):
		return nil, nil, fmt.Errorf("unreachable: %w", err)
	case err != nil:
		return nil, nil, fmt.Errorf("send task: %w", err)
	}
	return s, r, nil
}

// cancelOnDone resets s when ctx ends, so a session that ends does not wait
// for a miner's answer; the returned func stops watching.
func cancelOnDone(ctx context.Context, s network.Stream) func() bool {
	return context.AfterFunc(ctx, func() { s.Reset() })
}

// streamCall runs c in stream mode: deltas go to onDelta as they arrive,
// and the signed result must be exactly their concatenation.
func (m *Manager) streamCall(ctx context.Context, c *call, onDelta func(string) error) error {
	s, r, err := m.open(ctx, c)
	if err != nil {
		return err
	}
	defer s.Close()
	defer cancelOnDone(ctx, s)()
	_ = s.CloseWrite()
	var text strings.Builder
	for {
		f, err := protocol.ReadFrame(r)
		if err != nil {
			s.Reset()
			return fmt.Errorf("read answer: %w", err)
		}
		switch b := f.Body.(type) {
		case *pb.SessionFrame_Delta:
			if text.Len()+len(b.Delta) > protocol.MaxMessageSize {
				s.Reset()
				return errors.New("streamed answer exceeds the message size")
			}
			text.WriteString(b.Delta)
			if onDelta != nil {
				if err := onDelta(b.Delta); err != nil {
					s.Reset()
					return err
				}
			}
		case *pb.SessionFrame_Envelope:
			res, err := m.openResult(b.Envelope, c)
			if err != nil {
				s.Reset()
				return err
			}
			if res.Msg.Output != text.String() {
				return errors.New("signed answer differs from the streamed one")
			}
			c.result, c.roundTrip = res, time.Since(c.start)
			return nil
		}
	}
}

// commitCall runs c in commit-reveal mode: it reads the miner's commitment,
// reports it on committed, waits for reveal to close (every miner of the
// task has committed or failed), asks for the reveal and checks it against
// the commitment.
func (m *Manager) commitCall(ctx context.Context, c *call, committed chan<- error, reveal <-chan struct{}, commitments *uint32) error {
	s, r, err := m.open(ctx, c)
	if err != nil {
		committed <- err
		return err
	}
	defer s.Close()
	defer cancelOnDone(ctx, s)()
	commit, err := m.readCommit(r, c)
	committed <- err
	if err != nil {
		s.Reset()
		return err
	}
	c.commitment = commit
	select {
	case <-reveal:
	case <-ctx.Done():
		s.Reset()
		return ctx.Err()
	}
	rv, err := protocol.Seal(&pb.Reveal{
		Network: m.d.Check.Network, Router: []byte(m.self), Miner: []byte(c.miner), TaskDigest: c.digest,
		Commitments: *commitments,
	}, m.d.Key)
	if err != nil {
		s.Reset()
		return err
	}
	if err := protocol.WriteMsg(s, rv); err != nil {
		s.Reset()
		return fmt.Errorf("send reveal: %w", err)
	}
	_ = s.CloseWrite()
	f, err := protocol.ReadFrame(r)
	if err != nil {
		s.Reset()
		return fmt.Errorf("read reveal: %w", err)
	}
	env, ok := f.Body.(*pb.SessionFrame_Envelope)
	if !ok {
		s.Reset()
		return errors.New("reveal is not a signed result")
	}
	res, err := m.openResult(env.Envelope, c)
	if err != nil {
		return err
	}
	if !bytes.Equal(protocol.ResultHash(res.Raw), c.commitment) {
		return errBadReveal
	}
	c.result, c.roundTrip = res, time.Since(c.start)
	return nil
}

func (m *Manager) readCommit(r *bufio.Reader, c *call) ([]byte, error) {
	f, err := protocol.ReadFrame(r)
	if err != nil {
		return nil, fmt.Errorf("read commitment: %w", err)
	}
	env, ok := f.Body.(*pb.SessionFrame_Envelope)
	if !ok {
		return nil, errors.New("a delta instead of a commitment")
	}
	pt, err := protocol.PayloadType(env.Envelope)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes.Equal(pt, kindError.PayloadType):
		return nil, m.openError(env.Envelope, c)
	case !bytes.Equal(pt, kindCommit.PayloadType):
		return nil, fmt.Errorf("a %q instead of a commitment", pt)
	}
	cm, err := protocol.Open[pb.TaskCommit](env.Envelope)
	if err != nil {
		return nil, err
	}
	if err := m.d.Check.TaskCommit(cm, c.miner, c.digest); err != nil {
		return nil, err
	}
	return cm.Msg.ResultHash, nil
}

// openResult opens a miner's signed result to c, or the error it sent.
func (m *Manager) openResult(env []byte, c *call) (protocol.Signed[*pb.TaskResult], error) {
	pt, err := protocol.PayloadType(env)
	if err != nil {
		return protocol.Signed[*pb.TaskResult]{}, err
	}
	switch {
	case bytes.Equal(pt, kindError.PayloadType):
		return protocol.Signed[*pb.TaskResult]{}, m.openError(env, c)
	case !bytes.Equal(pt, kindResult.PayloadType):
		return protocol.Signed[*pb.TaskResult]{}, fmt.Errorf("a %q instead of a result", pt)
	}
	res, err := protocol.Open[pb.TaskResult](env)
	if err != nil {
		return res, err
	}
	return res, m.d.Check.TaskResult(res, c.miner, c.digest)
}

// openError turns a miner's signed TaskError into an error naming its code.
func (m *Manager) openError(env []byte, c *call) error {
	te, err := protocol.Open[pb.TaskError](env)
	if err != nil {
		return err
	}
	if err := m.d.Check.TaskError(te, c.miner, c.digest); err != nil {
		return err
	}
	msg := "miner refused the task: " + strings.TrimPrefix(te.Msg.Code.String(), "TASK_ERROR_")
	if te.Msg.Detail != "" {
		msg += " (" + te.Msg.Detail + ")"
	}
	return errors.New(msg)
}
