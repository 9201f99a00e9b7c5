package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

// ledger is everything the run saw. It is safe for concurrent use.
type ledger struct {
	mu sync.Mutex
	// res: every reservation a router listed, by router and id.
	res map[string]map[string]seenReservation
	// grants on gossip, by miner and generation, then claim session → router peer ID.
	grants map[minerGeneration]map[string]string
	// releases on gossip, by miner and generation: their outcome.
	releases map[minerGeneration]string
	// evidence on gossip: its detail, by its miner and generation.
	evidence map[string]api.Event
	// sessions: every session the drivers opened, by id.
	sessions map[string]*seenSession
	done     int // tasks seen done
	wrong    int // of which with a wrong answer
}

type minerGeneration struct {
	miner string
	gen   uint64
}

type seenReservation struct {
	api.Reservation
	first, last time.Time
}

type seenSession struct {
	router   string
	accepted int // tasks the router accepted
	ended    bool
}

func (l *ledger) init() {
	l.res = map[string]map[string]seenReservation{}
	l.grants = map[minerGeneration]map[string]string{}
	l.releases = map[minerGeneration]string{}
	l.evidence = map[string]api.Event{}
	l.sessions = map[string]*seenSession{}
}

// opened records a session of router; it reports whether it was news.
func (l *ledger) opened(router, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.sessions[id]; ok {
		return false
	}
	l.sessions[id] = &seenSession{router: router}
	return true
}

func (l *ledger) submitted(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		s.accepted++
	}
}

func (l *ledger) ended(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		s.ended = true
	}
}

func (l *ledger) finished(t api.Task, sum int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.State == api.TaskDone {
		l.done++
		if !strings.Contains(t.Answer, fmt.Sprint(sum)) {
			l.wrong++
		}
	}
}

func (l *ledger) sessionIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.sessions))
	for id := range l.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (l *ledger) routerOf(id string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sessions[id]; ok {
		return s.router
	}
	return ""
}

func (l *ledger) reservations(router string, list []api.Reservation, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.res[router]
	if m == nil {
		m = map[string]seenReservation{}
		l.res[router] = m
	}
	for _, r := range list {
		if r.ID == "" || r.Miner == "" {
			continue
		}
		s, ok := m[r.ID]
		if !ok {
			s.first = at
		}
		s.Reservation, s.last = r, at
		m[r.ID] = s
	}
}

func (l *ledger) events(evs []api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range evs {
		k := minerGeneration{e.Miner, e.Generation}
		switch e.Kind {
		case api.EventGrant:
			if e.Miner == "" || e.Session == "" {
				continue
			}
			if l.grants[k] == nil {
				l.grants[k] = map[string]string{}
			}
			l.grants[k][e.Session] = e.Router
		case api.EventRelease:
			if _, ok := l.releases[k]; !ok || e.Outcome == "expired" {
				l.releases[k] = e.Outcome
			}
		case api.EventEvidence:
			l.evidence[fmt.Sprintf("%s/%d/%s", e.Miner, e.Generation, e.Detail)] = e
		}
	}
}

// pollReservations records every router's reservations.
func (c *run) pollReservations(ctx context.Context) {
	for _, r := range c.named(node.RoleRouter) {
		var list []api.Reservation
		if _, err := c.getReservations(ctx, r.name, &list); err != nil {
			continue
		}
		c.led.reservations(r.name, list, time.Now())
	}
}

// pollTransitions records the grants, releases and evidence that every node
// but the miners saw on gossip. The miners see the same gossip; the others
// are enough, and fewer.
func (c *run) pollTransitions(ctx context.Context) {
	for _, m := range c.nodes {
		if m.role == node.RoleMiner {
			continue
		}
		var evs []api.Event
		if _, err := c.getTransitions(ctx, m.name, &evs); err != nil {
			continue
		}
		c.led.events(evs)
	}
}

func nameOr(names map[string]string, id string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id
}
