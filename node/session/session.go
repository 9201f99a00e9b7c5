// Package session is the router's session manager: a user's session holds
// validated miners reserved from the pool, runs the user's tasks on them
// over the session protocol (streamed when one miner answers, commit-reveal
// when several do), scores how far their answers agree, and releases every
// miner when it ends, after which each must be validated again. Sessions
// and their tasks live in the store, so a router restarted after a crash
// resumes them.
package session

import (
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/internal/duration"
)

// Limits of a session's parameters.
const (
	MaxRedundancy    = 16
	MaxNodes         = 16
	MaxTasks         = 10000
	MinReservePeriod = time.Second
	MaxReservePeriod = 24 * time.Hour
	MinTaskTimeout   = time.Second
	MaxTaskTimeout   = 10 * time.Minute
)

// Defaults of a session's parameters.
const (
	DefaultReservePeriod = 10 * time.Minute
	DefaultMaxTasks      = 100
	DefaultTaskTimeout   = 60 * time.Second
)

// Errors of the manager; the API maps each to a status.
var (
	ErrBadParams     = errors.New("bad session parameters")
	ErrNotFound      = errors.New("not found")
	ErrEnded         = errors.New("session has ended")
	ErrQueueFull     = errors.New("task queue is full")
	ErrTooMany       = errors.New("too many open sessions")
	ErrNoMiner       = errors.New("no miner available")
	ErrNotRunning    = errors.New("session manager is not running")
	ErrTaskLimit     = errors.New("session's task limit reached")
	ErrTaskFailed    = errors.New("task failed")
	ErrStreamBroken  = errors.New("the miner failed after part of its answer was streamed")
	errSessionEnding = errors.New("session is ending")
)

// Params are what a user asks of a session.
type Params struct {
	Model         string            `json:"model,omitempty"` // "" for any model the pool serves
	MinNodes      int               `json:"min_nodes"`       // miners reserved when the session opens
	MaxNodes      int               `json:"max_nodes"`       // the most miners held at once
	Redundancy    int               `json:"redundancy"`      // miners that answer each task
	ReservePeriod duration.Duration `json:"reserve_period"`  // the session ends this long after it opened
	MaxTasks      int               `json:"max_tasks"`       // the session ends after this many tasks
	TaskTimeout   duration.Duration `json:"task_timeout"`    // bound on one task once miners run it
}

// WithDefaults fills unset fields and checks every one; the error names the
// field at fault and wraps ErrBadParams.
func (p Params) WithDefaults() (Params, error) {
	bad := func(format string, args ...any) (Params, error) {
		return p, fmt.Errorf("%w: %s", ErrBadParams, fmt.Sprintf(format, args...))
	}
	if p.Redundancy == 0 {
		p.Redundancy = 1
	}
	if p.MinNodes == 0 {
		p.MinNodes = p.Redundancy
	}
	if p.MaxNodes == 0 {
		p.MaxNodes = max(p.MinNodes, p.Redundancy)
	}
	if p.ReservePeriod == 0 {
		p.ReservePeriod = duration.Duration(DefaultReservePeriod)
	}
	if p.MaxTasks == 0 {
		p.MaxTasks = DefaultMaxTasks
	}
	if p.TaskTimeout == 0 {
		p.TaskTimeout = duration.Duration(min(DefaultTaskTimeout, p.ReservePeriod.Std()))
	}
	switch {
	case len(p.Model) > 256:
		return bad("model: a name of %d bytes", len(p.Model))
	case p.Redundancy < 1 || p.Redundancy > MaxRedundancy:
		return bad("redundancy: %d, must be from 1 to %d", p.Redundancy, MaxRedundancy)
	case p.MaxNodes < 1 || p.MaxNodes > MaxNodes:
		return bad("max_nodes: %d, must be from 1 to %d", p.MaxNodes, MaxNodes)
	case p.MinNodes < 1 || p.MinNodes > p.MaxNodes:
		return bad("min_nodes: %d, must be from 1 to max_nodes (%d)", p.MinNodes, p.MaxNodes)
	case p.Redundancy > p.MaxNodes:
		return bad("redundancy: %d is more than max_nodes (%d)", p.Redundancy, p.MaxNodes)
	case p.ReservePeriod.Std() < MinReservePeriod || p.ReservePeriod.Std() > MaxReservePeriod:
		return bad("reserve_period: %s, must be from %s to %s", p.ReservePeriod, MinReservePeriod, MaxReservePeriod)
	case p.MaxTasks < 1 || p.MaxTasks > MaxTasks:
		return bad("max_tasks: %d, must be from 1 to %d", p.MaxTasks, MaxTasks)
	case p.TaskTimeout.Std() < MinTaskTimeout || p.TaskTimeout.Std() > MaxTaskTimeout:
		return bad("task_timeout: %s, must be from %s to %s", p.TaskTimeout, MinTaskTimeout, MaxTaskTimeout)
	case p.TaskTimeout > p.ReservePeriod:
		return bad("task_timeout: %s is longer than reserve_period (%s)", p.TaskTimeout, p.ReservePeriod)
	}
	return p, nil
}

