package chaos_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/chaos"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/ephemera-network/ephemera/testnet/testkit/localnet"
)

var binary string // the ephemera binary the run kills and restarts, built once

func TestMain(m *testing.M) { os.Exit(testkit.WithBinary(m, &binary)) }

// testLog writes each line the chaos run logs to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// A short chaos run on 8 real processes: two cycles of kill -9 and restart
// while sessions run. No miner is granted twice, no router loses a grant,
// every session ends with its miners released, the pool comes back, and no
// node dies on its own. The seed is fixed so that a failure replays the same
// kills: a router and a miner together, then an oracle and the same miner.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes and kills some")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	launcher := testnet.Subprocess{Binary: binary}
	tn := localnet.Start(t, testnet.Spec{Network: "chaos", Bootstraps: 1, Oracles: 3, Miners: 3, Routers: 1}, launcher)
	rep, err := chaos.Run(ctx, tn, chaos.Config{
		Cycles:         2,
		Seed:           8,
		ConvergeWithin: 90 * time.Second,
		MaxKills:       2,
		MaxDown:        2 * time.Second,
		MaxPause:       3 * time.Second,
		Launcher:       launcher,
		Log:            testLog{t},
	})
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	kills := 0
	for _, n := range rep.Kills {
		kills += n
	}
	switch {
	case rep.Cycles != 2 || kills < 2:
		t.Fatalf("%d cycles, %d kills: want 2 cycles of at least one kill", rep.Cycles, kills)
	case rep.SessionsCreated == 0 || rep.SessionsEnded != rep.SessionsCreated:
		t.Fatalf("%d sessions created, %d ended: want some, all ended", rep.SessionsCreated, rep.SessionsEnded)
	case rep.Grants == 0:
		t.Fatal("no grant seen: the sessions reserved no miner")
	case rep.TasksDone == 0:
		t.Fatal("no task done")
	}
}
