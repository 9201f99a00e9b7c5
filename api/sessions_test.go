package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
)

// fakeSessions is a session manager that records what the API passes it.
type fakeSessions struct {
	mu          sync.Mutex
	err         error  // every method that can fail returns it
	panicWith   string // every method panics with it
	created     []api.SessionRequest
	submitted   []api.TaskRequest
	waits       []time.Duration
	completions []api.CompletionRequest
	models      []string
	complete    func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error)
}

func (f *fakeSessions) fail() error {
	if f.panicWith != "" {
		panic(f.panicWith)
	}
	return f.err
}

func (f *fakeSessions) CreateSession(_ context.Context, req api.SessionRequest) (api.SessionDetail, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, req)
	if err := f.fail(); err != nil {
		return api.SessionDetail{}, err
	}
	return api.SessionDetail{Session: api.Session{ID: "S1", State: api.SessionOpen, Params: api.SessionParams{Model: req.Model}}}, nil
}

func (f *fakeSessions) ListSessions() []api.Session {
	return []api.Session{{ID: "S1", State: api.SessionOpen}}
}

func (f *fakeSessions) Session(id string) (api.SessionDetail, error) {
	if err := f.fail(); err != nil {
		return api.SessionDetail{}, err
	}
	return api.SessionDetail{Session: api.Session{ID: id, State: api.SessionOpen}}, nil
}

func (f *fakeSessions) EndSession(_ context.Context, id string) (api.SessionDetail, error) {
	if err := f.fail(); err != nil {
		return api.SessionDetail{}, err
	}
	return api.SessionDetail{Session: api.Session{ID: id, State: api.SessionEnded}}, nil
}

func (f *fakeSessions) SubmitTask(_ context.Context, session string, req api.TaskRequest) (api.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitted = append(f.submitted, req)
	if err := f.fail(); err != nil {
		return api.Task{}, err
	}
	return api.Task{ID: "T1", Session: session, State: api.TaskQueued}, nil
}

func (f *fakeSessions) Task(_ context.Context, session, task string, wait time.Duration) (api.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, wait)
	if err := f.fail(); err != nil {
		return api.Task{}, err
	}
	return api.Task{ID: task, Session: session, State: api.TaskDone}, nil
}

func (f *fakeSessions) Complete(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
	f.mu.Lock()
	f.completions = append(f.completions, req)
	complete := f.complete
	err := f.fail()
	f.mu.Unlock()
	if err != nil {
		return api.Completion{}, err
	}
	if complete != nil {
		return complete(ctx, req, onDelta)
	}
	return api.Completion{
		Task: "T1", Model: "m1", Text: "Hello", PromptTokens: 3, CompletionTokens: 2,
		Session: "S1", Miners: []string{"miner-a", "miner-b"}, Agreement: 1,
	}, nil
}

func (f *fakeSessions) Models() []string { return f.models }

func (f *fakeSessions) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.created) + len(f.submitted) + len(f.waits) + len(f.completions)
}

// router is a router node's API over s, with token when not empty.
func router(t *testing.T, s *fakeSessions, token string) http.Handler {
	t.Helper()
	return api.Handler(api.Config{
		Source: newFake(), Gatherer: newRegistry(t), Reserver: acceptingReserver{}, Sessions: s, Token: token,
	})
}

// call serves one request; header is name, value pairs. A body goes as
// application/json unless header names another Content-Type.
func call(t *testing.T, h http.Handler, method, path, body string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := api.LocalRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// fetch GETs url from a real server, as a recorder to check like the others.
func fetch(t *testing.T, url string) *httptest.ResponseRecorder {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rec := httptest.NewRecorder()
	rec.Code = resp.StatusCode
	for k, v := range resp.Header {
		rec.Header()[k] = v
	}
	if _, err := rec.Body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return rec
}

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    any     `json:"code"`
}

