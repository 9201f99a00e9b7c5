// Command chaos runs the SIGKILL half of `make chaos`: a local testnet of
// real ephemera processes on 127.0.0.1 whose nodes are killed with SIGKILL
// at random moments while sessions run, and restarted; then it checks that
// no miner was granted twice for one generation, that no router lost a
// grant, that every session ended with its miners released and that the
// pool came back, prints the figures and exits 1 if a check failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/chaos"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	spec    testnet.Spec
	chaos   chaos.Config
	seed    uint64
	dir     string
	bin     string
	startIn time.Duration
}

// run returns the exit code: 0 when every check passed, 1 when one failed or
// the run could not be carried out, 2 for bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "chaos: %v\n", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	if err := runChaos(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "chaos: %v\n", err)
		return 1
	}
	return 0
}

func parse(args []string, stdout io.Writer) (options, error) {
	def := chaos.DefaultConfig()
	o := options{spec: testnet.DefaultSpec(), chaos: def}
	o.spec.Network = "chaos"
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	// Parse's own messages are silenced: a bad flag is one line, from run.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.IntVar(&o.chaos.Cycles, "cycles", def.Cycles, "rounds of kills and restarts")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of every random choice; 0 picks one (printed, to replay a run)")
	fs.IntVar(&o.spec.Oracles, "oracles", o.spec.Oracles, "number of oracles")
	fs.IntVar(&o.spec.Miners, "miners", o.spec.Miners, "number of miners")
	fs.IntVar(&o.spec.Routers, "routers", o.spec.Routers, "number of routers")
	fs.DurationVar(&o.chaos.ConvergeWithin, "converge-within", def.ConvergeWithin, "bound on the time from the last restart until every miner is available again")
	fs.IntVar(&o.chaos.MaxKills, "max-kills", def.MaxKills, "most nodes killed in one cycle")
	fs.DurationVar(&o.chaos.MaxDown, "max-down", def.MaxDown, "longest a killed node stays down")
	fs.DurationVar(&o.chaos.MaxPause, "max-pause", def.MaxPause, "longest wait before a cycle's kills")
	fs.IntVar(&o.chaos.Workers, "workers", def.Workers, "session drivers per router")
	fs.StringVar(&o.dir, "dir", "", "`directory` for the nodes' homes and logs, missing or empty (default: a new temporary one, removed after a passing run)")
	fs.StringVar(&o.bin, "bin", "", "`path` of the ephemera binary (default: built from this module into a temporary directory)")
	fs.DurationVar(&o.startIn, "start-timeout", 90*time.Second, "how long the testnet may take to start")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: chaos [--cycles N] [--seed N] [--oracles N] [--miners N] [--routers N] [--converge-within D] [--dir DIR] [--bin PATH]")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q; every setting is a flag", fs.Arg(0))
	}
	switch {
	case o.chaos.Cycles < 1:
		return o, fmt.Errorf("--cycles %d: want at least 1", o.chaos.Cycles)
	case o.spec.Oracles < 1:
		return o, fmt.Errorf("--oracles %d: want at least 1", o.spec.Oracles)
	case o.spec.Miners < 1:
		return o, fmt.Errorf("--miners %d: want at least 1", o.spec.Miners)
	case o.spec.Routers < 1:
		return o, fmt.Errorf("--routers %d: want at least 1", o.spec.Routers)
	case o.spec.Oracles+o.spec.Miners+o.spec.Routers > 60:
		return o, fmt.Errorf("%d oracles, miners and routers: at most 60 for a chaos run on one machine", o.spec.Oracles+o.spec.Miners+o.spec.Routers)
	case o.chaos.ConvergeWithin <= 0:
		return o, fmt.Errorf("--converge-within %s: want a positive duration", o.chaos.ConvergeWithin)
	case o.chaos.MaxKills < 1:
		return o, fmt.Errorf("--max-kills %d: want at least 1", o.chaos.MaxKills)
	case o.chaos.MaxDown <= 0:
		return o, fmt.Errorf("--max-down %s: want a positive duration", o.chaos.MaxDown)
	case o.chaos.MaxPause <= 0:
		return o, fmt.Errorf("--max-pause %s: want a positive duration", o.chaos.MaxPause)
	case o.chaos.Workers < 1:
		return o, fmt.Errorf("--workers %d: want at least 1", o.chaos.Workers)
	case o.startIn <= 0:
		return o, fmt.Errorf("--start-timeout %s: want a positive duration", o.startIn)
	}
	if o.bin != "" {
		if st, err := os.Stat(o.bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return o, fmt.Errorf("--bin %s: not an executable file", o.bin)
		}
	}
	if o.dir != "" {
		if err := emptyDir(o.dir); err != nil {
			return o, fmt.Errorf("--dir %s: %w", o.dir, err)
		}
	}
	for o.seed == 0 {
		o.seed = rand.Uint64()
	}
	o.chaos.Seed = o.seed
	return o, o.spec.Validate()
}

// emptyDir accepts a missing or empty directory: a run never reuses
// another's homes.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return errors.New("not empty; choose a new directory or remove it")
	}
	return nil
}

// runChaos builds the binary if need be, starts the testnet, runs the chaos
// and stops every node, whatever happened.
func runChaos(ctx context.Context, o options, out io.Writer) error {
	fmt.Fprintf(out, "chaos: seed %d (replay with --seed %d)\n", o.seed, o.seed)
	if o.bin == "" {
		tmp, err := os.MkdirTemp("", "ephemera-chaos-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		o.bin = filepath.Join(tmp, "ephemera")
		fmt.Fprintln(out, "chaos: building ephemera")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.bin, "github.com/ephemera-network/ephemera/cmd/ephemera")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build ephemera (run from the module, or give --bin): %v: %s", err, firstLine(b))
		}
	}
	keep := o.dir != ""
	if o.dir == "" {
		d, err := os.MkdirTemp("", "ephemera-chaos-")
		if err != nil {
			return err
		}
		o.dir = d
	} else if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	launcher := testnet.Subprocess{Binary: o.bin}
	o.chaos.Launcher = launcher
	o.chaos.Log = out
	fmt.Fprintf(out, "chaos: starting %d nodes in %s (logs: <node>/node.log)\n", o.spec.Bootstraps+o.spec.Oracles+o.spec.Miners+o.spec.Routers, o.dir)
	sctx, sdone := context.WithTimeout(ctx, o.startIn)
	tn, err := testnet.Start(sctx, o.dir, o.spec, launcher)
	sdone()
	if err == nil {
		var rep chaos.Report
		rep, err = chaos.Run(ctx, tn, o.chaos)
		if err == nil {
			rep.Print(out)
			err = rep.Err()
		}
	}
	stop, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	if serr := tn.Stop(stop); serr != nil && err == nil && ctx.Err() == nil {
		fmt.Fprintf(out, "chaos: stop: %v\n", serr)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted; every node stopped; homes and logs kept in %s", o.dir)
	case err != nil:
		return fmt.Errorf("%v (seed %d; homes and logs in %s)", err, o.seed, o.dir)
	}
	if !keep {
		os.RemoveAll(o.dir)
	}
	return nil
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
