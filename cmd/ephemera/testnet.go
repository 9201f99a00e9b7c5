package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet"
)

func runTestnet(args []string, stdout, stderr io.Writer) (retErr error) {
	fs := newFlagSet("testnet", "[--dir DIR | --keep] [--host IP] [--oracles N] [--miners N] [--routers N] [--check]", stdout)
	spec := testnet.DefaultSpec()
	dir := fs.String("dir", "", "`directory` for the nodes' homes, kept afterwards (default: a new temporary one, removed on exit unless --keep)")
	keep := fs.Bool("keep", false, "keep the temporary directory on exit")
	fs.StringVar(&spec.Host, "host", "", "`IP` of this machine that every node's libp2p addresses bind to, so that other machines can join (default 127.0.0.1; APIs stay on loopback)")
	fs.StringVar(&spec.Network, "network", spec.Network, "network `name`")
	fs.IntVar(&spec.Bootstraps, "bootstraps", spec.Bootstraps, "number of bootstrap nodes")
	fs.IntVar(&spec.Oracles, "oracles", spec.Oracles, "number of oracles")
	fs.IntVar(&spec.Miners, "miners", spec.Miners, "number of miners")
	fs.IntVar(&spec.Routers, "routers", spec.Routers, "number of routers")
	check := fs.Bool("check", false, "check that every node becomes healthy, one miner goes through the lifecycle, a session of 3 miners agrees and a chat completion streams, then stop them all and exit 0 or 1")
	wait := fs.Duration("timeout", 45*time.Second, "how long nodes may take to become healthy")
	binary := fs.String("binary", "", "ephemera `binary` each node runs (default: this one)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return usageError{err}
	}
	if *binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
		*binary = exe
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "ephemera-testnet-")
		if err != nil {
			return err
		}
		*dir = d
		// Deferred first, so it runs last, after every node has stopped. A
		// testnet that failed keeps its homes: their logs say why.
		defer func() { removeTemp(stdout, stderr, d, *keep, retErr != nil) }()
	} else if err := emptyDir(*dir); err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	begin := time.Now()
	fmt.Fprintf(stdout, "starting %d nodes in %s\n", spec.Bootstraps+spec.Oracles+spec.Miners+spec.Routers, *dir)
	tn, err := testnet.Start(ctx, *dir, spec, testnet.Subprocess{Binary: *binary})
	stop := func() error {
		sctx, done := context.WithTimeout(context.Background(), 20*time.Second)
		defer done()
		return tn.Stop(sctx)
	}
	if err != nil {
		return errors.Join(err, stop())
	}
	wctx, wdone := context.WithTimeout(ctx, *wait)
	statuses, healthErr := tn.WaitHealthy(wctx)
	wdone()
	manifest, merr := tn.WriteManifest(statuses)
	printTable(stdout, statuses)
	fmt.Fprintf(stdout, "\nlogs:     %s\nmanifest: %s\nnetwork:  %s (hash %s)\n", filepath.Join(*dir, "<node>", "node.log"), manifest,
		filepath.Join(*dir, protocol.DefinitionFile), tn.Definition.Hash())
	fmt.Fprintf(stdout, "\nto join %s:\n  %s\n", joinWhere(spec.Host), tn.JoinCommand())
	if healthErr != nil || merr != nil {
		return errors.Join(healthErr, merr, stop())
	}
	fmt.Fprintf(stdout, "all %d nodes healthy after %.1fs\n", len(statuses), time.Since(begin).Seconds())
	if *check {
		for _, c := range []struct {
			name string
			run  func(context.Context, io.Writer) error
		}{
			{"lifecycle", tn.CheckLifecycle},
			{"session", tn.CheckSession},
			{"chat", tn.CheckChatStream},
		} {
			cctx, cdone := context.WithTimeout(ctx, *wait)
			err := c.run(cctx, stdout)
			cdone()
			if err != nil {
				return errors.Join(fmt.Errorf("%s check: %w", c.name, err), stop())
			}
		}
	} else {
		fmt.Fprintln(stdout, "running; press Ctrl-C to stop every node")
		<-ctx.Done()
	}
	fmt.Fprintln(stdout, "stopping")
	if err := stop(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "stopped")
	return nil
}

// emptyDir accepts a missing or empty directory: a testnet never reuses
// another's homes by accident.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty; choose a new directory or remove it", dir)
	}
	return nil
}

// joinWhere says where the join command works: a testnet on a loopback
// address can be joined from this machine only.
func joinWhere(host string) string {
	if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() {
		return "from this machine only (the nodes listen on 127.0.0.1; --host IP lets other machines in)"
	}
	return "from another machine (this machine's firewall must let in these addresses' ports, TCP and UDP)"
}

// removeTemp removes the testnet's temporary directory unless keep or
// failed, and says which it did.
func removeTemp(stdout, stderr io.Writer, dir string, keep, failed bool) {
	switch {
	case keep:
		fmt.Fprintf(stdout, "kept %s\n", dir)
		return
	case failed:
		fmt.Fprintf(stdout, "kept %s for its logs, since the testnet failed\n", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(stderr, "ephemera: could not remove the testnet's directory: %v\n", err)
		return
	}
	fmt.Fprintf(stdout, "removed %s (--keep keeps it)\n", dir)
}

// printTable prints one row per node, then each node's home: a home
// column would push rows past 120 columns.
func printTable(w io.Writer, statuses []testnet.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tAPI\tPEER ID\tHEALTH")
	for _, s := range statuses {
		health := "healthy"
		if !s.Healthy {
			health = "UNHEALTHY: " + s.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, strings.Join(s.Roles, ","), s.APIURL, s.PeerID, health)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nhomes (--home for status, pool, reserve, submit…; node.log inside):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range statuses {
		fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.Home)
	}
	tw.Flush()
}
