package api

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Sessions is a router's session manager as the API sees it.
type Sessions interface {
	CreateSession(ctx context.Context, req SessionRequest) (SessionDetail, error)
	ListSessions() []Session
	Session(id string) (SessionDetail, error)
	EndSession(ctx context.Context, id string) (SessionDetail, error)
	SubmitTask(ctx context.Context, session string, req TaskRequest) (Task, error)
	// Task returns a task; with wait > 0 it first waits up to wait for the task to finish.
	Task(ctx context.Context, session, task string, wait time.Duration) (Task, error)
	// Complete runs a one-task session. onDelta, when not nil, receives the answer as it is produced.
	Complete(ctx context.Context, req CompletionRequest, onDelta func(string) error) (Completion, error)
	Models() []string
}

// SessionRequest is the body of POST /v1/sessions. Zero fields take the
// network's defaults.
type SessionRequest struct {
	Model         string `json:"model,omitempty"`
	MinNodes      int    `json:"min_nodes,omitempty"`
	MaxNodes      int    `json:"max_nodes,omitempty"`
	Redundancy    int    `json:"redundancy,omitempty"`
	ReservePeriod string `json:"reserve_period,omitempty"` // Go duration, "10m"
	MaxTasks      int    `json:"max_tasks,omitempty"`
	TaskTimeout   string `json:"task_timeout,omitempty"` // Go duration, "60s"
}

// Message is one message of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// TaskRequest is the body of POST /v1/sessions/{id}/tasks.
type TaskRequest struct {
	Prompt    string    `json:"prompt,omitempty"` // shorthand for one user message
	Messages  []Message `json:"messages,omitempty"`
	MaxTokens int       `json:"max_tokens,omitempty"`
}

// CompletionRequest is a chat completion as the API passes it to Complete.
type CompletionRequest struct {
	Model      string
	Messages   []Message
	MaxTokens  int
	Redundancy int // 0 → 1; from the request's non-standard "redundancy" field
	Stream     bool
	// Client is the API client the request came from, by its token; ""
	// where no token is used. Its completions in flight are bounded.
	Client string
}

// Completion is the answer of Complete.
type Completion struct {
	Task             string // the task's id within its session
	Model            string
	Text             string
	PromptTokens     int
	CompletionTokens int
	Session          string
	Miners           []string
	Agreement        float64
}

// MaxTaskWait bounds the wait of GET /v1/sessions/{id}/tasks/{task}?wait=.
const MaxTaskWait = 5 * time.Minute

// Periods parses ReservePeriod and TaskTimeout. An empty one is 0, the
// network's default; one that is not a positive Go duration is an error
// wrapping ErrBadRequest that names the field.
func (r SessionRequest) Periods() (reservePeriod, taskTimeout time.Duration, err error) {
	if reservePeriod, err = positiveDuration("reserve_period", r.ReservePeriod, "10m"); err != nil {
		return 0, 0, err
	}
	if taskTimeout, err = positiveDuration("task_timeout", r.TaskTimeout, "60s"); err != nil {
		return 0, 0, err
	}
	return reservePeriod, taskTimeout, nil
}

func positiveDuration(field, s, example string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, badRequest("%s: %q is not a positive duration such as %s; leave it out for the network's default", field, s, example)
	}
	return d, nil
}

// check finds what the API can tell of a session request without the
// manager: negative numbers and bad durations. Ranges are the manager's.
func (r SessionRequest) check() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"min_nodes", r.MinNodes}, {"max_nodes", r.MaxNodes}, {"redundancy", r.Redundancy}, {"max_tasks", r.MaxTasks}} {
		if f.v < 0 {
			return badRequest("%s: %d is negative; leave it out for the network's default", f.name, f.v)
		}
	}
	_, _, err := r.Periods()
	return err
}

// normalize checks a task request and turns a prompt into its one user
// message, so that the manager sees Messages only.
func (t TaskRequest) normalize() (TaskRequest, error) {
	switch {
	case t.Prompt != "" && t.Messages != nil:
		return t, badRequest("give either prompt or messages, not both")
	case t.Prompt == "" && t.Messages == nil:
		return t, badRequest("a task needs a prompt or messages")
	case t.Messages == nil && strings.TrimSpace(t.Prompt) == "":
		return t, badRequest("prompt is blank")
	}
	if t.MaxTokens < 0 {
		return t, badRequest("max_tokens: %d is negative", t.MaxTokens)
	}
	if t.Messages == nil {
		return TaskRequest{Messages: []Message{{Role: "user", Content: t.Prompt}}, MaxTokens: t.MaxTokens}, nil
	}
	if err := checkMessages(t.Messages); err != nil {
		return t, err
	}
	return t, nil
}

// checkMessages checks a conversation: some messages, each with a known
// role, and no blank user message.
func checkMessages(msgs []Message) error {
	if len(msgs) == 0 {
		return badRequest("messages is empty")
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		case "":
			return badRequest("messages[%d].role is missing; want system, user or assistant", i)
		default:
			return badRequest("messages[%d].role %q is not supported; want system, user or assistant", i, m.Role)
		}
		if m.Role == "user" && strings.TrimSpace(m.Content) == "" {
			return badRequest("messages[%d].content is empty", i)
		}
	}
	return nil
}

// parseWait reads the wait query parameter: a Go duration from 0 to MaxTaskWait.
func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > MaxTaskWait {
		return 0, badRequest("wait: %q is not a duration from 0s to %v, such as 30s", s, MaxTaskWait)
	}
	return d, nil
}

func handleSessions(mux *http.ServeMux, s Sessions) {
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var req SessionRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, r, err)
			return
		}
		if err := req.check(); err != nil {
			writeErr(w, r, err)
			return
		}
		answer[SessionDetail](w, r, http.StatusCreated)(s.CreateSession(r.Context(), req))
	})
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.ListSessions())
	})
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		answer[SessionDetail](w, r, http.StatusOK)(s.Session(r.PathValue("id")))
	})
	mux.HandleFunc("DELETE /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		answer[SessionDetail](w, r, http.StatusOK)(s.EndSession(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("POST /v1/sessions/{id}/tasks", func(w http.ResponseWriter, r *http.Request) {
		var req TaskRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, r, err)
			return
		}
		req, err := req.normalize()
		if err != nil {
			writeErr(w, r, err)
			return
		}
		answer[Task](w, r, http.StatusAccepted)(s.SubmitTask(r.Context(), r.PathValue("id"), req))
	})
	mux.HandleFunc("GET /v1/sessions/{id}/tasks/{task}", func(w http.ResponseWriter, r *http.Request) {
		wait, err := parseWait(r.URL.Query().Get("wait"))
		if err != nil {
			writeErr(w, r, err)
			return
		}
		answer[Task](w, r, http.StatusOK)(s.Task(r.Context(), r.PathValue("id"), r.PathValue("task"), wait))
	})
}

// answer returns a function that writes v with status, or its error.
func answer[T any](w http.ResponseWriter, r *http.Request, status int) func(T, error) {
	return func(v T, err error) {
		if err != nil {
			writeErr(w, r, err)
			return
		}
		writeJSON(w, status, v)
	}
}
