package observe

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/peer"
)

func poolEvent(rec protocol.Signed[*pb.Availability]) pool.Event {
	return pool.Event{Kind: pool.EventAvailability, Availability: &rec}
}

// newObserver watches e's pool on a clock of its own, sampled only when the
// test ticks.
func newObserver(t *testing.T, e *env) (*Observer, *testkit.Clock, chan time.Time) {
	t.Helper()
	clk := testkit.NewClock(e.Now)
	ticks := make(chan time.Time)
	o := New(Config{Pool: e.pool, Now: clk.Now, Ticks: ticks})
	t.Cleanup(o.Stop)
	return o, clk, ticks
}

func minerEvents(t *testing.T, o *Observer, e *env) []api.Event {
	t.Helper()
	h, ok := o.Miner(e.Miner.ID.String())
	if !ok {
		return nil
	}
	return h.Events
}

// A miner's whole lifecycle, fed to the pool as gossip would, is recorded in
// order: states with where they came from, verdicts, the grant, the release.
func TestLifecycleRecorded(t *testing.T) {
	e := newEnv(t)
	o, _, _ := newObserver(t, e)
	updates, cancel := o.Subscribe(context.Background())
	defer cancel()

	must(t, e.pool.AddAvailability(e.avail(t, 1, 0, pb.MinerState_VALIDATING)))
	for i := range 3 {
		accepted(t)(e.pool.AddAttestation(e.att(t, i, e.Miner.ID, 0, true, 900)))
	}
	must(t, e.pool.AddAvailability(e.avail(t, 2, 0, pb.MinerState_AVAILABLE)))
	must(t, e.pool.AddAvailability(e.avail(t, 3, 0, pb.MinerState_AVAILABLE))) // a refresh: no transition
	accepted(t)(e.pool.AddGrant(e.grant(t, "s1", 0)))
	must(t, e.pool.AddAvailability(e.avail(t, 4, 0, pb.MinerState_RESERVED)))
	must(t, e.pool.AddRelease(e.release(t, "s1", 0, pb.Outcome_COMPLETED)))
	must(t, e.pool.AddAvailability(e.avail(t, 5, 1, pb.MinerState_COOLING_OFF)))

	want := []string{
		"state:>validating", "attestation", "attestation", "attestation", "state:validating>available",
		"grant", "state:available>reserved", "release", "state:reserved>cooling_off",
	}
	testkit.Eventually(t, "every event", 5*time.Second, func() bool { return len(minerEvents(t, o, e)) == len(want) })
	evs := minerEvents(t, o, e)
	if got := kinds(evs); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for _, ev := range evs {
		if ev.Miner != e.Miner.ID.String() || ev.Time.IsZero() {
			t.Errorf("event %+v: miner or time missing", ev)
		}
	}
	if a := evs[1]; a.Oracle != e.Oracles[0].ID.String() || !a.Pass || a.Score != 0.9 || a.Generation != 0 {
		t.Errorf("attestation %+v", a)
	}
	if g := evs[5]; g.Router != e.Router.ID.String() || g.Session != "s1" || !g.LeaseEnd.Equal(e.Now.Add(30*time.Second)) {
		t.Errorf("grant %+v", g)
	}
	if r := evs[7]; r.Outcome != "completed" || r.Router != e.Router.ID.String() || r.Session != "s1" {
		t.Errorf("release %+v", r)
	}
	if s := evs[8]; s.Generation != 1 {
		t.Errorf("last state at generation %d, want 1", s.Generation)
	}

	// Transitions: newest first, limited.
	recent := o.Transitions(3)
	if got := kinds(recent); !slices.Equal(got, []string{"state:reserved>cooling_off", "release", "state:available>reserved"}) {
		t.Errorf("transitions(3) = %v", got)
	}
	if n := len(o.Transitions(500)); n != len(want) {
		t.Errorf("transitions(500) has %d events, want %d", n, len(want))
	}

	// Subscribers saw every transition, and the miner's record as it changed.
	var transitions []api.Event
	var sawReserved bool
	deadline := time.After(5 * time.Second)
	for len(transitions) < len(want) {
		select {
		case u := <-updates:
			if u.Transition != nil {
				transitions = append(transitions, *u.Transition)
			}
			if u.Miner != nil && u.Miner.State == "reserved" && u.Miner.PeerID == e.Miner.ID.String() {
				sawReserved = true
			}
		case <-deadline:
			t.Fatalf("subscriber saw %v", kinds(transitions))
		}
	}
	if got := kinds(transitions); !slices.Equal(got, want) {
		t.Errorf("subscriber saw %v, want %v", got, want)
	}
	if !sawReserved {
		t.Error("subscriber never saw the miner reserved")
	}

	h, ok := o.Miner(e.Miner.ID.String())
	if !ok || h.Miner.State != "cooling_off" || h.Miner.Generation != 1 || h.Miner.Seq != 5 {
		t.Errorf("miner %+v, %v", h.Miner, ok)
	}
}

