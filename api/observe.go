package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The dashboard's data: GET /v1/overview, /v1/history, /v1/miners/{peer_id},
// /v1/transitions and the Server-Sent Events of /v1/events.

// States are the pool states the API counts, in the order a dashboard shows
// them. "stale" is an available miner whose record has lapsed.
var States = []string{"joining", "validating", "available", "reserved", "cooling_off", "stale"}

// Event kinds.
const (
	EventState       = "state"
	EventAttestation = "attestation"
	EventGrant       = "grant"
	EventRelease     = "release"
	EventEvidence    = "evidence"
)

// Overview is the body of GET /v1/overview and of the SSE event "overview".
type Overview struct {
	Time   time.Time     `json:"time"`
	Node   NodeInfo      `json:"node"`
	Pool   PoolSummary   `json:"pool"`
	Gossip []GossipTopic `json:"gossip"`
	Oracle *OracleStats  `json:"oracle"` // nil when the node is not an oracle
	Router *RouterStats  `json:"router"` // nil when the node is not a router
}

// PoolSummary counts the miners of the pool by state. Counts holds every
// name of States, zeros included.
type PoolSummary struct {
	Total  int            `json:"total"`
	Counts map[string]int `json:"counts"`
}

// GossipTopic is one topic's cumulative counters since the node started:
// messages received by validation outcome, and messages published.
type GossipTopic struct {
	Topic     string `json:"topic"`
	Accept    uint64 `json:"accept"`
	Reject    uint64 `json:"reject"`
	Ignore    uint64 `json:"ignore"`
	Throttled uint64 `json:"throttled"`
	Published uint64 `json:"published"`
}

// OracleStats are an oracle's validation figures since it started.
type OracleStats struct {
	ValidationsPassed int `json:"validations_passed"`
	ValidationsFailed int `json:"validations_failed"`
	// PassRate is passed / (passed + failed), 0 before the first verdict.
	PassRate float64 `json:"pass_rate"`
}

// RouterStats are a router's session figures.
type RouterStats struct {
	SessionsOpen  int     `json:"sessions_open"`
	SessionsEnded int     `json:"sessions_ended"`
	QueuedTasks   int     `json:"queued_tasks"`
	TasksDone     int     `json:"tasks_done"`
	TasksFailed   int     `json:"tasks_failed"`
	MeanAgreement float64 `json:"mean_agreement"`
	// Completions counts the chat completions asked for since start.
	Completions int `json:"completions"`
	// WarmMiners are the miners the warm sessions behind the chat endpoint
	// hold, WarmBusy those running a task now; Utilisation is their busy
	// time over their held time since start (0 before any).
	WarmMiners   int     `json:"warm_miners"`
	WarmBusy     int     `json:"warm_busy"`
	Utilisation  float64 `json:"utilisation"`
	IdleReleases int     `json:"idle_releases"`
}

// History is the body of GET /v1/history: the pool by state, oldest first.
type History struct {
	IntervalSeconds int            `json:"interval_seconds"`
	Points          []HistoryPoint `json:"points"`
}

// HistoryPoint is one sample of the pool. Counts holds every name of States.
type HistoryPoint struct {
	Time   time.Time      `json:"time"`
	Counts map[string]int `json:"counts"`
}

// MinerHistory is the body of GET /v1/miners/{peer_id}.
type MinerHistory struct {
	Miner  PoolMiner `json:"miner"`
	Events []Event   `json:"events"` // oldest first
}

// Event is one thing that happened to a miner, as this node saw it. One shape
// serves every kind; the fields that do not apply to a kind are left out of
// its JSON. Generation is always there; From, on kind state, even when empty;
// Pass and Score, on kind attestation, even when false or zero.
type Event struct {
	Time       time.Time `json:"time"`
	Miner      string    `json:"miner"`
	Kind       string    `json:"kind"`
	State      string    `json:"state,omitempty"` // state: the miner's new state
	From       string    `json:"from,omitempty"`  // state: the state before, "" if none
	Generation uint64    `json:"generation"`
	Oracle     string    `json:"oracle,omitempty"` // attestation: who signed it; evidence: the oracle caught
	Pass       bool      `json:"pass,omitempty"`   // attestation
	Score      float64   `json:"score,omitempty"`  // attestation, 0..1
	Router     string    `json:"router,omitempty"` // grant, release
	Session    string    `json:"session,omitempty"`
	LeaseEnd   time.Time `json:"lease_end,omitzero"` // grant
	Outcome    string    `json:"outcome,omitempty"`  // release: completed, failed, expired or cancelled
	Detail     string    `json:"detail,omitempty"`   // evidence: what conflicted
}

