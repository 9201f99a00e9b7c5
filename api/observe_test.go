package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// These tests are in package api to shorten the event stream's timing.

type obsSource struct{}

func (obsSource) Info() NodeInfo       { return NodeInfo{PeerID: "self", Roles: []string{"oracle"}} }
func (obsSource) Peers() []PeerInfo    { return []PeerInfo{} }
func (obsSource) Health() error        { return nil }
func (obsSource) Pool() []PoolMiner    { return []PoolMiner{} }
func (obsSource) Network() NetworkInfo { return NetworkInfo{} }
func testPeerID(t *testing.T, name string) string {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// fakeObserver serves fixed data, and hands each subscription's channel to
// the test.
type fakeObserver struct {
	overview Overview
	history  History
	miners   map[string]MinerHistory
	events   []Event

	mu        sync.Mutex
	limits    []int
	overviews int

	subs chan *fakeSub
}

type fakeSub struct {
	ch    chan Update
	ended chan struct{} // closed when the API cancels the subscription
	once  sync.Once
}

func newFakeObserver(t *testing.T) *fakeObserver {
	miner := testPeerID(t, "miner")
	counts := map[string]int{"joining": 0, "validating": 1, "available": 2, "reserved": 0, "cooling_off": 0, "stale": 0}
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	pm := PoolMiner{PeerID: miner, State: "available", Generation: 3, Oracles: []string{"o1"}, Reputation: 0.5,
		Models: []string{"llama"}, LastSeen: at, Seq: 9}
	return &fakeObserver{
		overview: Overview{
			Time: at, Node: NodeInfo{PeerID: "self", Addrs: []string{}, Roles: []string{"oracle"}},
			Pool:   PoolSummary{Total: 3, Counts: counts},
			Gossip: []GossipTopic{{Topic: "attestations", Accept: 10, Ignore: 2, Published: 3}},
			Oracle: &OracleStats{ValidationsPassed: 10, ValidationsFailed: 1, PassRate: 10.0 / 11},
		},
		history: History{IntervalSeconds: 10, Points: []HistoryPoint{{Time: at, Counts: counts}}},
		miners: map[string]MinerHistory{miner: {Miner: pm, Events: []Event{
			{Time: at, Miner: miner, Kind: EventState, State: "validating", Generation: 3},
			{Time: at, Miner: miner, Kind: EventAttestation, Oracle: "o1", Pass: true, Score: 0.9, Generation: 3},
		}}},
		events: []Event{
			{Time: at, Miner: miner, Kind: EventGrant, Router: "r", Session: "s", LeaseEnd: at, Generation: 3},
			{Time: at, Miner: miner, Kind: EventRelease, Router: "r", Session: "s", Outcome: "completed", Generation: 3},
		},
		subs: make(chan *fakeSub, 16),
	}
}

func (f *fakeObserver) Overview() Overview {
	f.mu.Lock()
	f.overviews++
	f.mu.Unlock()
	return f.overview
}
func (f *fakeObserver) History() History { return f.history }
func (f *fakeObserver) Miner(id string) (MinerHistory, bool) {
	h, ok := f.miners[id]
	return h, ok
}
func (f *fakeObserver) Transitions(limit int) []Event {
	f.mu.Lock()
	f.limits = append(f.limits, limit)
	f.mu.Unlock()
	return f.events[:min(limit, len(f.events))]
}
func (f *fakeObserver) Subscribe(ctx context.Context) (<-chan Update, func()) {
	s := &fakeSub{ch: make(chan Update, 4), ended: make(chan struct{})}
	f.subs <- s
	return s.ch, func() { s.once.Do(func() { close(s.ended) }) }
}

// sub is the next subscription the API makes.
func (f *fakeObserver) sub(t *testing.T) *fakeSub {
	t.Helper()
	select {
	case s := <-f.subs:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no subscription")
		return nil
	}
}

func (s *fakeSub) waitEnded(t *testing.T, what string) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the stream did not end: %s", what)
	}
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, LocalRequest(http.MethodGet, path, nil))
	return rec
}

