package inference

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzBuiltinGenerate: no prompt makes the engine panic or fail; the reply is
// never empty, is valid UTF-8 when the prompt is, and streams to the same text.
func FuzzBuiltinGenerate(f *testing.F) {
	for _, p := range []string{
		"What is 17 + 25?", "Compute 3 * (4 + 5)", "What is 1 / 0?", "What is 6 times 7?",
		"What is ((((((1))))))?", "What is 1e9999 * 2?", "What is 9999999999999999999999 / 7?",
		`Reverse the string "kqzvt".`, `Reverse the string "".`, `Convert to upper case: " "`, `Convert to upper case: "hello world"`,
		"Sort these numbers in ascending order, separated by commas: 42, 7, 19",
		"Sort these numbers in ascending order, separated by commas: 99999999999999999999, x",
		"What is the capital of France?", "What is the capital of Atlantis?",
		`In the JSON {"id":17,"name":"kiwi","price":3} what is the value of "name"?`,
		`In the JSON {"a":{"b":[1,2]}} what is the value of "a"?`, `In the JSON {"a":1,} what is the value of "a"?`,
		"Describe gravity in one sentence.", "", "   ", "\xff\xfe", "héllo wörld",
	} {
		f.Add(p)
	}
	b := NewBuiltin()
	f.Fuzz(func(t *testing.T, prompt string) {
		ctx := context.Background()
		req := GenerateRequest{Messages: []Message{{Role: "user", Content: prompt}}}
		resp, err := b.Generate(ctx, req)
		if err != nil {
			t.Fatalf("%q: %v", prompt, err)
		}
		if strings.TrimSpace(resp.Text) == "" || resp.CompletionTokens < 1 {
			t.Fatalf("%q: empty reply %+v", prompt, resp)
		}
		if utf8.ValidString(prompt) && !utf8.ValidString(resp.Text) {
			t.Fatalf("%q: reply is not UTF-8: %q", prompt, resp.Text)
		}
		var sb strings.Builder
		streamed, err := b.GenerateStream(ctx, req, func(tok string) error { sb.WriteString(tok); return nil })
		if err != nil || streamed != resp || sb.String() != resp.Text {
			t.Fatalf("%q: stream %+v (%q, %v) differs from %+v", prompt, streamed, sb.String(), err, resp)
		}
		if _, err := b.Embed(ctx, []string{prompt, resp.Text}); err != nil {
			t.Fatal(err)
		}
	})
}
