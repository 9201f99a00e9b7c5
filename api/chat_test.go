package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
)

// sameJSON reports whether got and want are the same JSON value.
func sameJSON(t *testing.T, got, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("the test's JSON: %v\n%s", err, want)
	}
	return reflect.DeepEqual(g, w)
}

func TestModels(t *testing.T) {
	h := router(t, &fakeSessions{models: []string{"llama-3-8b", "org/qwen-2"}}, "")
	rec := call(t, h, http.MethodGet, "/v1/models", "")
	want := `{"object":"list","data":[
		{"id":"llama-3-8b","object":"model","created":0,"owned_by":"ephemera"},
		{"id":"org/qwen-2","object":"model","created":0,"owned_by":"ephemera"}]}`
	if rec.Code != http.StatusOK || !sameJSON(t, rec.Body.String(), want) {
		t.Errorf("GET /v1/models = %d %s", rec.Code, rec.Body)
	}
	rec = call(t, h, http.MethodGet, "/v1/models/org/qwen-2", "")
	if rec.Code != http.StatusOK || !sameJSON(t, rec.Body.String(), `{"id":"org/qwen-2","object":"model","created":0,"owned_by":"ephemera"}`) {
		t.Errorf("GET /v1/models/org/qwen-2 = %d %s", rec.Code, rec.Body)
	}
	wantModelNotFound(t, call(t, h, http.MethodGet, "/v1/models/gpt-4", ""), `"gpt-4"`)

	rec = call(t, router(t, &fakeSessions{}, ""), http.MethodGet, "/v1/models", "")
	if rec.Code != http.StatusOK || !sameJSON(t, rec.Body.String(), `{"object":"list","data":[]}`) {
		t.Errorf("no models: %d %s", rec.Code, rec.Body)
	}
}

func TestChatCompletion(t *testing.T) {
	s := &fakeSessions{}
	h := router(t, s, "")
	body := `{
		"model": "m1",
		"messages": [
			{"role": "developer", "content": "be brief"},
			{"role": "system", "content": [{"type": "text", "text": "and kind"}]},
			{"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}], "name": "ann"},
			{"role": "assistant", "content": "Hi"},
			{"role": "user", "content": "again"}
		],
		"max_completion_tokens": 64, "max_tokens": null, "n": 1, "stream": false, "redundancy": 3,
		"temperature": 0.2, "top_p": 1, "user": "u-1", "stream_options": null, "logit_bias": {"50256": -100}
	}`
	before := time.Now().Unix()
	rec := call(t, h, http.MethodPost, "/v1/chat/completions", body, "Content-Type", "application/json")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d; %s", rec.Code, rec.Body)
	}
	v := jsonOf(t, rec)
	created, _ := v["created"].(float64)
	if int64(created) < before || int64(created) > time.Now().Unix() {
		t.Errorf("created = %v, want now", v["created"])
	}
	id, _ := v["id"].(string)
	if !strings.HasPrefix(id, "chatcmpl-") || len(id) < len("chatcmpl-")+8 {
		t.Errorf("id = %q, want chatcmpl- and a random suffix", id)
	}
	want := fmt.Sprintf(`{
		"id": %q, "object": "chat.completion", "created": %d, "model": "m1",
		"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
		"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
		"ephemera": {"session": "S1", "task": "T1", "miners": ["miner-a", "miner-b"], "agreement": 1}
	}`, id, int64(created))
	if !sameJSON(t, rec.Body.String(), want) {
		t.Errorf("body = %s\nwant %s", rec.Body, want)
	}
	wantReq := api.CompletionRequest{
		Model: "m1",
		Messages: []api.Message{
			{"system", "be brief"}, {"system", "and kind"}, {"user", "Hello, world"}, {"assistant", "Hi"}, {"user", "again"},
		},
		MaxTokens: 64, Redundancy: 3,
	}
	if len(s.completions) != 1 || !reflect.DeepEqual(s.completions[0], wantReq) {
		t.Errorf("manager got %+v\nwant %+v", s.completions, wantReq)
	}
}