// MarshalJSON writes the fields of e's kind that are meaningful at their
// zero value.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event // without this method
	out := struct {
		plain
		From  *string  `json:"from,omitempty"`
		Pass  *bool    `json:"pass,omitempty"`
		Score *float64 `json:"score,omitempty"`
	}{plain: plain(e)}
	switch e.Kind {
	case EventState:
		out.From = &e.From
	case EventAttestation:
		out.Pass, out.Score = &e.Pass, &e.Score
	}
	return json.Marshal(out)
}

// Update is one change an Observer announces: exactly one field is set.
type Update struct {
	Miner      *PoolMiner // SSE event "miner": a miner's record changed
	Transition *Event     // SSE event "transition"
}

// Observer is what the dashboard endpoints read.
type Observer interface {
	Overview() Overview
	History() History
	// Miner is one miner's record and events; false when it is unknown.
	Miner(id string) (MinerHistory, bool)
	// Transitions are the limit most recent events, newest first.
	Transitions(limit int) []Event
	// Subscribe delivers updates until ctx ends or cancel is called. The
	// channel's buffer is bounded: a subscriber that falls behind is dropped,
	// its channel closed, as it is when the Observer stops.
	Subscribe(ctx context.Context) (updates <-chan Update, cancel func())
}

// Limits of GET /v1/transitions.
const (
	DefaultTransitions = 50
	MaxTransitions     = 500
)

// streamTiming is how often /v1/events sends an overview and a ping, and how
// long one write may block before the client is dropped. Tests shorten them.
var streamTiming = struct {
	overview, ping, write time.Duration
}{overview: 2 * time.Second, ping: 15 * time.Second, write: 10 * time.Second}

func handleObserve(mux *http.ServeMux, o Observer, streams *streamLimiter) {
	mux.HandleFunc("GET /v1/overview", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, o.Overview())
	})
	mux.HandleFunc("GET /v1/history", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, o.History())
	})
	mux.HandleFunc("GET /v1/miners/{peer_id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("peer_id")
		if _, err := peer.Decode(id); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a peer ID", id))
			return
		}
		h, ok := o.Miner(id)
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("miner %s is not known to this node", id))
			return
		}
		if h.Events == nil {
			h.Events = []Event{}
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("GET /v1/transitions", func(w http.ResponseWriter, r *http.Request) {
		limit := DefaultTransitions
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > MaxTransitions {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q is not a number from 1 to %d", s, MaxTransitions))
				return
			}
			limit = n
		}
		evs := o.Transitions(limit)
		if evs == nil {
			evs = []Event{}
		}
		writeJSON(w, http.StatusOK, evs)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		release, ok := streams.acquire(w, r)
		if !ok {
			return
		}
		defer release()
		streamEvents(w, r, o, streams.m)
	})
}

// streamEvents serves /v1/events until the client goes away, the Observer
// drops it, or the client falls behind: its queue fills, or a write blocks
// past its deadline.
func streamEvents(w http.ResponseWriter, r *http.Request, o Observer, m *metrics) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	updates, unsubscribe := o.Subscribe(ctx)
	defer unsubscribe()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies such as nginx: do not hold the events back
	w.WriteHeader(http.StatusOK)
	out := newSSEWriter(w)
	defer out.close()
	slow := false // the stream ends because the client fell behind
	defer func() {
		if slow {
			m.streamsDropped.WithLabelValues(kindEvents).Inc()
		}
	}()

	// send queues one event (a ping when event is ""); false ends the stream.
	send := func(event string, v any) bool {
		var buf bytes.Buffer
		if event != "" {
			buf.WriteString("event: " + event + "\ndata: ")
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(v); err != nil {
				logf(r, "api: /v1/events: encode %s: %v", event, err)
				return false
			}
			buf.WriteString("\n") // Encode ended the data line; a blank line ends the event
		} else {
			buf.WriteString(": ping\n\n")
		}
		if !out.send(buf.Bytes()) {
			slow = out.behind()
			return false
		}
		return true
	}

	if !send("overview", o.Overview()) {
		return
	}
	overview := time.NewTicker(streamTiming.overview)
	defer overview.Stop()
	ping := time.NewTicker(streamTiming.ping)
	defer ping.Stop()
	for {
		var ok bool
		select {
		case <-ctx.Done():
			return
		case <-out.failed():
			slow = out.behind()
			return
		case u, open := <-updates:
			switch {
			case !open:
				return // dropped as too slow, or the Observer stopped
			case u.Miner != nil:
				ok = send("miner", u.Miner)
			case u.Transition != nil:
				ok = send("transition", u.Transition)
			default:
				ok = true
			}
		case <-overview.C:
			ok = send("overview", o.Overview())
		case <-ping.C:
			ok = send("", nil)
		}
		if !ok {
			return
		}
	}
}
