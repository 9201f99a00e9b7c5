package api

import (
	"io"
	"net/http"
	"net/http/httptest"
)

// LocalRequest is httptest.NewRequest as a local client sends it: to
// localhost rather than httptest's example.com, which the API refuses.
func LocalRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "localhost:7601"
	return r
}
