package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/api/client"
	"github.com/ephemera-network/ephemera/node"
)

// finding is one thing doctor checked: what, whether it is well, and the
// line that fixes it when it is not.
type finding struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// doctorReport is what `ephemera doctor --json` prints.
type doctorReport struct {
	Home        string           `json:"home"`
	Network     string           `json:"network,omitempty"`
	NetworkHash string           `json:"network_hash,omitempty"`
	Running     bool             `json:"running"`
	Findings    []finding        `json:"findings"`
	Problems    int              `json:"problems"`
	Node        *api.NodeInfo    `json:"node,omitempty"`
	Net         *api.NetworkInfo `json:"network_info,omitempty"`
}

func (r *doctorReport) add(f finding) {
	r.Findings = append(r.Findings, f)
	if !f.OK {
		r.Problems++
	}
}

func runDoctor(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("doctor", "[--home DIR] [--json]", stdout)
	af := addAPIFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long each bootstrap node may take to answer")
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	h := node.Home{Dir: *af.home}
	r := &doctorReport{Home: h.Dir, Findings: []finding{}}
	diagnose(r, h, af, set, *timeout)
	if *af.json {
		if err := printJSON(stdout, r); err != nil {
			return err
		}
	} else {
		printFindings(stdout, r)
	}
	if r.Problems > 0 {
		return fmt.Errorf("%d problem(s) found; each comes with the line that fixes it", r.Problems)
	}
	return nil
}

func diagnose(r *doctorReport, h node.Home, af apiFlags, set map[string]bool, timeout time.Duration) {
	join := "ephemera init --home " + h.Dir + " --join <a bootstrap multiaddr>"
	if exists(h.ConfigPath()) {
		join += " --force" // rewrites config and definition, keeps the identity
	}
	cfg, err := node.LoadConfig(h.ConfigPath())
	if err != nil {
		r.add(finding{Check: "config", Detail: oneLine(err), Fix: join})
		return
	}
	def := cfg.Definition()
	r.Network, r.NetworkHash = def.Name, def.Hash()
	r.add(finding{Check: "config", OK: true, Detail: h.ConfigPath() + " loads"})
	if _, ok, _ := node.ReadDefinition(h.DefinitionPath()); !ok {
		r.add(finding{Check: "network definition", Detail: "this home has no " + h.DefinitionPath() + "; its rules are those of config.toml alone, which nobody else checks",
			Fix: join})
	} else {
		r.add(finding{Check: "network definition", OK: true, Detail: fmt.Sprintf("%s, hash %s", def.Name, def.Hash())})
	}
	if len(def.Params.Oracles) == 0 {
		r.add(finding{Check: "oracles", Detail: "the definition names no oracles, so no miner can become available", Fix: join})
	}
	checkBootstraps(r, cfg.EffectiveP2P().Bootstrap, r.NetworkHash, timeout)

	r.Running = node.Running(h)
	if !r.Running && !set["api"] {
		r.add(finding{Check: "node", Detail: "no node is running in " + h.Dir + "; the checks of a running node (addresses, reachability) were skipped",
			Fix: "ephemera run --home " + h.Dir})
		return
	}
	c, err := af.client(set)
	if err != nil {
		r.add(finding{Check: "node", Detail: oneLine(err), Fix: "ephemera run --home " + h.Dir})
		return
	}
	info, err := c.Node(context.Background())
	if err != nil {
		r.add(finding{Check: "node", Detail: oneLine(err), Fix: "ephemera run --home " + h.Dir})
		return
	}
	r.Node = &info
	r.add(finding{Check: "node", OK: true, Detail: fmt.Sprintf("running, %d peers, DHT %s", info.Peers, info.DHTMode)})
	if info.NetworkHash != "" && info.NetworkHash != r.NetworkHash {
		r.add(finding{Check: "network hash", Detail: fmt.Sprintf("the running node follows %s, the home's definition %s: it was changed after the node started",
			info.NetworkHash, r.NetworkHash), Fix: "restart the node: stop it, then ephemera run --home " + h.Dir})
	}
	if health, err := c.Health(context.Background()); err != nil {
		r.add(finding{Check: "health", Detail: oneLine(err)})
	} else if health.Status != "ok" {
		r.add(finding{Check: "health", Detail: "unhealthy: " + health.Reason, Fix: healthFix(health.Reason, join)})
	} else {
		r.add(finding{Check: "health", OK: true, Detail: "healthy"})
	}
	checkReachability(r, c)
}

