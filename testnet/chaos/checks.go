package chaos

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

// The checks of a chaos run, as its report names them.
const (
	CheckDoubleGrant = "double grant"
	CheckLostGrant   = "lost grant"
	CheckUnreleased  = "unreleased"
	CheckConvergence = "re-convergence"
	CheckCrash       = "node crash"
)

// Report is what a chaos run did and found.
type Report struct {
	Seed   uint64
	Cycles int
	// Kills counts the nodes killed, by role.
	Kills map[string]int
	// Sessions created through the routers' APIs, those found open on a
	// router without an answer to their creation included; ended: seen ended
	// at the end.
	SessionsCreated, SessionsEnded int
	// Tasks as the ended sessions count them; Lost are tasks a router
	// accepted that its session no longer counts.
	TasksSubmitted, TasksDone, TasksFailed, TasksLost int
	// WrongAnswers are done tasks whose answer lacked the sum asked for.
	WrongAnswers int
	// Grants are the distinct (miner, generation) reservations seen, in a
	// router's reservations or as a grant on gossip; GrantsListed and
	// GrantsGossiped those each source showed.
	Grants, GrantsListed, GrantsGossiped int
	// Evidence counts the evidence of equivocation any node reported.
	Evidence int
	// The findings of the checks, one line each.
	DoubleGrants, LostGrants, Unreleased []string
	// ExpiredUnadopted are grants seen on gossip that their router never
	// listed, whose lease then ran out on the miner: not lost (the miner
	// did not stay reserved), but worth a look.
	ExpiredUnadopted []string
	// Converged is whether every miner was available in time, and
	// ConvergedAfter how long after the last restart it was.
	Converged      bool
	ConvergedAfter time.Duration
	ConvergeWithin time.Duration
	// NotConverged names the miners that were not available in time, and where.
	NotConverged []string
	// Crashed names the nodes whose process exited without being killed.
	Crashed []string
	// Failed names the checks that failed, in the order above.
	Failed []string
}

// Err is nil when every check passed, else one line naming the checks that failed.
func (r Report) Err() error {
	if len(r.Failed) == 0 {
		return nil
	}
	return fmt.Errorf("check failed: %s", strings.Join(r.Failed, ", "))
}

// Print writes the report for people.
func (r Report) Print(w io.Writer) {
	roles := make([]string, 0, len(r.Kills))
	total := 0
	for _, role := range []node.Role{node.RoleBootstrap, node.RoleOracle, node.RoleMiner, node.RoleRouter} {
		if n := r.Kills[string(role)]; n > 0 {
			roles = append(roles, fmt.Sprintf("%s %d", role, n))
			total += n
		}
	}
	conv := fmt.Sprintf("%.1fs after the last restart (bound %s)", r.ConvergedAfter.Seconds(), r.ConvergeWithin)
	if !r.Converged {
		conv = fmt.Sprintf("NOT within %s of the last restart", r.ConvergeWithin)
	}
	fmt.Fprintf(w, "chaos report (seed %d)\n", r.Seed)
	fmt.Fprintf(w, "  cycles:          %d\n", r.Cycles)
	fmt.Fprintf(w, "  kills:           %d (%s)\n", total, strings.Join(roles, ", "))
	fmt.Fprintf(w, "  sessions:        %d created, %d ended\n", r.SessionsCreated, r.SessionsEnded)
	fmt.Fprintf(w, "  tasks:           %d submitted, %d done, %d failed, %d lost (%d wrong answers)\n",
		r.TasksSubmitted, r.TasksDone, r.TasksFailed, r.TasksLost, r.WrongAnswers)
	fmt.Fprintf(w, "  grants seen:     %d (%d listed by routers, %d on gossip)\n", r.Grants, r.GrantsListed, r.GrantsGossiped)
	fmt.Fprintf(w, "  evidence:        %d\n", r.Evidence)
	fmt.Fprintf(w, "  double grants:   %d\n", len(r.DoubleGrants))
	fmt.Fprintf(w, "  lost grants:     %d (and %d expired before their router adopted them)\n", len(r.LostGrants), len(r.ExpiredUnadopted))
	fmt.Fprintf(w, "  unreleased:      %d\n", len(r.Unreleased))
	fmt.Fprintf(w, "  re-convergence:  %s\n", conv)
	fmt.Fprintf(w, "  node crashes:    %d\n", len(r.Crashed))
	for _, l := range [][]string{r.DoubleGrants, r.LostGrants, r.Unreleased, r.NotConverged, r.Crashed, r.ExpiredUnadopted} {
		for _, s := range l {
			fmt.Fprintf(w, "  - %s\n", s)
		}
	}
	if err := r.Err(); err != nil {
		fmt.Fprintf(w, "FAIL: %v\n", err)
	} else {
		fmt.Fprintln(w, "PASS")
	}
}

