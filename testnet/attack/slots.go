package attack

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// FullBootstrap fills a bootstrap node's connection slots with throwaway
// identities, then has a newcomer dial it.
func FullBootstrap() Attack {
	return Attack{
		Name:    "full-bootstrap",
		Summary: "300 throwaway identities connect to the bootstrap node, then a newcomer dials it",
		Quick:   true,
		Spec:    named(small, "attack-slots"),
		Run:     fullBootstrap,
	}
}

func fullBootstrap(ctx context.Context, e *Env) error {
	const identities, stay = 300, 5 * time.Second
	m, err := e.Member("bootstrap-0")
	if err != nil {
		return err
	}
	info, err := addrInfo(m.Node.Runtime().Addrs)
	if err != nil {
		return err
	}
	var hosts []host.Host
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	connected := 0
	for range identities {
		h, err := e.newAttacker()
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if h.Connect(cctx, info) == nil {
			connected++
		}
		cancel()
	}
	e.Logf("%d of %d throwaway identities connected", connected, identities)
	newcomer, err := e.newAttacker()
	if err != nil {
		return err
	}
	hosts = append(hosts, newcomer)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = newcomer.Connect(cctx, info)
	cancel()
	if err == nil {
		time.Sleep(stay)
	}
	admitted := err == nil && newcomer.Network().Connectedness(info.ID) == network.Connected
	still := 0
	for _, h := range hosts[:len(hosts)-1] {
		if h.Network().Connectedness(info.ID) == network.Connected {
			still++
		}
	}
	e.Result.Figure("throwaway-connected", float64(connected), "identities")
	e.Result.Figure("throwaway-still-connected", float64(still), "identities")
	e.Result.Figure("newcomer-admitted", b2f(admitted), "")
	e.Result.Check("a full bootstrap still admits an honest newcomer", admitted,
		"%d throwaway identities connected (%d still); the newcomer: connect %v, connected %s later: %v", connected, still, errOrOK(err), stay, admitted)
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