// checkBootstraps asks every bootstrap node for its definition, as a
// newcomer would: each is reached or not, with the address and the error,
// and agrees on the network or not.
func checkBootstraps(r *doctorReport, addrs []string, hash string, timeout time.Duration) {
	if len(addrs) == 0 {
		r.add(finding{Check: "bootstrap", OK: true, Detail: "none configured: this node waits for others to dial it (fine for a network's first node)"})
		return
	}
	found := make([]finding, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			def, _, err := node.FetchDefinition(ctx, []string{a})
			switch {
			case err != nil:
				found[i] = finding{Check: "bootstrap", Detail: a + ": not reached: " + strings.TrimPrefix(oneLine(err), "no bootstrap node answered: "+a+": "),
					Fix: "check the address (`ephemera id` on that node prints it), and that UDP and TCP to its port are open"}
			case def.Hash() != hash:
				found[i] = finding{Check: "bootstrap", Detail: fmt.Sprintf("%s: reached, but on network %s (hash %s), this home on %s", a, def.Name, def.Hash(), hash),
					Fix: "ephemera init --home <this home> --join " + a + " --force"}
			default:
				found[i] = finding{Check: "bootstrap", OK: true, Detail: a + ": reached, same network"}
			}
		})
	}
	wg.Wait()
	for _, f := range found {
		r.add(f)
	}
}