// The JSON of an event carries what its kind means, zero values included,
// and nothing of the other kinds.
func TestEventJSON(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, c := range []struct {
		ev   api.Event
		want string
	}{
		{api.Event{Time: at, Miner: "m", Kind: "state", State: "validating"},
			`{"time":"2025-01-02T03:04:05.000000006Z","miner":"m","kind":"state","state":"validating","generation":0,"from":""}`},
		{api.Event{Time: at, Miner: "m", Kind: "attestation", Oracle: "o", Generation: 2},
			`{"time":"2025-01-02T03:04:05.000000006Z","miner":"m","kind":"attestation","generation":2,"oracle":"o","pass":false,"score":0}`},
		{api.Event{Time: at, Miner: "m", Kind: "grant", Router: "r", Session: "s", LeaseEnd: at},
			`{"time":"2025-01-02T03:04:05.000000006Z","miner":"m","kind":"grant","generation":0,"router":"r","session":"s","lease_end":"2025-01-02T03:04:05.000000006Z"}`},
		{api.Event{Time: at, Miner: "m", Kind: "release", Router: "r", Session: "s", Outcome: "expired"},
			`{"time":"2025-01-02T03:04:05.000000006Z","miner":"m","kind":"release","generation":0,"router":"r","session":"s","outcome":"expired"}`},
	} {
		b, err := json.Marshal(c.ev)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("got  %s\nwant %s", b, c.want)
		}
		var back api.Event
		if err := json.Unmarshal(b, &back); err != nil || back != c.ev {
			t.Errorf("round trip: %+v, %v; want %+v", back, err, c.ev)
		}
	}
}

// Evidence is recorded under the miner the conflict is about: the offender
// of a double grant; the attested miner of a double verdict, with the oracle.
func TestEvidenceRecorded(t *testing.T) {
	e := newEnv(t)
	o, _, _ := newObserver(t, e)
	must(t, e.pool.AddAvailability(e.avail(t, 1, 0, pb.MinerState_VALIDATING)))

	accepted(t)(e.pool.AddAttestation(e.att(t, 3, e.Miner.ID, 0, true, 900)))
	ev, err := e.pool.AddAttestation(e.att(t, 3, e.Miner.ID, 0, false, 100))
	if err != nil || ev == nil {
		t.Fatalf("double verdict: %v, %v", ev, err)
	}
	if _, _, err := e.pool.AddEvidence(ev); err != nil {
		t.Fatal(err)
	}
	accepted(t)(e.pool.AddGrant(e.grant(t, "s1", 0)))
	ev, err = e.pool.AddGrant(e.grant(t, "s2", 0))
	if err != nil || ev == nil {
		t.Fatalf("double grant: %v, %v", ev, err)
	}
	if _, _, err := e.pool.AddEvidence(ev); err != nil {
		t.Fatal(err)
	}

	want := []string{"state:>validating", "attestation", "evidence", "grant", "evidence"}
	testkit.Eventually(t, "every event", 5*time.Second, func() bool { return len(minerEvents(t, o, e)) == len(want) })
	evs := minerEvents(t, o, e)
	if got := kinds(evs); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	verdict, grant := evs[2], evs[4]
	if verdict.Oracle != e.Oracles[3].ID.String() || !strings.Contains(verdict.Detail, "two verdicts") {
		t.Errorf("double verdict %+v", verdict)
	}
	if grant.Oracle != "" || !strings.Contains(grant.Detail, "two grants") || !strings.Contains(grant.Detail, `"s2"`) {
		t.Errorf("double grant %+v", grant)
	}
}

