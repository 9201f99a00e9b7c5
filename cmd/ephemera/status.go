package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

func runStatus(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("status", "[--api URL | --home DIR] [--json]", stdout)
	apiURL := fs.String("api", "", "base `URL` of the node's API (default: from --home if that node runs, else http://"+node.DefaultAPIAddr+")")
	home := homeFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	base, err := statusURL(*apiURL, node.Home{Dir: *home}, set["home"])
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 5 * time.Second}
	var info api.NodeInfo
	if err := getJSON(client, base+"/v1/node", &info); err != nil {
		return err
	}
	var health api.Health
	if err := getJSON(client, base+"/healthz", &health); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			api.NodeInfo
			Health api.Health `json:"health"`
		}{info, health})
	}
	healthText := health.Status
	if health.Reason != "" {
		healthText += " (" + health.Reason + ")"
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "peer id\t%s\n", info.PeerID)
	fmt.Fprintf(tw, "network\t%s\n", info.Network)
	fmt.Fprintf(tw, "roles\t%s\n", strings.Join(info.Roles, ", "))
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

// statusURL picks the API to ask: --api, else the running node of --home,
// else the default address.
func statusURL(flagURL string, h node.Home, homeGiven bool) (string, error) {
	if flagURL != "" {
		u, err := url.Parse(flagURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", usageError{fmt.Errorf("--api %q is not an http(s) URL such as http://127.0.0.1:7601", flagURL)}
		}
		return strings.TrimSuffix(flagURL, "/"), nil
	}
	if node.Running(h) {
		if rt, err := node.ReadRuntime(h); err == nil {
			return rt.APIURL, nil
		}
	} else if homeGiven {
		return "", fmt.Errorf("no node is running in home %s", h.Dir)
	}
	return "http://" + node.DefaultAPIAddr, nil
}

func getJSON(client *http.Client, u string, v any) error {
	resp, err := client.Get(u)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the node at %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	// /healthz answers 503 with a JSON body when unhealthy: that is an answer.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: not an Ephemera API answer: %v", u, err)
	}
	return nil
}
