package node

import (
	"cmp"
	"context"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/node/session"
)

// sessionsAPI adapts the session manager to the API.
type sessionsAPI struct{ m *session.Manager }

var _ api.Sessions = sessionsAPI{}

// detail is a session with the state of each of its tasks.
func (a sessionsAPI) detail(s session.Session) api.SessionDetail {
	tasks, _ := a.m.Tasks(s.ID)
	d := api.SessionDetail{Session: apiSession(s), Tasks: make([]api.TaskBrief, len(tasks))}
	for i, t := range tasks {
		d.Tasks[i] = api.TaskBrief{ID: t.ID, State: t.State}
	}
	return d
}

func (a sessionsAPI) CreateSession(ctx context.Context, req api.SessionRequest) (api.SessionDetail, error) {
	period, timeout, err := req.Periods()
	if err != nil {
		return api.SessionDetail{}, err
	}
	s, err := a.m.Create(ctx, session.Params{
		Model: req.Model, MinNodes: req.MinNodes, MaxNodes: req.MaxNodes, Redundancy: req.Redundancy,
		ReservePeriod: duration.Duration(period), MaxTasks: req.MaxTasks, TaskTimeout: duration.Duration(timeout),
	})
	if err != nil {
		return api.SessionDetail{}, apiErr(err)
	}
	return a.detail(s), nil
}

func (a sessionsAPI) ListSessions() []api.Session {
	return wireAll(a.m.Sessions(), apiSession)
}

func (a sessionsAPI) Session(id string) (api.SessionDetail, error) {
	s, err := a.m.Get(id)
	if err != nil {
		return api.SessionDetail{}, apiErr(err)
	}
	return a.detail(s), nil
}

func (a sessionsAPI) EndSession(ctx context.Context, id string) (api.SessionDetail, error) {
	s, err := a.m.End(ctx, id)
	if err != nil {
		return api.SessionDetail{}, apiErr(err)
	}
	return a.detail(s), nil
}

func (a sessionsAPI) SubmitTask(ctx context.Context, id string, req api.TaskRequest) (api.Task, error) {
	t, err := a.m.Submit(ctx, id, taskRequest(req.Prompt, req.Messages, req.MaxTokens))
	if err != nil {
		return api.Task{}, apiErr(err)
	}
	return apiTask(t), nil
}

func (a sessionsAPI) Task(ctx context.Context, id, task string, wait time.Duration) (api.Task, error) {
	t, err := a.m.Task(ctx, id, task, wait)
	if err != nil {
		return api.Task{}, apiErr(err)
	}
	return apiTask(t), nil
}

func (a sessionsAPI) Complete(ctx context.Context, req api.CompletionRequest, onDelta func(string) error) (api.Completion, error) {
	if !req.Stream {
		onDelta = nil
	}
	c, err := a.m.Complete(ctx, session.Demand{Model: req.Model, Redundancy: req.Redundancy, Client: req.Client}, taskRequest("", req.Messages, req.MaxTokens), onDelta)
	if err != nil {
		return api.Completion{}, apiErr(err)
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