// converge waits until every miner says it is available and is so in the
// bootstrap nodes' and the routers' views, up to ConvergeWithin after the
// last restart.
func (c *run) converge(ctx context.Context, lastRestart time.Time, rep *Report) {
	var miners []string
	for _, m := range c.named(node.RoleMiner) {
		miners = append(miners, m.peerID)
	}
	names := map[string]string{}
	for _, m := range c.nodes {
		names[m.peerID] = m.name
	}
	viewers := append(c.named(node.RoleBootstrap), c.named(node.RoleRouter)...)
	deadline := lastRestart.Add(c.cfg.ConvergeWithin)
	nextLog := time.Now().Add(10 * time.Second)
	for {
		var missing []string
		// The miner's own word first: a view may still show available a
		// miner that has just left it.
		for _, m := range c.named(node.RoleMiner) {
			var info api.NodeInfo
			if _, err := c.getNode(ctx, m.name, &info); err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", m.name, err))
			} else if info.State != "available" {
				missing = append(missing, fmt.Sprintf("%s says it is %s", m.name, info.State))
			}
		}
		for _, v := range viewers {
			var pool []api.PoolMiner
			if _, err := c.getPool(ctx, v.name, &pool); err != nil {
				missing = append(missing, fmt.Sprintf("%s: no pool view: %v", v.name, err))
				continue
			}
			for _, id := range miners {
				state := "unknown"
				for _, p := range pool {
					if p.PeerID == id {
						var attesting []string
						for _, o := range p.Oracles {
							attesting = append(attesting, nameOr(names, o))
						}
						state = fmt.Sprintf("%s at generation %d, attested by [%s]", p.State, p.Generation, strings.Join(attesting, " "))
						if p.State == "available" {
							state = ""
						}
						break
					}
				}
				if state != "" {
					missing = append(missing, fmt.Sprintf("%s sees %s %s", v.name, names[id], state))
				}
			}
		}
		if len(missing) == 0 {
			rep.Converged, rep.ConvergedAfter = true, time.Since(lastRestart)
			c.logf("every miner available in every view, %.1fs after the last restart", rep.ConvergedAfter.Seconds())
			return
		}
		if time.Now().After(nextLog) {
			nextLog = time.Now().Add(15 * time.Second)
			c.logf("not converged yet: %s", strings.Join(missing, "; "))
		}
		if time.Now().After(deadline) || !sleep(ctx, 250*time.Millisecond) {
			rep.ConvergedAfter = time.Since(lastRestart)
			rep.NotConverged = missing
			return
		}
	}
}

// settle gives the routers up to 20 s to end the reservations they still
// hold: one whose miner's lease ran out ends at the router's next renewal.
func (c *run) settle(ctx context.Context) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		active := 0
		for _, r := range c.named(node.RoleRouter) {
			var list []api.Reservation
			if _, err := c.getReservations(ctx, r.name, &list); err != nil {
				active++
				continue
			}
			for _, x := range list {
				if x.State == "active" {
					active++
				}
			}
		}
		if active == 0 || time.Now().After(deadline) || !sleep(ctx, 500*time.Millisecond) {
			return
		}
	}
}

// judge reads every router's last word and runs the checks.
func (c *run) judge(ctx context.Context, rep *Report) error {
	routers := c.named(node.RoleRouter)
	final := map[string]map[string]api.Reservation{} // router → id → reservation
	byPeer := map[string]string{}                    // router peer ID → name
	for _, r := range routers {
		byPeer[r.peerID] = r.name
		var list []api.Reservation
		if _, err := c.getReservations(ctx, r.name, &list); err != nil {
			return fmt.Errorf("the last reservations of %s: %w", r.name, err)
		}
		final[r.name] = map[string]api.Reservation{}
		for _, x := range list {
			final[r.name][x.ID] = x
		}
	}
	sessions := map[string]api.Session{}
	for _, id := range c.led.sessionIDs() {
		router := c.led.routerOf(id)
		var s api.SessionDetail
		if _, err := c.getSession(ctx, router, id, &s); err != nil {
			s.Session = api.Session{ID: id, State: "unreadable: " + err.Error()}
		}
		sessions[id] = s.Session
	}
	c.led.judge(rep, final, byPeer, sessions)
	return nil
}

