package miner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// maxTasks bounds the session tasks a miner runs at once (the validation
// slots are separate).
const maxTasks = 4

// taskReadTimeout bounds reading the task: a router sends it at once, and a
// peer that does not must not hold the stream.
const taskReadTimeout = 5 * time.Second

// taskGrace is how long past the task's deadline (or the moment the task was
// cut short) the miner still writes its last frame; no router holds a slot
// longer.
const taskGrace = 2 * time.Second

// maxDetail bounds a TaskError's detail, in bytes.
const maxDetail = 200

// Why a running task stopped early, as its context's cause.
var (
	errTaskDeadline = errors.New("task deadline passed")
	errLeaseEnded   = errors.New("reservation ended")
	errStreamBroken = errors.New("session stream broken")
)

// sessionHandler is the session protocol's stream handler, running at most
// slots tasks at once.
func (m *Miner) sessionHandler(slots int) network.StreamHandler {
	sem := make(chan struct{}, slots)
	return func(s network.Stream) { m.handleSession(s, sem) }
}

// taskStream is one task's stream, as the miner answers it.
type taskStream struct {
	s      network.Stream
	br     *bufio.Reader
	w      *bufio.Writer
	task   protocol.Signed[*pb.SessionTask]
	digest []byte // of the task envelope: what every reply names
	log    *slog.Logger
	broken bool // a write failed: nothing more can be said on the stream
}

// handleSession answers one task, on /ephemera/<net>/session/1.0.0: one
// stream per task, from the router holding the miner's reservation.
//
// The router writes one frame, its signed SessionTask. A frame that is not a
// SessionTask envelope, is not signed by the stream's remote peer, or that
// the stateless check rejects, gets the stream reset: the peer sent garbage.
// A task that is well formed but that the miner will not run gets a signed
// TaskError, and the stream is closed. Otherwise the miner answers in the
// task's mode:
//
//   - STREAM: a delta frame per piece of text as the engine produces it,
//     then the signed TaskResult, whose output is the deltas concatenated.
//   - COMMIT_REVEAL: the signed TaskCommit (the SHA-256 of the TaskResult
//     envelope); then, after the router's signed Reveal, that TaskResult
//     envelope. A Reveal that does not check gets the stream reset.
//
// A task runs until its deadline, and only while the reservation it names
// holds: it ends with a TaskError EXPIRED at either. An engine failure is a
// TaskError ENGINE. A router that breaks the stream, closes it before it
// reveals, or sends anything but the Reveal, gets it reset, as does every
// task when the miner stops.
func (m *Miner) handleSession(s network.Stream, slots chan struct{}) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	// The task is read and checked before it may take a slot.
	_ = s.SetDeadline(time.Now().Add(taskReadTimeout))
	br := bufio.NewReader(s)
	raw, err := protocol.ReadStream(s, br, protocol.MaxTaskSize)
	if err != nil {
		s.Reset()
		return
	}
	task, err := protocol.Open[pb.SessionTask](raw)
	if err == nil && task.Signer != from {
		err = fmt.Errorf("task signed by %s, relayed by %s", task.Signer, from)
	}
	ignored := false
	if err == nil {
		err = m.d.Check.SessionTask(task, m.self)
		ignored = errors.Is(err, protocol.ErrIgnore)
	}
	if err != nil && !ignored {
		m.log.Debug("session task dropped", "peer", from, "err", err)
		s.Reset()
		return
	}
	t := task.Msg
	ts := &taskStream{
		s: s, br: br, w: bufio.NewWriter(s), task: task, digest: task.Digest(),
		log: m.log.With("reservation", t.Session, "task", t.Task, "peer", task.Signer),
	}
	if ignored {
		// Well formed, signed by its router, but out of its time: past its
		// deadline, or issued ahead of the clock skew.
		code := pb.TaskErrorCode_TASK_ERROR_BAD_TASK
		if !protocol.Time(t.DeadlineMs).After(time.Now()) {
			code = pb.TaskErrorCode_TASK_ERROR_EXPIRED
		}
		m.refuseTask(ts, code, strings.TrimPrefix(err.Error(), protocol.ErrIgnore.Error()+": "))
		return
	}
	lease, code, detail := m.admit(t, task.Signer, time.Now())
	if code != pb.TaskErrorCode_TASK_ERROR_CODE_UNSPECIFIED {
		m.refuseTask(ts, code, detail)
		return
	}
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	default:
		m.refuseTask(ts, pb.TaskErrorCode_TASK_ERROR_BUSY, "every task slot is in use")
		return
	}
	m.runTask(ts, lease.LeaseEnd)
}

