package sim

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

var (
	simSize   = flag.String("sim.size", "", "the simulated network: race (the default under -race), small, ci (about 100 nodes, the default), mid (200), full (500) or huge (1000)")
	simTrans  = flag.String("sim.transport", "", "quic (QUIC on simulated packet links) or mem (Noise and yamux on in-process streams); the size's own if empty")
	simOut    = flag.String("sim.out", "", "write the report as JSON to this file")
	simBench  = flag.String("sim.bench", "", "write the figures as benchmark lines, for cmd/benchreport, to this file")
	simLog    = flag.String("sim.log", "", "write the nodes' warnings to this file")
	simFor    = flag.Duration("sim.duration", 0, "simulated time after the fill, instead of the size's own")
	simBudget = flag.Duration("sim.budget", 0, "end the load once the run has taken this much real time, and report what it simulated")
)

// sizes are the scenarios of TestSimulation.
var sizes = map[string]Scenario{
	"race": {Plan: Plan{Bootstraps: 1, Oracles: 2, Miners: 6, Routers: 2, Quorum: 2},
		Duration: time.Minute, Churn: 0.2, SessionEvery: 15 * time.Second, FillWithin: 3 * time.Minute},
	"small": {Plan: Plan{Bootstraps: 1, Oracles: 4, Miners: 20, Routers: 3, Quorum: 2},
		Duration: 2 * time.Minute, Churn: 0.10, SessionEvery: 20 * time.Second, FillWithin: 3 * time.Minute},
	"ci": {Plan: Plan{Bootstraps: 2, Oracles: 6, Miners: 72, Routers: 8, Quorum: 2},
		Duration: 65 * time.Second, Churn: 0.10, SessionEvery: 30 * time.Second, FillWithin: 5 * time.Minute},
	"mid": {Plan: Plan{Bootstraps: 2, Oracles: 8, Miners: 170, Routers: 20, Quorum: 2, JoinOver: time.Minute},
		Duration: 2 * time.Minute, Churn: 0.10, SessionEvery: 30 * time.Second, FillWithin: 10 * time.Minute},
	// full and huge run on the mem transport: QUIC's per-packet work would
	// make them cost too many hours (the smaller sizes keep it, as the check
	// that the protocol holds on packet links).
	"full": {Plan: Plan{Bootstraps: 3, Oracles: 10, Miners: 450, Routers: 40, Quorum: 2, JoinOver: 2 * time.Minute},
		Duration: 10 * time.Minute, Churn: 0.10, SessionEvery: 30 * time.Second, FillWithin: 10 * time.Minute, Transport: TransportMem},
	"huge": {Plan: Plan{Bootstraps: 4, Oracles: 16, Miners: 900, Routers: 80, Quorum: 2, JoinOver: 3 * time.Minute},
		Duration: 2 * time.Minute, Churn: 0.10, SessionEvery: 30 * time.Second, FillWithin: 15 * time.Minute, Transport: TransportMem},
}

// TestSimulation runs a network of full nodes over simulated links, with
// churn and a steady stream of sessions, and checks what must hold at any
// scale: no double booking, every session's miners released. Under the
// race detector it runs a network of ten; `make sim-ci` runs the CI size
// and `make sim` the full one.
func TestSimulation(t *testing.T) {
	size := *simSize
	if size == "" {
		size = "ci"
		if raceEnabled || testing.Short() {
			size = "race" // ten nodes: the quick check still runs the whole scenario
		}
	}
	sc, ok := sizes[size]
	if !ok {
		t.Fatalf("-sim.size %q: want race, small, ci, mid, full or huge", size)
	}
	sc.Seed = 1
	if *simTrans != "" {
		sc.Transport = Transport(*simTrans)
	}
	if *simFor > 0 {
		sc.Duration = *simFor
	}
	sc.RealBudget = *simBudget
	run(t, sc)
}

// TestPartition splits the network in two random halves for a simulated
// minute while sessions run, then heals it. No miner may be granted twice,
// every session must end with its miners released, and every router's view
// must agree with every miner's own state again within 90 s: a miner
// republishes its record every minute (a third of record_lifetime).
func TestPartition(t *testing.T) {
	if raceEnabled {
		t.Skip("the partition runs without the race detector (make sim-ci); TestSimulation covers the race detector")
	}
	if testing.Short() {
		t.Skip("a simulated partition of 34 nodes takes over a minute (make sim-ci)")
	}
	run(t, Scenario{
		Plan:     Plan{Bootstraps: 2, Oracles: 4, Miners: 24, Routers: 4, Quorum: 2},
		Duration: 4 * time.Minute, Churn: 0.10, SessionEvery: 15 * time.Second,
		Partition: time.Minute, ConvergeWithin: 90 * time.Second, FillWithin: 3 * time.Minute, Seed: 2,
	})
}

func run(t *testing.T, sc Scenario) *Report {
	dir := homesDir(t)
	log := slog.New(slog.DiscardHandler)
	if *simLog != "" {
		f, err := os.Create(*simLog)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	limitMemory(t)
	oneProcessor(t)
	var rep *Report
	var err error
	synctest.Test(t, func(t *testing.T) {
		rep, err = Run(context.Background(), dir, sc, log, t.Output())
	})
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(t.Output())
	if *simOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(filepath.Clean(*simOut), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if *simBench != "" {
		var b strings.Builder
		rep.BenchLines(&b)
		if err := os.WriteFile(filepath.Clean(*simBench), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := rep.Check(); err != nil {
		t.Fatal(err)
	}
	return rep
}

// homesDir is where the nodes' homes go: in memory (/dev/shm) where there
// is one, since every node syncs each commit and hundreds of stores'
// fsyncs would cost real minutes that the simulated clock never sees.
func homesDir(t *testing.T) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "ephemera-sim-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// limitMemory caps the heap at three quarters of the machine's memory, unless
// GOMEMLIMIT says otherwise: hundreds of nodes hold gigabytes, and the
// collector's default goal of twice the live heap would not fit.
func limitMemory(t *testing.T) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if kb := procKB("/proc/meminfo", "MemTotal:"); kb > 0 {
		prev := debug.SetMemoryLimit(int64(kb * 1024 / 4 * 3))
		t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	}
}

// oneProcessor runs the simulation on one processor, unless GOMAXPROCS says
// otherwise. A synctest bubble takes one lock whenever a goroutine in it
// blocks or wakes, which a simulated network's goroutines do all the time,
// so a second processor mostly contends for that lock: the CI size took
// 210 s on one and 246 s on two, and left no core for the other tests.
// `make sim` sets GOMAXPROCS to every core: at 500 nodes the collector's
// marking of a 14 GB heap, which needs no such lock, gains more from the
// other cores than the lock costs.
func oneProcessor(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}
