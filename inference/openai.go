package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/ephemera-network/ephemera/internal/openaiwire"
)

// DefaultOpenAITimeout bounds one request when OpenAIConfig.Timeout is zero:
// room for a slow CPU model to write a few hundred tokens.
const DefaultOpenAITimeout = 120 * time.Second

const (
	// maxAnswerBytes bounds what is read of one answer, streamed or not, so
	// that a broken or hostile server cannot exhaust the miner's memory.
	maxAnswerBytes = 16 << 20
	// maxErrorBytes is how much of a failure answer is read for its message.
	maxErrorBytes = 64 << 10
	// maxErrorRunes is how much of the server's own words an error repeats.
	maxErrorRunes = 200
	// maxQuoteRunes is how much of an unreadable answer an error quotes.
	maxQuoteRunes = 60
)

// OpenAIConfig points the openai backend at an OpenAI-compatible server:
// llama.cpp's llama-server, Ollama, vLLM, or OpenAI itself.
type OpenAIConfig struct {
	// BaseURL is the API root that /chat/completions and /embeddings hang
	// off, as the servers print it: http://127.0.0.1:8080/v1. A bare host
	// (http://127.0.0.1:8080, with or without the last slash) means its /v1,
	// where all of those servers answer; any other path is kept as given
	// (a proxy's https://example.com/api/v1).
	BaseURL string
	// APIKey, when set, is sent as "Authorization: Bearer <key>". Local
	// servers need none.
	APIKey string
	// Model is the one model this backend serves and asks the server for.
	Model string
	// EmbeddingModel is asked for embeddings; "" means Model.
	EmbeddingModel string
	// Timeout bounds one whole request, a stream included; 0 means
	// DefaultOpenAITimeout.
	Timeout time.Duration
}

// OpenAI is a client of an OpenAI-compatible server. Its fields are set once
// by NewOpenAI and the http.Client is safe for concurrent use, so it is too.
type OpenAI struct {
	chatURL    string
	embedURL   string
	apiKey     string
	model      string
	embedModel string
	client     *http.Client
}

var _ Backend = (*OpenAI)(nil)

// NewOpenAI checks cfg and returns a client; it does not contact the server,
// so a node starts even while its inference server is still loading.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	base, err := apiBase(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("openai backend: %w", err)
	}
	if strings.TrimSpace(cfg.Model) == "" {
		return nil, errors.New("openai backend: Model is empty; name the model the server serves (e.g. llama3.2)")
	}
	if cfg.Model != strings.TrimSpace(cfg.Model) {
		return nil, fmt.Errorf("openai backend: Model %q has spaces around it", cfg.Model)
	}
	if cfg.EmbeddingModel != strings.TrimSpace(cfg.EmbeddingModel) {
		return nil, fmt.Errorf("openai backend: EmbeddingModel %q has spaces around it", cfg.EmbeddingModel)
	}
	// The key is never repeated in an error: errors end up in logs.
	if strings.TrimSpace(cfg.APIKey) != cfg.APIKey {
		return nil, errors.New("openai backend: APIKey has spaces or a line break around it")
	}
	if strings.IndexFunc(cfg.APIKey, unicode.IsControl) >= 0 {
		return nil, errors.New("openai backend: APIKey has a control character in it")
	}
	timeout := cfg.Timeout
	switch {
	case timeout < 0:
		return nil, fmt.Errorf("openai backend: Timeout %v is negative; 0 means the default %v", timeout, DefaultOpenAITimeout)
	case timeout == 0:
		timeout = DefaultOpenAITimeout
	}
	embedModel := cfg.EmbeddingModel
	if embedModel == "" {
		embedModel = cfg.Model
	}
	return &OpenAI{
		chatURL:    base + "/chat/completions",
		embedURL:   base + "/embeddings",
		apiKey:     cfg.APIKey,
		model:      cfg.Model,
		embedModel: embedModel,
		client:     &http.Client{Timeout: timeout, Transport: newTransport()},
	}, nil
}

// apiBase checks and normalises OpenAIConfig.BaseURL (see there).
func apiBase(raw string) (string, error) {
	const want = "want an absolute http:// or https:// URL such as http://127.0.0.1:8080/v1"
	if raw == "" {
		return "", errors.New("BaseURL is empty; " + want)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("BaseURL %q: %v; %s", raw, err, want)
	}
	if u.User != nil { // not echoed: it may hold a password
		return "", errors.New("BaseURL has a user name or password in it; put a key in APIKey instead")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("BaseURL %q: %s", raw, want)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("BaseURL %q has a query or fragment; want only scheme, host and path", raw)
	}
	path := strings.TrimRight(u.EscapedPath(), "/")
	if strings.HasSuffix(path, "/chat/completions") || strings.HasSuffix(path, "/embeddings") {
		return "", fmt.Errorf("BaseURL %q is an endpoint; give the base it hangs off (e.g. http://127.0.0.1:8080/v1)", raw)
	}
	if path == "" {
		path = "/v1"
	}
	return scheme + "://" + u.Host + path, nil
}

