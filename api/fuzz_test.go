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

func (acceptingReserver) Reserve(context.Context, string, time.Duration) (any, error) {
	return map[string]string{"id": "x"}, nil
}
func (acceptingReserver) Release(context.Context, string) (any, error) { return nil, nil }
func (acceptingReserver) Reservations() any                            { return []string{} }

// FuzzReserveRequest: any body to POST /v1/reservations is a 201 or a 400
// with an error in OpenAI's shape; never a 500 or a panic.
func FuzzReserveRequest(f *testing.F) {
	for _, seed := range []string{"", "{}", `{"model":"m","lease":"30s"}`, `{"lease":"-1s"}`, `{"lease":5}`,
		`{"extra":1}`, `{} {}`, "[", strings.Repeat("a", 70000)} {
		f.Add(seed)
	}
	h := api.Handler(newFake(), prometheus.NewRegistry(), acceptingReserver{})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/reservations", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusCreated:
		case http.StatusBadRequest:
			if !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("400 without an error body: %s", rec.Body)
			}
		default:
			t.Fatalf("status %d for body %q", rec.Code, body)
		}
	})
}