// admit checks a task against the committed reservation: the code to refuse
// it with, or UNSPECIFIED to run it, and the state it was admitted in.
func (m *Miner) admit(t *pb.SessionTask, router peer.ID, now time.Time) (State, pb.TaskErrorCode, string) {
	s := m.State()
	switch {
	case s.State != pb.MinerState_RESERVED:
		return s, pb.TaskErrorCode_TASK_ERROR_NOT_RESERVED, "not reserved (" + s.State.String() + ")"
	case s.Router != router:
		return s, pb.TaskErrorCode_TASK_ERROR_NOT_RESERVED, "reserved by another router"
	case t.Session != s.Session:
		return s, pb.TaskErrorCode_TASK_ERROR_WRONG_LEASE, "not the reservation's session"
	case t.Generation != s.Generation:
		return s, pb.TaskErrorCode_TASK_ERROR_WRONG_LEASE, fmt.Sprintf("generation %d, the reservation's is %d", t.Generation, s.Generation)
	case !bytes.Equal(t.GrantDigest, protocol.Digest(s.Grant)):
		return s, pb.TaskErrorCode_TASK_ERROR_WRONG_LEASE, "not the reservation's grant"
	case !now.Before(s.LeaseEnd):
		return s, pb.TaskErrorCode_TASK_ERROR_EXPIRED, "lease ended"
	case t.Model != "" && !slices.Contains(m.d.Backend.Models(), t.Model):
		return s, pb.TaskErrorCode_TASK_ERROR_UNKNOWN_MODEL, fmt.Sprintf("model %q is not served", t.Model)
	}
	return s, pb.TaskErrorCode_TASK_ERROR_CODE_UNSPECIFIED, ""
}

// holds reports whether s is still the reservation t runs in.
func holds(s State, t *pb.SessionTask, router peer.ID, now time.Time) bool {
	return s.State == pb.MinerState_RESERVED && s.Router == router && s.Session == t.Session &&
		s.Generation == t.Generation && bytes.Equal(t.GrantDigest, protocol.Digest(s.Grant)) && now.Before(s.LeaseEnd)
}

// refuseTask answers a task the miner does not run, or no longer runs, with
// a signed TaskError.
func (m *Miner) refuseTask(ts *taskStream, code pb.TaskErrorCode, detail string) {
	detail = oneLine(detail)
	ts.log.Debug("session task refused", "code", code, "detail", detail)
	env, err := protocol.Seal(&pb.TaskError{
		Network: m.d.Check.Network, Miner: []byte(m.self), TaskDigest: ts.digest, Code: code, Detail: detail,
	}, m.d.Key)
	if err == nil {
		err = ts.writeEnvelope(env)
	}
	if err != nil {
		ts.s.Reset()
	}
}

// runTask runs an admitted task in its mode, within its deadline and its
// reservation, which held until leaseEnd when it was admitted.
func (m *Miner) runTask(ts *taskStream, leaseEnd time.Time) {
	t := ts.task.Msg
	deadline := protocol.Time(t.DeadlineMs)
	// A router that stalls (reads nothing, reveals nothing) is cut off a
	// little after the deadline; the slot is free by then.
	_ = ts.s.SetDeadline(deadline.Add(taskGrace))
	ctx, cancel := context.WithCancelCause(m.ctx) // the miner stopping ends it too
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, deadline, errTaskDeadline)
	defer cancelDeadline()
	// Once the task is cut short, blocked reads end now and the last frame
	// has taskGrace to leave.
	stop := context.AfterFunc(ctx, func() {
		now := time.Now()
		_ = ts.s.SetReadDeadline(now)
		_ = ts.s.SetWriteDeadline(now.Add(taskGrace))
	})
	var wg sync.WaitGroup
	defer func() {
		stop()
		cancel(nil)
		_ = ts.s.SetReadDeadline(time.Now())
		wg.Wait()
	}()
	wg.Go(func() { m.watchLease(ctx, cancel, t, ts.task.Signer, leaseEnd) })

	// The router's side of the stream: in stream mode it has nothing more to
	// say; in commit-reveal mode it says one thing, the Reveal. Either way a
	// broken stream stops the engine.
	reveals := make(chan revealFrame, 1)
	wg.Go(func() {
		if t.Mode == pb.TaskMode_TASK_MODE_COMMIT_REVEAL {
			raw, err := protocol.ReadStream(ts.s, ts.br, protocol.MaxRevealSize)
			if err != nil {
				cancel(fmt.Errorf("%w: waiting for the reveal: %w", errStreamBroken, err))
			}
			reveals <- revealFrame{raw, err}
			return
		}
		if _, err := ts.br.ReadByte(); err == nil {
			cancel(fmt.Errorf("%w: the router wrote after its task", errStreamBroken))
		} else if !errors.Is(err, io.EOF) {
			cancel(fmt.Errorf("%w: %w", errStreamBroken, err))
		}
	})

	req := inference.GenerateRequest{Model: t.Model, MaxTokens: int(t.MaxTokens)}
	for _, msg := range t.Messages {
		req.Messages = append(req.Messages, inference.Message{Role: msg.Role, Content: msg.Content})
	}
	switch t.Mode {
	case pb.TaskMode_TASK_MODE_STREAM:
		m.runStream(ctx, ts, req)
	case pb.TaskMode_TASK_MODE_COMMIT_REVEAL:
		m.runCommitReveal(ctx, ts, req, reveals)
	default:
		// The stateless check admits no other mode.
		ts.s.Reset()
	}
}

