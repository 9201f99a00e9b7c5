package node

import (
	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
)

// The router's and the session manager's own types, as the API shows them.
// A nil slice stays nil, so that the JSON is what it was when the API
// encoded these types themselves: null, not [].

func apiReservation(r router.Reservation) api.Reservation {
	return api.Reservation{
		ID: r.ID, Session: r.Session, Miner: r.Miner, Generation: r.Generation, Model: r.Model,
		LeaseEnd: r.LeaseEnd, Created: r.Created, State: r.State, Ended: r.Ended, Detail: r.Detail,
	}
}

func apiSession(s session.Session) api.Session {
	p := s.Params
	return api.Session{
		ID: s.ID,
		Params: api.SessionParams{
			Model: p.Model, MinNodes: p.MinNodes, MaxNodes: p.MaxNodes, Redundancy: p.Redundancy,
			ReservePeriod: p.ReservePeriod, MaxTasks: p.MaxTasks, TaskTimeout: p.TaskTimeout,
		},
		State: s.State, EndReason: s.EndReason, Created: s.Created, Ends: s.Ends, Ended: s.Ended,
		Submitted: s.Submitted, Completed: s.Completed, Failed: s.Failed, Queued: s.Queued,
		MeanAgreement: copyPtr(s.MeanAgreement), AgreementSum: s.AgreementSum, AgreementN: s.AgreementN,
		Miners: convert(s.Miners, apiHolding),
		Warm:   s.Warm,
	}
}

func apiHolding(h session.Holding) api.Holding {
	return api.Holding{
		Reservation: h.Reservation, Miner: h.Miner, Generation: h.Generation, State: h.State,
		Tasks: h.Tasks, Since: h.Since, Until: h.Until, Detail: h.Detail,
	}
}

func apiTask(t session.Task) api.Task {
	return api.Task{
		ID: t.ID, Session: t.Session, Seq: t.Seq, State: t.State, Model: t.Model,
		Messages: convert(t.Messages, func(m inference.Message) api.Message {
			return api.Message{Role: m.Role, Content: m.Content}
		}),
		MaxTokens: t.MaxTokens, Created: t.Created, Started: t.Started, Finished: t.Finished,
		QueueMs: t.QueueMs, RunMs: t.RunMs, Attempts: t.Attempts,
		Answer: t.Answer, Agreement: copyPtr(t.Agreement), Answers: convert(t.Answers, apiAnswer),
		Error: t.Error,
	}
}

func apiAnswer(a session.Answer) api.Answer {
	return api.Answer{
		Miner: a.Miner, Generation: a.Generation, Reservation: a.Reservation, Model: a.Model,
		Output: a.Output, PromptTokens: a.PromptTokens, CompletionTokens: a.CompletionTokens,
		EngineMs: a.EngineMs, RoundTripMs: a.RoundTripMs, Similarity: copyPtr(a.Similarity),
		Accepted: a.Accepted, Error: a.Error,
	}
}

// convert maps f over in; nil stays nil.
func convert[T, U any](in []T, f func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

// copyPtr copies *p, so that the answer shares nothing with the manager.
func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