// Records the pool held before the observer started are its first events.
func TestPrimedFromPool(t *testing.T) {
	e := newEnv(t)
	must(t, e.pool.AddAvailability(e.avail(t, 1, 0, pb.MinerState_VALIDATING)))
	o, _, _ := newObserver(t, e)
	if got := kinds(minerEvents(t, o, e)); !slices.Equal(got, []string{"state:>validating"}) {
		t.Fatalf("primed events %v", got)
	}
	// The same record again (as a late callback would bring it) is old news.
	o.handle(input{at: e.Now, kind: pool.EventAvailability, miner: e.Miner.ID, state: pb.MinerState_VALIDATING, seq: 1})
	must(t, e.pool.AddAvailability(e.avail(t, 2, 0, pb.MinerState_JOINING)))
	testkit.Eventually(t, "the next state", 5*time.Second, func() bool { return len(minerEvents(t, o, e)) == 2 })
	if got := kinds(minerEvents(t, o, e)); !slices.Equal(got, []string{"state:>validating", "state:validating>joining"}) {
		t.Fatalf("events %v", got)
	}
}

// The sampler counts the pool by state once at start and at every tick, on
// the observer's clock, keeping an hour.
func TestSampler(t *testing.T) {
	e := newEnv(t)
	o, clk, ticks := newObserver(t, e)
	h := o.History()
	if h.IntervalSeconds != 10 || len(h.Points) != 1 || !h.Points[0].Time.Equal(e.Now) {
		t.Fatalf("history at start: %+v", h)
	}
	for _, s := range api.States {
		if n, ok := h.Points[0].Counts[s]; !ok || n != 0 {
			t.Errorf("count of %s: %d, %v", s, n, ok)
		}
	}

	must(t, e.pool.AddAvailability(e.avail(t, 1, 0, pb.MinerState_VALIDATING)))
	clk.Add(SampleEvery)
	ticks <- clk.Now()
	testkit.Eventually(t, "a second point", 5*time.Second, func() bool { return len(o.History().Points) == 2 })
	p := o.History().Points[1]
	if !p.Time.Equal(e.Now.Add(SampleEvery)) || p.Counts["validating"] != 1 || p.Counts["available"] != 0 {
		t.Errorf("second point %+v", p)
	}
	if c := o.Counts(); c.Total != 1 || c.Counts["validating"] != 1 {
		t.Errorf("counts now %+v", c)
	}

	for range Samples + 40 {
		clk.Add(SampleEvery)
		ticks <- clk.Now()
	}
	testkit.Eventually(t, "the last point", 5*time.Second, func() bool {
		pts := o.History().Points
		return pts[len(pts)-1].Time.Equal(clk.Now())
	})
	pts := o.History().Points
	if len(pts) != Samples {
		t.Fatalf("%d points kept, want %d", len(pts), Samples)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Time.Sub(pts[i-1].Time) != SampleEvery {
			t.Fatalf("points %d and %d: %s and %s", i-1, i, pts[i-1].Time, pts[i].Time)
		}
	}
}

// An available miner whose record has lapsed counts as stale.
func TestStaleCounted(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		accepted(t)(e.pool.AddAttestation(e.att(t, i, e.Miner.ID, 0, true, 900)))
	}
	must(t, e.pool.AddAvailability(e.avail(t, 1, 0, pb.MinerState_AVAILABLE)))
	o, clk, _ := newObserver(t, e)
	if c := o.Counts(); c.Counts["available"] != 1 || c.Counts["stale"] != 0 {
		t.Fatalf("counts %+v", c)
	}
	clk.Add(e.check.Params.RecordLifetime.Std())
	if c := o.Counts(); c.Counts["available"] != 0 || c.Counts["stale"] != 1 || c.Total != 1 {
		t.Fatalf("counts after the record lapsed %+v", c)
	}
	if h, _ := o.Miner(e.Miner.ID.String()); h.Miner.State != "stale" {
		t.Errorf("miner %+v", h.Miner)
	}
}

