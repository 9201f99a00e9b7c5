package inference

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/challenge"
)

// benchPrompts is what a miner's engine sees during validation: tasks of
// every family of the default bank, plus arithmetic and a chat message.
func benchPrompts() []string {
	var ps []string
	for _, task := range challenge.Default().Pick(rand.New(rand.NewPCG(1, 1)), 62) {
		ps = append(ps, task.Prompt)
	}
	return append(ps, "Compute 3 * (4 + 5)", "Hello, who are you and what can you do?")
}

// BenchmarkBuiltinGenerate is the cost of one reply from the built-in engine.
func BenchmarkBuiltinGenerate(b *testing.B) {
	e := NewBuiltin()
	ctx := context.Background()
	prompts := benchPrompts()
	reqs := make([]GenerateRequest, len(prompts))
	for i, p := range prompts {
		reqs[i] = GenerateRequest{Messages: []Message{{Role: "user", Content: p}}}
	}
	i := 0
	for b.Loop() {
		if _, err := e.Generate(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkBuiltinGenerateBaseline is the floor: splitting the same prompts
// into words, the least any engine does to read them.
func BenchmarkBuiltinGenerateBaseline(b *testing.B) {
	prompts := benchPrompts()
	i, n := 0, 0
	for b.Loop() {
		n += len(strings.Fields(prompts[i%len(prompts)]))
		i++
	}
	if n == 0 {
		b.Fatal("no words")
	}
}
