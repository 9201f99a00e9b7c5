package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The stand-in is a local OpenAI-compatible server for tests of the openai
// backend. It speaks POST /v1/chat/completions (a chat.completion object, or
// chat.completion.chunk Server-Sent Events when "stream" is true) and POST
// /v1/embeddings in OpenAI's wire format, refuses what OpenAI refuses
// (unknown fields and models, a wrong key, empty input), and answers with the
// built-in engine, so that its replies and vectors are known in advance.

const (
	standInModel      = "standin-chat-1"
	standInEmbedModel = "standin-embed-1"
	standInCreated    = 1700000000
)

type standIn struct {
	URL    string // the API base: http://127.0.0.1:<port>/v1
	srv    *httptest.Server
	engine *Builtin

	mu                sync.Mutex
	key               string // when set, requests must carry "Authorization: Bearer <key>"
	reverseEmbeddings bool   // list embeddings last to first, index still right
	requests          []standInRequest
	nextID            int
}

// standInRequest is one request as the stand-in received it.
type standInRequest struct {
	Path   string
	Header http.Header
	Body   map[string]any // the JSON body, decoded
}

// newStandIn starts a stand-in on 127.0.0.1, closed when the test ends.
func newStandIn(t testing.TB) *standIn {
	t.Helper()
	s := &standIn{engine: NewBuiltin()}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL + "/v1"
	return s
}

// requireKey makes the stand-in refuse requests without "Bearer key".
func (s *standIn) requireKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = key
}

// setReverseEmbeddings lists embeddings last to first: a client must order
// them by index, not by position.
func (s *standIn) setReverseEmbeddings(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reverseEmbeddings = on
}

// received is every request so far, oldest first.
func (s *standIn) received() []standInRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// last is the latest request; the test fails if there was none.
func (s *standIn) last(t testing.TB) standInRequest {
	t.Helper()
	reqs := s.received()
	if len(reqs) == 0 {
		t.Fatal("the stand-in received no request")
	}
	return reqs[len(reqs)-1]
}

// backend is an openai backend pointed at the stand-in, serving standInModel;
// edit changes its config first.
func (s *standIn) backend(t testing.TB, edit ...func(*OpenAIConfig)) *OpenAI {
	t.Helper()
	cfg := OpenAIConfig{BaseURL: s.URL, Model: standInModel, Timeout: 10 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	o, err := NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (s *standIn) serve(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	raw := new(bytes.Buffer)
	_, _ = raw.ReadFrom(r.Body)
	_ = json.Unmarshal(raw.Bytes(), &body)
	s.mu.Lock()
	s.requests = append(s.requests, standInRequest{Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	key, reverse := s.key, s.reverseEmbeddings
	s.nextID++
	id := s.nextID
	s.mu.Unlock()

	if r.Method != http.MethodPost {
		openAIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "", fmt.Sprintf("Method %s not allowed on %s.", r.Method, r.URL.Path))
		return
	}
	if key != "" && r.Header.Get("Authorization") != "Bearer "+key {
		openAIError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.")
		return
	}
	if mt := r.Header.Get("Content-Type"); mt != "application/json" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "", fmt.Sprintf("Content-Type %q: the body must be JSON.", mt))
		return
	}
	switch r.URL.Path {
	case "/v1/chat/completions":
		s.chat(w, raw.Bytes(), id)
	case "/v1/embeddings":
		s.embeddings(w, raw.Bytes(), reverse)
	default:
		openAIError(w, http.StatusNotFound, "invalid_request_error", "", fmt.Sprintf("Invalid URL (POST %s)", r.URL.Path))
	}
}

// strictDecode decodes as OpenAI does: an unknown field is refused.
func strictDecode(w http.ResponseWriter, raw []byte, v any) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "", "We could not parse the JSON body of your request: "+err.Error())
		return false
	}
	return true
}