// Session states and the reasons a session ends.
const (
	StateOpen  = "open"
	StateEnded = "ended"

	EndClosed        = "closed"         // the user ended it
	EndMaxTasks      = "max_tasks"      // it ran its last task
	EndReservePeriod = "reserve_period" // its reservation period ran out
	EndShutdown      = "shutdown"       // the router shut down
)

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

// Session is a user's session as stored under sess/<id> and shown by the API.
type Session struct {
	ID        string    `json:"id"`
	Params    Params    `json:"params"`
	State     string    `json:"state"`
	EndReason string    `json:"end_reason,omitempty"`
	Created   time.Time `json:"created"`
	Ends      time.Time `json:"ends"` // when the reservation period runs out
	Ended     time.Time `json:"ended,omitzero"`
	Submitted int       `json:"tasks_submitted"`
	Completed int       `json:"tasks_completed"`
	Failed    int       `json:"tasks_failed"`
	Queued    int       `json:"tasks_queued"`
	// MeanAgreement is the mean agreement of its tasks that several miners answered.
	MeanAgreement *float64  `json:"mean_agreement,omitempty"`
	AgreementSum  float64   `json:"agreement_sum,omitempty"`
	AgreementN    int       `json:"agreement_n,omitempty"`
	Miners        []Holding `json:"miners"`
	// Warm marks a session the router keeps for its chat completions.
	Warm bool `json:"warm,omitempty"`
}

// Task states.
const (
	TaskQueued  = "queued"
	TaskRunning = "running"
	TaskDone    = "done"
	TaskFailed  = "failed"
)

// Task is one prompt of a session, as stored under task/<session>/<id>.
type Task struct {
	ID        string              `json:"id"`
	Session   string              `json:"session"`
	Seq       int                 `json:"seq"`
	State     string              `json:"state"`
	Model     string              `json:"model,omitempty"`
	Messages  []inference.Message `json:"messages"`
	MaxTokens int                 `json:"max_tokens,omitempty"`
	Created   time.Time           `json:"created"`
	Started   time.Time           `json:"started,omitzero"` // when miners began on it
	Finished  time.Time           `json:"finished,omitzero"`
	QueueMs   int64               `json:"queue_ms"` // from submission to the miners
	RunMs     int64               `json:"run_ms"`   // from the miners to the outcome
	Attempts  int                 `json:"attempts"` // dispatch rounds, retries included
	Answer    string              `json:"answer,omitempty"`
	Agreement *float64            `json:"agreement,omitempty"` // with two or more answers
	Answers   []Answer            `json:"answers"`
	Error     string              `json:"error,omitempty"`
}

func (t Task) finished() bool { return t.State == TaskDone || t.State == TaskFailed }

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
