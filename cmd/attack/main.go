// Command attack runs `make attack`: attacks that cost an attacker little,
// each against a fresh local testnet of real ephemera processes on
// 127.0.0.1, and the bounds the network must hold under them. It prints
// each attack's figures and checks, writes the figures in Go's benchmark
// format for the report, and exits 1 if a bound did not hold.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ephemera-network/ephemera/testnet/attack"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit code: 0 when every bound held, 1 when one did not or
// an attack could not be carried out, 2 for bad flags.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	only := fs.String("only", "", "run only these attacks, comma-separated `names` (default: all)")
	quick := fs.Bool("quick", false, "run only the quick attacks")
	bin := fs.String("bin", "", "`path` of the ephemera binary (default: built from this module into a temporary directory)")
	bench := fs.String("bench", "", "write the figures to this `file` in Go's benchmark format")
	list := fs.Bool("list", false, "list the attacks and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: attack [--only NAMES] [--quick] [--bin PATH] [--bench FILE] [--list]")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "attack: %v\n", err)
		return 2
	}
	attacks, err := attack.Select(*only)
	if err != nil {
		fmt.Fprintf(stderr, "attack: %v\n", err)
		return 2
	}
	if *list {
		for _, a := range attacks {
			fmt.Fprintf(stdout, "%-16s quick=%-5v %s\n", a.Name, a.Quick, a.Summary)
		}
		return 0
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	tmp, err := os.MkdirTemp("", "ephemera-attack-")
	if err != nil {
		fmt.Fprintf(stderr, "attack: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if *bin == "" {
		*bin = filepath.Join(tmp, "ephemera")
		if out, err := exec.Command("go", "build", "-o", *bin, "github.com/ephemera-network/ephemera/cmd/ephemera").CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "attack: build the ephemera binary: %v\n%s", err, out)
			return 1
		}
	}
	var results []*attack.Result
	failed := false
	for _, a := range attacks {
		if *quick && !a.Quick {
			continue
		}
		fmt.Fprintf(stdout, "== %s: %s\n", a.Name, a.Summary)
		res, err := attack.Run(ctx, a, *bin, filepath.Join(tmp, a.Name), stdout)
		if err != nil {
			res.Check("the attack ran to its end", false, "%v", err)
		}
		attack.Print(stdout, res)
		results = append(results, res)
		failed = failed || !res.Passed()
		if ctx.Err() != nil {
			break
		}
	}
	if *bench != "" {
		if err := os.WriteFile(*bench, []byte(attack.Bench(results)), 0o644); err != nil {
			fmt.Fprintf(stderr, "attack: %v\n", err)
			return 1
		}
	}
	if failed {
		var names []string
		for _, r := range results {
			if !r.Passed() {
				names = append(names, r.Attack)
			}
		}
		fmt.Fprintf(stderr, "attack: bounds broken by %s\n", strings.Join(names, ", "))
		return 1
	}
	return 0
}
