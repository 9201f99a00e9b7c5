package inference

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/challenge"
)

func ask(t testing.TB, b *Builtin, prompt string) string {
	t.Helper()
	resp, err := b.Generate(context.Background(), GenerateRequest{Messages: []Message{{Role: "user", Content: prompt}}})
	if err != nil {
		t.Fatalf("%q: %v", prompt, err)
	}
	return resp.Text
}

// TestBuiltinPassesDefaultBank: over 1000 seeds of every family of the
// default bank, the engine's answer passes, graded with its own embedder; a
// wrong answer fails and a tampered prompt is an error.
func TestBuiltinPassesDefaultBank(t *testing.T) {
	b := NewBuiltin()
	bank := challenge.Default()
	ctx := context.Background()
	for _, fc := range bank.Config().Families {
		for i := range uint64(1000) {
			seed := i*0x9e3779b97f4a7c15 + 12345
			task, err := bank.Generate(fc.Name, seed)
			if err != nil {
				t.Fatal(err)
			}
			ans := ask(t, b, task.Prompt)
			r, err := bank.Grade(ctx, task, ans, 10*time.Millisecond, b.Embed)
			if err != nil || !r.Pass {
				t.Fatalf("%s: %q answered %q: %+v %v", fc.Name, task.Prompt, ans, r, err)
			}
			r, err = bank.Grade(ctx, task, "banana", 10*time.Millisecond, b.Embed)
			if err != nil || r.Pass {
				t.Fatalf("%s: %q passed with banana: %+v %v", fc.Name, task.Prompt, r, err)
			}
			task.Prompt += " "
			if _, err := bank.Grade(ctx, task, ans, 10*time.Millisecond, b.Embed); err == nil {
				t.Fatalf("%s: tampered prompt %q graded", fc.Name, task.Prompt)
			}
		}
	}

	// And whole validations, as an oracle picks them.
	rng := rand.New(rand.NewPCG(11, 12))
	for range 200 {
		tasks := bank.Pick(rng, 5)
		answers := make([]string, len(tasks))
		for i, task := range tasks {
			answers[i] = ask(t, b, task.Prompt)
		}
		_, score, pass, err := bank.GradeAll(ctx, tasks, answers, make([]time.Duration, len(tasks)), b.Embed)
		if err != nil || !pass || score != 1 {
			t.Fatalf("validation %v: score %v pass %v err %v", tasks, score, pass, err)
		}
	}
}

func TestBuiltinArithmetic(t *testing.T) {
	b := NewBuiltin()
	cases := []struct{ prompt, want string }{
		{"What is 17 + 25?", "42"},
		{"Compute 3 * (4 + 5)", "27"},
		{"What is 6 times 7?", "42"},
		{"what's 50 minus 8", "42"},
		{"How much is 40 plus 2?", "42"},
		{"Calculate 6 x 7", "42"},
		{"What is 84 divided by 2?", "42"},
		{"What is 126 ÷ 3?", "42"},
		{"What is 6 × 7?", "42"},
		{"What is 6 multiplied by 7?", "42"},
		{"Evaluate: -(-2) * 21", "42"},
		{"What is 10 / 4?", "2.5"},
		{"What is 1 / 3?", "0.333333"},
		{"What is 2 / 3?", "0.666667"},
		{"What is 1 / 3 * 3?", "1"},
		{"What is 1 / 3000000000?", "0"},
		{"What is 0 - 1 / 3000000000?", "0"},
		{"What is 2 - 5?", "-3"},
		{"What is 1.5 * 4?", "6"},
		{"17 + 25 =", "42"},
		{"What is 999999999999999999999 * 10?", "9999999999999999999990"},
	}
	for _, c := range cases {
		if got := ask(t, b, c.prompt); got != c.want {
			t.Errorf("%q = %q, want %q", c.prompt, got, c.want)
		}
	}
	for _, p := range []string{"What is 1 / 0?", "Compute 5 / (3 - 3)", "What is 7 divided by 0?"} {
		got := ask(t, b, p)
		if !strings.Contains(got, "divide by zero") {
			t.Errorf("%q = %q, want a polite refusal", p, got)
		}
	}
	// Not arithmetic: the test-engine reply.
	for _, p := range []string{"What is 5?", "What is 3 4?", "What is (1 + 2?", "What is 1 +?", "What is 1..2 + 1?",
		"What is 2 multiplied 3?", "What is 2 divided byte 3?", "What is x?", "What is the time?"} {
		if got := ask(t, b, p); !strings.HasPrefix(got, "[ephemera builtin test engine]") {
			t.Errorf("%q = %q, want the test-engine reply", p, got)
		}
	}
}

