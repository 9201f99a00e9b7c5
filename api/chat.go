package api

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/internal/openaiwire"
)

// MaxRedundancy bounds a chat completion's "redundancy": how many miners
// answer it.
const MaxRedundancy = 16

// OpenAI's shapes of /v1/models; those of chat completions are
// openaiwire's.
type (
	modelList struct {
		Object string      `json:"object"` // "list"
		Data   []modelInfo `json:"data"`
	}
	modelInfo struct {
		ID      string `json:"id"`
		Object  string `json:"object"` // "model"
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
)

func usageOf(c Completion) openaiwire.Usage {
	return openaiwire.Usage{PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens, TotalTokens: c.PromptTokens + c.CompletionTokens}
}

func ephemeraOf(c Completion) openaiwire.Ephemera {
	miners := c.Miners
	if miners == nil {
		miners = []string{}
	}
	return openaiwire.Ephemera{Session: c.Session, Task: c.Task, Miners: miners, Agreement: c.Agreement}
}

func handleOpenAI(mux *http.ServeMux, s Sessions, streams *streamLimiter) {
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		list := modelList{Object: "list", Data: []modelInfo{}}
		for _, m := range s.Models() {
			list.Data = append(list.Data, modelInfo{ID: m, Object: "model", OwnedBy: "ephemera"})
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /v1/models/{model...}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("model")
		for _, m := range s.Models() {
			if m == id {
				writeJSON(w, http.StatusOK, modelInfo{ID: m, Object: "model", OwnedBy: "ephemera"})
				return
			}
		}
		writeErr(w, r, fmt.Errorf("%w: %q is not served on this network", ErrModelNotFound, id))
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(r)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		req, opts, err := parseChat(body)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		req.Client = clientOf(r)
		created := time.Now().Unix()
		if req.Stream {
			release, ok := streams.acquire(w, r)
			if !ok {
				return
			}
			defer release()
			streamChat(w, r, s, req, opts, created, streams.m)
			return
		}
		c, err := s.Complete(r.Context(), req, nil)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		model := c.Model
		if model == "" {
			model = req.Model
		}
		writeJSON(w, http.StatusOK, openaiwire.Completion{
			ID: completionID(), Object: openaiwire.ObjectCompletion, Created: created, Model: model,
			Choices: []openaiwire.Choice{{Message: openaiwire.Message{Role: "assistant", Content: c.Text}, FinishReason: "stop"}},
			Usage:   usageOf(c), Ephemera: ephemeraOf(c),
		})
	})
}

// chatOptions are the parts of a chat request that shape the answer only.
type chatOptions struct {
	includeUsage bool // stream_options.include_usage: a last chunk with the usage
}

// fields is a JSON object's members, with null ones left out: OpenAI's
// clients send null for "not given".
type fields map[string]json.RawMessage

func (f fields) get(name string) (json.RawMessage, bool) {
	raw, ok := f[name]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil, false
	}
	return raw, true
}

// object decodes raw as a JSON object, or says it is not one.
func object(raw []byte, what string) (fields, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, badRequest("%s must be a JSON object", what)
	}
	var f fields
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, badRequest("%s is not valid JSON: %v", what, err)
	}
	return f, nil
}

// str reads an optional string member.
func (f fields) str(name, what string) (string, bool, error) {
	raw, ok := f.get(name)
	if !ok {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, badRequest("%s: want a string", what)
	}
	return s, true, nil
}

// integer reads an optional integer member.
func (f fields) integer(name string) (int, bool, error) {
	raw, ok := f.get(name)
	if !ok {
		return 0, false, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false, badRequest("%s: want an integer, not %s", name, quote(raw))
	}
	return n, true, nil
}

// quote is a member as a bad request's message shows it: one short line.
func quote(raw json.RawMessage) string { return openaiwire.Clip(string(raw), 40) }

