package node

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/session"
)

// sessionsAPI adapts the session manager to the API.
type sessionsAPI struct{ m *session.Manager }

var _ api.Sessions = sessionsAPI{}

// sessionView is a session as GET /v1/sessions/{id} shows it: with the
// state of each of its tasks.
type sessionView struct {
	session.Session
	Tasks []taskBrief `json:"tasks"`
}

type taskBrief struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func (a sessionsAPI) view(s session.Session) any {
	tasks, _ := a.m.Tasks(s.ID)
	v := sessionView{Session: s, Tasks: make([]taskBrief, len(tasks))}
	for i, t := range tasks {
		v.Tasks[i] = taskBrief{ID: t.ID, State: t.State}
	}
	return v
}

func (a sessionsAPI) CreateSession(ctx context.Context, req api.SessionRequest) (any, error) {
	period, timeout, err := req.Periods()
	if err != nil {
		return nil, err
	}
	s, err := a.m.Create(ctx, session.Params{
		Model: req.Model, MinNodes: req.MinNodes, MaxNodes: req.MaxNodes, Redundancy: req.Redundancy,
		ReservePeriod: duration.Duration(period), MaxTasks: req.MaxTasks, TaskTimeout: duration.Duration(timeout),
	})
	if err != nil {
		return nil, sessionErr(err)
	}
	return a.view(s), nil
}

func (a sessionsAPI) ListSessions() any { return a.m.Sessions() }

func (a sessionsAPI) Session(id string) (any, error) {
	s, err := a.m.Get(id)
	if err != nil {
		return nil, sessionErr(err)
	}
	return a.view(s), nil
}

func (a sessionsAPI) EndSession(ctx context.Context, id string) (any, error) {
	s, err := a.m.End(ctx, id)
	if err != nil {
		return nil, sessionErr(err)
	}
	return a.view(s), nil
}

func (a sessionsAPI) SubmitTask(ctx context.Context, id string, req api.TaskRequest) (any, error) {
	t, err := a.m.Submit(ctx, id, taskRequest(req.Prompt, req.Messages, req.MaxTokens))
	if err != nil {
		return nil, sessionErr(err)
	}
	return t, nil
}

func (a sessionsAPI) Task(ctx context.Context, id, task string, wait time.Duration) (any, error) {
	t, err := a.m.Task(ctx, id, task, wait)
	if err != nil {
		return nil, sessionErr(err)
	}
	return t, nil
}

func (a sessionsAPI) Complete(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
	if !req.Stream {
		onDelta = nil
	}
	c, err := a.m.Complete(ctx, session.Demand{Model: req.Model, Redundancy: req.Redundancy, Client: req.Client}, taskRequest("", req.Messages, req.MaxTokens), onDelta)
	if err != nil {
		return api.Completion{}, sessionErr(err)
	}
	t := c.Task
	out := api.Completion{Task: t.ID, Model: req.Model, Text: t.Answer, Session: c.Session, Agreement: 1}
	if t.Agreement != nil {
		out.Agreement = *t.Agreement
	}
	for _, ans := range t.Answers {
		if ans.Error != "" {
			continue
		}
		out.Miners = append(out.Miners, ans.Miner)
		if ans.Output == t.Answer && out.CompletionTokens == 0 {
			out.Model = cmp.Or(ans.Model, req.Model)
			out.PromptTokens, out.CompletionTokens = ans.PromptTokens, ans.CompletionTokens
		}
	}
	return out, nil
}

func (a sessionsAPI) Models() []string { return a.m.Models() }

func taskRequest(prompt string, msgs []api.Message, maxTokens int) session.TaskRequest {
	q := session.TaskRequest{MaxTokens: maxTokens}
	if prompt != "" {
		q.Messages = []inference.Message{{Role: "user", Content: prompt}}
	}
	for _, m := range msgs {
		q.Messages = append(q.Messages, inference.Message{Role: m.Role, Content: m.Content})
	}
	return q
}

// sessionErr maps the manager's errors to the API's statuses.
func sessionErr(err error) error {
	var kind error
	switch {
	case errors.Is(err, session.ErrBadParams):
		kind = api.ErrBadRequest
	case errors.Is(err, session.ErrUnknownModel):
		kind = api.ErrModelNotFound
	case errors.Is(err, session.ErrNotFound):
		kind = api.ErrNotFound
	case errors.Is(err, session.ErrEnded), errors.Is(err, session.ErrTaskLimit):
		kind = api.ErrConflict
	case errors.Is(err, session.ErrQueueFull), errors.Is(err, session.ErrTooMany), errors.Is(err, session.ErrBusy):
		kind = api.ErrTooMany
	case errors.Is(err, session.ErrTaskFailed), errors.Is(err, session.ErrStreamBroken):
		kind = api.ErrBadGateway
	case errors.Is(err, session.ErrNoMiner), errors.Is(err, session.ErrNotRunning):
		kind = api.ErrUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		kind = api.ErrTimeout
	default:
		return err
	}
	return statusErr{kind: kind, err: err}
}

// statusErr gives err the API status of kind, keeping err's own message.
type statusErr struct{ kind, err error }

func (e statusErr) Error() string   { return e.err.Error() }
func (e statusErr) Unwrap() []error { return []error{e.kind, e.err} }
