// Command netbed runs the join testbed: real ephemera processes on hosts in
// Linux network namespaces, some behind NAT, joining a network with
// nothing but a bootstrap address (see testnet/netns). It needs root,
// iproute2, nftables and curl. Exit 0 when every check holds, 1 when one
// fails, 2 when the testbed can't run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ephemera-network/ephemera/testnet/netns"
)

func main() { os.Exit(run()) }

func run() int {
	binary := flag.String("binary", "bin/ephemera", "the ephemera `binary` every node runs")
	dir := flag.String("dir", "", "`directory` for the nodes' homes and logs (default: a new temporary one, removed when all checks pass)")
	bench := flag.String("bench", "", "write the figures as benchmark lines to this `file`, for the bench report")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()
	if err := preflight(*binary); err != nil {
		fmt.Fprintln(os.Stderr, "netbed:", err)
		return 2
	}
	bin, _ := filepath.Abs(*binary)
	keep := *dir != ""
	if *dir == "" {
		d, err := os.MkdirTemp("", "netbed-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "netbed:", err)
			return 2
		}
		*dir = d
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, done := context.WithTimeout(ctx, *timeout)
	defer done()
	begin := time.Now()
	rep, err := netns.Run(ctx, bin, *dir, os.Stdout)
	if rep != nil {
		fmt.Println()
		rep.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "netbed: %v (homes and logs kept in %s)\n", err, *dir)
		return 2
	}
	if *bench != "" {
		f, err := os.Create(*bench)
		if err != nil {
			fmt.Fprintln(os.Stderr, "netbed:", err)
			return 2
		}
		rep.Bench(f)
		f.Close()
	}
	failed := rep.Failed()
	fmt.Printf("\nnetbed: %d passed, %d failed\n", len(rep.Checks)-len(failed), len(failed))
	if len(failed) > 0 {
		fmt.Fprintf(os.Stderr, "netbed: first failed check: %s (homes and logs kept in %s)\n", failed[0].Name, *dir)
		return 1
	}
	fmt.Printf("in %.0fs\n", time.Since(begin).Seconds())
	if !keep {
		_ = os.RemoveAll(*dir)
	}
	return 0
}

// preflight says in one line what the testbed lacks.
func preflight(binary string) error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root; run it as root (CI does)")
	}
	for _, tool := range []string{"ip", "nft", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (apt-get install iproute2 nftables curl)", tool)
		}
	}
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("no ephemera binary at %s; run `make build` first", binary)
	}
	return nil
}
