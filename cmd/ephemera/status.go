package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
)

func printStatus(c *client.Client, call apiCall) error {
	ctx := context.Background()
	info, err := c.Node(ctx)
	if err != nil {
		return err
	}
	health, err := c.Health(ctx)
	if err != nil {
		return err
	}
	if call.json {
		return printJSON(call.stdout, struct {
			api.NodeInfo
			Health api.Health `json:"health"`
		}{info, health})
	}
	healthText := health.Status
	if health.Reason != "" {
		healthText += " (" + health.Reason + ")"
	}
	tw := tabwriter.NewWriter(call.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "peer id\t%s\n", info.PeerID)
	fmt.Fprintf(tw, "network\t%s (hash %s)\n", info.Network, info.NetworkHash)
	fmt.Fprintf(tw, "roles\t%s\n", strings.Join(info.Roles, ", "))
	if info.State != "" && info.Generation != nil {
		fmt.Fprintf(tw, "miner state\t%s (generation %d)\n", info.State, *info.Generation)
	}
	fmt.Fprintf(tw, "version\t%s\n", info.Version)
	fmt.Fprintf(tw, "uptime\t%s\n", (time.Duration(info.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(tw, "health\t%s\n", healthText)
	fmt.Fprintf(tw, "peers\t%d\n", info.Peers)
	fmt.Fprintf(tw, "routing table\t%d (dht %s)\n", info.RoutingTableSize, info.DHTMode)
	for i, a := range info.Addrs {
		label := ""
		if i == 0 {
			label = "addresses"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, a)
	}
	return tw.Flush()
}
