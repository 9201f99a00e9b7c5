package node

import (
	"context"
	"errors"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/observe"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/protocol/pb"
)

// Pool answers GET /v1/pool.
func (n *Node) Pool() []api.PoolMiner {
	miners := n.pool.Miners()
	now := time.Now()
	out := make([]api.PoolMiner, 0, len(miners))
	for _, m := range miners {
		pm := observe.PoolMiner(n.pool, m, now)
		pm.Reach = reachOf(n.host, m.ID)
		out = append(out, pm)
	}
	return out
}

// reserver adapts the router to the API's reservation desk.
type reserver struct{ r *router.Router }

var _ api.Reserver = reserver{}

func (a reserver) Reserve(ctx context.Context, model string, lease time.Duration) (api.Reservation, error) {
	res, err := a.r.Reserve(ctx, model, lease)
	if err != nil {
		return api.Reservation{}, apiErr(err)
	}
	return apiReservation(res), nil
}

func (a reserver) Release(ctx context.Context, id string) (api.Reservation, error) {
	res, err := a.r.Release(ctx, id, pb.Outcome_COMPLETED)
	if err != nil && !errors.Is(err, router.ErrNotConfirmed) {
		return api.Reservation{}, apiErr(err)
	}
	// Not confirmed is released on our side: the reservation's detail says
	// the miner did not confirm, and its lease will end it there.
	return apiReservation(res), nil
}

func (a reserver) Reservations() []api.Reservation {
	return wireAll(a.r.Reservations(), apiReservation)
}

// wireAll converts every element of list to its wire form.
func wireAll[T, W any](list []T, wire func(T) W) []W {
	out := make([]W, len(list))
	for i, v := range list {
		out[i] = wire(v)
	}
	return out
}

// reserverOrNil gives the API the router's desk, or none on other nodes.
func (n *Node) reserverOrNil() api.Reserver {
	if n.router == nil {
		return nil
	}
	return reserver{n.router}
}

// sessionsOrNil gives the API the router's sessions, or none on other nodes.
func (n *Node) sessionsOrNil() api.Sessions {
	if n.sessions == nil {
		return nil
	}
	return sessionsAPI{n.sessions}
}