// healthFix is the line that fixes an unhealthy node, from its reason.
func healthFix(reason, join string) string {
	switch {
	case strings.Contains(reason, "is on network"):
		return join
	case strings.Contains(reason, "no peers"):
		return "check the bootstrap findings above; a node needs at least one reachable bootstrap node"
	case strings.Contains(reason, "routing table"):
		return "set p2p.dht_mode = \"server\" on nodes of a private network, or dht_mode in network.toml for all"
	case strings.Contains(reason, "no peer can dial"):
		return "forward port 7600 (TCP and UDP) and set p2p.announce to the public address, or have the network's bootstrap nodes run relay_service"
	}
	return "see the findings below"
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func printFindings(w io.Writer, r *doctorReport) {
	fmt.Fprintf(w, "home %s", r.Home)
	if r.Network != "" {
		fmt.Fprintf(w, ", network %s (hash %s)", r.Network, r.NetworkHash)
	}
	fmt.Fprintln(w)
	for _, f := range r.Findings {
		mark := "ok  "
		if !f.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-18s %s\n", mark, f.Check, f.Detail)
		if !f.OK && f.Fix != "" {
			fmt.Fprintf(w, "      %-18s fix: %s\n", "", f.Fix)
		}
	}
	if r.Problems == 0 {
		fmt.Fprintln(w, "all well: this node can take part in the network")
	}
}

// checkReachability says how the node is reached: its addresses, what
// AutoNAT found when peers dialled them back, its relay reservations, and
// each bootstrap peer as the node itself dialled it.
func checkReachability(r *doctorReport, c *client.Client) {
	ni, err := c.Network(context.Background())
	if err != nil {
		r.add(finding{Check: "reachability", Detail: oneLine(err)})
		return
	}
	r.Net = &ni
	r.add(finding{Check: "listening", OK: true, Detail: strings.Join(ni.Listen, " ")})
	onlyLoopback := !slices.ContainsFunc(ni.Announced, func(a string) bool { return !isLoopback(a) })
	switch {
	case len(ni.Announced) == 0:
		r.add(finding{Check: "announced", Detail: "the node announces no address: no peer can dial it",
			Fix: "set p2p.listen to addresses of this machine, or p2p.announce to the address peers reach"})
	case onlyLoopback && !bootstrapsLoopback(ni.Bootstraps):
		r.add(finding{Check: "announced", Detail: "only loopback addresses: no other machine can dial this node",
			Fix: `listen on every interface: p2p.listen = ["/ip4/0.0.0.0/tcp/7600", "/ip4/0.0.0.0/udp/7600/quic-v1"]`})
	default:
		r.add(finding{Check: "announced", OK: true, Detail: strings.Join(ni.Announced, " ")})
	}
	if len(ni.Observed) > 0 {
		r.add(finding{Check: "observed", OK: true, Detail: "peers see this node at " + strings.Join(ni.Observed, " ")})
	}
	for _, a := range ni.Reachable {
		r.add(finding{Check: "autonat", OK: true, Detail: a + ": reachable (a peer dialled it back)"})
	}
	for _, a := range ni.Unreachable {
		r.add(finding{Check: "autonat", OK: true, Detail: a + ": unreachable from outside (behind NAT or a firewall); relays and hole punching cover it"})
	}
	if len(ni.RelayAddrs) > 0 {
		r.add(finding{Check: "relay", OK: true, Detail: fmt.Sprintf("reservations on %d relay(s): %s", len(ni.RelayAddrs), strings.Join(ni.RelayAddrs, " "))})
	}
	if ni.RelayService {
		r.add(finding{Check: "relay service", OK: true, Detail: "this node relays for nodes behind NAT"})
	}
	switch ni.Dialable {
	case "yes":
		how := "at a confirmed address"
		if len(ni.Reachable) == 0 && len(ni.RelayAddrs) > 0 {
			how = "through its relays (hole punching upgrades such connections where the NAT allows)"
		}
		r.add(finding{Check: "dial-back", OK: true, Detail: "peers can dial this node " + how})
	case "no":
		r.add(finding{Check: "dial-back", Detail: "no peer can dial this node: AutoNAT found no address reachable and it holds no relay reservation",
			Fix: "forward port 7600 (TCP and UDP) on the router and set p2p.announce to the public address, or ask the network to run relay_service on its bootstrap nodes"})
	default:
		r.add(finding{Check: "dial-back", OK: true, Detail: "not known yet: AutoNAT has no verdict (it needs a few peers; on one machine or a LAN it never judges private addresses)"})
	}
	for _, b := range ni.Bootstraps {
		addr := b.PeerID
		if len(b.Addrs) > 0 {
			addr = strings.Join(b.Addrs, ",")
		}
		switch {
		case b.NetworkHash != "":
			r.add(finding{Check: "node's bootstrap", Detail: fmt.Sprintf("%s: on network %s, this node on %s", addr, b.NetworkHash, r.NetworkHash),
				Fix: "ephemera init --home " + r.Home + " --join " + firstOf(b.Addrs) + " --force"})
		case b.Connected:
			r.add(finding{Check: "node's bootstrap", OK: true, Detail: addr + ": connected"})
		case b.Error != "":
			r.add(finding{Check: "node's bootstrap", Detail: addr + ": not connected: " + b.Error,
				Fix: "check the address and that its port is open; the node keeps retrying"})
		}
	}
}

// bootstrapsLoopback: a node whose bootstrap peers are all on this machine
// may announce loopback alone (a local testnet).
func bootstrapsLoopback(bootstraps []api.BootstrapInfo) bool {
	for _, b := range bootstraps {
		if slices.ContainsFunc(b.Addrs, func(a string) bool { return !isLoopback(a) }) {
			return false
		}
	}
	return true
}

func isLoopback(addr string) bool {
	return strings.HasPrefix(addr, "/ip4/127.") || strings.HasPrefix(addr, "/ip6/::1/")
}

func firstOf(xs []string) string {
	if len(xs) == 0 {
		return "<a bootstrap multiaddr>"
	}
	return xs[0]
}
