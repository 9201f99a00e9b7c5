package inference

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The decoders read whatever a server sends: no answer may make them panic,
// and what they return, text or error, must be what they promise.

// oneLineError fails unless err, when there is one, is a single line.
func oneLineError(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

func FuzzOpenAIChat(f *testing.F) {
	for _, s := range []string{
		`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"42"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`,
		`{"choices":[{"message":{"content":null}}],"usage":{"prompt_tokens":1e300,"completion_tokens":-1}}`,
		`{"choices":[]}`, `{"error":{"message":"bad\nthing"}}`, `{"object":"error","message":7}`, `null`, `[]`, ``, "\xff{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ans, err := decodeChat(data)
		oneLineError(t, err)
		if err == nil && (ans.promptTokens < 0 || ans.completionTokens < 0) {
			t.Fatalf("negative counts %+v", ans)
		}
	})
}

func FuzzOpenAIStream(f *testing.F) {
	for _, s := range []string{
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n" +
			"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n" +
			"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n" +
			"data: [DONE]\n\n",
		": ping\r\n\r\nevent: message\r\ndata:{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\ndata: [DONE]",
		"data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n\n",
		"error: {\"message\":\"boom\"}\n\n", "event: error\ndata: oops\n\n",
		"data: {\"error\":{\"message\":\"x\"}}\n\n", "data: {\ndata: \"choices\":[{}]}\n\ndata: [DONE]\n\n", "", "\n\n\n", "data",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var toks []string
		ans, err := readStream(bytes.NewReader(data), func(tok string) error {
			if tok == "" {
				t.Fatal("an empty token")
			}
			toks = append(toks, tok)
			return nil
		})
		oneLineError(t, err)
		if err == nil && ans.text != strings.Join(toks, "") {
			t.Fatalf("text %q, tokens %q", ans.text, toks)
		}
		// A failing callback stops the stream at its first token.
		stop := errors.New("stop")
		calls := 0
		if _, err := readStream(bytes.NewReader(data), func(string) error { calls++; return stop }); calls > 1 || (calls == 1 && !errors.Is(err, stop)) {
			t.Fatalf("%d calls, then %v", calls, err)
		}
	})
}

func FuzzOpenAIEmbeddings(f *testing.F) {
	for _, s := range []string{
		`{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.5,-1]},{"object":"embedding","index":0,"embedding":[1,2]}],"model":"m"}`,
		`{"data":[{"embedding":[1]},{"embedding":[2]}]}`, `{"data":[{"index":5,"embedding":[1]}]}`,
		`{"data":[{"index":0,"embedding":[1e39]}]}`, `{"error":"no"}`, `{"data":null}`, `x`,
	} {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		vecs, err := decodeEmbeddings(data, int(n))
		oneLineError(t, err)
		if err != nil {
			return
		}
		if len(vecs) != int(n) {
			t.Fatalf("%d vectors for %d texts", len(vecs), n)
		}
		for _, v := range vecs {
			if len(v) == 0 || len(v) != len(vecs[0]) {
				t.Fatalf("vector lengths differ or are 0: %v", vecs)
			}
		}
	})
}

func FuzzOpenAIErrorText(f *testing.F) {
	for _, s := range []string{
		`{"error":{"message":"model not found","type":"invalid_request_error"}}`, `{"error":"plain"}`,
		`{"object":"error","message":"vllm"}`, `{"detail":"Not Found"}`, "<html>\r\n<title>502</title>", "\x00\x1b[31mred\xff",
		strings.Repeat("é", 500),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg := errorText(data)
		if !utf8.ValidString(msg) || utf8.RuneCountInString(msg) > maxErrorRunes+1 {
			t.Fatalf("%q is not valid UTF-8 of at most %d runes", msg, maxErrorRunes)
		}
		if strings.IndexFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 || msg != strings.TrimSpace(msg) {
			t.Fatalf("%q has unprintable characters or spaces around it", msg)
		}
	})
}