type revealFrame struct {
	raw []byte
	err error
}

// watchLease cuts the task short once the reservation it runs in ends: at
// its lease end, unless renewed meanwhile, or at the first lease end after
// a release.
func (m *Miner) watchLease(ctx context.Context, cancel context.CancelCauseFunc, t *pb.SessionTask, router peer.ID, end time.Time) {
	timer := time.NewTimer(time.Until(end))
	defer timer.Stop()
	for wait.Tick(ctx, timer.C) {
		s := m.State()
		if !holds(s, t, router, time.Now()) {
			cancel(errLeaseEnded)
			return
		}
		timer.Reset(time.Until(s.LeaseEnd))
	}
}

// runStream writes the text as the engine produces it, then the result.
func (m *Miner) runStream(ctx context.Context, ts *taskStream, req inference.GenerateRequest) {
	d := &deltas{ts: ts}
	start := time.Now()
	resp, err := m.d.Backend.GenerateStream(ctx, req, d.token)
	latency := time.Since(start)
	if err == nil {
		err = d.finish(resp.Text)
	}
	if err != nil {
		m.abortTask(ctx, ts, err)
		return
	}
	env, err := m.sealResult(ts, resp, d.sent.String(), latency)
	if err != nil {
		m.abortTask(ctx, ts, err)
		return
	}
	if err := ts.writeEnvelope(env); err != nil {
		ts.s.Reset()
	}
}

// runCommitReveal commits to the result, and reveals it when the router asks.
func (m *Miner) runCommitReveal(ctx context.Context, ts *taskStream, req inference.GenerateRequest, reveals <-chan revealFrame) {
	start := time.Now()
	resp, err := m.d.Backend.Generate(ctx, req)
	latency := time.Since(start)
	if err != nil {
		m.abortTask(ctx, ts, err)
		return
	}
	result, err := m.sealResult(ts, resp, clean(resp.Text), latency)
	if err != nil {
		m.abortTask(ctx, ts, err)
		return
	}
	commit, err := protocol.Seal(&pb.TaskCommit{
		Network: m.d.Check.Network, Miner: []byte(m.self), TaskDigest: ts.digest, ResultHash: protocol.ResultHash(result),
	}, m.d.Key)
	if err != nil {
		m.abortTask(ctx, ts, err)
		return
	}
	if err := ts.writeEnvelope(commit); err != nil {
		ts.s.Reset()
		return
	}
	var rv revealFrame
	select {
	case rv = <-reveals:
	case <-ctx.Done():
		select {
		case rv = <-reveals: // it came in time after all
		default:
			rv.err = context.Cause(ctx)
		}
	}
	if rv.err != nil {
		m.abortTask(ctx, ts, rv.err)
		return
	}
	reveal, err := protocol.Open[pb.Reveal](rv.raw)
	if err == nil {
		err = m.d.Check.Reveal(reveal, ts.task.Signer, m.self, ts.digest)
	}
	if err != nil {
		ts.log.Debug("bad reveal", "err", err)
		ts.s.Reset()
		return
	}
	if err := ts.writeEnvelope(result); err != nil {
		ts.s.Reset()
	}
}