// newTransport is the default transport with more idle connections kept per
// host: a miner sends its one server many requests at once.
func newTransport() http.RoundTripper {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = 32
	return t
}

// Name is "openai".
func (o *OpenAI) Name() string { return "openai" }

// Models lists the configured model.
func (o *OpenAI) Models() []string { return []string{o.model} }

// embeddingRequest is the body of POST /embeddings.
type embeddingRequest struct {
	Model string   `json:"model"`
	Input []string `json:"input"`
}

// Generate asks the server for one completion. The response names the
// configured model whatever the server calls it, so that answers are
// attributed to the model the miner announces.
func (o *OpenAI) Generate(ctx context.Context, req GenerateRequest) (GenerateResponse, error) {
	resp, err := o.postChat(ctx, req, false)
	if err != nil {
		return GenerateResponse{}, err
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp.Body)
	if err != nil {
		return GenerateResponse{}, o.failed(ctx, o.chatURL, err)
	}
	ans, err := decodeChat(data)
	if err != nil {
		return GenerateResponse{}, o.failed(ctx, o.chatURL, err)
	}
	return o.response(ans), nil
}

// GenerateStream asks for a streamed completion and calls onToken (when not
// nil) with each piece of text as the server sends it. An error from onToken
// ends the request and is returned wrapped. A server that ignores "stream"
// and answers with one JSON completion is accepted: its text is one token.
func (o *OpenAI) GenerateStream(ctx context.Context, req GenerateRequest, onToken func(string) error) (GenerateResponse, error) {
	resp, err := o.postChat(ctx, req, true)
	if err != nil {
		return GenerateResponse{}, err
	}
	defer resp.Body.Close() // unread: closing drops the connection, which stops the generation

	var callbackErr error
	emit := func(tok string) error {
		if onToken == nil {
			return nil
		}
		if err := onToken(tok); err != nil {
			callbackErr = err
			return err
		}
		return nil
	}
	var ans chatAnswer
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		var data []byte
		if data, err = readAnswer(resp.Body); err == nil {
			if ans, err = decodeChat(data); err == nil && ans.text != "" {
				err = emit(ans.text)
			}
		}
	} else {
		ans, err = readStream(&cappedReader{r: resp.Body, left: maxAnswerBytes}, emit)
	}
	if callbackErr != nil {
		return GenerateResponse{}, fmt.Errorf("openai backend: token callback: %w", callbackErr)
	}
	if err != nil {
		return GenerateResponse{}, o.failed(ctx, o.chatURL, err)
	}
	return o.response(ans), nil
}

// Embed asks the server for the vectors of texts, in the order of texts. An
// empty text gets the zero vector without being sent, as with the built-in
// engine (servers refuse empty input); if every text is empty, no request is
// made and the vectors are empty.
func (o *OpenAI) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	var input []string
	for _, t := range texts {
		if t != "" {
			input = append(input, t)
		}
	}
	out := make([][]float32, len(texts))
	if len(input) == 0 {
		for i := range out {
			out[i] = []float32{}
		}
		return out, nil
	}
	resp, err := o.post(ctx, o.embedURL, embeddingRequest{Model: o.embedModel, Input: input}, false)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp.Body)
	if err != nil {
		return nil, o.failed(ctx, o.embedURL, err)
	}
	vecs, err := decodeEmbeddings(data, len(input))
	if err != nil {
		return nil, o.failed(ctx, o.embedURL, err)
	}
	dims := len(vecs[0])
	for i, t := range texts {
		if t == "" {
			out[i] = make([]float32, dims)
		} else {
			out[i], vecs = vecs[0], vecs[1:]
		}
	}
	return out, nil
}

func (o *OpenAI) chatRequest(req GenerateRequest, stream bool) (openaiwire.Request, error) {
	if req.Model != "" && req.Model != o.model {
		return openaiwire.Request{}, fmt.Errorf("openai backend: %w %q (it serves %q)", ErrUnknownModel, req.Model, o.model)
	}
	if req.MaxTokens < 0 {
		return openaiwire.Request{}, fmt.Errorf("openai backend: max tokens %d, must be 0 (the server's default) or more", req.MaxTokens)
	}
	if t := req.Temperature; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return openaiwire.Request{}, fmt.Errorf("openai backend: temperature %v, must be a finite number, 0 or more", t)
	}
	msgs := make([]openaiwire.Message, len(req.Messages)) // [] rather than null: the server then says what is wrong
	for i, m := range req.Messages {
		msgs[i] = openaiwire.Message(m)
	}
	body := openaiwire.Request{Model: o.model, Messages: msgs, MaxTokens: req.MaxTokens, Temperature: req.Temperature, Stream: stream}
	if stream {
		body.StreamOptions = &openaiwire.StreamOptions{IncludeUsage: true}
	}
	return body, nil
}