// parseChat reads an OpenAI chat completion request. Members it does not
// know (temperature, top_p, user, …) are ignored, as an OpenAI client
// expects; those it knows are checked for type and value.
func parseChat(body []byte) (CompletionRequest, chatOptions, error) {
	var req CompletionRequest
	var opts chatOptions
	if len(bytes.TrimSpace(body)) == 0 {
		return req, opts, badRequest("body is empty; want a chat completion request, a JSON object with messages")
	}
	f, err := object(body, "body")
	if err != nil {
		return req, opts, err
	}
	if req.Model, _, err = f.str("model", "model"); err != nil {
		return req, opts, err
	}
	if req.Messages, err = chatMessages(f); err != nil {
		return req, opts, err
	}
	maxTokens, hasMax, err := f.integer("max_tokens")
	if err != nil {
		return req, opts, err
	}
	maxCompletion, hasCompletion, err := f.integer("max_completion_tokens")
	if err != nil {
		return req, opts, err
	}
	switch {
	case maxTokens < 0:
		return req, opts, badRequest("max_tokens: %d is negative", maxTokens)
	case maxCompletion < 0:
		return req, opts, badRequest("max_completion_tokens: %d is negative", maxCompletion)
	case hasMax && hasCompletion && maxTokens != maxCompletion:
		return req, opts, badRequest("max_tokens and max_completion_tokens differ; give one")
	case hasCompletion:
		req.MaxTokens = maxCompletion
	default:
		req.MaxTokens = maxTokens
	}
	if raw, ok := f.get("n"); ok {
		var n int
		if json.Unmarshal(raw, &n) != nil || n != 1 {
			return req, opts, badRequest("n: only 1 is supported")
		}
	}
	if raw, ok := f.get("stream"); ok {
		if err := json.Unmarshal(raw, &req.Stream); err != nil {
			return req, opts, badRequest("stream: want true or false, not %s", quote(raw))
		}
	}
	if raw, ok := f.get("stream_options"); ok {
		var so struct {
			IncludeUsage *bool `json:"include_usage"`
		}
		if err := json.Unmarshal(raw, &so); err != nil {
			return req, opts, badRequest(`stream_options: want an object such as {"include_usage":true}, not %s`, quote(raw))
		}
		opts.includeUsage = so.IncludeUsage != nil && *so.IncludeUsage
	}
	red, hasRed, err := f.integer("redundancy")
	if err != nil {
		return req, opts, err
	}
	if hasRed && (red < 1 || red > MaxRedundancy) {
		return req, opts, badRequest("redundancy: %d is out of range; want 1 to %d", red, MaxRedundancy)
	}
	req.Redundancy = red
	return req, opts, nil
}

// chatMessages reads a chat request's messages: roles system, user,
// assistant or developer (as system); content a string or an array of
// text parts.
func chatMessages(f fields) ([]Message, error) {
	raw, ok := f.get("messages")
	if !ok {
		return nil, badRequest("messages is required")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badRequest("messages: want an array of messages, not %s", quote(raw))
	}
	msgs := make([]Message, 0, len(list))
	for i, raw := range list {
		what := fmt.Sprintf("messages[%d]", i)
		m, err := object(raw, what)
		if err != nil {
			return nil, err
		}
		role, ok, err := m.str("role", what+".role")
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return nil, badRequest("%s.role is missing; want system, user or assistant", what)
		case role == "developer":
			role = "system"
		}
		content, err := messageContent(m, what)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, Message{Role: role, Content: content})
	}
	return msgs, checkMessages(msgs)
}

// messageContent reads a message's content: a string, or OpenAI's array of
// parts of which only text ones are supported, concatenated.
func messageContent(m fields, what string) (string, error) {
	raw, ok := m.get("content")
	if !ok {
		return "", badRequest("%s.content is missing", what)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return "", badRequest("%s.content: want a string or an array of text parts, not %s", what, quote(raw))
	}
	var b strings.Builder
	for j, raw := range parts {
		pwhat := fmt.Sprintf("%s.content[%d]", what, j)
		p, err := object(raw, pwhat)
		if err != nil {
			return "", err
		}
		typ, ok, err := p.str("type", pwhat+".type")
		switch {
		case err != nil:
			return "", err
		case !ok:
			return "", badRequest("%s.type is missing; want text", pwhat)
		case typ != "text":
			return "", badRequest("%s.type %q is not supported; only text parts are", pwhat, typ)
		}
		text, ok, err := p.str("text", pwhat+".text")
		if err != nil {
			return "", err
		}
		if !ok {
			return "", badRequest("%s.text is missing", pwhat)
		}
		b.WriteString(text)
	}
	return b.String(), nil
}

// chatStream writes a chat completion as OpenAI's server-sent events. Its
// mutex orders the manager's deltas, which may come from any goroutine,
// with the handler's own writes; once closed, it takes no more deltas.
type chatStream struct {
	mu       sync.Mutex
	w        http.ResponseWriter
	rc       *http.ResponseController
	id       string
	created  int64
	model    string
	started  bool
	closed   bool
	failed   error // a write failed: the client has gone, or reads too slowly
	streamed strings.Builder
}