// errorOf decodes an error answer strictly: only {"error":{message,type,param,code}}.
func errorOf(t *testing.T, rec *httptest.ResponseRecorder) apiError {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error *apiError `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Error == nil {
		t.Fatalf("body is not an OpenAI error (%v): %s", err, rec.Body)
	}
	if body.Error.Message == "" || body.Error.Type == "" {
		t.Errorf("error lacks message or type: %s", rec.Body)
	}
	return *body.Error
}

// wantError checks an error answer's status, that its code is the status
// and that its message contains want.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, want string) apiError {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	e := errorOf(t, rec)
	if code, ok := e.Code.(float64); !ok || int(code) != status {
		t.Errorf("error.code = %v, want %d", e.Code, status)
	}
	if !strings.Contains(e.Message, want) {
		t.Errorf("error.message = %q, want it to contain %q", e.Message, want)
	}
	return e
}

func jsonOf(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, rec.Body)
	}
	return v
}

func TestCreateSession(t *testing.T) {
	s := &fakeSessions{}
	h := router(t, s, "")
	body := `{"model":"m1","min_nodes":2,"max_nodes":4,"redundancy":2,"reserve_period":"10m","max_tasks":5,"task_timeout":"60s"}`
	rec := call(t, h, http.MethodPost, "/v1/sessions", body, "Content-Type", "application/json")
	if rec.Code != http.StatusCreated {
		t.Fatalf("status = %d, want 201; %s", rec.Code, rec.Body)
	}
	if got := jsonOf(t, rec); got["id"] != "S1" || got["params"].(map[string]any)["model"] != "m1" {
		t.Errorf("view = %v", got)
	}
	want := api.SessionRequest{Model: "m1", MinNodes: 2, MaxNodes: 4, Redundancy: 2, ReservePeriod: "10m", MaxTasks: 5, TaskTimeout: "60s"}
	if len(s.created) != 1 || s.created[0] != want {
		t.Errorf("manager got %+v, want %+v", s.created, want)
	}

	// Every field is optional; so is the body.
	for _, body := range []string{"", "{}", "  \n"} {
		if rec := call(t, h, http.MethodPost, "/v1/sessions", body); rec.Code != http.StatusCreated {
			t.Errorf("body %q: status = %d, want 201; %s", body, rec.Code, rec.Body)
		}
	}
}

func TestCreateSessionBadRequest(t *testing.T) {
	tests := []struct {
		name, body, ctype string
		status            int
		want              string
	}{
		{"bad JSON", `{"model":`, "", 400, "invalid JSON"},
		{"not an object", `[1]`, "", 400, "invalid JSON"},
		{"trailing data", `{} {}`, "", 400, "data after the object"},
		{"unknown field", `{"model":"m","min_node":1}`, "", 400, `"min_node"`},
		{"wrong type", `{"min_nodes":"2"}`, "", 400, "min_nodes"},
		{"fraction", `{"max_tasks":1.5}`, "", 400, "max_tasks"},
		{"negative min_nodes", `{"min_nodes":-1}`, "", 400, "min_nodes: -1 is negative"},
		{"negative max_nodes", `{"max_nodes":-2}`, "", 400, "max_nodes: -2 is negative"},
		{"negative redundancy", `{"redundancy":-1}`, "", 400, "redundancy: -1 is negative"},
		{"negative max_tasks", `{"max_tasks":-5}`, "", 400, "max_tasks: -5 is negative"},
		{"bad reserve_period", `{"reserve_period":"ten minutes"}`, "", 400, `reserve_period: "ten minutes"`},
		{"unitless reserve_period", `{"reserve_period":"10"}`, "", 400, "reserve_period: "},
		{"negative reserve_period", `{"reserve_period":"-10m"}`, "", 400, "reserve_period: "},
		{"zero task_timeout", `{"task_timeout":"0s"}`, "", 400, "task_timeout: "},
		{"duration as number", `{"task_timeout":60}`, "", 400, "task_timeout"},
		{"content type", `{}`, "text/plain", 415, "content type"},
		{"huge body", `{"model":"` + strings.Repeat("m", api.MaxBody) + `"}`, "", 413, "body over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeSessions{}
			var hdr []string
			if tt.ctype != "" {
				hdr = []string{"Content-Type", tt.ctype}
			}
			rec := call(t, router(t, s, ""), http.MethodPost, "/v1/sessions", tt.body, hdr...)
			e := wantError(t, rec, tt.status, tt.want)
			if e.Type != "invalid_request_error" {
				t.Errorf("type = %q", e.Type)
			}
			if s.calls() != 0 {
				t.Errorf("the manager was called with %+v", s.created)
			}
		})
	}
}

func TestCreateSessionManagerError(t *testing.T) {
	s := &fakeSessions{err: fmt.Errorf("%w: min_nodes 5 above max_nodes 2", api.ErrBadRequest)}
	rec := call(t, router(t, s, ""), http.MethodPost, "/v1/sessions", `{"min_nodes":5,"max_nodes":2}`)
	wantError(t, rec, http.StatusBadRequest, "min_nodes 5 above max_nodes 2")
}

func TestSessionsListGetEnd(t *testing.T) {
	h := router(t, &fakeSessions{}, "")
	rec := call(t, h, http.MethodGet, "/v1/sessions", "")
	var list []map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list) != 1 || list[0]["id"] != "S1" {
		t.Errorf("GET /v1/sessions = %d %s", rec.Code, rec.Body)
	}
	rec = call(t, h, http.MethodGet, "/v1/sessions/S9", "")
	if v := jsonOf(t, rec); rec.Code != http.StatusOK || v["id"] != "S9" || v["state"] != "open" {
		t.Errorf("GET /v1/sessions/S9 = %d %v", rec.Code, v)
	}
	rec = call(t, h, http.MethodDelete, "/v1/sessions/S9", "")
	if v := jsonOf(t, rec); rec.Code != http.StatusOK || v["id"] != "S9" || v["state"] != "ended" {
		t.Errorf("DELETE /v1/sessions/S9 = %d %v", rec.Code, v)
	}

	missing := router(t, &fakeSessions{err: fmt.Errorf("%w: no session S9", api.ErrNotFound)}, "")
	wantError(t, call(t, missing, http.MethodGet, "/v1/sessions/S9", ""), http.StatusNotFound, "no session S9")
	wantError(t, call(t, missing, http.MethodDelete, "/v1/sessions/S9", ""), http.StatusNotFound, "no session S9")
	ended := router(t, &fakeSessions{err: fmt.Errorf("%w: session S9 has ended", api.ErrConflict)}, "")
	wantError(t, call(t, ended, http.MethodDelete, "/v1/sessions/S9", ""), http.StatusConflict, "has ended")
}

func TestSubmitTask(t *testing.T) {
	tests := []struct {
		name, body string
		want       api.TaskRequest
	}{
		{"prompt", `{"prompt":"hi there","max_tokens":16}`,
			api.TaskRequest{Messages: []api.Message{{Role: "user", Content: "hi there"}}, MaxTokens: 16}},
		{"messages", `{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":""},{"role":"user","content":"again"}]}`,
			api.TaskRequest{Messages: []api.Message{{"system", "be brief"}, {"user", "hi"}, {"assistant", ""}, {"user", "again"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeSessions{}
			rec := call(t, router(t, s, ""), http.MethodPost, "/v1/sessions/S1/tasks", tt.body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202; %s", rec.Code, rec.Body)
			}
			if v := jsonOf(t, rec); v["id"] != "T1" || v["session"] != "S1" {
				t.Errorf("view = %v", v)
			}
			if len(s.submitted) != 1 || !reflect.DeepEqual(s.submitted[0], tt.want) {
				t.Errorf("manager got %+v, want %+v", s.submitted, tt.want)
			}
		})
	}
}

func TestSubmitTaskBadRequest(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"empty body", ``, "a task needs a prompt or messages"},
		{"neither", `{"max_tokens":5}`, "a task needs a prompt or messages"},
		{"both", `{"prompt":"a","messages":[{"role":"user","content":"b"}]}`, "not both"},
		{"both, messages empty", `{"prompt":"a","messages":[]}`, "not both"},
		{"blank prompt", `{"prompt":"  \n"}`, "prompt is blank"},
		{"empty messages", `{"messages":[]}`, "messages is empty"},
		{"bad role", `{"messages":[{"role":"tool","content":"x"}]}`, `messages[0].role "tool"`},
		{"developer role", `{"messages":[{"role":"developer","content":"x"}]}`, `messages[0].role "developer"`},
		{"missing role", `{"messages":[{"role":"user","content":"x"},{"content":"y"}]}`, "messages[1].role is missing"},
		{"empty user content", `{"messages":[{"role":"system","content":"s"},{"role":"user","content":" "}]}`, "messages[1].content is empty"},
		{"negative max_tokens", `{"prompt":"a","max_tokens":-1}`, "max_tokens: -1 is negative"},
		{"unknown field", `{"prompt":"a","temperature":0.5}`, `"temperature"`},
		{"wrong type", `{"prompt":["a"]}`, "prompt"},
		{"content parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`, "content"},
		{"bad JSON", `{"prompt":"a"`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeSessions{}
			rec := call(t, router(t, s, ""), http.MethodPost, "/v1/sessions/S1/tasks", tt.body)
			wantError(t, rec, http.StatusBadRequest, tt.want)
			if s.calls() != 0 {
				t.Errorf("the manager was called with %+v", s.submitted)
			}
		})
	}
	s := &fakeSessions{}
	rec := call(t, router(t, s, ""), http.MethodPost, "/v1/sessions/S1/tasks", `{"prompt":"`+strings.Repeat("a", api.MaxBody)+`"}`)
	wantError(t, rec, http.StatusRequestEntityTooLarge, "body over")
}

