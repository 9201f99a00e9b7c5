package inference

import (
	"bufio"
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

// chatRequest is the body of POST /chat/completions.
type chatRequest struct {
	Model         string         `json:"model"`
	Messages      []Message      `json:"messages"`
	MaxTokens     int            `json:"max_tokens,omitempty"`
	Temperature   float64        `json:"temperature"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
}

// streamOptions asks for a last chunk with the token counts, which a stream
// otherwise leaves out.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// embeddingRequest is the body of POST /embeddings.
type embeddingRequest struct {
	Model string   `json:"model"`
	Input []string `json:"input"`
}

// Generate asks the server for one completion. The response names the
// configured model whatever the server calls it, so that answers are
// attributed to the model the miner announces.
func (o *OpenAI) Generate(ctx context.Context, req GenerateRequest) (GenerateResponse, error) {
	body, err := o.chatRequest(req, false)
	if err != nil {
		return GenerateResponse{}, err
	}
	resp, err := o.post(ctx, o.chatURL, body, false)
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
	body, err := o.chatRequest(req, true)
	if err != nil {
		return GenerateResponse{}, err
	}
	resp, err := o.post(ctx, o.chatURL, body, true)
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

func (o *OpenAI) chatRequest(req GenerateRequest, stream bool) (chatRequest, error) {
	if req.Model != "" && req.Model != o.model {
		return chatRequest{}, fmt.Errorf("openai backend: %w %q (it serves %q)", ErrUnknownModel, req.Model, o.model)
	}
	if req.MaxTokens < 0 {
		return chatRequest{}, fmt.Errorf("openai backend: max tokens %d, must be 0 (the server's default) or more", req.MaxTokens)
	}
	if t := req.Temperature; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return chatRequest{}, fmt.Errorf("openai backend: temperature %v, must be a finite number, 0 or more", t)
	}
	msgs := req.Messages
	if msgs == nil {
		msgs = []Message{} // [] rather than null: the server then says what is wrong
	}
	body := chatRequest{Model: o.model, Messages: msgs, MaxTokens: req.MaxTokens, Temperature: req.Temperature, Stream: stream}
	if stream {
		body.StreamOptions = &streamOptions{IncludeUsage: true}
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

// chatCompletion is the part of a chat.completion, or of one
// chat.completion.chunk of a stream, that the backend reads.
type chatCompletion struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     tokenCount `json:"prompt_tokens"`
		CompletionTokens tokenCount `json:"completion_tokens"`
	} `json:"usage"`
	// An answer can carry an error instead: {"error": {"message": ...}} as
	// OpenAI and llama.cpp write it, or {"object": "error", "message": ...}
	// as older vLLM does.
	Error   json.RawMessage `json:"error"`
	Object  string          `json:"object"`
	Message json.RawMessage `json:"message"`
}

// failure is the error message an answer carries, if it carries one.
func (c *chatCompletion) failure() (string, bool) {
	if len(c.Error) > 0 && string(c.Error) != "null" {
		if msg := errorMessage(c.Error); msg != "" {
			return msg, true
		}
		return "(no message)", true
	}
	if c.Object == "error" {
		if msg, ok := jsonString(c.Message); ok && msg != "" {
			return clip(msg, maxErrorRunes), true
		}
		return "(no message)", true
	}
	return "", false
}

// tokenCount is a usage count. The counts are informational, so one that is
// not a sensible number reads as 0 instead of failing the answer.
type tokenCount int

func (n *tokenCount) UnmarshalJSON(b []byte) error {
	var f float64
	if json.Unmarshal(b, &f) != nil || !(f >= 0) {
		*n = 0
		return nil
	}
	*n = tokenCount(min(f, math.MaxInt32))
	return nil
}

// decodeChat reads a non-streamed chat.completion.
func decodeChat(data []byte) (chatAnswer, error) {
	var c chatCompletion
	if err := json.Unmarshal(data, &c); err != nil {
		return chatAnswer{}, fmt.Errorf("bad JSON answer: %w (answer begins %q)", err, clip(string(data), maxQuoteRunes))
	}
	if msg, ok := c.failure(); ok {
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

// readStream reads a chat completion sent as Server-Sent Events, up to
// "data: [DONE]", calling onToken with each non-empty piece of text. Events
// are assembled as the SSE spec says: data lines joined until a blank line;
// comments, event names other than "error", ids and unknown fields are
// skipped. A stream that ends before [DONE] is an error: the answer may be
// cut short.
func readStream(r io.Reader, onToken func(string) error) (chatAnswer, error) {
	sc := bufio.NewScanner(r) // ScanLines takes \n and \r\n
	sc.Buffer(make([]byte, 0, 64<<10), maxAnswerBytes)
	var (
		ans      chatAnswer
		text     strings.Builder
		data     []string // the data lines of the event being read
		event    string   // its event name
		choices  bool     // whether any chunk had a choice
		finished bool     // whether [DONE] came
	)
	dispatch := func() error {
		payload, name := strings.Join(data, "\n"), event
		data, event = data[:0], ""
		if len(payload) == 0 {
			return nil
		}
		if strings.TrimSpace(payload) == "[DONE]" {
			finished = true
			return nil
		}
		if name == "error" {
			return fmt.Errorf("server error in stream: %s", orNoMessage(errorText([]byte(payload))))
		}
		var c chatCompletion
		if err := json.Unmarshal([]byte(payload), &c); err != nil {
			return fmt.Errorf("bad stream chunk: %w (chunk begins %q)", err, clip(payload, maxQuoteRunes))
		}
		if msg, ok := c.failure(); ok {
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
	for !finished && sc.Scan() {
		line := sc.Text()
		if line == "" {
			if err := dispatch(); err != nil {
				return chatAnswer{}, err
			}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "": // a comment, such as a keep-alive
		case "data":
			data = append(data, value)
		case "event":
			event = value
		case "error": // llama.cpp writes a failure as its own "error:" field
			return chatAnswer{}, fmt.Errorf("server error in stream: %s", orNoMessage(errorText([]byte(value))))
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) { // a line longer than an answer may be
			err = errAnswerTooLarge
		}
		return chatAnswer{}, fmt.Errorf("reading the stream: %w", err)
	}
	if !finished { // the last event may lack its blank line
		if err := dispatch(); err != nil {
			return chatAnswer{}, err
		}
	}
	switch {
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
	Error   json.RawMessage `json:"error"`
	Object  string          `json:"object"`
	Message json.RawMessage `json:"message"`
}

// decodeEmbeddings reads the vectors of n texts, put in order by each item's
// index (its position when it has none). All must be there, once each, and of
// one non-zero length.
func decodeEmbeddings(data []byte, n int) ([][]float32, error) {
	var l embeddingList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("bad JSON answer: %w (answer begins %q)", err, clip(string(data), maxQuoteRunes))
	}
	failure := chatCompletion{Error: l.Error, Object: l.Object, Message: l.Message}
	if msg, ok := failure.failure(); ok {
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
		Message json.RawMessage `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(data, &e) == nil {
		if msg := errorMessage(e.Error); msg != "" {
			return msg
		}
		for _, raw := range []json.RawMessage{e.Message, e.Detail} {
			if msg, ok := jsonString(raw); ok && strings.TrimSpace(msg) != "" {
				return clip(msg, maxErrorRunes)
			}
		}
	}
	return clip(string(data), maxErrorRunes)
}

// errorMessage is the text of an error value, {"message": ...} or a string,
// clipped; "" if it has none.
func errorMessage(raw json.RawMessage) string {
	if msg, ok := jsonString(raw); ok {
		return clip(msg, maxErrorRunes)
	}
	var obj struct {
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		if msg, ok := jsonString(obj.Message); ok {
			return clip(msg, maxErrorRunes)
		}
	}
	return ""
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func orNoMessage(msg string) string {
	if msg == "" {
		return "(no message)"
	}
	return msg
}

// clip makes s one printable line of at most n runes (and an ellipsis), so
// that a server's words cannot break a log line or fill it.
func clip(s string, n int) string {
	if len(s) > maxErrorBytes {
		s = s[:maxErrorBytes] // far more than n runes of text: spare the work on a huge answer
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) { // invalid UTF-8 reads as U+FFFD, which is printable
			return r
		}
		return ' ' // line breaks, tabs, control characters
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if rs := []rune(s); len(rs) > n {
		return string(rs[:n]) + "…"
	}
	return s
}
