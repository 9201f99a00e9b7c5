// Package openaiwire is OpenAI's chat completions format as Ephemera speaks
// it: the router's API serves it, a miner's openai backend asks an
// OpenAI-compatible server in it, and `ephemera submit --stream` reads it.
//
// A writer uses the exact shapes (Request, Completion, Chunk); a reader uses
// Reply, which takes only what it needs and tolerates how servers differ.
// How strictly a request is read is the server's own business.
package openaiwire

// Message is one message of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is the body of POST /chat/completions as a client sends it.
type Request struct {
	Model         string         `json:"model"`
	Messages      []Message      `json:"messages"`
	MaxTokens     int            `json:"max_tokens,omitempty"`
	Temperature   float64        `json:"temperature"`
	Stream        bool           `json:"stream"`
	StreamOptions *StreamOptions `json:"stream_options,omitempty"`
}

// StreamOptions asks for a last chunk with the token counts, which a stream
// otherwise leaves out.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// The objects of the answers.
const (
	ObjectCompletion = "chat.completion"
	ObjectChunk      = "chat.completion.chunk"
)

// Completion is a whole chat completion as a server writes it.
type Completion struct {
	ID       string   `json:"id"`
	Object   string   `json:"object"` // ObjectCompletion
	Created  int64    `json:"created"`
	Model    string   `json:"model"`
	Choices  []Choice `json:"choices"`
	Usage    Usage    `json:"usage"`
	Ephemera Ephemera `json:"ephemera"`
}

// Choice is one answer of a Completion.
type Choice struct {
	Index        int     `json:"index"`
	Message      Message `json:"message"`
	FinishReason string  `json:"finish_reason"`
}

// Usage counts a completion's tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Ephemera is the answer's non-standard part: who answered and how well
// they agreed.
type Ephemera struct {
	Session   string   `json:"session"`
	Task      string   `json:"task"`
	Miners    []string `json:"miners"`
	Agreement float64  `json:"agreement"`
}

// Chunk is one event of a streamed chat completion as a server writes it.
type Chunk struct {
	ID       string        `json:"id"`
	Object   string        `json:"object"` // ObjectChunk
	Created  int64         `json:"created"`
	Model    string        `json:"model"`
	Choices  []ChunkChoice `json:"choices"`
	Usage    *Usage        `json:"usage,omitempty"`
	Ephemera *Ephemera     `json:"ephemera,omitempty"`
}

// ChunkChoice is one answer's part of a Chunk.
type ChunkChoice struct {
	Index        int     `json:"index"`
	Delta        Delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

// Delta is what a chunk adds to an answer.
type Delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}