var errStreamEnded = errors.New("api: the chat stream has ended")

// onDelta is Complete's onDelta.
func (st *chatStream) onDelta(text string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.closed:
		return errStreamEnded
	case st.failed != nil:
		return st.failed
	case text == "":
		return nil
	}
	st.begin()
	st.content(text)
	return st.failed
}

// begin writes the headers and the first chunk, once.
func (st *chatStream) begin() {
	if st.started {
		return
	}
	st.started = true
	h := st.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies such as nginx: do not hold the events back
	st.w.WriteHeader(http.StatusOK)
	empty := ""
	st.chunk(openaiwire.Delta{Role: "assistant", Content: &empty}, nil)
}

func (st *chatStream) content(text string) {
	st.streamed.WriteString(text)
	st.chunk(openaiwire.Delta{Content: &text}, nil)
}

func (st *chatStream) chunk(d openaiwire.Delta, finish *string) {
	st.event(st.newChunk([]openaiwire.ChunkChoice{{Delta: d, FinishReason: finish}}))
}

// newChunk is a chunk of this stream with choices.
func (st *chatStream) newChunk(choices []openaiwire.ChunkChoice) openaiwire.Chunk {
	return openaiwire.Chunk{ID: st.id, Object: openaiwire.ObjectChunk, Created: st.created, Model: st.model, Choices: choices}
}

// event writes v as one event and flushes.
func (st *chatStream) event(v any) {
	b, err := openaiwire.MarshalEvent(v)
	if err != nil {
		st.failed = err
		return
	}
	st.write(b)
}

func (st *chatStream) write(b []byte) {
	if st.failed != nil {
		return
	}
	if err := armWrite(st.rc); err != nil {
		st.failed = err
		return
	}
	if _, err := st.w.Write(b); err != nil {
		st.failed = err
		return
	}
	if err := st.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		st.failed = err
	}
}

// streamChat answers a chat completion with "stream": true. The events begin
// with the first delta or the answer, so that an error before either is an
// ordinary error status; an error after is an error event that ends the
// stream.
//
// Every write has a deadline (armWrite), so that a client that stops
// reading stops the completion instead of holding its miners; the chunks
// of one completion are too few to need a queue of their own.
func streamChat(w http.ResponseWriter, r *http.Request, s Sessions, req CompletionRequest, opts chatOptions, created int64, m *metrics) {
	model := req.Model
	if model == "" {
		// The chunks come before the answer says which model gave it: when
		// the pool serves one model, that is the one.
		if served := s.Models(); len(served) == 1 {
			model = served[0]
		}
	}
	st := &chatStream{
		w: w, rc: http.NewResponseController(w),
		id: completionID(), created: created, model: model,
	}
	c, err := s.Complete(r.Context(), req, st.onDelta)
	st.mu.Lock()
	defer st.mu.Unlock()
	defer func() {
		if timedOut(st.failed) {
			m.streamsDropped.WithLabelValues(kindChat).Inc()
			return
		}
		// The connection may serve another request: without a deadline,
		// as net/http leaves it.
		_ = st.rc.SetWriteDeadline(time.Time{})
	}()
	st.closed = true
	if err != nil {
		if !st.started {
			writeErr(w, r, err)
			return
		}
		status, msg := errorStatus(err)
		if status == http.StatusInternalServerError {
			logf(r, "api: %s %s: %v", r.Method, r.URL.Path, err)
		}
		st.event(errorBody(status, msg))
		return
	}
	if c.Model != "" {
		st.model = c.Model
	}
	st.begin()
	// Without deltas (several miners answered) the answer is one chunk;
	// with them, whatever the answer adds to what was streamed.
	if rest, ok := strings.CutPrefix(c.Text, st.streamed.String()); ok && rest != "" {
		st.content(rest)
	}
	stop := "stop"
	eph := ephemeraOf(c)
	last := st.newChunk([]openaiwire.ChunkChoice{{FinishReason: &stop}})
	last.Ephemera = &eph
	st.event(last)
	if opts.includeUsage {
		u := usageOf(c)
		usage := st.newChunk([]openaiwire.ChunkChoice{})
		usage.Usage = &u
		st.event(usage)
	}
	st.write([]byte(openaiwire.DoneEvent))
}

// completionID is a chat completion's id, of one form whether streamed or
// not: the session and task that served it are in its ephemera block.
func completionID() string { return "chatcmpl-" + rand.Text() }
