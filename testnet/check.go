package testnet

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/node"
)

// Pool is the pool as the first node (a bootstrap node) sees it.
func (t *Testnet) Pool(ctx context.Context) ([]api.PoolMiner, error) {
	return client.New(t.nodes[0].Runtime().APIURL).Pool(ctx)
}

// WaitPool polls the first node's pool view until cond holds or ctx ends.
func (t *Testnet) WaitPool(ctx context.Context, what string, cond func([]api.PoolMiner) bool) ([]api.PoolMiner, error) {
	for {
		miners, err := t.Pool(ctx)
		if err == nil && cond(miners) {
			return miners, nil
		}
		select {
		case <-ctx.Done():
			return miners, fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CountState counts the miners in state.
func CountState(miners []api.PoolMiner, state string) int {
	n := 0
	for _, m := range miners {
		if m.State == state {
			n++
		}
	}
	return n
}

// RouterURL is the API of the first router, or "" if there is none.
func (t *Testnet) RouterURL() string {
	for _, n := range t.nodes {
		if node.HasRole(n.roles, node.RoleRouter) {
			return n.Runtime().APIURL
		}
	}
	return ""
}

// Reserve reserves a miner through the first router.
func (t *Testnet) Reserve(ctx context.Context, lease time.Duration) (api.Reservation, error) {
	return client.New(t.RouterURL()).Reserve(ctx, api.ReserveRequest{Lease: lease.String()})
}

// Release releases a reservation through the first router.
func (t *Testnet) Release(ctx context.Context, id string) (api.Reservation, error) {
	return client.New(t.RouterURL()).Release(ctx, id)
}

// CheckLifecycle walks one miner through the whole lifecycle on the running
// testnet: every miner validated and available; one reserved through the
// router; released, it validates again and is available at generation + 1.
// It reports each step to log.
func (t *Testnet) CheckLifecycle(ctx context.Context, log io.Writer) error {
	miners := t.Spec.Miners
	if miners == 0 || t.Spec.Oracles == 0 || t.RouterURL() == "" {
		fmt.Fprintln(log, "lifecycle check skipped: it needs oracles, miners and a router")
		return nil
	}
	begin := time.Now()
	if _, err := t.WaitPool(ctx, "every miner available", func(m []api.PoolMiner) bool {
		return CountState(m, "available") == miners
	}); err != nil {
		return err
	}
	fmt.Fprintf(log, "pool: all %d miners validated and available after %.1fs\n", miners, time.Since(begin).Seconds())

	res, err := t.Reserve(ctx, time.Minute)
	if err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	find := func(m []api.PoolMiner) (api.PoolMiner, bool) {
		for _, x := range m {
			if x.PeerID == res.Miner {
				return x, true
			}
		}
		return api.PoolMiner{}, false
	}
	if _, err := t.WaitPool(ctx, "the reserved miner shown reserved", func(m []api.PoolMiner) bool {
		x, ok := find(m)
		return ok && x.State == "reserved"
	}); err != nil {
		return err
	}
	fmt.Fprintf(log, "reserve: %s reserved at generation %d (reservation %s)\n", res.Miner, res.Generation, res.ID)

	if _, err := t.Release(ctx, res.ID); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	released := time.Now()
	if _, err := t.WaitPool(ctx, "the released miner available at the next generation", func(m []api.PoolMiner) bool {
		x, ok := find(m)
		return ok && x.State == "available" && x.Generation == res.Generation+1
	}); err != nil {
		return err
	}
	fmt.Fprintf(log, "release: %s validated again and available at generation %d after %.1fs\n",
		res.Miner, res.Generation+1, time.Since(released).Seconds())
	return nil
}