func (o *OpenAI) response(ans chatAnswer) GenerateResponse {
	return GenerateResponse{
		Model:            o.model,
		Text:             ans.text,
		PromptTokens:     ans.promptTokens,
		CompletionTokens: ans.completionTokens,
	}
}

// post sends body as JSON to endpoint and returns the response if its status
// is 2xx; the caller closes its body. Any other status is an error carrying
// the server's message.
// postChat checks req and sends it to the chat endpoint.
func (o *OpenAI) postChat(ctx context.Context, req GenerateRequest, stream bool) (*http.Response, error) {
	body, err := o.chatRequest(req, stream)
	if err != nil {
		return nil, err
	}
	return o.post(ctx, o.chatURL, body, stream)
}

func (o *OpenAI) post(ctx context.Context, endpoint string, body any, stream bool) (*http.Response, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, o.failed(ctx, endpoint, fmt.Errorf("encoding the request: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		return nil, o.failed(ctx, endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if o.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.apiKey)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, o.failed(ctx, endpoint, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp, nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes)) // what arrived is enough for a message
	resp.Body.Close()
	status := fmt.Sprint(resp.StatusCode)
	if text := http.StatusText(resp.StatusCode); text != "" {
		status += " " + text
	}
	if msg := errorText(data); msg != "" {
		status += ": " + msg
	}
	return nil, o.failed(ctx, endpoint, errors.New(status))
}

// requestError says in one line which request failed and why, and keeps the
// cause in the chain, so that errors.Is finds context.DeadlineExceeded or
// syscall.ECONNREFUSED and errors.As finds the *url.Error.
type requestError struct {
	msg string
	err error
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.err }

// failed words err as the failure of POST endpoint. A *url.Error is said by
// its cause alone, because the message names the URL already; running out of
// the client's Timeout (not the caller's deadline) says how long that was.
func (o *OpenAI) failed(ctx context.Context, endpoint string, err error) error {
	cause := err
	if ue, ok := err.(*url.Error); ok {
		cause = ue.Err
	}
	msg := "openai backend: POST " + endpoint + ": "
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		msg += fmt.Sprintf("timed out after %v: ", o.client.Timeout)
	}
	return &requestError{msg: msg + cause.Error(), err: err}
}

// errAnswerTooLarge ends a read past maxAnswerBytes.
var errAnswerTooLarge = fmt.Errorf("answer larger than %d MiB", maxAnswerBytes>>20)

// cappedReader fails, rather than stops short, past its limit: a cut answer
// must not pass for a whole one.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, errAnswerTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1] // one byte past the limit tells "too large" from "exactly full"
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n - 1, errAnswerTooLarge
	}
	return n, err
}

// readAnswer reads a whole (non-streamed) answer of at most maxAnswerBytes.
func readAnswer(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(&cappedReader{r: r, left: maxAnswerBytes})
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	return data, nil
}

// chatAnswer is what the backend takes from a completion, streamed or not.
type chatAnswer struct {
	text             string
	promptTokens     int
	completionTokens int
}

// failure is the message of an answer that says it failed, one clipped
// line, if it does.
func failure(f *openaiwire.Failure) (string, bool) {
	msg, failed := f.Failed()
	return orNoMessage(openaiwire.Clip(msg, maxErrorRunes)), failed
}

// decodeChat reads a non-streamed chat.completion.
func decodeChat(data []byte) (chatAnswer, error) {
	var c openaiwire.Reply
	if err := json.Unmarshal(data, &c); err != nil {
		return chatAnswer{}, fmt.Errorf("bad JSON answer: %w (answer begins %q)", err, openaiwire.Clip(string(data), maxQuoteRunes))
	}
	if msg, ok := failure(&c.Failure); ok {
		return chatAnswer{}, fmt.Errorf("server error: %s", msg)
	}
	if len(c.Choices) == 0 {
		return chatAnswer{}, errors.New("answer has no choices")
	}
	var ans chatAnswer
	if content := c.Choices[0].Message.Content; content != nil {
		ans.text = *content
	}
	if c.Usage != nil {
		ans.promptTokens, ans.completionTokens = int(c.Usage.PromptTokens), int(c.Usage.CompletionTokens)
	}
	return ans, nil
}

