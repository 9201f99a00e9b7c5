package attack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/testnet"
)

// Hoarding is one throwaway router identity that claims every available
// miner with the longest lease and keeps renewing.
func Hoarding() Attack {
	return Attack{
		Name:      "hoarding",
		Summary:   "one router identity claims every available miner with the longest lease and renews",
		Quick:     true,
		Spec:      testnet.Spec{Network: "attack-hoard", Bootstraps: 1, Oracles: 1, Miners: 5, Routers: 2},
		InProcess: []string{"router-1"},
		Run:       hoarding,
	}
}

func hoarding(ctx context.Context, e *Env) error {
	const bound = 10 * time.Second
	n, err := e.InProcess("router-1")
	if err != nil {
		return err
	}
	hoarder := n.Router()
	lease := e.Net.Definition.Params.LeaseMax.Std()
	actx, stop := context.WithCancel(ctx)
	defer stop()
	held := make(chan int, 1)
	go func() {
		// Claim whatever becomes available, for as long as the attack lasts.
		count := 0
		for actx.Err() == nil {
			if _, err := hoarder.Reserve(actx, "", lease); err == nil {
				count++
				continue
			}
			select {
			case <-actx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		held <- count
	}()
	// The hoarder takes what it can before the honest router asks.
	time.Sleep(3 * time.Second)
	honest := client.New(e.Net.RouterURL())
	begin := time.Now()
	var got api.Reservation
	for time.Since(begin) < 3*bound {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err = honest.Reserve(rctx, api.ReserveRequest{Lease: "30s"})
		cancel()
		var se *client.StatusError
		if err == nil || !errors.As(err, &se) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	waited := time.Since(begin)
	stop()
	count := <-held
	// The hoarder's grants beyond its share that the miners ended early.
	evicted := 0.0
	for _, m := range e.Net.Members() {
		if !slices.Contains(m.Roles, node.RoleMiner) {
			continue
		}
		v, merr := e.metric(m.Name, "ephemera_miner_evictions_total")
		if merr != nil {
			return merr
		}
		evicted += v
	}
	e.Result.Figure("hoarder-claims", float64(count), "reservations")
	e.Result.Figure("miners-evicted", evicted, "reservations")
	e.Result.Figure("honest-reserve-s", waited.Seconds(), "s")
	ok := err == nil && waited <= bound
	detail := fmt.Sprintf("the hoarder made %d reservations, %.0f ended over its share; the honest router reserved %s after %.1f s",
		count, evicted, got.Miner, waited.Seconds())
	if err != nil {
		detail = fmt.Sprintf("the hoarder made %d reservations, %.0f ended over its share; the honest router got none in %.0f s: %v",
			count, evicted, waited.Seconds(), err)
	}
	e.Result.Check(fmt.Sprintf("an honest router gets a miner within %s while one identity hoards", bound), ok, "%s", detail)
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, _ = honest.Release(rctx, got.ID)
	}
	return nil
}
