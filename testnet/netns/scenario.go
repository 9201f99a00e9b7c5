package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/internal/duration"
	"github.com/ephemera-network/ephemera/protocol"
)

// Family begins the name of every namespace a testbed makes.
const Family = "ephbed"

// Goals of the join issue, checked by Run.
const (
	goalPlain = 10 * time.Second
	goalCone  = 30 * time.Second
	joinLimit = 60 * time.Second // longest any correct joiner may take
)

// Joiner is how one newcomer fared.
type Joiner struct {
	Name string `json:"name"`
	How  string `json:"how"`
	// Available is the time from `ephemera run` to available in the core
	// router's view; 0 if it never got there.
	Available time.Duration `json:"available_ns"`
	// Reach is how the core router is connected to it, and RelayReach how
	// a router behind another NAT is.
	Reach      string `json:"reach"`
	RelayReach string `json:"relay_reach,omitempty"`
	// Punched is how long after the router behind NAT first asked for it a
	// hole punch connected the two directly; 0 if none did.
	Punched time.Duration `json:"punched_ns,omitempty"`
}

// Check is one verdict of the run.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is what Run found.
type Report struct {
	Joiners []Joiner `json:"joiners"`
	Checks  []Check  `json:"checks"`
	// SymServed says whether the symmetric-NAT joiner answered a router
	// behind another NAT through a relay; Harmed counts what the
	// misconfigured joiner changed elsewhere (cut-offs, lost oracle
	// connections, lower reputations).
	SymServed bool `json:"sym_served"`
	Harmed    int  `json:"harmed"`
}

// Failed are the checks that failed.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

func (r *Report) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// Run builds the testbed, runs the scenario and takes it down. progress
// gets a line per step. An error means the testbed itself could not run;
// the network's failures are failed checks in the report.
func Run(ctx context.Context, binary, dir string, progress io.Writer) (*Report, error) {
	Cleanup(Family)
	topo, err := NewTopology(ctx, fmt.Sprintf("%s%d-", Family, os.Getpid()))
	defer topo.Close()
	if err != nil {
		return nil, err
	}
	b := &Bed{Binary: binary, Dir: dir, Topo: topo}
	s := &scenario{Bed: b, rep: &Report{}, out: progress}
	defer s.stopAll()
	if err := s.run(ctx); err != nil {
		return s.rep, err
	}
	return s.rep, nil
}

type scenario struct {
	*Bed
	rep   *Report
	out   io.Writer
	nodes []*Node

	boot, router   *Node
	oracles        []*Node
	bootAddr, hash string
	bootID         string
	ids            map[string]string // node name → peer ID
	joiners        map[string]*Node
	relayRouter    *Node
}

func (s *scenario) say(format string, args ...any) { fmt.Fprintf(s.out, format+"\n", args...) }

func (s *scenario) stopAll() {
	for _, n := range s.nodes {
		s.Stop(n)
	}
}

func (s *scenario) start(n *Node) error {
	if err := s.Start(n); err != nil {
		return err
	}
	if !slices.Contains(s.nodes, n) {
		s.nodes = append(s.nodes, n)
	}
	return nil
}

