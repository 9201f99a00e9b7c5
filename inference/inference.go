// Package inference is the interface between a miner and its inference
// engine, and the built-in deterministic engine that lets a testnet run
// without downloading a model.
package inference

import (
	"context"
	"errors"
	"github.com/ephemera-network/ephemera/internal/vector"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// GenerateRequest asks for one chat completion.
type GenerateRequest struct {
	Model       string // "" means the backend's default model
	Messages    []Message
	MaxTokens   int // 0 = backend default
	Temperature float64
}

// GenerateResponse is a completed generation.
type GenerateResponse struct {
	Model            string
	Text             string
	PromptTokens     int
	CompletionTokens int
}

// Backend is an inference engine. Implementations must be safe for concurrent use.
type Backend interface {
	Name() string     // "builtin", later "openai"
	Models() []string // models it serves
	Generate(ctx context.Context, req GenerateRequest) (GenerateResponse, error)
	// GenerateStream calls onToken for each token/chunk as produced, then returns the full response.
	GenerateStream(ctx context.Context, req GenerateRequest, onToken func(string) error) (GenerateResponse, error)
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}

// ErrUnknownModel is returned, wrapped with the model's name, for a model the
// backend does not serve.
var ErrUnknownModel = errors.New("unknown model")

// Cosine is the cosine similarity of a and b in [-1, 1]; 0 for vectors of
// different lengths, zero vectors, or values that are not finite.
func Cosine(a, b []float32) float64 { return vector.Cosine(a, b) }