func TestChatCompletionDefaults(t *testing.T) {
	s := &fakeSessions{complete: func(context.Context, api.CompletionRequest, func(string) error) (api.Completion, error) {
		return api.Completion{Task: "T2", Text: "ok"}, nil // no model, no miners
	}}
	rec := call(t, router(t, s, ""), http.MethodPost, "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":7}`, "Content-Type", "Application/JSON; charset=utf-8")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d; %s", rec.Code, rec.Body)
	}
	v := jsonOf(t, rec)
	if id, _ := v["id"].(string); v["model"] != "" || !strings.HasPrefix(id, "chatcmpl-") {
		t.Errorf("body = %v", v)
	}
	if eph, _ := v["ephemera"].(map[string]any); eph == nil || !reflect.DeepEqual(eph["miners"], []any{}) {
		t.Errorf("ephemera = %v, want miners []", v["ephemera"])
	}
	want := api.CompletionRequest{Messages: []api.Message{{"user", "hi"}}, MaxTokens: 7}
	if !reflect.DeepEqual(s.completions[0], want) {
		t.Errorf("manager got %+v, want %+v", s.completions[0], want)
	}
}

func TestChatBadRequest(t *testing.T) {
	const user = `{"role":"user","content":"hi"}`
	tests := []struct{ name, body, want string }{
		{"empty body", ``, "body is empty"},
		{"array", `[` + user + `]`, "body must be a JSON object"},
		{"null", `null`, "body must be a JSON object"},
		{"string", `"hi"`, "body must be a JSON object"},
		{"bad JSON", `{"messages":[` + user, "not valid JSON"},
		{"trailing data", `{"messages":[` + user + `]} {}`, "not valid JSON"},
		{"no messages", `{"model":"m1"}`, "messages is required"},
		{"null messages", `{"messages":null}`, "messages is required"},
		{"empty messages", `{"messages":[]}`, "messages is empty"},
		{"messages object", `{"messages":{"role":"user"}}`, "messages: want an array"},
		{"message not object", `{"messages":["hi"]}`, "messages[0] must be a JSON object"},
		{"message null", `{"messages":[` + user + `,null]}`, "messages[1] must be a JSON object"},
		{"no role", `{"messages":[{"content":"hi"}]}`, "messages[0].role is missing"},
		{"role tool", `{"messages":[` + user + `,{"role":"tool","content":"x","tool_call_id":"c"}]}`, `messages[1].role "tool"`},
		{"role number", `{"messages":[{"role":1,"content":"hi"}]}`, "messages[0].role: want a string"},
		{"no content", `{"messages":[{"role":"user"}]}`, "messages[0].content is missing"},
		{"null content", `{"messages":[{"role":"assistant","content":null}]}`, "messages[0].content is missing"},
		{"number content", `{"messages":[{"role":"user","content":5}]}`, "messages[0].content: want a string or an array"},
		{"object content", `{"messages":[{"role":"user","content":{"text":"hi"}}]}`, "messages[0].content: want a string or an array"},
		{"image part", `{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}`,
			`messages[0].content[1].type "image_url" is not supported`},
		{"part without type", `{"messages":[{"role":"user","content":[{"text":"a"}]}]}`, "messages[0].content[0].type is missing"},
		{"part without text", `{"messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text is missing"},
		{"part text number", `{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, "messages[0].content[0].text: want a string"},
		{"part not object", `{"messages":[{"role":"user","content":["a"]}]}`, "messages[0].content[0] must be a JSON object"},
		{"empty user content", `{"messages":[{"role":"user","content":""}]}`, "messages[0].content is empty"},
		{"empty user parts", `{"messages":[{"role":"user","content":[]}]}`, "messages[0].content is empty"},
		{"model number", `{"model":4,"messages":[` + user + `]}`, "model: want a string"},
		{"negative max_tokens", `{"max_tokens":-1,"messages":[` + user + `]}`, "max_tokens: -1 is negative"},
		{"string max_tokens", `{"max_tokens":"5","messages":[` + user + `]}`, "max_tokens: want an integer"},
		{"fraction max_tokens", `{"max_tokens":1.5,"messages":[` + user + `]}`, "max_tokens: want an integer"},
		{"huge max_tokens", `{"max_tokens":1e99,"messages":[` + user + `]}`, "max_tokens: want an integer"},
		{"negative max_completion_tokens", `{"max_completion_tokens":-3,"messages":[` + user + `]}`, "max_completion_tokens: -3 is negative"},
		{"max tokens differ", `{"max_tokens":5,"max_completion_tokens":6,"messages":[` + user + `]}`, "differ"},
		{"n=2", `{"n":2,"messages":[` + user + `]}`, "n: only 1 is supported"},
		{"n=0", `{"n":0,"messages":[` + user + `]}`, "n: only 1 is supported"},
		{"n string", `{"n":"1","messages":[` + user + `]}`, "n: only 1 is supported"},
		{"stream string", `{"stream":"yes","messages":[` + user + `]}`, "stream: want true or false"},
		{"stream_options string", `{"stream":true,"stream_options":"usage","messages":[` + user + `]}`, "stream_options: "},
		{"redundancy 0", `{"redundancy":0,"messages":[` + user + `]}`, "redundancy: 0 is out of range; want 1 to 16"},
		{"redundancy 17", `{"redundancy":17,"messages":[` + user + `]}`, "redundancy: 17 is out of range"},
		{"redundancy -1", `{"redundancy":-1,"messages":[` + user + `]}`, "redundancy: -1 is out of range"},
		{"redundancy string", `{"redundancy":"2","messages":[` + user + `]}`, "redundancy: want an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeSessions{}
			rec := call(t, router(t, s, ""), http.MethodPost, "/v1/chat/completions", tt.body)
			e := wantError(t, rec, http.StatusBadRequest, tt.want)
			if e.Type != "invalid_request_error" {
				t.Errorf("type = %q", e.Type)
			}
			if s.calls() != 0 {
				t.Errorf("the manager was called with %+v", s.completions)
			}
		})
	}
	s := &fakeSessions{}
	huge := `{"messages":[{"role":"user","content":"` + strings.Repeat("a", api.MaxBody) + `"}]}`
	wantError(t, call(t, router(t, s, ""), http.MethodPost, "/v1/chat/completions", huge), http.StatusRequestEntityTooLarge, "body over")
	if s.calls() != 0 {
		t.Error("the manager was called for a huge body")
	}
}

func TestChatErrors(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		typ    string
	}{
		{fmt.Errorf("%w: model gpt-4 is not served", api.ErrNotFound), 404, "invalid_request_error"},
		{fmt.Errorf("%w: 100 tasks in flight", api.ErrTooMany), 429, "rate_limit_error"},
		{fmt.Errorf("%w: task failed: out-voted", api.ErrBadGateway), 502, "server_error"},
		{fmt.Errorf("%w: no miner for m1", api.ErrUnavailable), 503, "server_error"},
		{fmt.Errorf("%w: after 60s", api.ErrTimeout), 504, "server_error"},
	} {
		for _, stream := range []bool{false, true} {
			s := &fakeSessions{err: tt.err}
			body := fmt.Sprintf(`{"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
			rec := call(t, router(t, s, ""), http.MethodPost, "/v1/chat/completions", body)
			// A stream that fails before it begins is an ordinary error.
			e := wantError(t, rec, tt.status, strings.TrimPrefix(tt.err.Error(), errors.Unwrap(tt.err).Error()+": "))
			if e.Type != tt.typ {
				t.Errorf("%v: type = %q, want %q", tt.err, e.Type, tt.typ)
			}
		}
	}
}

// sse reads a stream of server-sent events as OpenAI writes them: each a
// "data: " line then an empty line, nothing else.
func sse(t *testing.T, r *bufio.Reader) (string, bool) {
	t.Helper()
	line, err := r.ReadString('\n')
	if errors.Is(err, io.EOF) && line == "" {
		return "", false
	}
	if err != nil {
		t.Fatalf("reading an event: %v (read %q)", err, line)
	}
	data, ok := strings.CutPrefix(line, "data: ")
	if !ok || !strings.HasSuffix(data, "\n") {
		t.Fatalf("event line %q is not data: …", line)
	}
	if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
		t.Fatalf("after an event: %q, %v; want an empty line", blank, err)
	}
	return strings.TrimSuffix(data, "\n"), true
}

// startStream posts a streamed chat request to a real server.
func startStream(t *testing.T, srv *httptest.Server, body string) (*http.Response, *bufio.Reader) {
	t.Helper()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status = %d; %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control = %q, want no-cache", cc)
	}
	return resp, bufio.NewReader(resp.Body)
}