func TestTaskWait(t *testing.T) {
	for query, want := range map[string]time.Duration{
		"": 0, "?wait=0": 0, "?wait=30s": 30 * time.Second, "?wait=5m": 5 * time.Minute, "?wait=1m30s&x=1": 90 * time.Second,
	} {
		s := &fakeSessions{}
		rec := call(t, router(t, s, ""), http.MethodGet, "/v1/sessions/S1/tasks/T7"+query, "")
		if v := jsonOf(t, rec); rec.Code != http.StatusOK || v["id"] != "T7" || v["session"] != "S1" {
			t.Errorf("%q: %d %v", query, rec.Code, v)
		}
		if len(s.waits) != 1 || s.waits[0] != want {
			t.Errorf("%q: manager waited %v, want %v", query, s.waits, want)
		}
	}
	for _, query := range []string{"?wait=x", "?wait=30", "?wait=-1s", "?wait=5m1s", "?wait=1h"} {
		s := &fakeSessions{}
		rec := call(t, router(t, s, ""), http.MethodGet, "/v1/sessions/S1/tasks/T7"+query, "")
		wantError(t, rec, http.StatusBadRequest, "wait: ")
		if s.calls() != 0 {
			t.Errorf("%q: the manager was called", query)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err     error
		status  int
		typ     string
		message string
	}{
		{fmt.Errorf("%w: min_nodes", api.ErrBadRequest), 400, "invalid_request_error", "min_nodes"},
		{fmt.Errorf("%w: no S1", api.ErrNotFound), 404, "invalid_request_error", "no S1"},
		{fmt.Errorf("%w: ended", api.ErrConflict), 409, "invalid_request_error", "ended"},
		{fmt.Errorf("%w: 8 sessions open", api.ErrTooMany), 429, "rate_limit_error", "8 sessions open"},
		{api.ErrTooMany, 429, "rate_limit_error", "too many requests"},
		{fmt.Errorf("%w: no miner for m1", api.ErrUnavailable), 503, "server_error", "no miner for m1"},
		{fmt.Errorf("%w: task T1 after 60s", api.ErrTimeout), 504, "server_error", "task T1 after 60s"},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), 504, "server_error", "deadline"},
		{errors.New("secret: database at 10.0.0.7 refused"), 500, "server_error", "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			var logged bytes.Buffer
			srv := httptest.NewUnstartedServer(router(t, &fakeSessions{err: tt.err}, ""))
			srv.Config.ErrorLog = log.New(&logged, "", 0)
			srv.Start()
			defer srv.Close()
			for _, path := range []string{"/v1/sessions/S1", "/v1/sessions/S1/tasks/T1"} {
				rec := fetch(t, srv.URL+path)
				e := wantError(t, rec, tt.status, tt.message)
				if e.Type != tt.typ {
					t.Errorf("type = %q, want %q", e.Type, tt.typ)
				}
				if strings.Contains(e.Message, "secret") {
					t.Errorf("a 500 leaks the error: %q", e.Message)
				}
			}
			if tt.status == 500 && !strings.Contains(logged.String(), "secret: database") {
				t.Errorf("the unknown error is not in the server's log: %q", logged.String())
			}
		})
	}
}

