package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/internal/wait"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/protocol/pb"
)

// retryBase is the first wait after a failed renewal; it doubles, up to
// the renewal interval.
const retryBase = 250 * time.Millisecond

// startLoopLocked starts e's renew loop; r.mu is held.
func (r *Router) startLoopLocked(runCtx context.Context, e *entry, first time.Duration) {
	ctx, cancel := context.WithCancel(runCtx)
	e.cancel, e.done = cancel, make(chan struct{})
	r.wg.Add(1)
	go r.renewLoop(ctx, e, e.done, first)
}

// renewLoop renews e every third of its lease until the reservation ends or
// ctx is cancelled. A failed renewal is retried sooner; once the lease has
// passed with no confirmed renewal the reservation has expired, and one the
// miner refuses is lost.
func (r *Router) renewLoop(ctx context.Context, e *entry, done chan struct{}, first time.Duration) {
	defer r.wg.Done()
	defer close(done)
	interval := max(e.lease/3, time.Millisecond)
	t := time.NewTimer(first)
	defer t.Stop()
	fails := 0
	for wait.Tick(ctx, t.C) {
		rc, err := r.sendRenew(ctx, e)
		now := r.now()
		r.mu.Lock()
		leaseEnd := e.res.LeaseEnd
		r.mu.Unlock()
		var next time.Duration
		switch {
		case err == nil && rc.Ok:
			fails = 0
			if end := protocol.Time(rc.LeaseEndMs); end.After(now) {
				r.extend(e, end)
			} else {
				r.log.Warn("renewal receipt with a past lease end", "reservation", e.res.ID, logging.Opt("session", e.res.Session), "miner", e.miner, "lease_end", end)
			}
			next = interval
		case err == nil:
			state := StateLost
			if !now.Before(leaseEnd) {
				state = StateExpired
			}
			r.end(e, state, "renewal refused: "+rc.Detail)
			return
		case ctx.Err() != nil:
			return
		case !now.Before(leaseEnd):
			r.end(e, StateExpired, "renewal failed: "+err.Error())
			return
		default:
			fails++
			r.log.Warn("renewal failed", "reservation", e.res.ID, logging.Opt("session", e.res.Session), "miner", e.miner, "attempt", fails, "err", err)
			next = min(interval, retryBase<<min(fails-1, 16))
			// One more attempt just after the lease ends decides it.
			next = max(min(next, leaseEnd.Sub(now)+time.Millisecond), time.Millisecond)
		}
		t.Reset(next)
	}
}

// extend records a renewed lease.
func (r *Router) extend(e *entry, leaseEnd time.Time) {
	r.mu.Lock()
	if e.res.State != StateActive {
		r.mu.Unlock()
		return
	}
	e.res.LeaseEnd = leaseEnd
	r.mu.Unlock()
	if err := r.save(e); err != nil {
		r.log.Error("store renewed reservation", "reservation", e.res.ID, "err", err)
	}
}

// end moves an active reservation to state and stores it; it reports
// whether it did.
func (r *Router) end(e *entry, state, detail string) (Reservation, bool, error) {
	r.mu.Lock()
	if e.res.State != StateActive {
		res := e.res
		r.mu.Unlock()
		return res, false, nil
	}
	e.res.State, e.res.Ended, e.res.Detail = state, r.now(), detail
	res := e.res
	r.mu.Unlock()
	err := r.save(e)
	if err != nil {
		r.log.Error("store ended reservation", "reservation", res.ID, "err", err)
	}
	r.log.Info("reservation ended", "reservation", res.ID, logging.Opt("session", res.Session), "miner", res.Miner, "state", state, "detail", detail)
	r.prune()
	return res, true, err
}

// Release ends a reservation with outcome (completed, failed or
// cancelled). It is marked released even if the miner cannot be reached or
// refuses, and the error then wraps ErrNotConfirmed: the lease ends it on
// the miner's side.
func (r *Router) Release(ctx context.Context, id string, outcome pb.Outcome) (Reservation, error) {
	switch outcome {
	case pb.Outcome_COMPLETED, pb.Outcome_FAILED, pb.Outcome_CANCELLED:
	default:
		return Reservation{}, fmt.Errorf("%w: %s", ErrBadOutcome, outcome)
	}
	r.mu.Lock()
	e, ok := r.res[id]
	switch {
	case !ok:
		r.mu.Unlock()
		return Reservation{}, fmt.Errorf("%w: %q", ErrUnknownReservation, id)
	case e.res.State != StateActive:
		res := e.res
		r.mu.Unlock()
		return res, fmt.Errorf("%w: %s", ErrEnded, res.State)
	case e.releasing:
		res := e.res
		r.mu.Unlock()
		return res, fmt.Errorf("%w: a release is in progress", ErrEnded)
	}
	e.releasing = true
	cancel, done := e.cancel, e.done
	e.cancel, e.done = nil, nil
	r.mu.Unlock()
	// No renewal may race the release.
	if cancel != nil {
		cancel()
		<-done
	}
	r.mu.Lock()
	if e.res.State != StateActive { // the renew loop ended it first
		e.releasing = false
		res := e.res
		r.mu.Unlock()
		return res, fmt.Errorf("%w: %s", ErrEnded, res.State)
	}
	r.mu.Unlock()
	rc, err := r.sendRelease(ctx, e, outcome)
	var confirm error
	detail := ""
	switch {
	case err != nil:
		confirm = fmt.Errorf("%w: %v", ErrNotConfirmed, err)
		detail = "release not confirmed: " + err.Error()
	case !rc.Ok:
		confirm = fmt.Errorf("%w: refused: %s", ErrNotConfirmed, rc.Detail)
		detail = "release refused: " + rc.Detail
	}
	res, ended, serr := r.end(e, StateReleased, detail)
	r.mu.Lock()
	e.releasing = false
	r.mu.Unlock()
	if !ended {
		// The renew loop ended it first (lost or expired).
		return res, fmt.Errorf("%w: %s", ErrEnded, res.State)
	}
	if serr != nil {
		return res, errors.Join(confirm, fmt.Errorf("store released reservation: %w", serr))
	}
	return res, confirm
}