// chunk is an OpenAI chat.completion.chunk of model with choices (or more
// members) from rest; checkEvents fills in its id and created.
func chunk(model, rest string) string {
	return fmt.Sprintf(`{"id":"ID","object":"chat.completion.chunk","created":CREATED,"model":%q,%s}`, model, rest)
}

const (
	roleChoice   = `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]`
	finishChoice = `"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]`
	ephemeraPart = `"ephemera":{"session":"S1","task":"T1","miners":["miner-a"],"agreement":1}`
)

func contentChoice(text string) string {
	b, _ := json.Marshal(text)
	return fmt.Sprintf(`"choices":[{"index":0,"delta":{"content":%s},"finish_reason":null}]`, b)
}

// checkEvents compares a stream's events with want, where "ID" and CREATED
// stand for the stream's own, which the first chunk gives: the same in all.
func checkEvents(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	var first struct {
		ID      string `json:"id"`
		Created int64  `json:"created"`
	}
	if err := json.Unmarshal([]byte(got[0]), &first); err != nil || !strings.HasPrefix(first.ID, "chatcmpl-") || len(first.ID) < len("chatcmpl-")+8 {
		t.Fatalf("first event %s: id %q, %v", got[0], first.ID, err)
	}
	if now := time.Now().Unix(); first.Created < now-60 || first.Created > now {
		t.Errorf("created = %d, want about %d", first.Created, now)
	}
	for i := range got {
		w := strings.NewReplacer(`"ID"`, fmt.Sprintf("%q", first.ID), `CREATED`, fmt.Sprint(first.Created)).Replace(want[i])
		if got[i] == "[DONE]" || w == "[DONE]" {
			if got[i] != w {
				t.Errorf("event %d = %s, want %s", i, got[i], w)
			}
			continue
		}
		if !sameJSON(t, got[i], w) {
			t.Errorf("event %d = %s\nwant %s", i, got[i], w)
		}
	}
}