func TestPanicIsA500(t *testing.T) {
	var logged bytes.Buffer
	srv := httptest.NewUnstartedServer(router(t, &fakeSessions{panicWith: "secret panic"}, ""))
	srv.Config.ErrorLog = log.New(&logged, "", 0)
	srv.Start()
	defer srv.Close()
	rec := fetch(t, srv.URL+"/v1/sessions/S1")
	e := wantError(t, rec, http.StatusInternalServerError, "internal error")
	if strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("the 500 leaks the panic: %s", rec.Body)
	}
	if e.Type != "server_error" {
		t.Errorf("type = %q", e.Type)
	}
	if !strings.Contains(logged.String(), "secret panic") {
		t.Errorf("the panic is not in the server's log: %q", logged.String())
	}
}

func TestNotARouter(t *testing.T) {
	h := api.Handler(api.Config{Source: newFake(), Gatherer: newRegistry(t)})
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/sessions"}, {"GET", "/v1/sessions"}, {"GET", "/v1/sessions/S1"}, {"DELETE", "/v1/sessions/S1"},
		{"POST", "/v1/sessions/S1/tasks"}, {"GET", "/v1/sessions/S1/tasks/T1?wait=1s"},
		{"GET", "/v1/models"}, {"GET", "/v1/models/m1"}, {"POST", "/v1/chat/completions"},
		{"POST", "/v1/reservations"}, {"GET", "/v1/reservations"}, {"DELETE", "/v1/reservations/R1"},
	} {
		rec := call(t, h, r.method, r.path, `{"messages":[{"role":"user","content":"hi"}]}`)
		wantError(t, rec, http.StatusNotFound, "this node is not a router")
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := router(t, &fakeSessions{}, "")
	tests := []struct{ method, path, allow string }{
		{"POST", "/v1/node", "GET, HEAD"},
		{"DELETE", "/v1/peers", "GET, HEAD"},
		{"PUT", "/healthz", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
		{"PUT", "/v1/sessions", "GET, HEAD, POST"},
		{"PATCH", "/v1/sessions/S1", "GET, HEAD, DELETE"},
		{"GET", "/v1/sessions/S1/tasks", "POST"},
		{"DELETE", "/v1/sessions/S1/tasks/T1", "GET, HEAD"},
		{"GET", "/v1/chat/completions", "POST"},
		{"POST", "/v1/models", "GET, HEAD"},
		{"DELETE", "/v1/reservations", "GET, HEAD, POST"},
		{"GET", "/v1/reservations/R1", "DELETE"},
	}
	for _, tt := range tests {
		rec := call(t, h, tt.method, tt.path, "")
		wantError(t, rec, http.StatusMethodNotAllowed, tt.path)
		if got := rec.Header().Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow = %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
	for _, path := range []string{"/", "/nope", "/v1/session", "/v1/sessions/S1/tasks/T1/x", "/v1/chat", "/v1/completions"} {
		wantError(t, call(t, h, http.MethodGet, path, ""), http.StatusNotFound, "no endpoint GET "+path)
	}
}

func TestAuth(t *testing.T) {
	const token = "s3cret-token"
	open := router(t, &fakeSessions{}, "")
	for _, path := range []string{"/v1/node", "/v1/sessions", "/v1/models", "/metrics"} {
		if rec := call(t, open, http.MethodGet, path, ""); rec.Code != http.StatusOK {
			t.Errorf("no token configured: GET %s = %d", path, rec.Code)
		}
	}

	h := router(t, &fakeSessions{models: []string{"m1"}}, token)
	for _, hdr := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token, "Bearer s3cret"} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/v1/node"}, {"GET", "/v1/sessions"}, {"POST", "/v1/chat/completions"}, {"GET", "/metrics"},
			{"GET", "/nope"}, {"POST", "/v1/node"},
		} {
			var header []string
			if hdr != "" {
				header = []string{"Authorization", hdr}
			}
			rec := call(t, h, r.method, r.path, `{"messages":[{"role":"user","content":"hi"}]}`, header...)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("Authorization %q: %s %s = %d, want 401", hdr, r.method, r.path, rec.Code)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != "Bearer" {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			e := errorOf(t, rec)
			if e.Type != "authentication_error" || e.Code != "invalid_api_key" || !strings.Contains(e.Message, "API key") {
				t.Errorf("error = %+v", e)
			}
			if strings.Contains(rec.Body.String(), token) {
				t.Errorf("the answer shows the token: %s", rec.Body)
			}
		}
	}
	for _, hdr := range []string{"Bearer " + token, "bearer " + token, "Bearer  " + token + " "} {
		for _, path := range []string{"/v1/node", "/v1/sessions", "/v1/models", "/metrics"} {
			if rec := call(t, h, http.MethodGet, path, "", "Authorization", hdr); rec.Code != http.StatusOK {
				t.Errorf("Authorization %q: GET %s = %d, want 200", hdr, path, rec.Code)
			}
		}
	}
	rec := call(t, h, http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, "Authorization", "Bearer "+token)
	if rec.Code != http.StatusOK {
		t.Errorf("chat with the token = %d %s", rec.Code, rec.Body)
	}
	if rec := call(t, h, http.MethodGet, "/healthz", ""); rec.Code != http.StatusOK {
		t.Errorf("GET /healthz without the token = %d, want 200", rec.Code)
	}
}