// abortTask ends a task that did not finish: a TaskError EXPIRED when its
// deadline or its reservation ended it, ENGINE when the engine failed on its
// own, and a reset when the stream broke or the miner is stopping.
func (m *Miner) abortTask(ctx context.Context, ts *taskStream, err error) {
	cause := context.Cause(ctx)
	switch {
	case ts.broken:
		ts.log.Debug("session task abandoned: stream broken", "err", err)
		ts.s.Reset()
	case ctx.Err() == nil:
		ts.log.Warn("session task: engine failed", "err", err)
		m.refuseTask(ts, pb.TaskErrorCode_TASK_ERROR_ENGINE, err.Error())
	case errors.Is(cause, errTaskDeadline), errors.Is(cause, errLeaseEnded):
		m.refuseTask(ts, pb.TaskErrorCode_TASK_ERROR_EXPIRED, cause.Error())
	default:
		ts.log.Debug("session task abandoned", "err", cause)
		ts.s.Reset()
	}
}

// sealResult signs the miner's answer to the task.
func (m *Miner) sealResult(ts *taskStream, resp inference.GenerateResponse, output string, latency time.Duration) ([]byte, error) {
	model := clean(resp.Model)
	if model == "" {
		model = ts.task.Msg.Model
	}
	if model == "" {
		if models := m.d.Backend.Models(); len(models) > 0 {
			model = clean(models[0])
		}
	}
	return protocol.Seal(&pb.TaskResult{
		Network:          m.d.Check.Network,
		Miner:            []byte(m.self),
		TaskDigest:       ts.digest,
		Model:            model,
		Output:           output,
		PromptTokens:     clampU32(int64(resp.PromptTokens)),
		CompletionTokens: clampU32(int64(resp.CompletionTokens)),
		LatencyMs:        clampU32(latency.Milliseconds()),
	}, m.d.Key)
}

// writeEnvelope writes a frame holding a signed envelope.
func (ts *taskStream) writeEnvelope(env []byte) error {
	return ts.writeFrame(&pb.SessionFrame{Body: &pb.SessionFrame_Envelope{Envelope: env}})
}

// writeFrame writes one frame and flushes it.
func (ts *taskStream) writeFrame(f *pb.SessionFrame) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err == nil {
		err = protocol.WriteMsg(ts.w, b)
	}
	if err == nil {
		err = ts.w.Flush()
	}
	if err != nil {
		ts.broken = true
	}
	return err
}

// deltas writes the engine's text as it comes, whole UTF-8 characters only
// (an engine may split one across tokens), and keeps what it sent: that,
// and nothing else, is the result's output.
type deltas struct {
	ts      *taskStream
	pending []byte // the start of a character split across tokens
	sent    strings.Builder
}

func (d *deltas) token(tok string) error {
	d.pending = append(d.pending, tok...)
	n := completeLen(d.pending)
	if n == 0 {
		return nil
	}
	chunk := clean(string(d.pending[:n]))
	d.pending = append(d.pending[:0], d.pending[n:]...)
	return d.write(chunk)
}

// finish flushes what is pending and, if the engine's full text goes on
// past what it streamed, sends the rest.
func (d *deltas) finish(text string) error {
	if len(d.pending) > 0 {
		chunk := clean(string(d.pending))
		d.pending = nil
		if err := d.write(chunk); err != nil {
			return err
		}
	}
	text, sent := clean(text), d.sent.String()
	if !strings.HasPrefix(text, sent) {
		d.ts.log.Warn("session task: the engine's text differs from its stream; the streamed text is the output")
		return nil
	}
	return d.write(text[len(sent):])
}

func (d *deltas) write(chunk string) error {
	if chunk == "" {
		return nil
	}
	if err := d.ts.writeFrame(&pb.SessionFrame{Body: &pb.SessionFrame_Delta{Delta: chunk}}); err != nil {
		return err
	}
	d.sent.WriteString(chunk)
	return nil
}

// completeLen is the length of the longest prefix of p that does not end
// inside a UTF-8 character.
func completeLen(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return i
			}
			return len(p)
		}
	}
	return len(p)
}

// clean makes s valid UTF-8, as every string field must be to marshal.
func clean(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// oneLine makes an error text a TaskError detail: one line of at most
// maxDetail bytes.
func oneLine(s string) string {
	if len(s) > 4*maxDetail {
		s = s[:4*maxDetail]
	}
	s = strings.Join(strings.Fields(clean(s)), " ")
	if len(s) > maxDetail {
		i := maxDetail
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

func clampU32(n int64) uint32 {
	return uint32(min(max(n, 0), math.MaxUint32))
}
