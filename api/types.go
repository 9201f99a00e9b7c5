package api

import (
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
)

// The answers of the reservation and session endpoints, as they go on the
// wire. A router's reservation desk and session manager keep their own
// types; the node converts them to these, so that a client needs nothing
// but this package to read an answer.

// Duration is a time.Duration written in JSON as a Go duration string,
// "10m0s".
type Duration = duration.Duration

// Reservation is a router's hold on a miner: the answer of POST
// /v1/reservations and DELETE /v1/reservations/{id}, and an element of GET
// /v1/reservations.
type Reservation struct {
	ID         string    `json:"id"`                // the claim's session id, which names the reservation
	Session    string    `json:"session,omitempty"` // the user session it serves, if any
	Miner      string    `json:"miner"`
	Generation uint64    `json:"generation"`
	Model      string    `json:"model,omitempty"`
	LeaseEnd   time.Time `json:"lease_end"`
	Created    time.Time `json:"created"`
	State      string    `json:"state"`            // "active", "released", "expired", "lost"
	Ended      time.Time `json:"ended,omitzero"`   // when it left "active"
	Detail     string    `json:"detail,omitempty"` // why it ended, if not by a confirmed release
}

// Session states, and the reasons a session ends.
const (
	SessionOpen  = "open"
	SessionEnded = "ended"

	EndClosed        = "closed"         // the user ended it
	EndMaxTasks      = "max_tasks"      // it ran its last task
	EndReservePeriod = "reserve_period" // its reservation period ran out
	EndShutdown      = "shutdown"       // the router shut down
)

// MaxReservePeriod is the longest reserve_period a router takes.
const MaxReservePeriod = 24 * time.Hour

// Session is a user's session as GET /v1/sessions lists it.
type Session struct {
	ID        string        `json:"id"`
	Params    SessionParams `json:"params"`
	State     string        `json:"state"`                // SessionOpen or SessionEnded
	EndReason string        `json:"end_reason,omitempty"` // EndClosed, EndMaxTasks, …
	Created   time.Time     `json:"created"`
	Ends      time.Time     `json:"ends"` // when the reservation period runs out
	Ended     time.Time     `json:"ended,omitzero"`
	Submitted int           `json:"tasks_submitted"`
	Completed int           `json:"tasks_completed"`
	Failed    int           `json:"tasks_failed"`
	Queued    int           `json:"tasks_queued"`
	// MeanAgreement is the mean agreement of its tasks that several miners answered.
	MeanAgreement *float64  `json:"mean_agreement,omitempty"`
	AgreementSum  float64   `json:"agreement_sum,omitempty"`
	AgreementN    int       `json:"agreement_n,omitempty"`
	Miners        []Holding `json:"miners"`
	// Warm marks a session the router keeps for its chat completions.
	Warm bool `json:"warm,omitempty"`
}

// SessionDetail is one session with the state of each of its tasks: the
// answer of POST /v1/sessions, GET and DELETE /v1/sessions/{id}.
type SessionDetail struct {
	Session
	Tasks []TaskBrief `json:"tasks"`
}

// TaskBrief is a task as its session's detail lists it.
type TaskBrief struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// SessionParams are a session's parameters, the network's defaults filled
// in.
type SessionParams struct {
	Model         string   `json:"model,omitempty"` // "" for any model the pool serves
	MinNodes      int      `json:"min_nodes"`       // miners reserved when the session opens
	MaxNodes      int      `json:"max_nodes"`       // the most miners held at once
	Redundancy    int      `json:"redundancy"`      // miners that answer each task
	ReservePeriod Duration `json:"reserve_period"`  // the session ends this long after it opened
	MaxTasks      int      `json:"max_tasks"`       // the session ends after this many tasks
	TaskTimeout   Duration `json:"task_timeout"`    // bound on one task once miners run it
}

// Holding states: a miner's place in a session.
const (
	HoldActive   = "active"   // reserved and serving the session
	HoldReleased = "released" // released when the session ended
	HoldFailed   = "failed"   // dropped after a failed, rejected or out-voted answer
	HoldLost     = "lost"     // the reservation ended without the session (expired or refused renewal)
)

// Holding is one miner a session reserved.
type Holding struct {
	Reservation string    `json:"reservation"`
	Miner       string    `json:"miner"`
	Generation  uint64    `json:"generation"`
	State       string    `json:"state"`
	Tasks       int       `json:"tasks"` // answers it gave that the session accepted
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until,omitzero"`
	Detail      string    `json:"detail,omitempty"`
}

// Task states.
const (
	TaskQueued  = "queued"
	TaskRunning = "running"
	TaskDone    = "done"
	TaskFailed  = "failed"
)

// Task is one prompt of a session: the answer of POST
// /v1/sessions/{id}/tasks and GET /v1/sessions/{id}/tasks/{task}.
type Task struct {
	ID        string    `json:"id"`
	Session   string    `json:"session"`
	Seq       int       `json:"seq"`
	State     string    `json:"state"`
	Model     string    `json:"model,omitempty"`
	Messages  []Message `json:"messages"`
	MaxTokens int       `json:"max_tokens,omitempty"`
	Created   time.Time `json:"created"`
	Started   time.Time `json:"started,omitzero"` // when miners began on it
	Finished  time.Time `json:"finished,omitzero"`
	QueueMs   int64     `json:"queue_ms"` // from submission to the miners
	RunMs     int64     `json:"run_ms"`   // from the miners to the outcome
	Attempts  int       `json:"attempts"` // dispatch rounds, retries included
	Answer    string    `json:"answer,omitempty"`
	Agreement *float64  `json:"agreement,omitempty"` // with two or more answers
	Answers   []Answer  `json:"answers"`
	Error     string    `json:"error,omitempty"`
}

// Settled reports whether the task has its outcome: done or failed.
func (t Task) Settled() bool { return t.State == TaskDone || t.State == TaskFailed }

// Answer is what one miner made of a task.
type Answer struct {
	Miner            string   `json:"miner"`
	Generation       uint64   `json:"generation"`
	Reservation      string   `json:"reservation"`
	Model            string   `json:"model,omitempty"`
	Output           string   `json:"output,omitempty"`
	PromptTokens     int      `json:"prompt_tokens,omitempty"`
	CompletionTokens int      `json:"completion_tokens,omitempty"`
	EngineMs         int64    `json:"engine_ms"`            // as the miner signed it
	RoundTripMs      int64    `json:"round_trip_ms"`        // as the router measured it
	Similarity       *float64 `json:"similarity,omitempty"` // to the chosen answer
	Accepted         bool     `json:"accepted"`
	Error            string   `json:"error,omitempty"`
}
