package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// serve runs c's API on a real server on 127.0.0.1, port 0, and returns its
// URL.
func serve(t *testing.T, c api.Config) string {
	t.Helper()
	if c.Source == nil {
		c.Source = newFake()
	}
	srv, err := api.Listen("127.0.0.1:0", api.Handler(c), discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testkit.Stop(t, 10*time.Second, srv.Close) })
	return srv.URL()
}

// send makes one request to a real server; header is name, value pairs,
// and "Host" sets the request's Host. It returns the status and the error
// message of an error answer.
func send(t *testing.T, method, url, body string, header ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode < 400 {
		return resp.StatusCode, ""
	}
	var e api.ErrorBody
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("%s %s: %d without the API's error shape: %s", method, url, resp.StatusCode, raw)
	}
	if e.Error.Code != float64(resp.StatusCode) {
		t.Errorf("%s %s: code %v in a %d", method, url, e.Error.Code, resp.StatusCode)
	}
	if strings.Contains(e.Error.Message, "\n") {
		t.Errorf("%s %s: message of more than one line: %q", method, url, e.Error.Message)
	}
	return resp.StatusCode, e.Error.Message
}

func TestHostCheck(t *testing.T) {
	tests := []struct {
		name    string
		listen  string
		allowed []string
		host    string
		want    int
	}{
		{"rebinding name", "", nil, "rebind.evil.example", 403},
		{"rebinding name with port", "", nil, "rebind.evil.example:7601", 403},
		{"foreign name", "", nil, "evil.example", 403},
		{"name ending in localhost", "", nil, "evillocalhost", 403},
		{"localhost made a subdomain", "", nil, "localhost.evil.example", 403},
		{"private address", "127.0.0.1:7601", nil, "192.168.1.5:7601", 403},
		{"name beginning like a loopback address", "", nil, "127.0.0.1.evil.example", 403},
		{"IPv4-mapped loopback", "", nil, "[::ffff:127.0.0.1]:7601", 200},
		{"localhost", "", nil, "localhost", 200},
		{"localhost with port", "", nil, "localhost:7601", 200},
		{"localhost upper case, rooted", "", nil, "LOCALHOST.:7601", 200},
		{"name under localhost", "", nil, "app.localhost:7601", 200},
		{"127.0.0.1", "", nil, "127.0.0.1", 200},
		{"127.0.0.1 with port", "", nil, "127.0.0.1:7601", 200},
		{"elsewhere in 127/8", "", nil, "127.3.2.1:80", 200},
		{"[::1]", "", nil, "[::1]", 200},
		{"[::1] with port", "", nil, "[::1]:7601", 200},
		{"the listen address", "10.1.2.3:7601", nil, "10.1.2.3:7601", 200},
		{"listening everywhere: an address", "0.0.0.0:7601", nil, "192.168.1.5:7601", 200},
		{"listening everywhere: still no foreign name", "0.0.0.0:7601", nil, "rebind.evil.example:7601", 403},
		{"configured name", "", []string{"node.example.org"}, "node.example.org", 200},
		{"configured name, other case and port", "", []string{"node.example.org"}, "Node.Example.Org:443", 200},
		{"configured name is not a suffix", "", []string{"node.example.org"}, "evil.node.example.org", 403},
		{"configured address", "", []string{"10.0.0.7"}, "10.0.0.7:7601", 200},
		{"star", "", []string{"*"}, "rebind.evil.example", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := serve(t, api.Config{Listen: tt.listen, AllowedHosts: tt.allowed})
			status, msg := send(t, http.MethodGet, url+"/v1/node", "", "Host", tt.host)
			if status != tt.want {
				t.Fatalf("Host %q: %d (%s), want %d", tt.host, status, msg, tt.want)
			}
			if status == 403 && !strings.Contains(msg, "api.allowed_hosts") {
				t.Errorf("Host %q: message %q does not say how to allow a name", tt.host, msg)
			}
		})
	}
}

// A rebinding page is refused everything, reads and changes, the token's
// absence notwithstanding.
func TestRebindingCannotReadSessions(t *testing.T) {
	s := &fakeSessions{}
	url := serve(t, api.Config{Gatherer: newRegistry(t), Reserver: acceptingReserver{}, Sessions: s})
	for _, path := range []string{"/v1/sessions", "/v1/reservations", "/v1/pool", "/healthz", "/metrics", "/v1/nowhere"} {
		if status, msg := send(t, http.MethodGet, url+path, "", "Host", "rebind.evil.example"); status != 403 {
			t.Errorf("GET %s: %d (%s), want 403", path, status, msg)
		}
	}
	if status, _ := send(t, http.MethodPost, url+"/v1/sessions", `{}`, "Host", "rebind.evil.example:7601",
		"Content-Type", "application/json", "Origin", "http://rebind.evil.example:7601"); status != 403 {
		t.Errorf("POST /v1/sessions: %d, want 403", status)
	}
	if n := s.calls(); n != 0 {
		t.Errorf("the session manager was called %d times", n)
	}
	if status, _ := send(t, http.MethodGet, url+"/v1/sessions", ""); status != 200 {
		t.Errorf("GET /v1/sessions by its own address: %d", status)
	}
}