// decodeStrict decodes a JSON answer, refusing fields v does not have.
func decodeStrict[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var v T
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, contains string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	body := decodeStrict[ErrorBody](t, rec)
	if body.Error.Type == "" || !strings.Contains(body.Error.Message, contains) {
		t.Errorf("error %+v, want a message with %q", body.Error, contains)
	}
}

func TestObserveEndpoints(t *testing.T) {
	f := newFakeObserver(t)
	h := Handler(Config{Source: obsSource{}, Observer: f})

	rec := get(t, h, "/v1/overview")
	if got := decodeStrict[Overview](t, rec); rec.Code != 200 || !reflect.DeepEqual(got, f.overview) {
		t.Errorf("overview %d %+v, want %+v", rec.Code, got, f.overview)
	}
	rec = get(t, h, "/v1/history")
	if got := decodeStrict[History](t, rec); rec.Code != 200 || !reflect.DeepEqual(got, f.history) {
		t.Errorf("history %d %+v", rec.Code, got)
	}
	miner := testPeerID(t, "miner")
	rec = get(t, h, "/v1/miners/"+miner)
	if got := decodeStrict[MinerHistory](t, rec); rec.Code != 200 || !reflect.DeepEqual(got, f.miners[miner]) {
		t.Errorf("miner %d %+v", rec.Code, got)
	}
	wantError(t, get(t, h, "/v1/miners/"+testPeerID(t, "stranger")), http.StatusNotFound, "not known")
	wantError(t, get(t, h, "/v1/miners/not-a-peer"), http.StatusBadRequest, "not a peer ID")

	rec = get(t, h, "/v1/transitions")
	if got := decodeStrict[[]Event](t, rec); rec.Code != 200 || !reflect.DeepEqual(got, f.events) {
		t.Errorf("transitions %d %+v", rec.Code, got)
	}
	rec = get(t, h, "/v1/transitions?limit=1")
	if got := decodeStrict[[]Event](t, rec); len(got) != 1 {
		t.Errorf("transitions?limit=1: %d events", len(got))
	}
	get(t, h, "/v1/transitions?limit=500")
	if !reflect.DeepEqual(f.limits, []int{50, 1, 500}) {
		t.Errorf("limits asked %v, want [50 1 500]", f.limits)
	}
	for _, bad := range []string{"abc", "0", "-1", "501", "1.5"} {
		wantError(t, get(t, h, "/v1/transitions?limit="+bad), http.StatusBadRequest, "limit")
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, LocalRequest(http.MethodPost, "/v1/overview", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /v1/overview: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// The JSON names are the contract's.
func TestObserveJSONNames(t *testing.T) {
	f := newFakeObserver(t)
	h := Handler(Config{Source: obsSource{}, Observer: f})
	var ov map[string]any
	if err := json.Unmarshal(get(t, h, "/v1/overview").Body.Bytes(), &ov); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "node", "pool", "gossip", "oracle", "router"} {
		if _, ok := ov[k]; !ok {
			t.Errorf("overview has no %q", k)
		}
	}
	if ov["router"] != nil {
		t.Errorf("router = %v, want null", ov["router"])
	}
	g := ov["gossip"].([]any)[0].(map[string]any)
	for _, k := range []string{"topic", "accept", "reject", "ignore", "throttled", "published"} {
		if _, ok := g[k]; !ok {
			t.Errorf("gossip topic has no %q", k)
		}
	}
	o := ov["oracle"].(map[string]any)
	for _, k := range []string{"validations_passed", "validations_failed", "pass_rate"} {
		if _, ok := o[k]; !ok {
			t.Errorf("oracle has no %q", k)
		}
	}
	b, _ := json.Marshal(RouterStats{})
	if string(b) != `{"sessions_open":0,"sessions_ended":0,"queued_tasks":0,"tasks_done":0,"tasks_failed":0,"mean_agreement":0,`+
		`"completions":0,"warm_miners":0,"warm_busy":0,"utilisation":0,"idle_releases":0}` {
		t.Errorf("router stats %s", b)
	}
	b, _ = json.Marshal(f.history)
	if !strings.HasPrefix(string(b), `{"interval_seconds":10,"points":[{"time":"2025-06-01T12:00:00Z","counts":{`) {
		t.Errorf("history %s", b)
	}
	b, _ = json.Marshal(Event{Kind: EventEvidence, Miner: "m", Oracle: "o", Detail: "two verdicts", Generation: 0})
	if string(b) != `{"time":"0001-01-01T00:00:00Z","miner":"m","kind":"evidence","generation":0,"oracle":"o","detail":"two verdicts"}` {
		t.Errorf("evidence %s", b)
	}
}

func TestObserveAbsent(t *testing.T) {
	h := Handler(Config{Source: obsSource{}})
	for _, p := range []string{"/v1/overview", "/v1/history", "/v1/events", "/v1/transitions", "/", "/ui/"} {
		if rec := get(t, h, p); rec.Code != http.StatusNotFound {
			t.Errorf("%s without an Observer or UI: %d", p, rec.Code)
		}
	}
}

// sseEvent is one event of a stream; a comment has only comment set.
type sseEvent struct {
	event, data, comment string
}

// readSSE parses a stream's events onto a channel, closed at its end.
func readSSE(r io.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event: "):
				ev.event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			}
		}
	}()
	return out
}

