package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
)

// node is a router's API over fakes that record what they are asked.
type node struct {
	mu        sync.Mutex
	unhealthy error
	reserved  []string // model, lease
	waits     []time.Duration
	submitted []api.TaskRequest
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

func (n *node) Info() api.NodeInfo {
	return api.NodeInfo{PeerID: "12D3KooWnode", Roles: []string{"router"}}
}
func (n *node) Peers() []api.PeerInfo { return []api.PeerInfo{{PeerID: "p1", Direction: "outbound"}} }
func (n *node) Health() error         { return n.unhealthy }
func (n *node) Pool() []api.PoolMiner {
	return []api.PoolMiner{{PeerID: "m1", State: "available", LastSeen: t0}}
}
func (n *node) Network() api.NetworkInfo    { return api.NetworkInfo{Network: "net", Dialable: "yes"} }
func (n *node) Overview() api.Overview      { return api.Overview{Time: t0, Node: n.Info()} }
func (n *node) History() api.History        { return api.History{} }
func (n *node) Models() []string            { return nil }
func (n *node) ListSessions() []api.Session { return []api.Session{session("S1")} }
func (n *node) Reservations() []api.Reservation {
	return []api.Reservation{reservation("R1")}
}

func (n *node) Miner(string) (api.MinerHistory, bool) { return api.MinerHistory{}, false }

func (n *node) Transitions(limit int) []api.Event {
	out := make([]api.Event, limit)
	for i := range out {
		out[i] = api.Event{Time: t0, Miner: "m1", Kind: api.EventState, State: "available", Generation: uint64(i)}
	}
	return out
}

func (n *node) Subscribe(ctx context.Context) (<-chan api.Update, func()) {
	ch := make(chan api.Update)
	return ch, func() {}
}

func reservation(id string) api.Reservation {
	return api.Reservation{ID: id, Miner: "m1", Generation: 3, LeaseEnd: t0, Created: t0, State: "active"}
}

func session(id string) api.Session {
	agreement := 0.9
	return api.Session{
		ID: id, State: api.SessionOpen, Created: t0, Ends: t0.Add(time.Minute), MeanAgreement: &agreement,
		Params: api.SessionParams{Redundancy: 2, ReservePeriod: api.Duration(time.Minute), TaskTimeout: api.Duration(time.Second)},
		Miners: []api.Holding{{Reservation: "R1", Miner: "m1", State: api.HoldActive, Since: t0}},
		Warm:   true,
	}
}

func detail(id string) api.SessionDetail {
	return api.SessionDetail{Session: session(id), Tasks: []api.TaskBrief{{ID: "1", State: api.TaskDone}}}
}

func (n *node) Reserve(_ context.Context, model string, lease time.Duration) (api.Reservation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reserved = append(n.reserved, model, lease.String())
	return reservation("R2"), nil
}

func (n *node) Release(_ context.Context, id string) (api.Reservation, error) {
	if id != "R/1" {
		return api.Reservation{}, fmt.Errorf("%w: no reservation %s", api.ErrNotFound, id)
	}
	r := reservation(id)
	r.State, r.Ended = "released", t0
	return r, nil
}

func (n *node) CreateSession(context.Context, api.SessionRequest) (api.SessionDetail, error) {
	return detail("S2"), nil
}

func (n *node) Session(id string) (api.SessionDetail, error) { return detail(id), nil }

func (n *node) EndSession(_ context.Context, id string) (api.SessionDetail, error) {
	if id == "ended" {
		return api.SessionDetail{}, fmt.Errorf("%w: session has ended", api.ErrConflict)
	}
	d := detail(id)
	d.State, d.EndReason = api.SessionEnded, api.EndClosed
	return d, nil
}

func (n *node) SubmitTask(_ context.Context, s string, req api.TaskRequest) (api.Task, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.submitted = append(n.submitted, req)
	return api.Task{ID: "1", Session: s, State: api.TaskQueued, Messages: req.Messages, Created: t0}, nil
}

func (n *node) Task(_ context.Context, s, task string, wait time.Duration) (api.Task, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.waits = append(n.waits, wait)
	agreement := 1.0
	return api.Task{ID: task, Session: s, State: api.TaskDone, Answer: "42", Agreement: &agreement,
		Answers: []api.Answer{{Miner: "m1", Output: "42", Accepted: true}}, Created: t0, Finished: t0}, nil
}

func (n *node) Complete(context.Context, api.CompletionRequest, func(string) error) (api.Completion, error) {
	return api.Completion{}, api.ErrUnavailable
}

func serve(t *testing.T, n *node, token string) *client.Client {
	t.Helper()
	srv := httptest.NewServer(api.Handler(api.Config{Source: n, Reserver: n, Sessions: n, Observer: n, Token: token}))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL + "/")
	c.Token = token
	return c
}

func check[T any](t *testing.T, what string, got T, err error, want T) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}