func TestOriginCheck(t *testing.T) {
	const json = "application/json"
	tests := []struct {
		name         string
		method, path string
		header       []string
		want         int
	}{
		{"no Origin (CLI, curl)", "POST", "/v1/sessions", nil, 201},
		{"foreign Origin", "POST", "/v1/sessions", []string{"Origin", "https://evil.example"}, 403},
		{"foreign Origin on a chat completion", "POST", "/v1/chat/completions", []string{"Origin", "http://evil.example"}, 403},
		{"foreign Origin on a reservation", "POST", "/v1/reservations", []string{"Origin", "http://evil.example"}, 403},
		{"foreign Origin on a task", "POST", "/v1/sessions/s1/tasks", []string{"Origin", "http://evil.example"}, 403},
		{"foreign Origin on DELETE", "DELETE", "/v1/sessions/s1", []string{"Origin", "http://evil.example"}, 403},
		{"foreign Origin of a loopback port", "POST", "/v1/sessions", []string{"Origin", "http://localhost.evil.example:7601"}, 403},
		{"opaque Origin", "POST", "/v1/sessions", []string{"Origin", "null"}, 403},
		{"unparsable Origin", "POST", "/v1/sessions", []string{"Origin", "::"}, 403},
		{"cross-site fetch", "POST", "/v1/sessions", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"cross-site fetch with a loopback Origin", "POST", "/v1/sessions", []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://localhost:7601"}, 403},
		{"same-origin page", "POST", "/v1/sessions", []string{"Origin", "http://localhost:7601", "Host", "localhost:7601", "Sec-Fetch-Site", "same-origin"}, 201},
		{"loopback page", "POST", "/v1/sessions", []string{"Origin", "http://127.0.0.1:3000", "Sec-Fetch-Site", "same-site"}, 201},
		{"configured name's page", "POST", "/v1/sessions", []string{"Origin", "https://node.example.org"}, 201},
		{"foreign Origin may read", "GET", "/v1/node", []string{"Origin", "https://evil.example"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeSessions{}
			url := serve(t, api.Config{Gatherer: newRegistry(t), Reserver: acceptingReserver{}, Sessions: s,
				AllowedHosts: []string{"node.example.org"}})
			body := ""
			if tt.method == http.MethodPost {
				body = `{}`
				if tt.path == "/v1/chat/completions" {
					body = `{"messages":[{"role":"user","content":"hi"}]}`
				}
			}
			status, msg := send(t, tt.method, url+tt.path, body, append([]string{"Content-Type", json}, tt.header...)...)
			if status != tt.want {
				t.Fatalf("%d (%s), want %d", status, msg, tt.want)
			}
			if status == 403 && s.calls() != 0 {
				t.Errorf("refused, yet the session manager was called")
			}
		})
	}
}

func TestContentType(t *testing.T) {
	const chat = `{"messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		name, path, body, ctype string
		want                    int
	}{
		{"text/plain chat completion", "/v1/chat/completions", chat, "text/plain", 415},
		{"form chat completion", "/v1/chat/completions", chat, "application/x-www-form-urlencoded", 415},
		{"multipart session", "/v1/sessions", `{}`, "multipart/form-data; boundary=x", 415},
		{"session without Content-Type", "/v1/sessions", `{"max_tasks":1}`, "", 415},
		{"task as text", "/v1/sessions/s1/tasks", `{"prompt":"hi"}`, "text/plain;charset=UTF-8", 415},
		{"reservation as text", "/v1/reservations", `{}`, "text/plain", 415},
		{"JSON lookalike", "/v1/sessions", `{}`, "application/jsonp", 415},
		{"malformed", "/v1/sessions", `{}`, "application/json; charset", 415},
		{"JSON chat completion", "/v1/chat/completions", chat, "application/json", 200},
		{"JSON with charset", "/v1/sessions", `{}`, "application/json; charset=utf-8", 201},
		{"JSON in capitals", "/v1/reservations", `{}`, "Application/JSON", 201},
		{"no body, no Content-Type", "/v1/reservations", "", "", 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeSessions{}
			url := serve(t, api.Config{Reserver: acceptingReserver{}, Sessions: s})
			var hdr []string
			if tt.ctype != "" {
				hdr = []string{"Content-Type", tt.ctype}
			}
			status, msg := send(t, http.MethodPost, url+tt.path, tt.body, hdr...)
			if status != tt.want {
				t.Fatalf("%d (%s), want %d", status, msg, tt.want)
			}
			if status == 415 {
				if !strings.Contains(msg, "application/json") {
					t.Errorf("message %q does not say what to send", msg)
				}
				if s.calls() != 0 {
					t.Errorf("refused, yet the session manager was called")
				}
			}
		})
	}
}