func readAll(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var events []string
	for {
		e, ok := sse(t, r)
		if !ok {
			return events
		}
		events = append(events, e)
	}
}

func TestChatStream(t *testing.T) {
	firstRead := make(chan struct{})
	s := &fakeSessions{complete: func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
		if !req.Stream || onDelta == nil {
			return api.Completion{}, errors.New("not streamed")
		}
		if err := onDelta("Hel"); err != nil {
			return api.Completion{}, err
		}
		// The client must see the first chunks before the answer is
		// done: they were flushed.
		select {
		case <-firstRead:
		case <-time.After(5 * time.Second):
			return api.Completion{}, errors.New("the client never saw the first delta: not flushed")
		}
		for _, d := range []string{"", "lo, <wörld>", " \"&\"\n"} {
			if err := onDelta(d); err != nil {
				return api.Completion{}, err
			}
		}
		return api.Completion{Task: "T1", Model: "m1", Text: "Hello, <wörld> \"&\"\n", PromptTokens: 4, CompletionTokens: 6,
			Session: "S1", Miners: []string{"miner-a"}, Agreement: 1}, nil
	}}
	srv := httptest.NewServer(router(t, s, ""))
	defer srv.Close()
	_, r := startStream(t, srv, `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	var got []string
	for range 2 {
		e, ok := sse(t, r)
		if !ok {
			t.Fatal("the stream ended early")
		}
		got = append(got, e)
	}
	close(firstRead)
	got = append(got, readAll(t, r)...)
	checkEvents(t, got,
		chunk("m1", roleChoice),
		chunk("m1", contentChoice("Hel")),
		chunk("m1", contentChoice("lo, <wörld>")),
		chunk("m1", contentChoice(" \"&\"\n")),
		chunk("m1", finishChoice+","+ephemeraPart),
		"[DONE]",
	)
}

func TestChatStreamWithoutDeltas(t *testing.T) {
	s := &fakeSessions{complete: func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
		return api.Completion{Task: "T1", Model: "m2", Text: "agreed answer", PromptTokens: 4, CompletionTokens: 2,
			Session: "S1", Miners: []string{"miner-a"}, Agreement: 1}, nil
	}}
	srv := httptest.NewServer(router(t, s, ""))
	defer srv.Close()
	// Without a model in the request, the chunks name the answer's.
	_, r := startStream(t, srv, `{"stream":true,"redundancy":3,"messages":[{"role":"user","content":"hi"}],
		"stream_options":{"include_usage":true}}`)
	checkEvents(t, readAll(t, r),
		chunk("m2", roleChoice),
		chunk("m2", contentChoice("agreed answer")),
		chunk("m2", finishChoice+","+ephemeraPart),
		chunk("m2", `"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}`),
		"[DONE]",
	)
	if got := s.completions[0]; got.Redundancy != 3 || !got.Stream || got.Model != "" {
		t.Errorf("manager got %+v", got)
	}
}

