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
	"github.com/ephemera-network/ephemera/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// settleEvery is how often claims left unanswered are sent again.
const settleEvery = 5 * time.Second

// pending is a claim sent whose grant is not yet stored, kept under
// pend/<claim session>. A router that dies between the miner's grant and
// its own write, or that lost the reply, would otherwise leave the miner
// reserved for nobody until the lease ran out.
type pending struct {
	Claim   []byte `json:"claim"`
	Miner   string `json:"miner"`
	Session string `json:"session,omitempty"`
	Model   string `json:"model,omitempty"`
	LeaseMs int64  `json:"lease_ms"`
}

func (r *Router) savePending(id string, p pending) error {
	r.mu.Lock()
	r.inflight[id] = true
	r.mu.Unlock()
	err := r.d.Store.Update(func(txn *store.Txn) error {
		return store.PutJSON(txn, pendKey(id), p)
	})
	if err != nil {
		r.mu.Lock()
		delete(r.inflight, id)
		r.mu.Unlock()
		return fmt.Errorf("store claim: %w", err)
	}
	return nil
}

// dropPending forgets a claim that is settled: granted and stored, or
// refused.
func (r *Router) dropPending(id string) {
	if err := r.d.Store.Delete(pendKey(id)); err != nil {
		r.log.Warn("delete settled claim", "reservation", id, "err", err)
	}
	r.finishPending(id)
}

// refusePending forgets a claim its miner refused. Its record is deleted
// with the others at the next settle: many claims are refused when routers
// contend for a pool, and a record left behind by a crash is only sent again
// and refused again.
func (r *Router) refusePending(id string) {
	r.mu.Lock()
	delete(r.inflight, id)
	r.refused[id] = true
	r.mu.Unlock()
}

// flushRefused deletes the records of refused claims, in one transaction.
func (r *Router) flushRefused() {
	r.mu.Lock()
	ids := make([]string, 0, len(r.refused))
	for id := range r.refused {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	err := r.d.Store.Update(func(txn *store.Txn) error {
		for _, id := range ids {
			if err := txn.Delete(pendKey(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("delete refused claims", "claims", len(ids), "err", err)
		return
	}
	r.mu.Lock()
	for _, id := range ids {
		delete(r.refused, id)
	}
	r.mu.Unlock()
}

// finishPending hands a claim whose outcome is unknown over to settle.
func (r *Router) finishPending(id string) {
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
}

// settleLoop settles pending claims at Start and every settleEvery.
func (r *Router) settleLoop(ctx context.Context) {
	defer r.wg.Done()
	wait.Every(ctx, settleEvery, r.settle)
}

// settle sends every pending claim not in flight to its miner again. The
// miner answers a claim it granted with the same grant, even after the
// claim expired, so the router learns whether it holds a reservation
// nobody asked it to keep any more; if it does, it releases it. A claim
// whose miner cannot be reached is dropped once any lease it could have
// started is over.
func (r *Router) settle(ctx context.Context) {
	r.flushRefused()
	type item struct {
		id string
		p  pending
	}
	var items []item
	err := r.d.Store.View(func(txn *store.Txn) error {
		return store.ScanJSON(txn, []byte(pendPrefix), func(k []byte, p pending, err error) error {
			id := string(k[len(pendPrefix):])
			if err != nil {
				r.log.Warn("dropping a damaged pending claim", "key", string(k), "err", err)
				r.dropPending(id)
				return nil
			}
			items = append(items, item{id, p})
			return nil
		})
	})
	if err != nil {
		r.log.Warn("scan pending claims", "err", err)
		return
	}
	for _, it := range items {
		r.mu.Lock()
		busy := r.inflight[it.id] || r.refused[it.id]
		if !busy {
			r.inflight[it.id] = true
		}
		r.mu.Unlock()
		if busy {
			continue
		}
		err := r.settleOne(ctx, it.id, it.p)
		r.finishPending(it.id)
		if err != nil && ctx.Err() == nil {
			r.log.Debug("pending claim not settled yet", "reservation", it.id, logging.Opt("session", it.p.Session), "miner", it.p.Miner, "err", err)
		}
	}
}

var errUnreachable = errors.New("unreachable")

func (r *Router) settleOne(ctx context.Context, id string, p pending) error {
	// The scan may predate a claim that was settled since, by the Reserve
	// that sent it: the claim is pending only if its record still is, and
	// no reservation has its id.
	if _, err := r.d.Store.Get(pendKey(id)); err != nil {
		return nil
	}
	if _, ok := r.Get(id); ok {
		r.dropPending(id)
		return nil
	}
	miner, err := peer.Decode(p.Miner)
	if err != nil {
		r.dropPending(id)
		return err
	}
	claim, err := protocol.Open[pb.Claim](p.Claim)
	if err != nil {
		r.dropPending(id)
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, claimTimeout)
	grant, err := r.sendClaim(cctx, miner, p.Claim, time.Time{})
	cancel()
	switch {
	case errors.Is(err, errUnreachable):
		// Past the claim's expiry and the longest lease, no grant of it can
		// still hold the miner.
		if r.now().After(protocol.Time(claim.Msg.ExpiresMs).Add(r.d.Check.Params.LeaseMax.Std())) {
			r.dropPending(id)
		}
		return err
	case err != nil:
		r.dropPending(id) // refused: the miner holds nothing for this claim
		return err
	}
	res, err := r.adopt(ctx, id, p, grant, miner, r.now())
	if err != nil {
		return err
	}
	r.log.Info("releasing a reservation granted to a claim whose answer was lost", "reservation", id, logging.Opt("session", p.Session), "miner", miner)
	_, err = r.Release(ctx, res.ID, pb.Outcome_CANCELLED)
	return err
}
