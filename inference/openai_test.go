package inference

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
)

func userAsks(prompt string) GenerateRequest {
	return GenerateRequest{Messages: []Message{{Role: "user", Content: prompt}}}
}

// oneLine fails the test unless err is a one-line error saying all of want.
func oneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", want)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not say %q", msg, w)
		}
	}
}

func TestNewOpenAIValidates(t *testing.T) {
	good := OpenAIConfig{BaseURL: "http://127.0.0.1:8080/v1", Model: "m"}
	bad := []struct {
		name string
		edit func(*OpenAIConfig)
		want string
	}{
		{"empty base", func(c *OpenAIConfig) { c.BaseURL = "" }, "BaseURL is empty"},
		{"relative base", func(c *OpenAIConfig) { c.BaseURL = "127.0.0.1:8080/v1" }, "BaseURL"},
		{"no scheme", func(c *OpenAIConfig) { c.BaseURL = "localhost/v1" }, "want an absolute http:// or https:// URL"},
		{"ftp", func(c *OpenAIConfig) { c.BaseURL = "ftp://127.0.0.1/v1" }, "want an absolute http:// or https:// URL"},
		{"no host", func(c *OpenAIConfig) { c.BaseURL = "http:///v1" }, "want an absolute"},
		{"unparsable", func(c *OpenAIConfig) { c.BaseURL = "http://[::1/v1" }, "BaseURL"},
		{"query", func(c *OpenAIConfig) { c.BaseURL = "http://127.0.0.1:8080/v1?key=1" }, "query or fragment"},
		{"fragment", func(c *OpenAIConfig) { c.BaseURL = "http://127.0.0.1:8080/v1#x" }, "query or fragment"},
		{"endpoint", func(c *OpenAIConfig) { c.BaseURL = "http://127.0.0.1:8080/v1/chat/completions" }, "is an endpoint"},
		{"password", func(c *OpenAIConfig) { c.BaseURL = "http://u:hunter2@127.0.0.1:8080/v1" }, "user name or password"},
		{"no model", func(c *OpenAIConfig) { c.Model = "" }, "Model is empty"},
		{"blank model", func(c *OpenAIConfig) { c.Model = "  " }, "Model is empty"},
		{"spaced model", func(c *OpenAIConfig) { c.Model = "llama3.2 " }, "Model \"llama3.2 \" has spaces"},
		{"spaced embedding model", func(c *OpenAIConfig) { c.EmbeddingModel = " e" }, "EmbeddingModel"},
		{"negative timeout", func(c *OpenAIConfig) { c.Timeout = -time.Second }, "Timeout -1s is negative"},
		{"key with newline", func(c *OpenAIConfig) { c.APIKey = "sk-hunter2\n" }, "APIKey"},
		{"key with control", func(c *OpenAIConfig) { c.APIKey = "sk-hun\x00ter2" }, "APIKey"},
	}
	for _, c := range bad {
		cfg := good
		c.edit(&cfg)
		o, err := NewOpenAI(cfg)
		if o != nil {
			t.Errorf("%s: got a backend", c.name)
		}
		oneLine(t, err, "openai backend: ", c.want)
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error repeats a secret: %v", c.name, err)
		}
	}

	bases := map[string]string{
		"http://127.0.0.1:8080/v1":       "http://127.0.0.1:8080/v1",
		"http://127.0.0.1:8080/v1/":      "http://127.0.0.1:8080/v1",
		"http://127.0.0.1:8080":          "http://127.0.0.1:8080/v1",
		"http://127.0.0.1:8080/":         "http://127.0.0.1:8080/v1",
		"HTTPS://example.com/api/v1":     "https://example.com/api/v1",
		"http://[::1]:11434/v1":          "http://[::1]:11434/v1",
		"https://example.com/openai/v1/": "https://example.com/openai/v1",
	}
	for in, want := range bases {
		o, err := NewOpenAI(OpenAIConfig{BaseURL: in, Model: "m"})
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if o.chatURL != want+"/chat/completions" || o.embedURL != want+"/embeddings" {
			t.Errorf("%s: endpoints %s and %s, want the base %s", in, o.chatURL, o.embedURL, want)
		}
	}

	o, err := NewOpenAI(good)
	if err != nil {
		t.Fatal(err)
	}
	if o.client.Timeout != DefaultOpenAITimeout || o.embedModel != "m" {
		t.Errorf("defaults: timeout %v, embedding model %q", o.client.Timeout, o.embedModel)
	}
	if o.Name() != "openai" || !slices.Equal(o.Models(), []string{"m"}) {
		t.Errorf("name %q, models %v", o.Name(), o.Models())
	}
}

