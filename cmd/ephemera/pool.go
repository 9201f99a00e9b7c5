package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
)

func pool(fs *flag.FlagSet) apiBody {
	state := fs.String("state", "", "show only miners in this `state` (joining, validating, available, reserved, cooling_off, stale)")
	return func(c *client.Client, call apiCall) error { return printPool(c, call, *state) }
}

func printPool(c *client.Client, call apiCall, state string) error {
	if err := checkPoolState(state); err != nil {
		return err
	}
	stdout := call.stdout
	miners, err := c.Pool(context.Background())
	if err != nil {
		return err
	}
	if state != "" {
		kept := miners[:0]
		for _, m := range miners {
			if m.State == state {
				kept = append(kept, m)
			}
		}
		miners = kept
	}
	if call.json {
		return printJSON(stdout, miners)
	}
	counts := map[string]int{}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER ID\tSTATE\tGEN\tORACLES\tREPUTATION\tMODELS\tLAST SEEN")
	for _, m := range miners {
		counts[m.State]++
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2f\t%s\t%s ago\n", m.PeerID, m.State, m.Generation, len(m.Oracles),
			m.Reputation, strings.Join(m.Models, ","), time.Since(m.LastSeen).Round(time.Second))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var parts []string
	for _, s := range poolStates {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	fmt.Fprintf(stdout, "%d miners: %s\n", len(miners), strings.Join(parts, ", "))
	return nil
}

// poolStates are the states /v1/pool shows; stale is an available miner
// whose record has lapsed.
var poolStates = []string{"joining", "validating", "available", "reserved", "cooling_off", "stale"}

// checkPoolState refuses a --state that /v1/pool never shows.
func checkPoolState(state string) error {
	if state != "" && !slices.Contains(poolStates, state) {
		return usageError{fmt.Errorf("--state %q is not one of %s", state, strings.Join(poolStates, ", "))}
	}
	return nil
}

func reserve(fs *flag.FlagSet) apiBody {
	lease := fs.Duration("lease", 0, "lease `duration` (default: the network's)")
	model := fs.String("model", "", "reserve a miner serving this `model`")
	return func(c *client.Client, call apiCall) error {
		if *lease < 0 {
			return usageError{fmt.Errorf("--lease %s is negative", *lease)}
		}
		req := api.ReserveRequest{Model: *model}
		if *lease > 0 {
			req.Lease = lease.String()
		}
		r, err := c.Reserve(context.Background(), req)
		if err != nil {
			return err
		}
		return printReservation(call.stdout, r, call.json)
	}
}

func release(c *client.Client, call apiCall) error {
	if call.arg == "" {
		return usageError{fmt.Errorf("which reservation? usage: ephemera release ID")}
	}
	r, err := c.Release(context.Background(), call.arg)
	if err != nil {
		return err
	}
	return printReservation(call.stdout, r, call.json)
}

// printReservation shows the router's answer.
func printReservation(w io.Writer, r api.Reservation, asJSON bool) error {
	if asJSON {
		return printJSON(w, r)
	}
	fmt.Fprintf(w, "reservation %s: %s\nminer:      %s (generation %d)\n", r.ID, r.State, r.Miner, r.Generation)
	if r.State == "active" || r.Ended.IsZero() {
		fmt.Fprintf(w, "lease ends: %s\n", r.LeaseEnd.Local().Format(time.RFC3339))
		return nil
	}
	// An ended reservation says when it ended, and the lease end it had:
	// the miner's side holds it until then if the release went unconfirmed.
	fmt.Fprintf(w, "ended:      %s\nlease was:  until %s\n", r.Ended.Local().Format(time.RFC3339), r.LeaseEnd.Local().Format(time.RFC3339))
	if r.Detail != "" {
		fmt.Fprintf(w, "detail:     %s\n", r.Detail)
	}
	return nil
}
