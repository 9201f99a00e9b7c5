package testkit

import (
	"context"

	"github.com/ephemera-network/ephemera/inference"
)

// Engine is an inference backend that runs Before, when set, ahead of every
// generation and fails with its error: a test's engine that stalls, waits
// for the test or breaks, and otherwise answers as Backend does.
type Engine struct {
	inference.Backend
	Before func(ctx context.Context, req inference.GenerateRequest) error
}

// Builtin is an Engine on the built-in backend that runs before ahead of
// every generation.
func Builtin(before func(ctx context.Context, req inference.GenerateRequest) error) *Engine {
	return &Engine{Backend: inference.NewBuiltin(), Before: before}
}

func (e *Engine) Generate(ctx context.Context, req inference.GenerateRequest) (inference.GenerateResponse, error) {
	if err := e.before(ctx, req); err != nil {
		return inference.GenerateResponse{}, err
	}
	return e.Backend.Generate(ctx, req)
}

func (e *Engine) GenerateStream(ctx context.Context, req inference.GenerateRequest, onToken func(string) error) (inference.GenerateResponse, error) {
	if err := e.before(ctx, req); err != nil {
		return inference.GenerateResponse{}, err
	}
	return e.Backend.GenerateStream(ctx, req, onToken)
}

func (e *Engine) before(ctx context.Context, req inference.GenerateRequest) error {
	if e.Before == nil {
		return nil
	}
	return e.Before(ctx, req)
}
