package miner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"
)

// fakeBackend holds the builtin engine's calls behind a gate: each call
// waits for the gate to close (or its context to end), then fails with fail
// or goes on to the engine.
type fakeBackend struct {
	gate    chan struct{} // nil: no wait
	fail    error
	entered atomic.Int32 // calls that reached the engine
	gaveUp  chan error   // the context error of each call that stopped waiting
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{gaveUp: make(chan error, 16)}
}

// newHeldBackend is a fakeBackend whose gate stays shut until the test
// closes it.
func newHeldBackend() *fakeBackend {
	fb := newFakeBackend()
	fb.gate = make(chan struct{})
	return fb
}

func (f *fakeBackend) wait(ctx context.Context, _ inference.GenerateRequest) error {
	f.entered.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			f.gaveUp <- ctx.Err()
			return ctx.Err()
		}
	}
	return f.fail
}

// sessionRig is a started miner, reserved by router for session "s".
type sessionRig struct {
	*rig
	router crypto.PrivKey
	rh     host.Host // the router's host
	grant  []byte
}

// newSessionRig reserves a fresh miner for leaseMs, its engine behind fb
// (the builtin as it is if nil).
func newSessionRig(t testing.TB, fb *fakeBackend, leaseMs uint32) *sessionRig {
	t.Helper()
	r := newRig(t)
	if fb != nil {
		r.m.d.Backend = testkit.Builtin(fb.wait)
	}
	r.start(t)
	r.makeAvailable(t, 0)
	router := testkit.NewKey(t)
	rep := r.claimDirect(t, r.claim(t, claimOpts{router: router, gen: 0, session: "s", leaseMs: leaseMs}))
	wantGrant(t, rep)
	return &sessionRig{rig: r, router: router, rh: testkit.Host(t, router), grant: rep.raw}
}

type taskOpts struct {
	signer   crypto.PrivKey // the router by default
	network  string
	miner    []byte
	session  string // "s" by default
	gen      uint64
	grant    []byte // the rig's grant by default
	id       string
	model    string
	mode     pb.TaskMode // stream by default
	prompt   string      // "What is 17 + 25?" by default
	issued   time.Time
	deadline time.Time // 5 s from now by default
}

func (sr *sessionRig) task(t testing.TB, o taskOpts) []byte {
	t.Helper()
	if o.signer == nil {
		o.signer = sr.router
	}
	if o.network == "" {
		o.network = testNet
	}
	if o.miner == nil {
		o.miner = []byte(sr.id)
	}
	if o.session == "" {
		o.session = "s"
	}
	if o.grant == nil {
		o.grant = sr.grant
	}
	if o.id == "" {
		o.id = "t1"
	}
	if o.mode == pb.TaskMode_TASK_MODE_UNSPECIFIED {
		o.mode = pb.TaskMode_TASK_MODE_STREAM
	}
	if o.prompt == "" {
		o.prompt = "What is 17 + 25?"
	}
	if o.issued.IsZero() {
		o.issued = time.Now()
	}
	if o.deadline.IsZero() {
		o.deadline = time.Now().Add(5 * time.Second)
	}
	return testkit.Seal(t, &pb.SessionTask{
		Network: o.network, Session: o.session, Router: []byte(testkit.ID(t, o.signer)), Miner: o.miner,
		Generation: o.gen, GrantDigest: protocol.Digest(o.grant), Task: o.id, Model: o.model,
		Messages: []*pb.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: o.prompt}},
		Mode:     o.mode, IssuedMs: protocol.Ms(o.issued), DeadlineMs: protocol.Ms(o.deadline),
	}, o.signer)
}

func (sr *sessionRig) reveal(t testing.TB, signer crypto.PrivKey, taskDigest []byte) []byte {
	t.Helper()
	return testkit.Seal(t, &pb.Reveal{
		Network: testNet, Router: []byte(testkit.ID(t, sr.router)), Miner: []byte(sr.id), TaskDigest: taskDigest, Commitments: 1,
	}, signer)
}

// sessionClient is a router's end of one session stream.
type sessionClient struct {
	s  network.Stream
	br *bufio.Reader
}