func TestChatStreamRestOfAnswer(t *testing.T) {
	// The agreed answer goes on from what was streamed: the rest follows.
	s := &fakeSessions{complete: func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
		_ = onDelta("Hello")
		return api.Completion{Task: "T1", Model: "m1", Text: "Hello world", Session: "S1", Miners: []string{"miner-a"}, Agreement: 1}, nil
	}}
	srv := httptest.NewServer(router(t, s, ""))
	defer srv.Close()
	_, r := startStream(t, srv, `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	checkEvents(t, readAll(t, r),
		chunk("m1", roleChoice),
		chunk("m1", contentChoice("Hello")),
		chunk("m1", contentChoice(" world")),
		chunk("m1", finishChoice+","+ephemeraPart),
		"[DONE]",
	)
}

func TestChatStreamErrorAfterStart(t *testing.T) {
	var late func(string) error
	s := &fakeSessions{complete: func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
		late = onDelta
		if err := onDelta("Hel"); err != nil {
			return api.Completion{}, err
		}
		return api.Completion{}, fmt.Errorf("%w: the miner went away", api.ErrUnavailable)
	}}
	srv := httptest.NewServer(router(t, s, ""))
	defer srv.Close()
	_, r := startStream(t, srv, `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	checkEvents(t, readAll(t, r),
		chunk("m1", roleChoice),
		chunk("m1", contentChoice("Hel")),
		`{"error":{"message":"no miner available: the miner went away","type":"server_error","param":null,"code":503}}`,
	)
	// A delta after the answer is refused, not written.
	if err := late("more"); err == nil {
		t.Error("onDelta after Complete returned took the delta")
	}
}

func TestChatStreamClientGone(t *testing.T) {
	done := make(chan error, 1)
	s := &fakeSessions{complete: func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
		deadline := time.After(5 * time.Second)
		for {
			if err := onDelta("tok "); err != nil {
				done <- nil // told by onDelta
				return api.Completion{}, err
			}
			select {
			case <-ctx.Done():
				done <- nil // told by ctx
				return api.Completion{}, ctx.Err()
			case <-deadline:
				done <- errors.New("the manager was never told the client left")
				return api.Completion{}, errors.New("timeout")
			case <-time.After(5 * time.Millisecond):
			}
		}
	}}
	srv := httptest.NewServer(router(t, s, ""))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	for range 3 {
		if _, ok := sse(t, r); !ok {
			t.Fatal("the stream ended early")
		}
	}
	cancel()
	resp.Body.Close()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// A stream for no model in particular names the pool's model from its first