func (s *scenario) run(ctx context.Context) error {
	s.ids, s.joiners = map[string]string{}, map[string]*Node{}
	steps := []func(context.Context) error{
		s.buildHosts, s.startCore, s.joinAll, s.relayed, s.late, s.misconfigured, s.doctor,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// doctor asks `ephemera doctor` about a healthy joiner behind NAT, the
// misconfigured one, and a home whose only bootstrap address has a typo:
// it must say all is well, or name the problem with its fix.
func (s *scenario) doctor(ctx context.Context) error {
	ask := func(n *Node) (string, bool) {
		out, err := s.ephemera(ctx, n.Host, "doctor", "--home", n.Home, "--timeout", "3s")
		return string(out), err == nil
	}
	out, ok := ask(s.joiners["sym"])
	s.rep.check("doctor: all well behind a symmetric NAT", ok && strings.Contains(out, "through its relays"), "exit 0: %v", ok)
	out, ok = ask(s.joiners["misfit"])
	s.rep.check("doctor: the misconfigured joiner", !ok && strings.Contains(out, "reached, but on network") && strings.Contains(out, "fix: ephemera init"),
		"exit 1: %v; names the other network and the fix: %v", !ok, strings.Contains(out, "fix: ephemera init"))
	h := s.Topo.hosts["plain"]
	typo := &Node{Host: h, Home: s.Dir + "/typo"}
	bad := fmt.Sprintf("/ip4/%s/udp/%d/quic-v1/p2p/%s", s.boot.IP, port+1, s.bootID)
	if _, err := s.ephemera(ctx, h, "init", "--home", typo.Home, "--network", s.Dir+"/network.toml"); err != nil {
		return err
	}
	def, err := protocol.ParseDefinition(mustRead(typo.Home + "/" + protocol.DefinitionFile))
	if err != nil {
		return err
	}
	def.Bootstrap = []string{bad}
	if err := os.WriteFile(typo.Home+"/"+protocol.DefinitionFile, def.Render(), 0o644); err != nil {
		return err
	}
	out, ok = ask(typo)
	s.rep.check("doctor: a bootstrap address with a typo", !ok && strings.Contains(out, bad+": not reached"), "exit 1: %v; names the address and the error: %v", !ok, strings.Contains(out, bad+": not reached"))
	s.say("  doctor: explains the symmetric-NAT joiner, the misconfigured one and a mistyped bootstrap address")
	return nil
}

func mustRead(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// hosts of the testbed, by name.
var publicHosts = []struct {
	name  string
	octet int
}{{"boot", 65}, {"oracle0", 66}, {"oracle1", 67}, {"oracle2", 68}, {"router", 69}, {"plain", 70}, {"dns", 71}, {"late", 72}, {"misfit", 73}}

var homeHosts = []struct {
	name       string
	octet, lan int
	nat        NAT
}{{"cone", 80, 50, Cone}, {"sym", 81, 51, Symmetric}, {"homerouter", 82, 52, Cone}}

func (s *scenario) buildHosts(ctx context.Context) error {
	for _, h := range publicHosts {
		if _, err := s.Topo.Public(ctx, h.name, h.octet); err != nil {
			return err
		}
	}
	for _, h := range homeHosts {
		if _, err := s.Topo.Home(ctx, h.name, h.octet, h.lan, h.nat); err != nil {
			return err
		}
	}
	s.say("testbed: %d public hosts on %s64/26, %d homes behind NAT (cone, symmetric, cone)", len(publicHosts), publicPrefix, len(homeHosts))
	return s.Topo.Resolve(s.Topo.hosts["dns"], "boot.ephemera.test", s.Topo.hosts["boot"].IP)
}

func listen(h *Host) []string {
	return []string{"--listen", fmt.Sprintf("/ip4/%s/tcp/%d", h.IP, port), "--listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", h.IP, port)}
}

// startCore makes the network: its nodes' keys first, then its definition
// naming the oracles, then every core home made a member of it.
func (s *scenario) startCore(ctx context.Context) error {
	roles := map[string]string{"boot": "bootstrap", "oracle0": "oracle", "oracle1": "oracle", "oracle2": "oracle", "router": "router"}
	core := []string{"boot", "oracle0", "oracle1", "oracle2", "router"}
	var oracleIDs []string
	nodes := map[string]*Node{}
	for _, name := range core {
		h := s.Topo.hosts[name]
		n, err := s.Init(ctx, h, append([]string{"--roles", roles[name]}, listen(h)...)...)
		if err != nil {
			return err
		}
		id, _, err := s.PeerID(ctx, n)
		if err != nil {
			return err
		}
		s.ids[name], nodes[name] = id, n
		if roles[name] == "oracle" {
			oracleIDs = append(oracleIDs, id)
		}
	}
	s.boot, s.router = nodes["boot"], nodes["router"]
	s.oracles = []*Node{nodes["oracle0"], nodes["oracle1"], nodes["oracle2"]}
	s.bootID = s.ids["boot"]
	s.bootAddr = fmt.Sprintf("/ip4/%s/udp/%d/quic-v1/p2p/%s", s.boot.IP, port, s.bootID)
	def := protocol.Definition{Name: "netbed", DHTMode: "auto", Params: protocol.DefaultParams(),
		Bootstrap: []string{s.bootAddr, fmt.Sprintf("/ip4/%s/tcp/%d/p2p/%s", s.boot.IP, port, s.bootID)}}
	def.Params.Oracles = oracleIDs
	def.Params.RoundPeriod = duration.Duration(2 * time.Second)
	// The router behind NAT asks all four joiners at once, to be sure the
	// relayed one answers: on this testbed one router may hold the whole pool.
	def.Params.MaxRouterShare = 1
	s.hash = def.Hash()
	file := s.Dir + "/network.toml"
	if err := os.WriteFile(file, def.Render(), 0o644); err != nil {
		return err
	}
	for _, name := range core {
		h := s.Topo.hosts[name]
		if _, err := s.Init(ctx, h, append([]string{"--network", file, "--network-hash", s.hash, "--force", "--roles", roles[name]}, listen(h)...)...); err != nil {
			return err
		}
	}
	for _, name := range core {
		if err := s.start(nodes[name]); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, name := range core {
		n := nodes[name]
		if !waitFor(wctx, func() bool { return s.healthy(wctx, n) == "" }) {
			return fmt.Errorf("core node %s never became healthy (%s); its log: %s.log", name, s.healthy(ctx, n), n.Home)
		}
	}
	s.say("core network %s up: 1 bootstrap, 3 oracles, 1 router; hash %s", def.Name, s.hash)
	return nil
}

// healthy is "" for a healthy node, else why not.
func (s *scenario) healthy(ctx context.Context, n *Node) string {
	var h api.Health
	if err := s.Get(ctx, n, "/healthz", &h); err != nil {
		return err.Error()
	}
	if h.Status != "ok" {
		return h.Reason
	}
	return ""
}

// join makes a newcomer with nothing but a bootstrap address and the hash.
func (s *scenario) join(ctx context.Context, name, addr string, extra ...string) (*Node, error) {
	n, err := s.Init(ctx, s.Topo.hosts[name], append([]string{"--join", addr, "--network-hash", s.hash, "--roles", "miner"}, extra...)...)
	if err != nil {
		return nil, err
	}
	id, _, err := s.PeerID(ctx, n)
	if err != nil {
		return nil, err
	}
	s.ids[name], s.joiners[name] = id, n
	return n, nil
}

// poolEntry is a miner in r's view, if there.
func (s *scenario) poolEntry(ctx context.Context, r *Node, id string) (api.PoolMiner, bool) {
	var pool []api.PoolMiner
	if err := s.Get(ctx, r, "/v1/pool", &pool); err != nil {
		return api.PoolMiner{}, false
	}
	i := slices.IndexFunc(pool, func(m api.PoolMiner) bool { return m.PeerID == id })
	if i < 0 {
		return api.PoolMiner{}, false
	}
	return pool[i], true
}

// untilAvailable is, for each of nodes, how long after its start it
// showed as available to the core router; 0 if not within joinLimit. One
// poll of the router's pool serves them all, so none waits on another.
func (s *scenario) untilAvailable(ctx context.Context, nodes ...*Node) []time.Duration {
	out := make([]time.Duration, len(nodes))
	last := nodes[0].started
	for _, n := range nodes {
		if n.started.After(last) {
			last = n.started
		}
	}
	wctx, cancel := context.WithDeadline(ctx, last.Add(joinLimit))
	defer cancel()
	waitFor(wctx, func() bool {
		var pool []api.PoolMiner
		if err := s.Get(wctx, s.router, "/v1/pool", &pool); err != nil {
			return false
		}
		now, pending := time.Now(), 0
		for i, n := range nodes {
			if out[i] > 0 {
				continue
			}
			if slices.ContainsFunc(pool, func(m api.PoolMiner) bool { return m.PeerID == s.ids[n.Name] && m.State == "available" }) {
				out[i] = now.Sub(n.started)
			} else {
				pending++
			}
		}
		return pending == 0
	})
	return out
}

func (s *scenario) joinAll(ctx context.Context) error {
	ways := []struct{ name, how, addr string }{
		{"plain", "public address", s.bootAddr},
		{"cone", "behind a cone NAT", s.bootAddr},
		{"sym", "behind a symmetric NAT", s.bootAddr},
		{"dns", "through a /dns4/ bootstrap address", fmt.Sprintf("/dns4/boot.ephemera.test/udp/%d/quic-v1/p2p/%s", port, s.bootID)},
	}
	var started []*Node
	for _, w := range ways {
		n, err := s.join(ctx, w.name, w.addr)
		if err != nil {
			return err
		}
		started = append(started, n)
	}
	for _, n := range started {
		if err := s.start(n); err != nil {
			return err
		}
	}
	avail := s.untilAvailable(ctx, started...)
	for i, n := range started {
		j := Joiner{Name: n.Name, How: ways[i].how, Available: avail[i]}
		j.Reach = s.settledReach(ctx, n)
		s.rep.Joiners = append(s.rep.Joiners, j)
		s.say("  %-5s %-36s available after %s, reached %s", n.Name, j.How, fmtDur(j.Available), orDash(j.Reach))
	}
	plain, cone, sym, dns := s.rep.Joiners[0], s.rep.Joiners[1], s.rep.Joiners[2], s.rep.Joiners[3]
	s.rep.check("plain joiner available within 10 s", plain.Available > 0 && plain.Available <= goalPlain, "%s", fmtDur(plain.Available))
	s.rep.check("cone-NAT joiner available within 30 s", cone.Available > 0 && cone.Available <= goalCone, "%s", fmtDur(cone.Available))
	s.rep.check("symmetric-NAT joiner available", sym.Available > 0, "%s", fmtDur(sym.Available))
	s.rep.check("/dns4/ joiner available", dns.Available > 0, "%s", fmtDur(dns.Available))
	return nil
}

// settledReach is how the core router reaches n once n knows its own
// reachability: a node behind NAT announces relay addresses once it holds
// a reservation, and until then looks public. It waits for that up to the
// cone goal after n's start.
func (s *scenario) settledReach(ctx context.Context, n *Node) string {
	wctx, cancel := context.WithDeadline(ctx, n.started.Add(goalCone))
	defer cancel()
	reach := ""
	waitFor(wctx, func() bool {
		if m, ok := s.poolEntry(wctx, s.router, s.ids[n.Name]); ok {
			reach = m.Reach
		}
		return n.Behind == "" || reach == "direct" || reach == "hole-punched" || reach == "relayed"
	})
	return reach
}

// relayed runs a session from a router behind a NAT of its own over every
// joiner: the two behind NAT can only be reached through a relay.
func (s *scenario) relayed(ctx context.Context) error {
	hr, err := s.Init(ctx, s.Topo.hosts["homerouter"], "--join", s.bootAddr, "--network-hash", s.hash, "--roles", "router")
	if err != nil {
		return err
	}
	s.relayRouter = hr
	if err := s.start(hr); err != nil {
		return err
	}
	// It must see all four joiners available before it can hold them.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	names := []string{"plain", "cone", "sym", "dns"}
	waitFor(wctx, func() bool {
		for _, name := range names {
			if m, ok := s.poolEntry(wctx, hr, s.ids[name]); !ok || m.State != "available" {
				return false
			}
		}
		return true
	})
	asked := time.Now()
	out, err := s.ephemera(ctx, hr.Host, "submit", "--home", hr.Home, "--redundancy", "4", "--timeout", "60s", "--json", "What is 2+2?")
	served := map[string]bool{}
	if err == nil {
		var task struct {
			Answers []struct {
				Miner    string `json:"miner"`
				Accepted bool   `json:"accepted"`
			} `json:"answers"`
		}
		if jerr := json.Unmarshal(out, &task); jerr != nil {
			err = fmt.Errorf("submit: %v", jerr)
		}
		for _, a := range task.Answers {
			served[a.Miner] = a.Accepted
		}
	}
	// The cone miner's relayed connection is upgraded by a hole punch
	// during the session; the symmetric one's can't be.
	cone := &s.rep.Joiners[1]
	pctx, pcancel := context.WithDeadline(ctx, asked.Add(goalCone))
	waitFor(pctx, func() bool {
		m, _ := s.poolEntry(pctx, hr, s.ids["cone"])
		cone.RelayReach = m.Reach
		return m.Reach == "hole-punched"
	})
	pcancel()
	cone.Punched = time.Since(asked)
	for i := range s.rep.Joiners {
		j := &s.rep.Joiners[i]
		if m, ok := s.poolEntry(ctx, hr, s.ids[j.Name]); ok {
			j.RelayReach = m.Reach
		}
	}
	s.rep.check("cone-NAT joiner reached directly after hole punching", cone.RelayReach == "hole-punched",
		"the router behind NAT reaches it %s, %s after it first asked for it", orDash(cone.RelayReach), fmtDur(cone.Punched))
	sym := s.rep.Joiners[2]
	s.rep.SymServed = err == nil && served[s.ids["sym"]] && sym.RelayReach == "relayed"
	s.rep.check("symmetric-NAT joiner served through a relay", err == nil && served[s.ids["sym"]] && sym.RelayReach == "relayed",
		"a router behind another NAT got its answer %v, reaching it %s (%v)", served[s.ids["sym"]], orDash(sym.RelayReach), errOrNone(err))
	s.say("  a router behind a NAT of its own: session over 4 joiners %s; reaches cone %s, sym %s",
		map[bool]string{true: "answered", false: "failed"}[err == nil], orDash(s.rep.Joiners[1].RelayReach), orDash(sym.RelayReach))
	return nil
}

// late starts a joiner while the bootstrap node is down.
func (s *scenario) late(ctx context.Context) error {
	n, err := s.join(ctx, "late", s.bootAddr)
	if err != nil {
		return err
	}
	s.Stop(s.boot)
	if err := s.start(n); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	if err := s.start(s.boot); err != nil {
		return err
	}
	j := Joiner{Name: "late", How: "started 5 s before its bootstrap", Available: s.untilAvailable(ctx, n)[0]}
	if m, ok := s.poolEntry(ctx, s.router, s.ids["late"]); ok {
		j.Reach = m.Reach
	}
	s.rep.Joiners = append(s.rep.Joiners, j)
	s.rep.check("joiner started before its bootstrap available", j.Available > 0, "%s after its start (5 s of it before the bootstrap)", fmtDur(j.Available))
	s.say("  late  %-36s available after %s, reached %s", j.How, fmtDur(j.Available), orDash(j.Reach))
	return nil
}

// misconfigured joins with another oracle set written into its
// definition, as an operator copying rules by hand would: it must be
// parted with cleanly and harm nobody.
func (s *scenario) misconfigured(ctx context.Context) error {
	n, err := s.join(ctx, "misfit", s.bootAddr)
	if err != nil {
		return err
	}
	defPath := n.Home + "/" + protocol.DefinitionFile
	raw, err := os.ReadFile(defPath)
	if err != nil {
		return err
	}
	def, err := protocol.ParseDefinition(raw)
	if err != nil {
		return err
	}
	def.Params.Oracles = def.Params.Oracles[:2]
	if err := os.WriteFile(defPath, def.Render(), 0o644); err != nil {
		return err
	}
	core := append([]*Node{s.boot, s.router}, s.oracles...)
	cutBefore := map[string]float64{}
	for _, c := range core {
		cutBefore[c.Name], _ = s.Metric(ctx, c, "ephemera_gossip_peers_cut_off_total")
	}
	repBefore := s.reputations(ctx)
	if err := s.start(n); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reason := ""
	waitFor(wctx, func() bool { reason = s.healthy(wctx, n); return strings.Contains(reason, "is on network "+s.hash) })
	time.Sleep(3 * time.Second) // past the parting's grace, and a validation round
	s.rep.check("misconfigured joiner says what is wrong", strings.Contains(reason, "is on network "+s.hash), "its /healthz: %s", reason)
	_, inPool := s.poolEntry(ctx, s.router, s.ids["misfit"])
	s.rep.check("misconfigured joiner never in the pool", !inPool, "in the router's pool: %v", inPool)
	parted := strings.Contains(s.boot.Log(), "parted with a peer of another network") && strings.Contains(s.boot.Log(), s.ids["misfit"])
	s.rep.check("the bootstrap logs the parting", parted, "one line naming it and both hashes: %v", parted)
	harmed := []string{}
	for _, c := range core {
		if v, _ := s.Metric(ctx, c, "ephemera_gossip_peers_cut_off_total"); v != cutBefore[c.Name] {
			harmed = append(harmed, fmt.Sprintf("%s cut off %v peers", c.Name, v-cutBefore[c.Name]))
		}
	}
	for _, o := range s.oracles {
		var peers []api.PeerInfo
		if err := s.Get(ctx, o, "/v1/peers", &peers); err != nil {
			return err
		}
		for _, other := range s.oracles {
			if other != o && !slices.ContainsFunc(peers, func(p api.PeerInfo) bool { return p.PeerID == s.ids[other.Name] }) {
				harmed = append(harmed, o.Name+" lost "+other.Name)
			}
		}
	}
	for id, before := range repBefore {
		if after, ok := s.reputations(ctx)[id]; ok && after < before {
			harmed = append(harmed, fmt.Sprintf("a miner's reputation fell %.3f → %.3f", before, after))
		}
	}
	s.rep.Harmed = len(harmed)
	detail := "no cut-off, oracles still connected, no reputation lower"
	if len(harmed) > 0 {
		detail = strings.Join(harmed, "; ")
	}
	s.rep.check("misconfigured joiner harms nobody", len(harmed) == 0, "%s", detail)
	s.say("  misfit another oracle set: %s", reason)
	return nil
}

func (s *scenario) reputations(ctx context.Context) map[string]float64 {
	var pool []api.PoolMiner
	out := map[string]float64{}
	if err := s.Get(ctx, s.router, "/v1/pool", &pool); err == nil {
		for _, m := range pool {
			out[m.PeerID] = m.Reputation
		}
	}
	return out
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOINER\tHOW\tRUN → AVAILABLE\tREACHED BY THE ROUTER\tBY A ROUTER BEHIND NAT")
	for _, j := range r.Joiners {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.Name, j.How, fmtDur(j.Available), orDash(j.Reach), orDash(j.RelayReach))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %s: %s\n", mark, c.Name, c.Detail)
	}
}

// Bench writes the figures as benchmark lines for the report.
func (r *Report) Bench(w io.Writer) {
	fmt.Fprintln(w, "pkg: github.com/ephemera-network/ephemera/testnet/netns")
	for _, j := range r.Joiners {
		if j.Available > 0 {
			fmt.Fprintf(w, "BenchmarkJoin/%s\t1\t%.2f run-to-available-s\n", j.Name, j.Available.Seconds())
		}
		if j.RelayReach == "hole-punched" {
			fmt.Fprintf(w, "BenchmarkJoin/%s\t1\t%.2f asked-to-hole-punched-s\n", j.Name, j.Punched.Seconds())
		}
	}
	fmt.Fprintf(w, "BenchmarkJoin/sym\t1\t%d served-through-relay\n", map[bool]int{true: 1}[r.SymServed])
	fmt.Fprintf(w, "BenchmarkJoin/misfit\t1\t%d harmed\n", r.Harmed)
}

func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "never"
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func errOrNone(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