// Miners the pool does not list are forgotten at a sample, once quiet for a
// sampling period; the rings are bounded.
func TestBounds(t *testing.T) {
	e := newEnv(t)
	o, clk, ticks := newObserver(t, e)
	stranger := e.Oracles[4].ID // any peer the pool does not list
	for i := range MinerEvents + 100 {
		o.handle(input{at: clk.Now(), kind: pool.EventAttestation, miner: stranger, gen: uint64(i), oracle: e.Oracles[0].ID, pass: true})
	}
	for range 300 {
		o.handle(input{at: clk.Now(), kind: pool.EventAttestation, miner: e.Miner.ID, oracle: e.Oracles[0].ID})
	}
	o.mu.Lock()
	n := o.miners[stranger].events.len()
	first := o.miners[stranger].events.oldestFirst()[0].Generation
	o.mu.Unlock()
	if n != MinerEvents || first != 100 {
		t.Errorf("%d events kept of the stranger, the oldest of generation %d; want %d from 100", n, first, MinerEvents)
	}
	recent := o.Transitions(MaxInt)
	if len(recent) != RecentEvents || recent[0].Miner != e.Miner.ID.String() {
		t.Errorf("%d recent events kept, want %d", len(recent), RecentEvents)
	}

	clk.Add(SampleEvery / 2)
	ticks <- clk.Now()
	ticks <- clk.Now() // the first sample is done once the second is taken
	o.mu.Lock()
	tracked := len(o.miners)
	o.mu.Unlock()
	if tracked != 2 {
		t.Fatalf("%d miners tracked before the grace ended, want 2", tracked)
	}
	clk.Add(SampleEvery)
	ticks <- clk.Now()
	ticks <- clk.Now()
	o.mu.Lock()
	tracked = len(o.miners)
	o.mu.Unlock()
	if tracked != 0 {
		t.Fatalf("%d miners tracked, want 0: the pool lists none", tracked)
	}
}

// MaxInt asks for every kept event.
const MaxInt = int(^uint(0) >> 1)

// A subscriber that does not read is dropped, its channel closed; the others
// and the observer carry on.
func TestSlowSubscriberDropped(t *testing.T) {
	e := newEnv(t)
	o, clk, _ := newObserver(t, e)
	slow, cancelSlow := o.Subscribe(context.Background())
	defer cancelSlow()
	fast, cancelFast := o.Subscribe(context.Background())
	defer cancelFast()
	got := 0
	for i := range SubscriberBuffer + 10 {
		o.handle(input{at: clk.Now(), kind: pool.EventAttestation, miner: e.Miner.ID, gen: uint64(i), oracle: e.Oracles[0].ID})
		for len(fast) > 0 {
			<-fast
			got++
		}
	}
	if got != SubscriberBuffer+10 {
		t.Errorf("the reading subscriber got %d updates, want %d", got, SubscriberBuffer+10)
	}
	n := 0
	for range slow {
		n++
	}
	if n != SubscriberBuffer {
		t.Errorf("the slow subscriber got %d updates before its channel closed, want %d", n, SubscriberBuffer)
	}
	o.mu.Lock()
	subs := len(o.subs)
	o.mu.Unlock()
	if subs != 1 {
		t.Errorf("%d subscribers left, want 1", subs)
	}
}

// The pool's callback never blocks: when the observer's queue is full, the
// event is dropped and counted.
func TestCallbackNeverBlocks(t *testing.T) {
	e := newEnv(t)
	o, _, _ := newObserver(t, e)
	o.Stop() // nothing drains the queue now
	o.stopped.Store(false)
	rec := e.avail(t, 1, 0, pb.MinerState_VALIDATING)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range queueSize + 5 {
			o.take(poolEvent(rec))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the callback blocked")
	}
	if d := o.Dropped(); d != 5 {
		t.Errorf("%d events dropped, want 5", d)
	}
}

