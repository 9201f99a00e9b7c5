package testnet_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

// A reserved miner killed with SIGKILL and restarted as a real process is
// still reserved, at the same generation, until its lease ends or it is
// released; and the release then works as usual.
func TestReservedMinerSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 7 processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	tn, launcher := startProcesses(t, testnet.Spec{Network: "crash", Bootstraps: 1, Oracles: 3, Miners: 2, Routers: 1})
	localnet.WaitAvailable(t, tn, 2, time.Minute)
	res, err := tn.Reserve(ctx, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	n, name, ok := tn.Find(res.Miner)
	if !ok {
		t.Fatalf("reserved miner %s is not in the testnet", res.Miner)
	}
	if err := n.(*testnet.Process).Kill(); err != nil {
		t.Fatal(err)
	}
	n, err = tn.Restart(ctx, name, launcher)
	if err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	var info api.NodeInfo
	if err := getJSON(ctx, n.Runtime().APIURL+"/v1/node", &info); err != nil {
		t.Fatal(err)
	}
	if info.State != "reserved" || info.Generation == nil || *info.Generation != res.Generation {
		t.Fatalf("after kill -9 and restart: state %q generation %v, want reserved at %d", info.State, info.Generation, res.Generation)
	}
	// Nobody else can take it meanwhile.
	if other, err := tn.Reserve(ctx, time.Minute); err == nil && other.Miner == res.Miner {
		t.Fatalf("the reserved miner was granted again: %+v", other)
	}
	if _, err := tn.Release(ctx, res.ID); err != nil {
		t.Fatalf("release after restart: %v", err)
	}
	if _, err := tn.WaitPool(ctx, "the miner available at the next generation", func(m []api.PoolMiner) bool {
		for _, x := range m {
			if x.PeerID == res.Miner {
				return x.State == "available" && x.Generation == res.Generation+1
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
}

func getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// startProcesses starts spec as real processes of the test binary, healthy,
// and stopped when the test ends.
func startProcesses(t *testing.T, spec testnet.Spec) (*testnet.Testnet, testnet.Subprocess) {
	t.Helper()
	launcher := testnet.Subprocess{Binary: binary}
	return localnet.Start(t, spec, launcher), launcher
}