func (s *standIn) chat(w http.ResponseWriter, raw []byte, id int) {
	var req struct {
		Model         string    `json:"model"`
		Messages      []Message `json:"messages"`
		MaxTokens     *int      `json:"max_tokens"`
		Temperature   *float64  `json:"temperature"`
		Stream        bool      `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if !strictDecode(w, raw, &req) {
		return
	}
	switch {
	case req.Model != standInModel:
		openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", req.Model))
		return
	case len(req.Messages) == 0:
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "", "[] is too short - 'messages'")
		return
	case req.MaxTokens != nil && *req.MaxTokens < 1:
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "integer_below_min_value",
			fmt.Sprintf("Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got %d instead.", *req.MaxTokens))
		return
	case req.Temperature != nil && (*req.Temperature < 0 || *req.Temperature > 2):
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "decimal_above_max_value",
			fmt.Sprintf("Invalid 'temperature': expected a value between 0 and 2, got %v.", *req.Temperature))
		return
	case req.StreamOptions != nil && !req.Stream:
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "",
			"The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		return
	}
	gen := GenerateRequest{Model: BuiltinModel, Messages: req.Messages}
	full, err := s.engine.GenerateStream(context.Background(), gen, nil)
	if err != nil {
		openAIError(w, http.StatusInternalServerError, "server_error", "", err.Error())
		return
	}
	finish := "stop"
	if req.MaxTokens != nil {
		gen.MaxTokens = *req.MaxTokens
	}
	resp, err := s.engine.GenerateStream(context.Background(), gen, nil)
	if err != nil {
		openAIError(w, http.StatusInternalServerError, "server_error", "", err.Error())
		return
	}
	if resp.CompletionTokens < full.CompletionTokens {
		finish = "length"
	}
	usage := map[string]any{
		"prompt_tokens": resp.PromptTokens, "completion_tokens": resp.CompletionTokens,
		"total_tokens": resp.PromptTokens + resp.CompletionTokens,
	}
	cid := fmt.Sprintf("chatcmpl-standin%d", id)
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": cid, "object": "chat.completion", "created": standInCreated, "model": standInModel,
			"system_fingerprint": "fp_standin",
			"choices": []any{map[string]any{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": resp.Text, "refusal": nil},
				"logprobs":      nil,
				"finish_reason": finish,
			}},
			"usage": usage,
		})
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	chunk := func(delta map[string]any, finishReason any) {
		c := map[string]any{
			"id": cid, "object": "chat.completion.chunk", "created": standInCreated, "model": standInModel,
			"system_fingerprint": "fp_standin",
			"choices":            []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finishReason}},
		}
		if includeUsage {
			c["usage"] = nil // every chunk but the last says null
		}
		writeEvent(w, flusher, c)
	}
	chunk(map[string]any{"role": "assistant", "content": "", "refusal": nil}, nil)
	for _, tok := range splitTokens(resp.Text) {
		chunk(map[string]any{"content": tok}, nil)
	}
	chunk(map[string]any{}, finish)
	if includeUsage {
		writeEvent(w, flusher, map[string]any{
			"id": cid, "object": "chat.completion.chunk", "created": standInCreated, "model": standInModel,
			"system_fingerprint": "fp_standin", "choices": []any{}, "usage": usage,
		})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func (s *standIn) embeddings(w http.ResponseWriter, raw []byte, reverse bool) {
	var req struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
		Dimensions     int             `json:"dimensions"`
		User           string          `json:"user"`
	}
	if !strictDecode(w, raw, &req) {
		return
	}
	if req.Model != standInEmbedModel && req.Model != standInModel {
		openAIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", req.Model))
		return
	}
	var inputs []string
	var one string
	switch {
	case json.Unmarshal(req.Input, &one) == nil:
		inputs = []string{one}
	case json.Unmarshal(req.Input, &inputs) == nil:
	default:
		inputs = nil
	}
	if len(inputs) == 0 || slices.Contains(inputs, "") {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "", "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.")
		return
	}
	data := make([]any, len(inputs))
	tokens := 0
	for i, text := range inputs {
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": hashedEmbedding(text)}
		tokens += countWords(text)
	}
	if reverse {
		slices.Reverse(data)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": req.Model,
		"usage": map[string]any{"prompt_tokens": tokens, "total_tokens": tokens},
	})
}

// openAIError writes an error the way OpenAI does.
func openAIError(w http.ResponseWriter, status int, kind, code, msg string) {
	var c any
	if code != "" {
		c = code
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": kind, "param": nil, "code": c}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeEvent(w http.ResponseWriter, flusher http.Flusher, v any) {
	data, _ := json.Marshal(v)
	fmt.Fprintf(w, "data: %s\n\n", data)
	if flusher != nil {
		flusher.Flush()
	}
}

// rawServer answers every request with handler, for the answers no faithful
// server gives; it is closed when the test ends.
func rawServer(t testing.TB, handler http.HandlerFunc) *OpenAI {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	o, err := NewOpenAI(OpenAIConfig{BaseURL: srv.URL + "/v1", Model: standInModel, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// sse writes a stream of raw lines, each ended by \n, and flushes.
func sse(w http.ResponseWriter, lines ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, strings.Join(lines, "\n")+"\n")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}
