package openaiwire

import (
	"encoding/json"
	"testing"
)

func TestFailure(t *testing.T) {
	for _, c := range []struct {
		body   string
		msg    string
		failed bool
		code   int
	}{
		{`{"choices":[]}`, "", false, 0},
		{`{"error":null}`, "", false, 0},
		{`{"error":{"message":"busy","type":"rate_limit_error","code":429}}`, "busy", true, 429},
		{`{"error":{"message":"no model","code":"model_not_found"}}`, "no model", true, 0},
		{`{"error":"plain"}`, "plain", true, 0},
		{`{"error":{}}`, "", true, 0},
		{`{"object":"error","message":"out of KV cache","code":500}`, "out of KV cache", true, 0},
		{`{"object":"error","message":7}`, "", true, 0},
	} {
		var r Reply
		if err := json.Unmarshal([]byte(c.body), &r); err != nil {
			t.Fatal(err)
		}
		msg, failed := r.Failed()
		code, hasCode := r.Code()
		if msg != c.msg || failed != c.failed || code != c.code || hasCode != (c.code != 0) {
			t.Errorf("%s: %q %v, code %d %v", c.body, msg, failed, code, hasCode)
		}
	}
}

func TestTokenCount(t *testing.T) {
	var r Reply
	body := `{"choices":[{"message":{"content":null},"delta":{"content":"d"}}],"usage":{"prompt_tokens":1e300,"completion_tokens":-1}}`
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if r.Usage.PromptTokens != 1<<31-1 || r.Usage.CompletionTokens != 0 || r.Choices[0].Message.Content != nil || *r.Choices[0].Delta.Content != "d" {
		t.Errorf("%+v", r)
	}
	for _, s := range []string{`"many"`, `null`, `{}`, `2.5`} {
		var n TokenCount
		if err := json.Unmarshal([]byte(s), &n); err != nil || n != map[string]TokenCount{`2.5`: 2}[s] {
			t.Errorf("%s: %d %v", s, n, err)
		}
	}
}
