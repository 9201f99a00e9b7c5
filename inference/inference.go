// Package inference is the interface between a miner and its inference
// engine, and the built-in deterministic engine that lets a testnet run
// without downloading a model.
package inference

import (
	"context"
	"errors"
	"math"
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
func Cosine(a, b []float32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		dot += x * y
		na += x * x
		nb += y * y
	}
	if na == 0 || nb == 0 {
		return 0
	}
	// One square root of the product, so that identical vectors give exactly
	// 1: a threshold of 1 must accept the same text.
	c := dot / math.Sqrt(na*nb)
	if math.IsNaN(c) || math.IsInf(c, 0) {
		return 0
	}
	// Rounding can push identical vectors a hair past 1.
	return max(-1, min(1, c))
}
