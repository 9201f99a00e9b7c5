package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/prometheus/client_golang/prometheus"
)

type acceptingReserver struct{}

func (acceptingReserver) Reserve(context.Context, string, time.Duration) (api.Reservation, error) {
	return api.Reservation{ID: "x"}, nil
}
func (acceptingReserver) Release(context.Context, string) (api.Reservation, error) {
	return api.Reservation{}, nil
}
func (acceptingReserver) Reservations() []api.Reservation { return []api.Reservation{} }

func fuzzHandler(s *fakeSessions) http.Handler {
	return api.Handler(api.Config{Source: newFake(), Gatherer: prometheus.NewRegistry(), Reserver: acceptingReserver{}, Sessions: s})
}

// fuzzPost posts body to path and fails unless the answer is ok, a 400 or a
// 413 with an error in OpenAI's shape: never a 500, a panic or a hang.
func fuzzPost(t *testing.T, h http.Handler, path, body string, ok int) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	req := api.LocalRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	switch rec.Code {
	case ok:
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		if !strings.HasPrefix(rec.Body.String(), "{\n  \"error\": {\n    \"message\": \"") {
			t.Fatalf("%d without an error body: %s", rec.Code, rec.Body)
		}
	default:
		if len(body) > 200 {
			body = body[:200] + "…"
		}
		t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
	}
	return rec
}

// FuzzReserveRequest: any body to POST /v1/reservations is a 201, a 400 or
// a 413 with an error in OpenAI's shape; never a 500 or a panic.
func FuzzReserveRequest(f *testing.F) {
	for _, seed := range []string{"", "{}", `{"model":"m","lease":"30s"}`, `{"lease":"-1s"}`, `{"lease":5}`,
		`{"extra":1}`, `{} {}`, "[", strings.Repeat("a", 70000)} {
		f.Add(seed)
	}
	h := fuzzHandler(&fakeSessions{})
	f.Fuzz(func(t *testing.T, body string) {
		fuzzPost(t, h, "/v1/reservations", body, http.StatusCreated)
	})
}

// FuzzSessionRequest: the same for POST /v1/sessions and, with the body as
// a task, POST /v1/sessions/{id}/tasks; what reaches the manager passed
// the API's checks.
func FuzzSessionRequest(f *testing.F) {
	for _, seed := range []string{"", "{}", `{"model":"m","min_nodes":1,"max_nodes":3,"reserve_period":"10m","task_timeout":"1m"}`,
		`{"min_nodes":-1}`, `{"reserve_period":"10"}`, `{"task_timeout":"-1s"}`, `{"max_tasks":1e3}`, `{"x":1}`,
		`{"prompt":"hi","max_tokens":3}`, `{"messages":[{"role":"user","content":"hi"}]}`, `{"messages":[]}`,
		`{"prompt":"a","messages":[{"role":"user","content":"b"}]}`, `{"messages":[{"role":"bot","content":"b"}]}`,
		"null", "[]", `{} {}`, strings.Repeat("{", 70000)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		s := &fakeSessions{}
		h := fuzzHandler(s)
		fuzzPost(t, h, "/v1/sessions", body, http.StatusCreated)
		for _, req := range s.created {
			if req.MinNodes < 0 || req.MaxNodes < 0 || req.Redundancy < 0 || req.MaxTasks < 0 {
				t.Fatalf("a negative number reached the manager: %+v", req)
			}
			if _, _, err := req.Periods(); err != nil {
				t.Fatalf("a bad duration reached the manager: %+v", req)
			}
		}
		fuzzPost(t, h, "/v1/sessions/S1/tasks", body, http.StatusAccepted)
		for _, req := range s.submitted {
			if req.Prompt != "" || len(req.Messages) == 0 || req.MaxTokens < 0 {
				t.Fatalf("the manager got %+v", req)
			}
		}
	})
}

// FuzzChatRequest: any body to POST /v1/chat/completions is a 200, a 400 or
// a 413; what reaches the manager is a valid conversation.
func FuzzChatRequest(f *testing.F) {
	for _, seed := range []string{"", "{}", "null", "[]", `{"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"x"}]},{"role":"user","content":"y"}],"stream":true}`,
		`{"messages":[{"role":"user","content":"hi"}],"n":2}`, `{"messages":[{"role":"user","content":"hi"}],"redundancy":17}`,
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":-1,"top_p":0.5}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, `{"messages":[{"role":"tool","content":"x"}]}`,
		`{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"messages":[{"role":"user","content":"hi"}]} x`, strings.Repeat("[", 70000)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		s := &fakeSessions{}
		fuzzPost(t, fuzzHandler(s), "/v1/chat/completions", body, http.StatusOK)
		for _, req := range s.completions {
			if len(req.Messages) == 0 || req.MaxTokens < 0 || req.Redundancy < 0 || req.Redundancy > api.MaxRedundancy {
				t.Fatalf("the manager got %+v", req)
			}
			for _, m := range req.Messages {
				if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
					t.Fatalf("the manager got role %q", m.Role)
				}
			}
		}
	})
}