func next(t *testing.T, evs <-chan sseEvent, skipOverviews bool) sseEvent {
	t.Helper()
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatal("the stream ended")
			}
			if (skipOverviews && ev.event == "overview") || ev.comment == "ping" {
				continue
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
}

func shortTiming(t *testing.T, overview, ping, write time.Duration) {
	saved := streamTiming
	streamTiming.overview, streamTiming.ping, streamTiming.write = overview, ping, write
	t.Cleanup(func() { streamTiming = saved })
}

func openStream(t *testing.T, url string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp, readSSE(resp.Body)
}

// The stream, read back event by event over real HTTP: an overview at once
// and then periodically, every update as it comes, pings, and the end when
// the client goes away.
func TestEventStream(t *testing.T) {
	shortTiming(t, 100*time.Millisecond, 150*time.Millisecond, 5*time.Second)
	f := newFakeObserver(t)
	srv := httptest.NewServer(Handler(Config{Source: obsSource{}, Observer: f}))
	defer srv.Close()

	resp, evs := openStream(t, srv.URL+"/v1/events")
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	sub := f.sub(t)

	first := next(t, evs, false)
	var ov Overview
	if first.event != "overview" || json.Unmarshal([]byte(first.data), &ov) != nil || !reflect.DeepEqual(ov, f.overview) {
		t.Fatalf("first event %+v", first)
	}

	miner := f.miners[testPeerID(t, "miner")]
	sub.ch <- Update{Transition: &f.events[0]}
	sub.ch <- Update{Miner: &miner.Miner}
	sub.ch <- Update{Transition: &miner.Events[1]}

	ev := next(t, evs, true)
	var tr Event
	if ev.event != "transition" || json.Unmarshal([]byte(ev.data), &tr) != nil || tr != f.events[0] {
		t.Errorf("transition %+v", ev)
	}
	ev = next(t, evs, true)
	var pm PoolMiner
	if ev.event != "miner" || json.Unmarshal([]byte(ev.data), &pm) != nil || !reflect.DeepEqual(pm, miner.Miner) {
		t.Errorf("miner %+v", ev)
	}
	ev = next(t, evs, true)
	if ev.event != "transition" || !strings.Contains(ev.data, `"pass":true`) {
		t.Errorf("transition %+v", ev)
	}

	// More overviews, and a ping, come on their own.
	var overviews, pings int
	deadline := time.After(5 * time.Second)
	for overviews < 2 || pings < 1 {
		select {
		case ev, ok := <-evs:
			if !ok {
				t.Fatal("the stream ended")
			}
			switch {
			case ev.event == "overview":
				overviews++
			case ev.comment == "ping":
				pings++
			default:
				t.Errorf("unexpected %+v", ev)
			}
		case <-deadline:
			t.Fatalf("%d overviews and %d pings", overviews, pings)
		}
	}

	resp.Body.Close()
	sub.waitEnded(t, "the client went away")
}