// judge fills in the report's figures and findings from what was seen and
// the routers' last answers: final[router][id] and the sessions as their
// routers last showed them; byPeer names the routers by peer ID.
func (l *ledger) judge(rep *Report, final map[string]map[string]api.Reservation, byPeer map[string]string, sessions map[string]api.Session) {
	l.mu.Lock()
	defer l.mu.Unlock()

	// 1. Double grants: one (miner, generation) held under two reservations,
	// in the routers' lists or on gossip, or evidence of it.
	holders := map[minerGeneration]map[string]string{} // → reservation id → where seen
	note := func(k minerGeneration, id, where string) {
		if holders[k] == nil {
			holders[k] = map[string]string{}
		}
		if _, ok := holders[k][id]; !ok {
			holders[k][id] = where
		}
	}
	for router, m := range l.res {
		for id, r := range m {
			note(minerGeneration{r.Miner, r.Generation}, id, router)
		}
	}
	for router, m := range final {
		for id, r := range m {
			note(minerGeneration{r.Miner, r.Generation}, id, router)
		}
	}
	rep.GrantsListed = len(holders)
	rep.GrantsGossiped = len(l.grants)
	for k, m := range l.grants {
		for session, router := range m {
			note(k, session, "gossip grant to "+nameOr(byPeer, router))
		}
	}
	rep.Grants = len(holders)
	doubles := map[minerGeneration]string{}
	for k, ids := range holders {
		if len(ids) > 1 {
			var parts []string
			for id, where := range ids {
				parts = append(parts, fmt.Sprintf("%s (%s)", id, where))
			}
			sort.Strings(parts)
			doubles[k] = fmt.Sprintf("miner %s granted twice at generation %d: %s", k.miner, k.gen, strings.Join(parts, ", "))
		}
	}
	rep.Evidence = len(l.evidence)
	for _, e := range l.evidence {
		k := minerGeneration{e.Miner, e.Generation}
		if strings.Contains(e.Detail, "two grants") {
			if _, ok := doubles[k]; !ok {
				doubles[k] = fmt.Sprintf("evidence of a double grant by miner %s at generation %d: %s", k.miner, k.gen, e.Detail)
			}
		}
	}
	for _, s := range doubles {
		rep.DoubleGrants = append(rep.DoubleGrants, s)
	}
	sort.Strings(rep.DoubleGrants)

	// 2. Lost grants: a reservation a router listed that it no longer
	// knows; a grant to a router on gossip that it never listed while the
	// miner stayed reserved.
	for router, m := range l.res {
		for id, r := range m {
			if _, ok := final[router][id]; !ok {
				rep.LostGrants = append(rep.LostGrants, fmt.Sprintf("%s forgot reservation %s of miner %s at generation %d (last seen %s)",
					router, id, r.Miner, r.Generation, r.State))
			}
		}
	}
	for k, m := range l.grants {
		for session, peerID := range m {
			router, ours := byPeer[peerID]
			if !ours {
				continue
			}
			if _, ok := final[router][session]; ok {
				continue
			}
			if _, ok := l.res[router][session]; ok {
				continue // reported above
			}
			what := fmt.Sprintf("grant of miner %s at generation %d to %s for claim %s, never listed by it", k.miner, k.gen, router, session)
			if l.releases[k] == "expired" {
				rep.ExpiredUnadopted = append(rep.ExpiredUnadopted, what+"; the miner's lease expired")
			} else {
				rep.LostGrants = append(rep.LostGrants, what)
			}
		}
	}
	sort.Strings(rep.LostGrants)
	sort.Strings(rep.ExpiredUnadopted)

	// 3. Every session ended with its miners released, and no reservation
	// left active.
	ids := make([]string, 0, len(l.sessions))
	for id := range l.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rep.SessionsCreated = len(ids)
	rep.WrongAnswers = l.wrong
	for _, id := range ids {
		seen := l.sessions[id]
		s := sessions[id]
		if s.State != "ended" {
			rep.Unreleased = append(rep.Unreleased, fmt.Sprintf("session %s on %s is %q, not ended", id, seen.router, s.State))
			continue
		}
		rep.SessionsEnded++
		rep.TasksSubmitted += s.Submitted
		rep.TasksDone += s.Completed
		rep.TasksFailed += s.Failed
		if seen.accepted > s.Submitted {
			rep.TasksLost += seen.accepted - s.Submitted
		}
		if open := s.Submitted - s.Completed - s.Failed; open > 0 {
			rep.TasksLost += open
		}
		for _, h := range s.Miners {
			if h.State == "active" {
				rep.Unreleased = append(rep.Unreleased, fmt.Sprintf("ended session %s on %s still holds miner %s at generation %d (reservation %s)",
					id, seen.router, h.Miner, h.Generation, h.Reservation))
			}
		}
	}
	for router, m := range final {
		for id, r := range m {
			if r.State == "active" {
				rep.Unreleased = append(rep.Unreleased, fmt.Sprintf("%s still holds reservation %s of miner %s at generation %d (session %q)",
					router, id, r.Miner, r.Generation, r.Session))
			}
		}
	}
	sort.Strings(rep.Unreleased)

	// The verdict, in the order of the checks.
	for _, f := range []struct {
		name   string
		failed bool
	}{
		{CheckDoubleGrant, len(rep.DoubleGrants) > 0},
		{CheckLostGrant, len(rep.LostGrants) > 0},
		{CheckUnreleased, len(rep.Unreleased) > 0},
		{CheckConvergence, !rep.Converged},
		{CheckCrash, len(rep.Crashed) > 0},
	} {
		if f.failed {
			rep.Failed = append(rep.Failed, f.name)
		}
	}
}
