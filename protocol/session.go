package protocol

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// Limits of a session task, checked by both ends.
const (
	// MaxTaskID bounds a task id, in bytes.
	MaxTaskID = 128
	// MaxTaskMessages bounds the messages of one task's prompt.
	MaxTaskMessages = 256
	// MaxTaskTokens bounds a task's max_tokens.
	MaxTaskTokens = 1 << 16
)

// ChatRoles are the roles a task's message may have.
var ChatRoles = []string{"system", "user", "assistant"}

// SessionTask checks a task as its miner receives it: signed by the router
// it names, for self, well formed and not past its deadline. Whether the
// miner holds that reservation is for the miner to check.
func (c Checker) SessionTask(s Signed[*pb.SessionTask], self peer.ID) error {
	t := s.Msg
	if err := c.network(t.Network); err != nil {
		return err
	}
	router, err := PeerID(t.Router)
	if err != nil {
		return err
	}
	if router != s.Signer {
		return rejectf("task names router %s but is signed by %s", router, s.Signer)
	}
	miner, err := PeerID(t.Miner)
	if err != nil {
		return err
	}
	if self != "" && miner != self {
		return rejectf("task is for %s", miner)
	}
	switch {
	case t.Session == "" || len(t.Session) > 128:
		return rejectf("session id of %d bytes", len(t.Session))
	case t.Task == "" || len(t.Task) > MaxTaskID:
		return rejectf("task id of %d bytes", len(t.Task))
	case len(t.GrantDigest) != sha256.Size:
		return rejectf("grant digest of %d bytes", len(t.GrantDigest))
	case t.Mode != pb.TaskMode_TASK_MODE_STREAM && t.Mode != pb.TaskMode_TASK_MODE_COMMIT_REVEAL:
		return rejectf("unknown mode %d", t.Mode)
	case len(t.Messages) == 0 || len(t.Messages) > MaxTaskMessages:
		return rejectf("%d messages, must be 1 to %d", len(t.Messages), MaxTaskMessages)
	case t.MaxTokens > MaxTaskTokens:
		return rejectf("max_tokens %d, at most %d", t.MaxTokens, MaxTaskTokens)
	case len(t.Model) > 256 || !utf8.ValidString(t.Model):
		return rejectf("bad model name")
	}
	for i, m := range t.Messages {
		if !validRole(m.Role) {
			return rejectf("message %d: role %q", i, m.Role)
		}
		if !utf8.ValidString(m.Content) {
			return rejectf("message %d: content is not UTF-8", i)
		}
	}
	if err := c.notFuture(t.IssuedMs); err != nil {
		return err
	}
	if !Time(t.DeadlineMs).After(c.Time()) {
		return ignoref("task deadline passed")
	}
	return nil
}

func validRole(r string) bool { return slices.Contains(ChatRoles, r) }

// TaskResult checks a miner's answer to the task with digest taskDigest.
func (c Checker) TaskResult(s Signed[*pb.TaskResult], miner peer.ID, taskDigest []byte) error {
	r := s.Msg
	if err := c.network(r.Network); err != nil {
		return err
	}
	switch {
	case s.Signer != miner || !bytes.Equal(r.Miner, []byte(miner)):
		return rejectf("result signed by %s, not the miner", s.Signer)
	case !bytes.Equal(r.TaskDigest, taskDigest):
		return rejectf("result is for another task")
	case !utf8.ValidString(r.Output):
		return rejectf("output is not UTF-8")
	}
	return nil
}

// TaskCommit checks a miner's commitment to its answer to the task with
// digest taskDigest.
func (c Checker) TaskCommit(s Signed[*pb.TaskCommit], miner peer.ID, taskDigest []byte) error {
	m := s.Msg
	if err := c.network(m.Network); err != nil {
		return err
	}
	switch {
	case s.Signer != miner || !bytes.Equal(m.Miner, []byte(miner)):
		return rejectf("commitment signed by %s, not the miner", s.Signer)
	case !bytes.Equal(m.TaskDigest, taskDigest):
		return rejectf("commitment is for another task")
	case len(m.ResultHash) != sha256.Size:
		return rejectf("result hash of %d bytes", len(m.ResultHash))
	}
	return nil
}

// Reveal checks a router's request to reveal, as the miner that committed
// to an answer for the task with digest taskDigest receives it.
func (c Checker) Reveal(s Signed[*pb.Reveal], router, self peer.ID, taskDigest []byte) error {
	r := s.Msg
	if err := c.network(r.Network); err != nil {
		return err
	}
	switch {
	case s.Signer != router || !bytes.Equal(r.Router, []byte(router)):
		return rejectf("reveal signed by %s, not the task's router", s.Signer)
	case !bytes.Equal(r.Miner, []byte(self)):
		return rejectf("reveal is for another miner")
	case !bytes.Equal(r.TaskDigest, taskDigest):
		return rejectf("reveal is for another task")
	}
	return nil
}

// TaskError checks a miner's refusal of the task with digest taskDigest.
func (c Checker) TaskError(s Signed[*pb.TaskError], miner peer.ID, taskDigest []byte) error {
	e := s.Msg
	if err := c.network(e.Network); err != nil {
		return err
	}
	switch {
	case s.Signer != miner || !bytes.Equal(e.Miner, []byte(miner)):
		return rejectf("task error signed by %s, not the miner", s.Signer)
	case !bytes.Equal(e.TaskDigest, taskDigest):
		return rejectf("task error is for another task")
	}
	return nil
}

// ResultHash is what a miner commits to: the SHA-256 of its signed
// TaskResult envelope.
func ResultHash(resultEnvelope []byte) []byte { return Digest(resultEnvelope) }

// WriteFrame writes one SessionFrame, the unit of a miner's side of a
// session stream.
func WriteFrame(w io.Writer, f *pb.SessionFrame) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		return err
	}
	return WriteMsg(w, b)
}

// ReadFrame reads one SessionFrame, strictly: a frame with fields this
// version does not know, or with no body, is an error.
func ReadFrame(r *bufio.Reader) (*pb.SessionFrame, error) {
	b, err := ReadMsg(r, MaxFrameSize)
	if err != nil {
		return nil, err
	}
	f := &pb.SessionFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("session frame: %w", err)
	}
	if len(f.ProtoReflect().GetUnknown()) > 0 {
		return nil, errors.New("session frame: unknown fields")
	}
	if f.Body == nil {
		return nil, errors.New("session frame: no body")
	}
	return f, nil
}
