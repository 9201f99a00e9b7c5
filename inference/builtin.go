package inference

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/ephemera-network/ephemera/challenge"
)

// BuiltinModel is the one model the built-in engine serves.
const BuiltinModel = "ephemera-builtin-1"

// echoRunes is how much of an unrecognised prompt the fallback reply repeats.
const echoRunes = 80

// Builtin is the embedded, deterministic test engine: it answers every task
// of the default challenge bank correctly, arithmetic in general, and
// anything else with a short reply saying what it is. A testnet runs on it
// without a model download. It keeps no mutable state, so it is safe for
// concurrent use.
type Builtin struct {
	bank *challenge.Bank // the default bank: its families and tables are what it answers
}

var _ Backend = (*Builtin)(nil)

// NewBuiltin returns the built-in engine.
func NewBuiltin() *Builtin {
	return &Builtin{bank: challenge.Default()}
}

// Name is "builtin".
func (b *Builtin) Name() string { return "builtin" }

// Models lists BuiltinModel.
func (b *Builtin) Models() []string { return []string{BuiltinModel} }

// Generate answers the last user message. Temperature is ignored: the engine
// is deterministic. MaxTokens, when positive, truncates the reply to that
// many word tokens.
func (b *Builtin) Generate(ctx context.Context, req GenerateRequest) (GenerateResponse, error) {
	resp, _, err := b.respond(ctx, req, false)
	return resp, err
}

// GenerateStream produces the same reply as Generate, one word token at a
// time (each token carries the spaces before it, so the tokens concatenate to
// the text), and stops when ctx is done or onToken fails.
func (b *Builtin) GenerateStream(ctx context.Context, req GenerateRequest, onToken func(string) error) (GenerateResponse, error) {
	resp, toks, err := b.respond(ctx, req, onToken != nil)
	if err != nil || onToken == nil {
		return resp, err
	}
	for _, t := range toks {
		if err := ctx.Err(); err != nil {
			return GenerateResponse{}, fmt.Errorf("builtin stream: %w", err)
		}
		if err := onToken(t); err != nil {
			return GenerateResponse{}, fmt.Errorf("builtin stream: token callback: %w", err)
		}
	}
	return resp, nil
}

// Embed returns the hashed n-gram vector of each text (see hashedEmbedding),
// EmbedDims long and L2-normalised; an empty text gives the zero vector.
func (b *Builtin) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("builtin embed: %w", err)
		}
		out[i] = hashedEmbedding(t)
	}
	return out, nil
}

func (b *Builtin) respond(ctx context.Context, req GenerateRequest, stream bool) (GenerateResponse, []string, error) {
	if err := ctx.Err(); err != nil {
		return GenerateResponse{}, nil, fmt.Errorf("builtin generate: %w", err)
	}
	if req.Model != "" && req.Model != BuiltinModel {
		return GenerateResponse{}, nil, fmt.Errorf("builtin generate: %w %q (it serves %q)", ErrUnknownModel, req.Model, BuiltinModel)
	}
	if req.MaxTokens < 0 {
		return GenerateResponse{}, nil, fmt.Errorf("builtin generate: max tokens %d, must be 0 (the default) or more", req.MaxTokens)
	}
	prompt, found := lastUserMessage(req.Messages)
	text := b.reply(prompt, found)
	n := countWords(text)
	// Only split into tokens when needed: Generate wants the count alone.
	var toks []string
	if stream || (req.MaxTokens > 0 && n > req.MaxTokens) {
		toks = splitTokens(text)
		if req.MaxTokens > 0 && len(toks) > req.MaxTokens {
			toks = toks[:req.MaxTokens]
			text = strings.Join(toks, "")
		}
		n = len(toks)
	}
	promptTokens := 0
	for _, m := range req.Messages {
		promptTokens += countWords(m.Content)
	}
	return GenerateResponse{
		Model:            BuiltinModel,
		Text:             text,
		PromptTokens:     promptTokens,
		CompletionTokens: n,
	}, toks, nil
}

// countWords is len(strings.Fields(s)) without the allocation.
func countWords(s string) int {
	n, inWord := 0, false
	for _, r := range s {
		space := unicode.IsSpace(r)
		if !space && !inWord {
			n++
		}
		inWord = !space
	}
	return n
}

func lastUserMessage(msgs []Message) (string, bool) {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return msgs[i].Content, true
		}
	}
	return "", false
}

// reply is the engine: a challenge-bank task first (the bank's own answerer
// knows its families and tables exactly), then arithmetic, then the
// test-engine reply.
func (b *Builtin) reply(prompt string, found bool) string {
	if ans, ok := b.bank.Answer(prompt); ok {
		if strings.TrimSpace(ans) == "" {
			// `Reverse the string "".`: say the empty string rather than
			// send an empty reply.
			return `""`
		}
		return ans
	}
	v, err := evalPrompt(prompt)
	switch {
	case err == nil:
		return v
	case errors.Is(err, errDivByZero):
		return "I can't divide by zero: that result is undefined."
	}
	const intro = "[ephemera builtin test engine] I can answer arithmetic (What is 17 + 25?), " +
		"string reversal, upper-casing, sorting numbers, capitals, JSON field values " +
		"and one-sentence descriptions of a few topics."
	said := strings.Join(strings.Fields(prompt), " ")
	if !found || said == "" {
		return intro + " You said nothing."
	}
	if rs := []rune(said); len(rs) > echoRunes {
		said = string(rs[:echoRunes]) + "..."
	}
	return intro + " You said: " + said
}

// splitTokens splits text into word tokens, each with the spaces before it;
// spaces at the end go with the last token, so the tokens concatenate to text.
func splitTokens(text string) []string {
	var toks []string
	start, prevSpace := 0, true
	for i, r := range text {
		space := unicode.IsSpace(r)
		if space && !prevSpace { // a word just ended: the next token starts here
			toks = append(toks, text[start:i])
			start = i
		}
		prevSpace = space
	}
	if rest := text[start:]; rest != "" {
		if len(toks) > 0 && !hasWord(rest) {
			toks[len(toks)-1] += rest
		} else {
			toks = append(toks, rest)
		}
	}
	return toks
}

func hasWord(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsSpace(r) }) >= 0
}