// readStream reads a chat completion sent as server-sent events, up to
// "data: [DONE]", calling onToken with each non-empty piece of text. An
// event named "error", and llama.cpp's own "error" field, say the server
// failed. A stream that ends before [DONE] is an error: the answer may be
// cut short; its last event is read even without the blank line that
// should end it.
func readStream(r io.Reader, onToken func(string) error) (chatAnswer, error) {
	var (
		ans      chatAnswer
		text     strings.Builder
		choices  bool  // whether any chunk had a choice
		finished bool  // whether [DONE] came
		failed   error // what ended the stream, other than reading it
	)
	event := func(ev openaiwire.Event) error {
		switch {
		case ev.ErrorLine:
			return fmt.Errorf("server error in stream: %s", orNoMessage(errorText([]byte(ev.Data))))
		case ev.Data == "":
			return nil
		case openaiwire.IsDone(ev.Data):
			finished = true
			return nil
		case ev.Name == "error":
			return fmt.Errorf("server error in stream: %s", orNoMessage(errorText([]byte(ev.Data))))
		}
		var c openaiwire.Reply
		if err := json.Unmarshal([]byte(ev.Data), &c); err != nil {
			return fmt.Errorf("bad stream chunk: %w (chunk begins %q)", err, openaiwire.Clip(ev.Data, maxQuoteRunes))
		}
		if msg, ok := failure(&c.Failure); ok {
			return fmt.Errorf("server error in stream: %s", msg)
		}
		if c.Usage != nil { // the last chunk when include_usage is asked for
			ans.promptTokens, ans.completionTokens = int(c.Usage.PromptTokens), int(c.Usage.CompletionTokens)
		}
		if len(c.Choices) == 0 {
			return nil
		}
		choices = true
		if d := c.Choices[0].Delta.Content; d != nil && *d != "" {
			text.WriteString(*d)
			return onToken(*d)
		}
		return nil
	}
	_, err := openaiwire.ReadEvents(r, maxAnswerBytes, func(ev openaiwire.Event) (bool, error) {
		failed = event(ev)
		return finished, failed
	})
	switch {
	case failed != nil:
		return chatAnswer{}, failed
	case errors.Is(err, openaiwire.ErrTooLarge): // a line longer than an answer may be
		return chatAnswer{}, fmt.Errorf("reading the stream: %w", errAnswerTooLarge)
	case err != nil:
		return chatAnswer{}, fmt.Errorf("reading the stream: %w", err)
	case !finished:
		return chatAnswer{}, errors.New("stream ended before data: [DONE]")
	case !choices:
		return chatAnswer{}, errors.New("stream had no choices")
	}
	ans.text = text.String()
	return ans, nil
}

// embeddingList is the part of a /embeddings answer the backend reads.
type embeddingList struct {
	Data []struct {
		Index     *int      `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
	openaiwire.Failure
}

// decodeEmbeddings reads the vectors of n texts, put in order by each item's
// index (its position when it has none). All must be there, once each, and of
// one non-zero length.
func decodeEmbeddings(data []byte, n int) ([][]float32, error) {
	var l embeddingList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("bad JSON answer: %w (answer begins %q)", err, openaiwire.Clip(string(data), maxQuoteRunes))
	}
	if msg, ok := failure(&l.Failure); ok {
		return nil, fmt.Errorf("server error: %s", msg)
	}
	if len(l.Data) != n {
		return nil, fmt.Errorf("answer has %d embeddings for %d texts", len(l.Data), n)
	}
	out := make([][]float32, n)
	for pos, item := range l.Data {
		i := pos
		if item.Index != nil {
			i = *item.Index
		}
		switch {
		case i < 0 || i >= n:
			return nil, fmt.Errorf("embedding index %d out of range for %d texts", i, n)
		case out[i] != nil:
			return nil, fmt.Errorf("embedding index %d given twice", i)
		case len(item.Embedding) == 0:
			return nil, fmt.Errorf("embedding %d is empty", i)
		case len(item.Embedding) != len(l.Data[0].Embedding):
			return nil, fmt.Errorf("embedding %d has %d dimensions, another %d", i, len(item.Embedding), len(l.Data[0].Embedding))
		}
		out[i] = item.Embedding
	}
	return out, nil
}

// errorText is the message of a failure answer, one line of at most
// maxErrorRunes runes: error.message (OpenAI, llama.cpp, Ollama, vLLM), an
// error or message or detail string (other servers), else the answer's own
// text, as a proxy's HTML page is.
func errorText(data []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message any             `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(data, &e) == nil {
		if msg := openaiwire.Clip(openaiwire.ErrorMessage(e.Error), maxErrorRunes); msg != "" {
			return msg
		}
		for _, v := range []any{e.Message, e.Detail} {
			if msg, ok := v.(string); ok && strings.TrimSpace(msg) != "" {
				return openaiwire.Clip(msg, maxErrorRunes)
			}
		}
	}
	return openaiwire.Clip(string(data), maxErrorRunes)
}

func orNoMessage(msg string) string {
	if msg == "" {
		return "(no message)"
	}
	return msg
}
