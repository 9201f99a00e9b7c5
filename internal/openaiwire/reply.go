package openaiwire

import (
	"encoding/json"
	"math"
)

// Reply is what a client reads of a chat completion, or of one chunk of a
// stream, whichever server wrote it: the text, the token counts and a
// failure. It reads no more than that, so that a server's other members,
// however odd, do not fail the answer.
type Reply struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     TokenCount `json:"prompt_tokens"`
		CompletionTokens TokenCount `json:"completion_tokens"`
	} `json:"usage"`
	Failure
}

// TokenCount is a usage count as a client reads it. The counts are
// informational, so one that is not a sensible number reads as 0 instead
// of failing the answer.
type TokenCount int

// UnmarshalJSON reads a count, and anything else as 0.
func (n *TokenCount) UnmarshalJSON(b []byte) error {
	var f float64
	if json.Unmarshal(b, &f) != nil || !(f >= 0) {
		*n = 0
		return nil
	}
	*n = TokenCount(min(f, math.MaxInt32))
	return nil
}

// Failure holds the members by which an answer says it failed instead:
// {"error": {"message": ..., "code": ...}} as OpenAI, llama.cpp and
// Ephemera write it, or {"object": "error", "message": ...} as older vLLM
// does. A reader embeds it in the shape it reads.
type Failure struct {
	Error   json.RawMessage `json:"error"`
	Object  string          `json:"object"`
	Message json.RawMessage `json:"message"`
}

// Failed says whether the answer is a failure, and its message as the
// server wrote it: not clipped, and "" when it gave none.
func (f *Failure) Failed() (msg string, failed bool) {
	if len(f.Error) > 0 && string(f.Error) != "null" {
		return ErrorMessage(f.Error), true
	}
	if f.Object == "error" {
		msg, _ := jsonString(f.Message)
		return msg, true
	}
	return "", false
}

// Code is the failure's numeric error.code, which Ephemera's API sets to
// the HTTP status; false when it has none.
func (f *Failure) Code() (int, bool) {
	var e struct {
		Code any `json:"code"`
	}
	if len(f.Error) == 0 || json.Unmarshal(f.Error, &e) != nil {
		return 0, false
	}
	code, ok := e.Code.(float64)
	return int(code), ok
}

// ErrorMessage is the text of an error value, {"message": ...} or a
// string, not clipped; "" if it has none.
func ErrorMessage(raw json.RawMessage) string {
	if msg, ok := jsonString(raw); ok {
		return msg
	}
	var obj struct {
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		if msg, ok := jsonString(obj.Message); ok {
			return msg
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