// chunk when the pool serves one.
func TestChatStreamNamesThePoolsOneModel(t *testing.T) {
	s := &fakeSessions{models: []string{"only-model"}, complete: func(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
		if err := onDelta("4"); err != nil {
			return api.Completion{}, err
		}
		return api.Completion{Task: "T1", Model: "only-model", Text: "4", Session: "S1", Miners: []string{"miner-a"}, Agreement: 1}, nil
	}}
	srv := httptest.NewServer(router(t, s, ""))
	defer srv.Close()
	_, r := startStream(t, srv, `{"stream":true,"messages":[{"role":"user","content":"What is 2 + 2?"}]}`)
	first, ok := sse(t, r)
	if !ok || !strings.Contains(first, `"model":"only-model"`) {
		t.Fatalf("first chunk %q does not name the pool's model", first)
	}
	readAll(t, r)
}

// wantModelNotFound checks a 404 in OpenAI's shape for a model no miner
// serves: invalid_request_error, param "model", code "model_not_found".
func wantModelNotFound(t *testing.T, rec *httptest.ResponseRecorder, want string) {
	t.Helper()
	if rec.Code != http.StatusNotFound {
		t.Fatalf("status = %d, want 404; body %s", rec.Code, rec.Body)
	}
	e := errorOf(t, rec)
	if e.Type != "invalid_request_error" || e.Param == nil || *e.Param != "model" || e.Code != "model_not_found" || !strings.Contains(e.Message, want) {
		t.Errorf("error %+v, want model_not_found on param model naming %s", e, want)
	}
}

// A chat completion for a model no miner serves is a 404 naming the model
// parameter, streamed or not; one whose miners stay busy is a 429 that says
// when to retry.
func TestChatCompletionErrorsClientsActOn(t *testing.T) {
	for _, stream := range []string{"false", "true"} {
		s := &fakeSessions{complete: func(context.Context, api.CompletionRequest, func(string) error) (api.Completion, error) {
			return api.Completion{}, fmt.Errorf("%w: %q", api.ErrModelNotFound, "gpt-4")
		}}
		body := `{"model":"gpt-4","stream":` + stream + `,"messages":[{"role":"user","content":"hi"}]}`
		wantModelNotFound(t, call(t, router(t, s, ""), http.MethodPost, "/v1/chat/completions", body, "Content-Type", "application/json"), `"gpt-4"`)

		s = &fakeSessions{complete: func(context.Context, api.CompletionRequest, func(string) error) (api.Completion, error) {
			return api.Completion{}, fmt.Errorf("%w: every miner serving %q is busy", api.ErrTooMany, "m1")
		}}
		rec := call(t, router(t, s, ""), http.MethodPost, "/v1/chat/completions", strings.ReplaceAll(body, "gpt-4", "m1"), "Content-Type", "application/json")
		e := wantError(t, rec, http.StatusTooManyRequests, "busy")
		if e.Type != "rate_limit_error" || rec.Header().Get("Retry-After") == "" {
			t.Errorf("stream %s: 429 %+v, Retry-After %q: want rate_limit_error and a Retry-After", stream, e, rec.Header().Get("Retry-After"))
		}
	}
}

// A chat completion carries the API client it came from, by its token, so
// that the router can bound one client's requests in flight.
func TestChatCompletionNamesItsClient(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		s := &fakeSessions{}
		args := []string{"Content-Type", "application/json"}
		if token != "" {
			args = append(args, "Authorization", "Bearer "+token)
		}
		rec := call(t, router(t, s, token), http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, args...)
		if rec.Code != http.StatusOK || len(s.completions) != 1 {
			t.Fatalf("token %q: %d %s", token, rec.Code, rec.Body)
		}
		want := map[string]string{"": "", "s3cret": "token"}[token]
		if got := s.completions[0].Client; got != want {
			t.Errorf("token %q: client %q, want %q", token, got, want)
		}
	}
}