// Subscriptions end with their context, with cancel and with Stop; after
// Stop, a new one is closed at once.
func TestSubscriptionEnds(t *testing.T) {
	e := newEnv(t)
	o, _, _ := newObserver(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	a, _ := o.Subscribe(ctx)
	cancel()
	if _, open := <-a; open {
		t.Error("subscription open after its context ended")
	}
	b, cancelB := o.Subscribe(context.Background())
	cancelB()
	cancelB()
	if _, open := <-b; open {
		t.Error("subscription open after cancel")
	}
	c, cancelC := o.Subscribe(context.Background())
	defer cancelC()
	o.Stop()
	if _, open := <-c; open {
		t.Error("subscription open after Stop")
	}
	d, cancelD := o.Subscribe(context.Background())
	defer cancelD()
	if _, open := <-d; open {
		t.Error("subscription after Stop is open")
	}
}

func TestRing(t *testing.T) {
	r := newRing[int](3)
	if got := r.newestFirst(5); len(got) != 0 {
		t.Errorf("empty ring: %v", got)
	}
	for i := 1; i <= 2; i++ {
		r.push(i)
	}
	if got := r.oldestFirst(); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("oldest first %v", got)
	}
	for i := 3; i <= 7; i++ {
		r.push(i)
	}
	if got := r.oldestFirst(); !slices.Equal(got, []int{5, 6, 7}) {
		t.Errorf("oldest first %v", got)
	}
	if got := r.newestFirst(2); !slices.Equal(got, []int{7, 6}) {
		t.Errorf("newest first %v", got)
	}
	if got := r.newestFirst(10); !slices.Equal(got, []int{7, 6, 5}) {
		t.Errorf("newest first %v", got)
	}
}

// The signed messages of these tests are built as node/pool's tests build
// theirs: a network of five oracles, quorum three.

const testNet = "testnet"

type env struct {
	*testkit.Network
	check protocol.Checker
	pool  *pool.Pool
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	n := testkit.NewNetwork(tb, testNet, time.Now().Truncate(time.Millisecond))
	e := &env{Network: n, check: n.Checker()}
	var err error
	if e.pool, err = pool.New(testkit.Store(tb, ""), e.check, nil); err != nil {
		tb.Fatal(err)
	}
	return e
}

// att is oracle i's verdict on miner at gen, round 100.
func (e *env) att(tb testing.TB, i int, miner peer.ID, gen uint64, pass bool, scoreMilli uint32) protocol.Signed[*pb.Attestation] {
	return e.SealedAttestation(tb, i, miner, func(a *pb.Attestation) {
		a.Generation, a.Pass, a.ScoreMilli = gen, pass, scoreMilli
	})
}

// avail is the miner's record; an AVAILABLE one carries three passing attestations.
func (e *env) avail(tb testing.TB, seq, gen uint64, state pb.MinerState) protocol.Signed[*pb.Availability] {
	return e.SealedAvailability(tb, e.Miner, seq, gen, state)
}

// grant is the miner's grant to the router of session at gen.
func (e *env) grant(tb testing.TB, session string, gen uint64) protocol.Signed[*pb.Grant] {
	claim := testkit.Seal(tb, e.Claim(func(c *pb.Claim) {
		c.Session, c.Generation, c.Nonce, c.Model = session, gen, []byte("nonce-"+session+"-0123456"), ""
	}), e.Router.Key)
	return testkit.Signed(tb, e.Grant(claim, func(g *pb.Grant) { g.Session, g.Generation = session, gen }), e.Miner.Key)
}

func (e *env) release(tb testing.TB, session string, gen uint64, outcome pb.Outcome) protocol.Signed[*pb.Release] {
	return testkit.Signed(tb, e.Release(func(r *pb.Release) {
		r.Session, r.Generation, r.Outcome, r.Rating = session, gen, outcome, 0
	}), e.Router.Key)
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// accepted fails unless the pool took a message without finding a conflict.
func accepted(tb testing.TB) func(*pb.Evidence, error) {
	return func(ev *pb.Evidence, err error) {
		tb.Helper()
		if err != nil || ev != nil {
			tb.Fatalf("not accepted: evidence %v, err %v", ev, err)
		}
	}
}

// kinds lists events as kind[:state], for comparisons.
func kinds(evs []api.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
		if e.Kind == api.EventState {
			out[i] += ":" + e.From + ">" + e.State
		}
	}
	return out
}