func TestOpenAIGenerate(t *testing.T) {
	s := newStandIn(t)
	o := s.backend(t)
	ctx := context.Background()
	want, err := NewBuiltin().Generate(ctx, userAsks("What is 17 + 25?"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := o.Generate(ctx, userAsks("What is 17 + 25?"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "42" || resp.Model != standInModel ||
		resp.PromptTokens != want.PromptTokens || resp.CompletionTokens != want.CompletionTokens {
		t.Fatalf("got %+v, want the text 42 and the counts of %+v", resp, want)
	}
	req := s.last(t)
	if req.Path != "/v1/chat/completions" || req.Header.Get("Authorization") != "" ||
		!strings.HasPrefix(req.Header.Get("Accept"), "application/json") {
		t.Errorf("request %s, headers %v", req.Path, req.Header)
	}
	if _, ok := req.Body["max_tokens"]; ok {
		t.Errorf("max_tokens sent though 0: %v", req.Body)
	}
	if req.Body["model"] != standInModel || req.Body["stream"] != false || req.Body["temperature"] != 0.0 {
		t.Errorf("body %v", req.Body)
	}
	if _, ok := req.Body["stream_options"]; ok {
		t.Errorf("stream_options sent without streaming: %v", req.Body)
	}
	msgs, _ := req.Body["messages"].([]any)
	if len(msgs) != 1 || fmt.Sprint(msgs[0]) != "map[content:What is 17 + 25? role:user]" {
		t.Errorf("messages %v", req.Body["messages"])
	}

	// The model may be named; max_tokens and temperature are passed on.
	long := GenerateRequest{Model: standInModel, Messages: []Message{
		{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Tell me about yourself."},
	}, MaxTokens: 3, Temperature: 0.7}
	resp, err = o.Generate(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	if resp.CompletionTokens != 3 || countWords(resp.Text) != 3 {
		t.Errorf("max tokens 3 gave %+v", resp)
	}
	if body := s.last(t).Body; body["max_tokens"] != 3.0 || body["temperature"] != 0.7 {
		t.Errorf("body %v", body)
	}
}

func TestOpenAIGenerateStream(t *testing.T) {
	s := newStandIn(t)
	o := s.backend(t)
	ctx := context.Background()
	prompt := "Hello there, who are you?" // a long reply: many chunks
	plain, err := o.Generate(ctx, userAsks(prompt))
	if err != nil {
		t.Fatal(err)
	}
	var toks []string
	resp, err := o.GenerateStream(ctx, userAsks(prompt), func(tok string) error {
		toks = append(toks, tok)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) < 10 || strings.Join(toks, "") != resp.Text || slices.Contains(toks, "") {
		t.Fatalf("%d tokens %q for %q", len(toks), toks, resp.Text)
	}
	if resp != plain {
		t.Errorf("streamed %+v, plain %+v", resp, plain)
	}
	if resp.PromptTokens == 0 || resp.CompletionTokens != len(toks) {
		t.Errorf("usage chunk not read: %+v for %d tokens", resp, len(toks))
	}
	req := s.last(t)
	if req.Body["stream"] != true || fmt.Sprint(req.Body["stream_options"]) != "map[include_usage:true]" ||
		req.Header.Get("Accept") != "text/event-stream" {
		t.Errorf("request %v %v", req.Header, req.Body)
	}

	// A nil callback is allowed; the text still comes back.
	resp, err = o.GenerateStream(ctx, userAsks(prompt), nil)
	if err != nil || resp != plain {
		t.Errorf("nil callback: %+v %v", resp, err)
	}

	// A callback's error stops the stream and is returned.
	stop := errors.New("enough")
	calls := 0
	_, err = o.GenerateStream(ctx, userAsks(prompt), func(string) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("callback error: %v after %d calls", err, calls)
	}
	oneLine(t, err, "openai backend: token callback: enough")
}

// TestOpenAIStreamTolerates: comments, blank lines, CRLF, event lines, "data:"
// without its space, ids, a chunk with null content, a usage-only chunk and a
// missing blank line at the end are all read as OpenAI's servers mean them.
func TestOpenAIStreamTolerates(t *testing.T) {
	o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": keep-alive\r\n\r\n",
			"retry: 3000\r\nid: 1\r\nevent: message\r\n",
			`data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}`+"\r\n\r\n",
			`data:{"choices":[{"index":0,"delta":{"content":"Hel"}}]}`+"\n\n\n\n",
			": another comment\n",
			`data: {"choices":[{"index":0,"delta":{"content":"lo, "}}],"usage":null}`+"\n\n",
			`data: {"choices":[{"index":0,"delta":{"content":""}}]}`+"\n\n",
			`data: {"choices":[{"index":0,"delta":{"content":"wörld"},"finish_reason":null}]}`+"\n\n",
			`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
			`data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`+"\n\n",
			"data: [DONE]")
	})
	var toks []string
	resp, err := o.GenerateStream(context.Background(), userAsks("hi"), func(tok string) error {
		toks = append(toks, tok)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "Hello, wörld" || !slices.Equal(toks, []string{"Hel", "lo, ", "wörld"}) ||
		resp.PromptTokens != 5 || resp.CompletionTokens != 3 {
		t.Fatalf("got %+v from %q", resp, toks)
	}
}

// TestOpenAIStreamAnsweredPlain: a server that ignores "stream" and sends one
// chat.completion is taken at its word.
func TestOpenAIStreamAnsweredPlain(t *testing.T) {
	o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"all at once"}}],"usage":{"prompt_tokens":2,"completion_tokens":3}}`)
	})
	var toks []string
	resp, err := o.GenerateStream(context.Background(), userAsks("hi"), func(tok string) error {
		toks = append(toks, tok)
		return nil
	})
	if err != nil || resp.Text != "all at once" || !slices.Equal(toks, []string{"all at once"}) || resp.CompletionTokens != 3 {
		t.Fatalf("%+v %q %v", resp, toks, err)
	}
}

func TestOpenAIAPIKey(t *testing.T) {
	s := newStandIn(t)
	s.requireKey("sk-test-123")
	ctx := context.Background()
	o := s.backend(t, func(c *OpenAIConfig) { c.APIKey = "sk-test-123" })
	if _, err := o.Generate(ctx, userAsks("What is 1 + 1?")); err != nil {
		t.Fatal(err)
	}
	if _, err := o.GenerateStream(ctx, userAsks("What is 1 + 1?"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Embed(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	for _, req := range s.received() {
		if got := req.Header.Get("Authorization"); got != "Bearer sk-test-123" {
			t.Errorf("%s: Authorization %q", req.Path, got)
		}
	}

	_, err := s.backend(t, func(c *OpenAIConfig) { c.APIKey = "sk-wrong" }).Generate(ctx, userAsks("hi"))
	oneLine(t, err, "openai backend: POST "+s.URL+"/chat/completions: 401 Unauthorized: Incorrect API key provided.")
	if strings.Contains(err.Error(), "sk-wrong") {
		t.Errorf("the error repeats the key: %v", err)
	}
	_, err = s.backend(t).Generate(ctx, userAsks("hi"))
	oneLine(t, err, "401 Unauthorized")
}

func TestOpenAIEmbed(t *testing.T) {
	s := newStandIn(t)
	s.setReverseEmbeddings(true)
	ctx := context.Background()
	texts := []string{"The capital of France is Paris.", "", "Gravity pulls masses together.", "kiwi"}
	for _, embedModel := range []string{"", standInEmbedModel} {
		o := s.backend(t, func(c *OpenAIConfig) { c.EmbeddingModel = embedModel })
		vecs, err := o.Embed(ctx, texts)
		if err != nil {
			t.Fatal(err)
		}
		if len(vecs) != len(texts) {
			t.Fatalf("%d vectors for %d texts", len(vecs), len(texts))
		}
		for i, text := range texts {
			if !slices.Equal(vecs[i], hashedEmbedding(text)) {
				t.Errorf("vector %d is not that of %q", i, text)
			}
		}
		req := s.last(t)
		want := standInModel
		if embedModel != "" {
			want = embedModel
		}
		input, _ := req.Body["input"].([]any)
		if req.Path != "/v1/embeddings" || req.Body["model"] != want || len(input) != 3 {
			t.Errorf("request %s %v", req.Path, req.Body)
		}
	}

	// Nothing to ask: no request.
	o := s.backend(t)
	before := len(s.received())
	for _, texts := range [][]string{nil, {}, {"", ""}} {
		vecs, err := o.Embed(ctx, texts)
		if err != nil || len(vecs) != len(texts) {
			t.Errorf("%q: %v %v", texts, vecs, err)
		}
	}
	if len(s.received()) != before {
		t.Error("a request for no text")
	}
}

func TestOpenAIEmbedChecksTheAnswer(t *testing.T) {
	cases := map[string]string{
		`{"data":[{"index":0,"embedding":[1,2]}]}`:                                                    "1 embeddings for 2 texts",
		`{"data":[{"index":0,"embedding":[1,2]},{"index":0,"embedding":[3,4]}]}`:                      "index 0 given twice",
		`{"data":[{"index":0,"embedding":[1,2]},{"index":2,"embedding":[3,4]}]}`:                      "index 2 out of range",
		`{"data":[{"index":0,"embedding":[1,2]},{"index":-1,"embedding":[3,4]}]}`:                     "index -1 out of range",
		`{"data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[]}]}`:                         "embedding 1 is empty",
		`{"data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[3]}]}`:                        "embedding 1 has 1 dimensions, another 2",
		`{"data":[{"index":0,"embedding":"AAAA"},{"index":1,"embedding":[3]}]}`:                       "bad JSON answer",
		`{"error":{"message":"This server does not support embeddings. Start it with --embeddings"}}`: "server error: This server does not support embeddings",
		`{"object":"error","message":"The model does not support Embeddings API","code":400}`:         "server error: The model does not support",
		`<html>`: "bad JSON answer",
	}
	for body, want := range cases {
		o := rawServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) })
		_, err := o.Embed(context.Background(), []string{"a", "b"})
		oneLine(t, err, "openai backend: POST ", "/v1/embeddings: ", want)
	}
	// No index: the position.
	o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"data":[{"embedding":[1,0]},{"embedding":[0,1]}]}`)
	})
	vecs, err := o.Embed(context.Background(), []string{"a", "b"})
	if err != nil || !slices.Equal(vecs[0], []float32{1, 0}) || !slices.Equal(vecs[1], []float32{0, 1}) {
		t.Errorf("%v %v", vecs, err)
	}
}

func TestOpenAIServerDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/v1"
	srv.Close()
	o, err := NewOpenAI(OpenAIConfig{BaseURL: base, Model: "m", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = o.Generate(ctx, userAsks("hi"))
	oneLine(t, err, "openai backend: POST "+base+"/chat/completions: ", "connection refused")
	var ue *url.Error
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &ue) {
		t.Errorf("the cause is lost: %#v", err)
	}
	if strings.Count(err.Error(), base) != 1 {
		t.Errorf("the URL is said more than once: %v", err)
	}
	_, err = o.GenerateStream(ctx, userAsks("hi"), nil)
	oneLine(t, err, "/chat/completions: ", "connection refused")
	_, err = o.Embed(ctx, []string{"hi"})
	oneLine(t, err, "openai backend: POST "+base+"/embeddings: ", "connection refused")
}

func TestOpenAIErrorStatus(t *testing.T) {
	long := strings.Repeat("very long message ", 100)
	cases := []struct {
		status int
		body   string
		want   string
	}{
		{500, `{"error":{"code":500,"message":"failed to load model\nout of memory","type":"server_error"}}`,
			"500 Internal Server Error: failed to load model out of memory"},
		{404, `{"error":{"message":"model \"llama9\" not found, try pulling it first","type":"api_error","param":null,"code":null}}`,
			`404 Not Found: model "llama9" not found, try pulling it first`},
		{400, `{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}`,
			"400 Bad Request: max_tokens is too large"},
		{400, `{"error":"bad request: no messages"}`, "400 Bad Request: bad request: no messages"},
		{422, `{"detail":"Not Found"}`, "422 Unprocessable Entity: Not Found"},
		{502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>", "502 Bad Gateway: <html> <head><title>502 Bad Gateway</title></head> </html>"},
		{503, "", "503 Service Unavailable"},
		{599, `{"error":{"message":"odd"}}`, "599: odd"},
		{500, `{"error":{"message":"` + long + `"}}`, "500 Internal Server Error: very long message"},
	}
	for _, c := range cases {
		o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(c.status)
			fmt.Fprint(w, c.body)
		})
		_, err := o.Generate(context.Background(), userAsks("hi"))
		oneLine(t, err, "openai backend: POST ", "/v1/chat/completions: "+c.want)
		if err != nil && len([]rune(err.Error())) > 300 {
			t.Errorf("error of %d runes: %v", len([]rune(err.Error())), err)
		}
		_, err = o.GenerateStream(context.Background(), userAsks("hi"), nil)
		oneLine(t, err, c.want)
	}
}

func TestOpenAIBadAnswer(t *testing.T) {
	cases := map[string]string{
		`{"choices":[{"message":{"content":"ok"`: "bad JSON answer: unexpected end of JSON input",
		"<!doctype html><p>hello":                `bad JSON answer: invalid character '<' looking for beginning of value (answer begins "<!doctype html><p>hello")`,
		"":                                       "bad JSON answer",
		`{"choices":[]}`:                         "answer has no choices",
		`{"id":"x"}`:                             "answer has no choices",
		`null`:                                   "answer has no choices",
		`[1,2]`:                                  "bad JSON answer",
		`{"choices":[{"message":{"content":42}}]}`:             "bad JSON answer",
		`{"error":{"message":"context length exceeded"}}`:      "server error: context length exceeded",
		`{"choices":[{"message":{"content":"x"}}],"error":{}}`: "server error: (no message)",
	}
	for body, want := range cases {
		o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, body)
		})
		_, err := o.Generate(context.Background(), userAsks("hi"))
		oneLine(t, err, "openai backend: POST ", "/v1/chat/completions: "+want)
	}

	// Null content and nonsense counts are no reason to lose an answer.
	o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"choices":[{"message":{"content":null}}],"usage":{"prompt_tokens":-4,"completion_tokens":"many"}}`)
	})
	resp, err := o.Generate(context.Background(), userAsks("hi"))
	if err != nil || resp != (GenerateResponse{Model: standInModel}) {
		t.Errorf("%+v %v", resp, err)
	}
}

func TestOpenAIStreamFailures(t *testing.T) {
	chunk := func(text string) string {
		return `data: {"choices":[{"index":0,"delta":{"content":"` + text + `"}}]}` + "\n"
	}
	cases := []struct {
		name  string
		lines []string
		want  string
	}{
		{"cut off", []string{chunk("Hel"), chunk("lo")}, "stream ended before data: [DONE]"},
		{"empty", nil, "stream ended before data: [DONE]"},
		{"only comments", []string{": ping", ""}, "stream ended before data: [DONE]"},
		{"error object", []string{chunk("Hel"), `data: {"error":{"message":"the model crashed","type":"server_error"}}`, ""},
			"server error in stream: the model crashed"},
		{"llama.cpp error field", []string{chunk("Hel"), `error: {"code":500,"message":"slot unavailable","type":"server_error"}`, ""},
			"server error in stream: slot unavailable"},
		{"error event", []string{"event: error", `data: {"message":"overloaded"}`, ""}, "server error in stream: overloaded"},
		{"vLLM error object", []string{`data: {"object":"error","message":"out of KV cache","code":500}`, ""},
			"server error in stream: out of KV cache"},
		{"bad chunk", []string{chunk("Hel"), "data: {not json", ""}, `bad stream chunk: invalid character 'n'`},
		{"no choices", []string{`data: {"choices":[],"usage":{"prompt_tokens":1}}`, "", "data: [DONE]", ""}, "stream had no choices"},
	}
	for _, c := range cases {
		o := rawServer(t, func(w http.ResponseWriter, r *http.Request) { sse(w, c.lines...) })
		_, err := o.GenerateStream(context.Background(), userAsks("hi"), nil)
		oneLine(t, err, "openai backend: POST ", "/v1/chat/completions: "+c.want)
	}
}

func TestOpenAIAnswerTooLarge(t *testing.T) {
	huge := strings.Repeat("x", maxAnswerBytes+1)
	o := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, ": "+huge+"\n")
			return
		}
		fmt.Fprint(w, `{"choices":[{"message":{"content":"`+huge+`"}}]}`)
	})
	_, err := o.Generate(context.Background(), userAsks("hi"))
	oneLine(t, err, "reading the answer: answer larger than 16 MiB")
	_, err = o.GenerateStream(context.Background(), userAsks("hi"), nil)
	oneLine(t, err, "reading the stream: ")
	if !errors.Is(err, errAnswerTooLarge) {
		t.Errorf("stream: %v", err)
	}

	// Just under the limit is fine.
	text := strings.Repeat("y", maxAnswerBytes-100)
	o = rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"choices":[{"message":{"content":"`+text+`"}}]}`)
	})
	resp, err := o.Generate(context.Background(), userAsks("hi"))
	if err != nil || resp.Text != text {
		t.Errorf("an answer under the limit: %v", err)
	}
}

func TestOpenAITimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			sse(w, `data: {"choices":[{"index":0,"delta":{"content":"slow"}}]}`, "") // then nothing
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	o, err := NewOpenAI(OpenAIConfig{BaseURL: srv.URL, Model: "m", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, call := range []func() error{
		func() error { _, err := o.Generate(ctx, userAsks("hi")); return err },
		func() error { _, err := o.GenerateStream(ctx, userAsks("hi"), nil); return err },
		func() error { _, err := o.Embed(ctx, []string{"hi"}); return err },
	} {
		start := time.Now()
		err := call()
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %v with a timeout of 200ms", took)
		}
		oneLine(t, err, "openai backend: POST "+srv.URL+"/v1/", ": timed out after 200ms: ", "Client.Timeout")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("not a deadline: %#v", err)
		}
	}

	// The caller's context is honoured too: cancelled, and with a deadline.
	o, err = NewOpenAI(OpenAIConfig{BaseURL: srv.URL, Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = o.GenerateStream(cctx, userAsks("hi"), nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	oneLine(t, err, "context canceled")
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = o.Generate(dctx, userAsks("hi"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	oneLine(t, err, "context deadline exceeded")
}

func TestOpenAIRefusesBadRequests(t *testing.T) {
	s := newStandIn(t)
	o := s.backend(t)
	ctx := context.Background()
	_, err := o.Generate(ctx, GenerateRequest{Model: "gpt-4o", Messages: []Message{{Role: "user", Content: "hi"}}})
	if !errors.Is(err, ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
	oneLine(t, err, `openai backend: unknown model "gpt-4o" (it serves "standin-chat-1")`)
	_, err = o.GenerateStream(ctx, GenerateRequest{Model: BuiltinModel}, nil)
	if !errors.Is(err, ErrUnknownModel) {
		t.Errorf("unknown model, streamed: %v", err)
	}
	for _, req := range []GenerateRequest{
		{MaxTokens: -1}, {Temperature: -0.5}, {Temperature: math.NaN()}, {Temperature: math.Inf(1)},
	} {
		req.Messages = []Message{{Role: "user", Content: "hi"}}
		_, err := o.Generate(ctx, req)
		oneLine(t, err, "openai backend: ")
	}
	if n := len(s.received()); n != 0 {
		t.Errorf("%d requests sent for requests refused here", n)
	}

	// What only the server refuses comes back with its reason.
	_, err = o.Generate(ctx, GenerateRequest{})
	oneLine(t, err, "400 Bad Request: [] is too short - 'messages'")
	_, err = o.Generate(ctx, GenerateRequest{Messages: []Message{{Role: "user", Content: "hi"}}, Temperature: 3})
	oneLine(t, err, "400 Bad Request: Invalid 'temperature'")
	_, err = s.backend(t, func(c *OpenAIConfig) { c.EmbeddingModel = "nope" }).Embed(ctx, []string{"hi"})
	oneLine(t, err, "404 Not Found: The model `nope` does not exist")
}

// TestOpenAIPassesDefaultBank: through the stand-in (the built-in engine
// behind OpenAI's wire format), the openai backend passes validations as the
// built-in engine does, graded with its own Embed.
func TestOpenAIPassesDefaultBank(t *testing.T) {
	s := newStandIn(t)
	o := s.backend(t)
	bank := challenge.Default()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(21, 22))
	for range 20 {
		tasks := bank.Pick(rng, 5)
		answers := make([]string, len(tasks))
		for i, task := range tasks {
			resp, err := o.Generate(ctx, userAsks(task.Prompt))
			if err != nil {
				t.Fatal(err)
			}
			answers[i] = resp.Text
		}
		_, score, pass, err := bank.GradeAll(ctx, tasks, answers, make([]time.Duration, len(tasks)), o.Embed)
		if err != nil || !pass || score != 1 {
			t.Fatalf("validation %v: score %v pass %v err %v", tasks, score, pass, err)
		}
	}
}

func TestOpenAIConcurrent(t *testing.T) {
	s := newStandIn(t)
	o := s.backend(t)
	ctx := context.Background()
	b := NewBuiltin()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			prompt := fmt.Sprintf("What is %d + %d?", i, i)
			want, _ := b.Generate(ctx, userAsks(prompt))
			for range 5 {
				resp, err := o.Generate(ctx, userAsks(prompt))
				if err != nil || resp.Text != want.Text {
					errs <- fmt.Errorf("%s: %q %v", prompt, resp.Text, err)
					return
				}
				var sb strings.Builder
				resp, err = o.GenerateStream(ctx, userAsks(prompt), func(tok string) error { sb.WriteString(tok); return nil })
				if err != nil || resp.Text != want.Text || sb.String() != want.Text {
					errs <- fmt.Errorf("%s streamed: %q %v", prompt, resp.Text, err)
					return
				}
				vecs, err := o.Embed(ctx, []string{prompt, want.Text})
				if err != nil || !slices.Equal(vecs[1], hashedEmbedding(want.Text)) {
					errs <- fmt.Errorf("%s embedded: %v", prompt, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