func TestBuiltinFallback(t *testing.T) {
	b := NewBuiltin()
	got := ask(t, b, "  Tell me\na   joke ")
	if !strings.HasPrefix(got, "[ephemera builtin test engine]") || !strings.HasSuffix(got, "You said: Tell me a joke") {
		t.Errorf("fallback reply %q", got)
	}
	long := strings.Repeat("é", 200)
	got = ask(t, b, long)
	if !strings.HasSuffix(got, "You said: "+strings.Repeat("é", 80)+"...") {
		t.Errorf("long prompt not cut at 80 characters: %q", got)
	}
	resp, err := b.Generate(context.Background(), GenerateRequest{})
	if err != nil || !strings.HasSuffix(resp.Text, "You said nothing.") {
		t.Errorf("no messages: %q %v", resp.Text, err)
	}
	if got := ask(t, b, "What is 17 + 25?"); got == ask(t, b, "What is 17 + 26?") {
		t.Error("different prompts, same answer")
	}
}

func TestBuiltinRequest(t *testing.T) {
	b := NewBuiltin()
	ctx := context.Background()
	if b.Name() != "builtin" || len(b.Models()) != 1 || b.Models()[0] != BuiltinModel {
		t.Errorf("Name %q Models %v", b.Name(), b.Models())
	}

	_, err := b.Generate(ctx, GenerateRequest{Model: "gpt-9", Messages: []Message{{Role: "user", Content: "hi"}}})
	if !errors.Is(err, ErrUnknownModel) || !strings.Contains(err.Error(), "gpt-9") {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := b.GenerateStream(ctx, GenerateRequest{Model: "gpt-9"}, func(string) error { return nil }); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("unknown model, streaming: %v", err)
	}

	// The last user message is the one answered; tokens are words.
	req := GenerateRequest{Model: BuiltinModel, Messages: []Message{
		{Role: "system", Content: "You are a calculator."},
		{Role: "user", Content: "What is 1 + 1?"},
		{Role: "assistant", Content: "2"},
		{Role: "user", Content: "What is 2 + 2?"},
	}}
	resp, err := b.Generate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "4" || resp.Model != BuiltinModel || resp.PromptTokens != 4+5+1+5 || resp.CompletionTokens != 1 {
		t.Errorf("response %+v", resp)
	}

	// MaxTokens truncates; a negative one is an error.
	req = GenerateRequest{MaxTokens: 3, Messages: []Message{{Role: "user", Content: "hello there"}}}
	resp, err = b.Generate(ctx, req)
	if err != nil || resp.Text != "[ephemera builtin test" || resp.CompletionTokens != 3 {
		t.Errorf("max tokens 3: %+v %v", resp, err)
	}
	req.MaxTokens = -1
	if _, err := b.Generate(ctx, req); err == nil {
		t.Error("negative max tokens accepted")
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Generate(cancelled, req); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

func TestBuiltinStream(t *testing.T) {
	b := NewBuiltin()
	ctx := context.Background()
	for _, prompt := range []string{"hello there, engine", "What is 17 + 25?", "Describe gravity in one sentence.", ""} {
		req := GenerateRequest{Messages: []Message{{Role: "user", Content: prompt}}}
		var toks []string
		resp, err := b.GenerateStream(ctx, req, func(tok string) error { toks = append(toks, tok); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(toks, "") != resp.Text || len(toks) != resp.CompletionTokens {
			t.Errorf("%q: tokens %q do not make %q", prompt, toks, resp.Text)
		}
		if len(toks) > 1 && !strings.HasPrefix(toks[1], " ") {
			t.Errorf("%q: token %q does not keep its space", prompt, toks[1])
		}
		plain, _ := b.Generate(ctx, req)
		if plain != resp {
			t.Errorf("stream %+v differs from generate %+v", resp, plain)
		}
	}

	req := GenerateRequest{Messages: []Message{{Role: "user", Content: "a long enough prompt"}}}
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	_, err := b.GenerateStream(cctx, req, func(string) error {
		n++
		if n == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 2 {
		t.Errorf("cancel after 2 tokens: %d tokens, %v", n, err)
	}
	stop := errors.New("client gone")
	if _, err := b.GenerateStream(ctx, req, func(string) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("callback error: %v", err)
	}
	if _, err := b.GenerateStream(ctx, req, nil); err != nil {
		t.Errorf("nil callback: %v", err)
	}
}

func TestSplitTokens(t *testing.T) {
	cases := map[string][]string{
		"":             nil,
		"one":          {"one"},
		"a b":          {"a", " b"},
		"  a  b\n c  ": {"  a", "  b", "\n c  "},
		"   ":          {"   "},
		"x, y. z!":     {"x,", " y.", " z!"},
		"héllo wörld ": {"héllo", " wörld "},
	}
	for in, want := range cases {
		got := splitTokens(in)
		if strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
			t.Errorf("splitTokens(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEmbed(t *testing.T) {
	b := NewBuiltin()
	texts := []string{
		"The quick brown fox jumps over the lazy dog.",
		"The quick brown fox jumps over the lazy dog.",
		"A quick brown fox jumped over a lazy dog!",
		"Inflation reduces the purchasing power of money.",
		"",
		"THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
	}
	v, err := b.Embed(context.Background(), texts)
	if err != nil || len(v) != len(texts) {
		t.Fatalf("%d vectors, %v", len(v), err)
	}
	for i, x := range v {
		if len(x) != EmbedDims {
			t.Fatalf("vector %d has %d dims", i, len(x))
		}
	}
	if c := Cosine(v[0], v[1]); math.Abs(c-1) > 1e-12 {
		t.Errorf("identical texts: %v", c)
	}
	if c := Cosine(v[0], v[5]); math.Abs(c-1) > 1e-12 {
		t.Errorf("case should not matter: %v", c)
	}
	similar, unrelated := Cosine(v[0], v[2]), Cosine(v[0], v[3])
	if similar < 0.6 || unrelated > 0.3 || similar <= unrelated {
		t.Errorf("similar %.3f, unrelated %.3f", similar, unrelated)
	}
	if c := Cosine(v[0], v[4]); c != 0 {
		t.Errorf("empty text: %v", c)
	}
	var norm float64
	for _, x := range v[3] {
		norm += float64(x) * float64(x)
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("not normalised: |v|² = %v", norm)
	}
	// Deterministic across calls and engines.
	w, _ := NewBuiltin().Embed(context.Background(), texts[:1])
	for i := range w[0] {
		if w[0][i] != v[0][i] {
			t.Fatal("the same text embedded differently")
		}
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Embed(cancelled, texts); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled embed: %v", err)
	}
}

func TestCosine(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	cases := []struct {
		a, b []float32
		want float64
	}{
		{[]float32{1, 2, 3}, []float32{1, 2, 3}, 1},
		{[]float32{1, 2, 3}, []float32{2, 4, 6}, 1},
		{[]float32{1, 0}, []float32{0, 1}, 0},
		{[]float32{1, 0}, []float32{-1, 0}, -1},
		{[]float32{1, 0}, []float32{1, 0, 0}, 0},
		{nil, nil, 0},
		{[]float32{}, []float32{}, 0},
		{[]float32{0, 0}, []float32{0, 0}, 0},
		{[]float32{0, 0}, []float32{1, 0}, 0},
		{[]float32{nan, 1}, []float32{1, 1}, 0},
		{[]float32{inf, 1}, []float32{1, 1}, 0},
		{[]float32{1e-45, 0}, []float32{1e-45, 0}, 1}, // tiny but parallel
	}
	for _, c := range cases {
		if got := Cosine(c.a, c.b); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Cosine(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
	if got := Cosine([]float32{1, 1}, []float32{1, 0}); math.Abs(got-math.Sqrt2/2) > 1e-7 {
		t.Errorf("45 degrees: %v", got)
	}
}

func TestBuiltinConcurrent(t *testing.T) {
	b := NewBuiltin()
	bank := challenge.Default()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for _, task := range bank.Pick(rng, 100) {
				resp, err := b.Generate(context.Background(), GenerateRequest{Messages: []Message{{Role: "user", Content: task.Prompt}}})
				if err != nil {
					t.Error(err)
					return
				}
				if r, err := bank.Grade(context.Background(), task, resp.Text, 0, b.Embed); err != nil || !r.Pass {
					t.Errorf("%+v: %q %+v %v", task, resp.Text, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