// open opens a session stream to the miner from h (the router's host if nil).
func (sr *sessionRig) open(t testing.TB, h host.Host) *sessionClient {
	t.Helper()
	if h == nil {
		h = sr.rh
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Connect(ctx, sr.addrInfo()); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, sr.id, protocol.SessionProtocol(testNet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	return &sessionClient{s: s, br: bufio.NewReader(s)}
}

func (c *sessionClient) send(t testing.TB, raw []byte) {
	t.Helper()
	if err := protocol.WriteMsg(c.s, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (c *sessionClient) frame() (*pb.SessionFrame, error) {
	b, err := protocol.ReadMsg(c.br, protocol.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	f := &pb.SessionFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// rest reads frames until the stream ends, and how it ended: io.ErrUnexpectedEOF
// when the miner closed it.
func (c *sessionClient) rest() ([]*pb.SessionFrame, error) {
	var frames []*pb.SessionFrame
	for {
		f, err := c.frame()
		if err != nil {
			return frames, err
		}
		frames = append(frames, f)
	}
}

// exchange sends raw from h (the router's host if nil) and reads every frame.
// It keeps its side open: a router that closes it before revealing has
// abandoned a commit-reveal task.
func (sr *sessionRig) exchange(t testing.TB, h host.Host, raw []byte) ([]*pb.SessionFrame, error) {
	t.Helper()
	c := sr.open(t, h)
	c.send(t, raw)
	return c.rest()
}

func wantClosed(t testing.TB, end error) {
	t.Helper()
	if end != io.ErrUnexpectedEOF {
		t.Fatalf("stream ended with %v, want closed by the miner", end)
	}
}

func wantReset(t testing.TB, frames []*pb.SessionFrame, end error) {
	t.Helper()
	if len(frames) != 0 || !errors.Is(end, network.ErrReset) {
		t.Fatalf("%d frames, then %v: want the stream reset", len(frames), end)
	}
}

func (sr *sessionRig) envelope(t testing.TB, f *pb.SessionFrame) []byte {
	t.Helper()
	env, ok := f.Body.(*pb.SessionFrame_Envelope)
	if !ok {
		t.Fatalf("frame %v, want an envelope", f)
	}
	return env.Envelope
}

// wantTaskError checks the stream ended with one signed TaskError of code
// for the task raw.
func (sr *sessionRig) wantTaskError(t testing.TB, raw []byte, frames []*pb.SessionFrame, end error, code pb.TaskErrorCode) *pb.TaskError {
	t.Helper()
	wantClosed(t, end)
	if len(frames) != 1 {
		t.Fatalf("%d frames, want one TaskError %s", len(frames), code)
	}
	e, err := protocol.Open[pb.TaskError](sr.envelope(t, frames[0]))
	if err != nil {
		t.Fatalf("want TaskError %s: %v", code, err)
	}
	if err := sr.net.check.TaskError(e, sr.id, protocol.Digest(raw)); err != nil {
		t.Fatalf("task error does not check: %v", err)
	}
	if e.Msg.Code != code {
		t.Fatalf("task error %s (%s), want %s", e.Msg.Code, e.Msg.Detail, code)
	}
	return e.Msg
}

// wantResult opens and checks a result envelope for the task raw.
func (sr *sessionRig) wantResult(t testing.TB, raw, env []byte) *pb.TaskResult {
	t.Helper()
	res, err := protocol.Open[pb.TaskResult](env)
	if err != nil {
		if e, err2 := protocol.Open[pb.TaskError](env); err2 == nil {
			t.Fatalf("got TaskError %s (%s), want a result", e.Msg.Code, e.Msg.Detail)
		}
		t.Fatalf("want a TaskResult: %v", err)
	}
	if err := sr.net.check.TaskResult(res, sr.id, protocol.Digest(raw)); err != nil {
		t.Fatalf("result does not check: %v", err)
	}
	return res.Msg
}

// wantStreamed checks a stream-mode answer: deltas, then the signed result
// whose output is the deltas concatenated.
func (sr *sessionRig) wantStreamed(t testing.TB, raw []byte, frames []*pb.SessionFrame, end error) *pb.TaskResult {
	t.Helper()
	wantClosed(t, end)
	if len(frames) < 2 {
		t.Fatalf("%d frames, want deltas then a result", len(frames))
	}
	var text strings.Builder
	for i, f := range frames[:len(frames)-1] {
		d, ok := f.Body.(*pb.SessionFrame_Delta)
		if !ok {
			t.Fatalf("frame %d is not a delta: %v", i, f)
		}
		text.WriteString(d.Delta)
	}
	res := sr.wantResult(t, raw, sr.envelope(t, frames[len(frames)-1]))
	if res.Output != text.String() {
		t.Fatalf("output %q, deltas %q", res.Output, text.String())
	}
	return res
}

func TestSessionStream(t *testing.T) {
	t.Parallel()
	sr := newSessionRig(t, nil, 5000)
	raw := sr.task(t, taskOpts{})
	frames, end := sr.exchange(t, nil, raw)
	res := sr.wantStreamed(t, raw, frames, end)
	if !strings.Contains(res.Output, "42") || res.Model != inference.BuiltinModel || res.Network != testNet ||
		res.PromptTokens == 0 || res.CompletionTokens == 0 {
		t.Fatalf("result: %+v", res)
	}
	if len(frames) < 3 {
		t.Logf("%d deltas", len(frames)-1)
	}

	// The model named explicitly, and another task of the same session; the
	// router closes its side once it has sent the task.
	raw = sr.task(t, taskOpts{id: "t2", model: inference.BuiltinModel, prompt: "What is 6 * 7?"})
	c := sr.open(t, nil)
	c.send(t, raw)
	_ = c.s.CloseWrite()
	frames, end = c.rest()
	if res := sr.wantStreamed(t, raw, frames, end); !strings.Contains(res.Output, "42") || res.Model != inference.BuiltinModel {
		t.Fatalf("result: %+v", res)
	}
}

func TestSessionCommitReveal(t *testing.T) {
	t.Parallel()
	sr := newSessionRig(t, nil, 5000)
	raw := sr.task(t, taskOpts{mode: pb.TaskMode_TASK_MODE_COMMIT_REVEAL})
	digest := protocol.Digest(raw)
	c := sr.open(t, nil)
	c.send(t, raw)
	f, err := c.frame()
	if err != nil {
		t.Fatalf("commitment: %v", err)
	}
	commit, err := protocol.Open[pb.TaskCommit](sr.envelope(t, f))
	if err != nil {
		t.Fatalf("want a TaskCommit first: %v", err)
	}
	if err := sr.net.check.TaskCommit(commit, sr.id, digest); err != nil {
		t.Fatalf("commitment does not check: %v", err)
	}

	c.send(t, sr.reveal(t, sr.router, digest))
	_ = c.s.CloseWrite()
	frames, end := c.rest()
	wantClosed(t, end)
	if len(frames) != 1 {
		t.Fatalf("%d frames after the reveal, want the result", len(frames))
	}
	env := sr.envelope(t, frames[0])
	if !bytes.Equal(protocol.ResultHash(env), commit.Msg.ResultHash) {
		t.Fatal("the revealed result is not the one committed to")
	}
	res := sr.wantResult(t, raw, env) // opening it verifies the miner's signature
	if !strings.Contains(res.Output, "42") || res.Model != inference.BuiltinModel {
		t.Fatalf("result: %+v", res)
	}
}

func TestSessionRefusals(t *testing.T) {
	t.Parallel()
	sr := newSessionRig(t, nil, 5000)
	other := testkit.NewKey(t)
	oh := testkit.Host(t, other)
	cases := []struct {
		name string
		from host.Host
		raw  []byte
		code pb.TaskErrorCode
	}{
		{"another router", oh, sr.task(t, taskOpts{signer: other}), pb.TaskErrorCode_TASK_ERROR_NOT_RESERVED},
		{"another session", nil, sr.task(t, taskOpts{session: "other"}), pb.TaskErrorCode_TASK_ERROR_WRONG_LEASE},
		{"another generation", nil, sr.task(t, taskOpts{gen: 1}), pb.TaskErrorCode_TASK_ERROR_WRONG_LEASE},
		{"another grant", nil, sr.task(t, taskOpts{grant: []byte("not the grant")}), pb.TaskErrorCode_TASK_ERROR_WRONG_LEASE},
		{"unknown model", nil, sr.task(t, taskOpts{model: "gpt-9"}), pb.TaskErrorCode_TASK_ERROR_UNKNOWN_MODEL},
		{"past deadline", nil, sr.task(t, taskOpts{deadline: time.Now().Add(-time.Second)}), pb.TaskErrorCode_TASK_ERROR_EXPIRED},
		{"past deadline, commit-reveal", nil, sr.task(t, taskOpts{mode: pb.TaskMode_TASK_MODE_COMMIT_REVEAL, deadline: time.Now().Add(-time.Second)}), pb.TaskErrorCode_TASK_ERROR_EXPIRED},
		{"issued in the future", nil, sr.task(t, taskOpts{issued: time.Now().Add(time.Minute), deadline: time.Now().Add(2 * time.Minute)}), pb.TaskErrorCode_TASK_ERROR_BAD_TASK},
	}
	for _, c := range cases {
		frames, end := sr.exchange(t, c.from, c.raw)
		e := sr.wantTaskError(t, c.raw, frames, end, c.code)
		if e.Detail == "" || strings.HasPrefix(e.Detail, "ignore") {
			t.Errorf("%s: detail %q", c.name, e.Detail)
		}
	}
	if s := sr.m.State(); s.State != pb.MinerState_RESERVED {
		t.Fatalf("refused tasks moved the miner to %s", s.State)
	}
}

func TestSessionResets(t *testing.T) {
	t.Parallel()
	sr := newSessionRig(t, nil, 5000)
	other := testkit.NewKey(t)
	oh := testkit.Host(t, other)
	cases := []struct {
		name string
		from host.Host
		raw  []byte
	}{
		{"garbage", nil, []byte("garbage")},
		{"empty frame", nil, nil},
		{"not a task", nil, sr.reveal(t, sr.router, make([]byte, 32))},
		{"relayed by another peer", oh, sr.task(t, taskOpts{})},
		{"another network", nil, sr.task(t, taskOpts{network: "elsewhere"})},
		{"another miner", nil, sr.task(t, taskOpts{miner: []byte(testkit.ID(t, other))})},
		{"no mode", nil, sr.task(t, taskOpts{mode: pb.TaskMode(7)})},
	}
	for _, c := range cases {
		frames, end := sr.exchange(t, c.from, c.raw)
		if len(frames) != 0 || !errors.Is(end, network.ErrReset) {
			t.Errorf("%s: %d frames, then %v: want the stream reset", c.name, len(frames), end)
		}
	}

	// A Reveal that does not check, after the commitment: signed by someone
	// else, for another task, or not a Reveal at all.
	for name, bad := range map[string]func(digest []byte) []byte{
		"signed by another":  func(d []byte) []byte { return sr.reveal(t, other, d) },
		"for another task":   func(d []byte) []byte { return sr.reveal(t, sr.router, protocol.Digest([]byte("x"))) },
		"a task, not reveal": func(d []byte) []byte { return sr.task(t, taskOpts{}) },
	} {
		raw := sr.task(t, taskOpts{mode: pb.TaskMode_TASK_MODE_COMMIT_REVEAL, id: name})
		c := sr.open(t, nil)
		c.send(t, raw)
		f, err := c.frame()
		if err != nil {
			t.Fatalf("%s: commitment: %v", name, err)
		}
		if _, err := protocol.Open[pb.TaskCommit](sr.envelope(t, f)); err != nil {
			t.Fatalf("%s: want a commitment: %v", name, err)
		}
		c.send(t, bad(protocol.Digest(raw)))
		frames, end := c.rest()
		if len(frames) != 0 || !errors.Is(end, network.ErrReset) {
			t.Errorf("bad reveal %s: %d frames, then %v: want the stream reset", name, len(frames), end)
		}
	}

	// A router that closes its side before revealing has abandoned the task.
	raw := sr.task(t, taskOpts{mode: pb.TaskMode_TASK_MODE_COMMIT_REVEAL, id: "abandoned"})
	c := sr.open(t, nil)
	c.send(t, raw)
	if f, err := c.frame(); err != nil {
		t.Fatalf("commitment: %v", err)
	} else if _, err := protocol.Open[pb.TaskCommit](sr.envelope(t, f)); err != nil {
		t.Fatalf("want a commitment: %v", err)
	}
	_ = c.s.CloseWrite()
	frames, end := c.rest()
	if len(frames) != 0 || !errors.Is(end, network.ErrReset) {
		t.Errorf("no reveal: %d frames, then %v: want the stream reset", len(frames), end)
	}

	// The miner still serves its router.
	raw = sr.task(t, taskOpts{id: "after"})
	frames, end = sr.exchange(t, nil, raw)
	sr.wantStreamed(t, raw, frames, end)
}

func TestSessionAfterRelease(t *testing.T) {
	t.Parallel()
	sr := newSessionRig(t, nil, 5000)
	raw := sr.task(t, taskOpts{})
	frames, end := sr.exchange(t, nil, raw)
	sr.wantStreamed(t, raw, frames, end)

	req := sr.release(t, sr.router, "s", 0)
	if rc := sr.openReceipt(t, reserve(t, sr.rh, sr.rig, req), req); !rc.Ok {
		t.Fatalf("release refused: %s", rc.Detail)
	}
	frames, end = sr.exchange(t, nil, raw)
	sr.wantTaskError(t, raw, frames, end, pb.TaskErrorCode_TASK_ERROR_NOT_RESERVED)
}

func TestSessionBusy(t *testing.T) {
	t.Parallel()
	fb := newHeldBackend()
	sr := newSessionRig(t, fb, 5000)

	type running struct {
		raw  []byte
		mode pb.TaskMode
		c    *sessionClient
	}
	var tasks []running
	for i := range maxTasks {
		mode := pb.TaskMode_TASK_MODE_STREAM
		if i%2 == 1 {
			mode = pb.TaskMode_TASK_MODE_COMMIT_REVEAL
		}
		raw := sr.task(t, taskOpts{id: string(rune('a' + i)), mode: mode})
		c := sr.open(t, nil)
		c.send(t, raw)
		tasks = append(tasks, running{raw, mode, c})
	}
	testkit.Eventually(t, "every slot taken", 5*time.Second, func() bool { return fb.entered.Load() == maxTasks })

	raw := sr.task(t, taskOpts{id: "one too many"})
	frames, end := sr.exchange(t, nil, raw)
	sr.wantTaskError(t, raw, frames, end, pb.TaskErrorCode_TASK_ERROR_BUSY)

	close(fb.gate)
	for _, r := range tasks {
		if r.mode == pb.TaskMode_TASK_MODE_STREAM {
			_ = r.c.s.CloseWrite()
			frames, end := r.c.rest()
			sr.wantStreamed(t, r.raw, frames, end)
			continue
		}
		f, err := r.c.frame()
		if err != nil {
			t.Fatalf("commitment: %v", err)
		}
		if _, err := protocol.Open[pb.TaskCommit](sr.envelope(t, f)); err != nil {
			t.Fatalf("want a commitment: %v", err)
		}
		r.c.send(t, sr.reveal(t, sr.router, protocol.Digest(r.raw)))
		frames, end := r.c.rest()
		wantClosed(t, end)
		if len(frames) != 1 {
			t.Fatalf("%d frames after the reveal", len(frames))
		}
		sr.wantResult(t, r.raw, sr.envelope(t, frames[0]))
	}

	// The slots are free again.
	raw = sr.task(t, taskOpts{id: "later"})
	frames, end = sr.exchange(t, nil, raw)
	sr.wantStreamed(t, raw, frames, end)
}

func TestSessionEngineFailure(t *testing.T) {
	t.Parallel()
	fb := newFakeBackend()
	fb.fail = errors.New("engine exploded:\nout of memory " + strings.Repeat("é", 300))
	sr := newSessionRig(t, fb, 5000)
	for _, mode := range []pb.TaskMode{pb.TaskMode_TASK_MODE_STREAM, pb.TaskMode_TASK_MODE_COMMIT_REVEAL} {
		raw := sr.task(t, taskOpts{mode: mode})
		frames, end := sr.exchange(t, nil, raw)
		e := sr.wantTaskError(t, raw, frames, end, pb.TaskErrorCode_TASK_ERROR_ENGINE)
		if !strings.HasPrefix(e.Detail, "engine exploded: out of memory é") || strings.Contains(e.Detail, "\n") ||
			len(e.Detail) > maxDetail {
			t.Fatalf("%s: detail %q", mode, e.Detail)
		}
	}
}

func TestSessionDeadline(t *testing.T) {
	t.Parallel()
	fb := newHeldBackend() // never opens
	sr := newSessionRig(t, fb, 5000)
	start := time.Now()
	raw := sr.task(t, taskOpts{deadline: start.Add(300 * time.Millisecond)})
	frames, end := sr.exchange(t, nil, raw)
	e := sr.wantTaskError(t, raw, frames, end, pb.TaskErrorCode_TASK_ERROR_EXPIRED)
	if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
		t.Fatalf("expired after %s, deadline 300ms", el)
	}
	if !strings.Contains(e.Detail, "deadline") {
		t.Fatalf("detail %q", e.Detail)
	}
	if err := <-fb.gaveUp; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("engine's context: %v", err)
	}

	// Committed, but the router never reveals: EXPIRED at the deadline.
	close(fb.gate)
	start = time.Now()
	raw = sr.task(t, taskOpts{id: "t2", mode: pb.TaskMode_TASK_MODE_COMMIT_REVEAL, deadline: start.Add(400 * time.Millisecond)})
	c := sr.open(t, nil)
	c.send(t, raw)
	frames, end = c.rest()
	if len(frames) != 2 {
		t.Fatalf("%d frames (%v), want a commitment and an error", len(frames), end)
	}
	if _, err := protocol.Open[pb.TaskCommit](sr.envelope(t, frames[0])); err != nil {
		t.Fatalf("want a commitment first: %v", err)
	}
	sr.wantTaskError(t, raw, frames[1:], end, pb.TaskErrorCode_TASK_ERROR_EXPIRED)
	if el := time.Since(start); el < 350*time.Millisecond || el > 2*time.Second {
		t.Fatalf("expired after %s, deadline 400ms", el)
	}
}

// TestSessionLeaseEnds: a task runs only while its reservation holds.
func TestSessionLeaseEnds(t *testing.T) {
	t.Parallel()
	fb := newHeldBackend() // never opens
	sr := newSessionRig(t, fb, 1000)
	leaseEnd := sr.m.State().LeaseEnd
	raw := sr.task(t, taskOpts{deadline: time.Now().Add(4 * time.Second)})
	frames, end := sr.exchange(t, nil, raw)
	e := sr.wantTaskError(t, raw, frames, end, pb.TaskErrorCode_TASK_ERROR_EXPIRED)
	if time.Now().Before(leaseEnd) || time.Since(leaseEnd) > time.Second {
		t.Fatalf("expired %s after the lease end", time.Since(leaseEnd))
	}
	if !strings.Contains(e.Detail, "reservation ended") {
		t.Fatalf("detail %q", e.Detail)
	}
}

// TestSessionRouterGone: a router that breaks the stream stops the engine
// and frees the slot.
func TestSessionRouterGone(t *testing.T) {
	t.Parallel()
	fb := newHeldBackend() // never opens
	sr := newSessionRig(t, fb, 5000)
	for _, mode := range []pb.TaskMode{pb.TaskMode_TASK_MODE_STREAM, pb.TaskMode_TASK_MODE_COMMIT_REVEAL} {
		c := sr.open(t, nil)
		c.send(t, sr.task(t, taskOpts{mode: mode, deadline: time.Now().Add(5 * time.Second)}))
		testkit.Eventually(t, "the engine running", 2*time.Second, func() bool { return fb.entered.Load() > 0 })
		fb.entered.Store(0)
		c.s.Reset()
		select {
		case err := <-fb.gaveUp:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: engine's context: %v", mode, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: the engine still runs after the router reset the stream", mode)
		}
	}
}

// TestSessionStop: stopping the miner ends its tasks.
func TestSessionStop(t *testing.T) {
	t.Parallel()
	fb := newHeldBackend() // never opens
	sr := newSessionRig(t, fb, 5000)
	c := sr.open(t, nil)
	c.send(t, sr.task(t, taskOpts{deadline: time.Now().Add(5 * time.Second)}))
	testkit.Eventually(t, "the engine running", 2*time.Second, func() bool { return fb.entered.Load() > 0 })
	if err := sr.m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	frames, end := c.rest()
	wantReset(t, frames, end)
	if err := <-fb.gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("engine's context: %v", err)
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\r\n  c\t":           "a b c",
		"bad \xff utf8":           "bad \uFFFD utf8",
		strings.Repeat("é", 150):  strings.Repeat("é", 100),
		strings.Repeat("x", 1000): strings.Repeat("x", 200),
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDeltasSplitCharacters(t *testing.T) {
	// "é" split across two tokens is sent whole.
	if n := completeLen([]byte("caf\xc3")); n != 3 {
		t.Fatalf("completeLen of a split character: %d", n)
	}
	if n := completeLen([]byte("café")); n != len("café") {
		t.Fatalf("completeLen of whole characters: %d", n)
	}
	if n := completeLen([]byte("\xff")); n != 1 {
		t.Fatalf("completeLen of an invalid byte: %d", n)
	}
}