// Every typed method asks its endpoint and reads the answer back as the
// API's type.
func TestEndpoints(t *testing.T) {
	n := &node{}
	c := serve(t, n, "tok")
	ctx := context.Background()

	h, err := c.Health(ctx)
	check(t, "Health", h, err, api.Health{Status: "ok"})
	n.unhealthy = errors.New("no peers")
	h, err = c.Health(ctx)
	check(t, "Health of an unhealthy node", h, err, api.Health{Status: "unhealthy", Reason: "no peers"})

	info, err := c.Node(ctx)
	check(t, "Node", info, err, n.Info())
	peers, err := c.Peers(ctx)
	check(t, "Peers", peers, err, n.Peers())
	pool, err := c.Pool(ctx)
	check(t, "Pool", pool, err, n.Pool())
	ni, err := c.Network(ctx)
	check(t, "Network", ni, err, n.Network())
	ov, err := c.Overview(ctx)
	check(t, "Overview", ov, err, n.Overview())
	evs, err := c.Transitions(ctx, 3)
	check(t, "Transitions(3)", evs, err, n.Transitions(3))
	evs, err = c.Transitions(ctx, 0)
	check(t, "Transitions(0)", len(evs), err, api.DefaultTransitions)

	r, err := c.Reserve(ctx, api.ReserveRequest{Model: "m", Lease: "30s"})
	check(t, "Reserve", r, err, reservation("R2"))
	if want := []string{"m", "30s"}; !reflect.DeepEqual(n.reserved, want) {
		t.Errorf("the router was asked %q, want %q", n.reserved, want)
	}
	released := reservation("R/1")
	released.State, released.Ended = "released", t0
	r, err = c.Release(ctx, "R/1")
	check(t, "Release", r, err, released)
	list, err := c.Reservations(ctx)
	check(t, "Reservations", list, err, n.Reservations())

	d, err := c.CreateSession(ctx, api.SessionRequest{Redundancy: 2})
	check(t, "CreateSession", d, err, detail("S2"))
	ss, err := c.Sessions(ctx)
	check(t, "Sessions", ss, err, n.ListSessions())
	d, err = c.Session(ctx, "S 1")
	check(t, "Session", d, err, detail("S 1"))
	ended, _ := n.EndSession(ctx, "S1")
	d, err = c.EndSession(ctx, "S1")
	check(t, "EndSession", d, err, ended)

	task, err := c.SubmitTask(ctx, "S1", api.TaskRequest{Prompt: "hi"})
	msgs := []api.Message{{Role: "user", Content: "hi"}}
	check(t, "SubmitTask", task, err, api.Task{ID: "1", Session: "S1", State: api.TaskQueued, Messages: msgs, Created: t0})
	if task.Settled() {
		t.Error("a queued task is settled")
	}
	task, err = c.Task(ctx, "S1", "1", 1500*time.Millisecond)
	want, _ := n.Task(ctx, "S1", "1", 0)
	check(t, "Task", task, err, want)
	if !task.Settled() {
		t.Error("a done task is not settled")
	}
	if _, err := c.Task(ctx, "S1", "1", 0); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{1500 * time.Millisecond, 0, 0}; !reflect.DeepEqual(n.waits, want) {
		t.Errorf("the router waited %v, want %v", n.waits, want)
	}

	var models struct {
		Object string `json:"object"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/models", nil, &models); err != nil || models.Object != "list" {
		t.Errorf("Do GET /v1/models: %+v, %v", models, err)
	}
}

// An error status is a *StatusError with the API's message; a 401 ends
// with the client's hint.
func TestStatusError(t *testing.T) {
	n := &node{}
	c := serve(t, n, "tok")
	ctx := context.Background()

	_, err := c.Release(ctx, "R9")
	var se *client.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound || !client.HasStatus(err, http.StatusNotFound) {
		t.Fatalf("Release of an unknown reservation: %v", err)
	}
	if want := "not found: no reservation R9 (HTTP 404)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if _, err := c.EndSession(ctx, "ended"); !client.HasStatus(err, http.StatusConflict) {
		t.Errorf("EndSession of an ended session: %v, want a 409", err)
	}

	c.Token = "wrong"
	c.AuthHint = "pass the token with --api-token"
	_, err = c.Node(ctx)
	if !client.HasStatus(err, http.StatusUnauthorized) || !strings.HasSuffix(err.Error(), "(HTTP 401); pass the token with --api-token") {
		t.Errorf("wrong token: %v", err)
	}
	c.Token = ""
	if _, err := c.Health(ctx); err != nil {
		t.Errorf("/healthz needs no token: %v", err)
	}

	// A status without the API's error shape names the URL.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "teapot", http.StatusTeapot)
	}))
	defer srv.Close()
	_, err = client.New(srv.URL).Pool(ctx)
	if want := srv.URL + "/v1/pool: HTTP 418"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	resp, err := client.New(srv.URL).Send(ctx, http.MethodPost, "/v1/chat/completions", map[string]any{"stream": true})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := client.New(srv.URL).CheckResponse(resp); !client.HasStatus(err, http.StatusTeapot) ||
		err.Error() != srv.URL+"/v1/chat/completions: HTTP 418" {
		t.Errorf("CheckResponse: %v", err)
	}
}

// A success that is not the endpoint's JSON wraps ErrNotAPI; a node that
// does not answer says so, and a context that ends is its own error.
func TestNoAnswer(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			return
		}
		w.Write([]byte("<html>"))
	}))
	defer srv.Close()
	c := client.New(srv.URL)
	if _, err := c.Node(ctx); !errors.Is(err, client.ErrNotAPI) || !strings.HasPrefix(err.Error(), srv.URL+"/v1/node: not an Ephemera API answer: ") {
		t.Errorf("HTML answer: %v", err)
	}

	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Do(cctx, http.MethodGet, "/slow", nil, nil); err != context.DeadlineExceeded {
		t.Errorf("context ended: %v, want the context's error", err)
	}
	err := c.WithTimeout(50*time.Millisecond).Do(ctx, http.MethodGet, "/slow", nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the node at "+srv.URL+"/slow: ") {
		t.Errorf("timed out: %v", err)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, err = client.New(dead.URL).Pool(ctx)
	var se *client.StatusError
	if err == nil || errors.As(err, &se) || errors.Is(err, client.ErrNotAPI) ||
		!strings.HasPrefix(err.Error(), "cannot reach the node at "+dead.URL+"/v1/pool: ") {
		t.Errorf("node down: %v", err)
	}
}