// A subscription the Observer drops (its client too slow) ends the stream.
func TestEventStreamDroppedByObserver(t *testing.T) {
	f := newFakeObserver(t)
	srv := httptest.NewServer(Handler(Config{Source: obsSource{}, Observer: f}))
	defer srv.Close()
	_, evs := openStream(t, srv.URL+"/v1/events")
	sub := f.sub(t)
	if ev := next(t, evs, false); ev.event != "overview" {
		t.Fatalf("first event %+v", ev)
	}
	close(sub.ch)
	sub.waitEnded(t, "the observer dropped the subscription")
	for range evs { // the body ends
	}
}

// A client that stops reading is dropped once a write blocks past the
// deadline, rather than holding the handler.
func TestEventStreamSlowClientDropped(t *testing.T) {
	shortTiming(t, time.Hour, time.Hour, 200*time.Millisecond)
	f := newFakeObserver(t)
	srv := httptest.NewServer(Handler(Config{Source: obsSource{}, Observer: f}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	sub := f.sub(t)
	big := Event{Kind: EventEvidence, Detail: strings.Repeat("x", 64<<10)}
	for {
		select {
		case sub.ch <- Update{Transition: &big}:
			continue
		case <-sub.ended:
		case <-time.After(20 * time.Second):
			t.Fatal("the handler still writes to a client that does not read")
		}
		break
	}
}

func TestAccessToken(t *testing.T) {
	const token = "s3cret-token"
	f := newFakeObserver(t)
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ui %s", r.URL.Path)
	})
	h := Handler(Config{Source: obsSource{}, Observer: f, UI: ui, Token: token})

	do := func(method, target, auth string) *httptest.ResponseRecorder {
		req := LocalRequest(method, target, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, c := range []struct {
		method, target, auth string
		status               int
	}{
		{"GET", "/v1/overview", "", 401},
		{"GET", "/v1/overview?access_token=" + token, "", 200},
		{"GET", "/v1/overview?access_token=wrong", "", 401},
		{"GET", "/v1/overview?access_token=", "", 401},
		{"GET", "/v1/overview", "Bearer " + token, 200},
		{"GET", "/v1/overview?access_token=" + token, "Bearer wrong", 401}, // the header decides
		{"GET", "/v1/transitions?limit=2&access_token=" + token, "", 200},
		{"HEAD", "/v1/overview?access_token=" + token, "", 401},
		{"POST", "/v1/reservations?access_token=" + token, "", 401},
		{"POST", "/v1/overview?access_token=" + token, "", 401},
		{"GET", "/", "", 200},
		{"GET", "/ui/app.js", "", 200},
		{"GET", "/index.html", "", 200},
		{"HEAD", "/ui/app.js", "", 200},
		{"POST", "/", "", 401},
		{"GET", "/healthz", "", 200},
		{"GET", "/v1/pool", "", 401},
	} {
		rec := do(c.method, c.target, c.auth)
		if rec.Code != c.status {
			t.Errorf("%s %s (%q): %d, want %d: %s", c.method, c.target, c.auth, rec.Code, c.status, rec.Body)
		}
		if rec.Code == 401 && strings.Contains(rec.Body.String(), token) {
			t.Errorf("%s %s: the answer shows the token", c.method, c.target)
		}
	}
	if body := do("GET", "/ui/app.js", "").Body.String(); body != "ui /ui/app.js" {
		t.Errorf("UI answered %q", body)
	}
	if body := do("GET", "/", "").Body.String(); body != "ui /" {
		t.Errorf("UI answered %q", body)
	}

	// The token goes no further than the check.
	var seen *http.Request
	echo := requireToken(token, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r }))
	echo.ServeHTTP(httptest.NewRecorder(), LocalRequest("GET", "/v1/events?a=1&access_token="+token, nil))
	if seen == nil || strings.Contains(seen.URL.String(), token) || strings.Contains(seen.RequestURI, token) || seen.URL.Query().Get("a") != "1" {
		t.Errorf("the handler saw %v", seen)
	}

	// EventSource's way in: the token in the query of a real stream.
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close) // after the stream's body is closed
	_, evs := openStream(t, srv.URL+"/v1/events?access_token="+token)
	if ev := next(t, evs, false); ev.event != "overview" {
		t.Errorf("first event %+v", ev)
	}
}
