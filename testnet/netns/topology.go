// Package netns is a testbed of hosts in Linux network namespaces: a
// public network on a bridge, home networks behind NAT routers (cone and
// symmetric), and real ephemera processes on every host, each using only
// what an operator would (init --join, run). It needs root, iproute2 and
// nftables; it is `make testnet-netns`.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The public network is 192.0.0.64/26. go-libp2p counts 10/8, 172.16/12,
// 192.168/16 and 100.64/10 as private and the documentation ranges as
// unroutable, so AutoNAT, observed addresses and hole punching never
// engage on them; 192.0.0.64/26 is IANA special-purpose space, never
// routed on the internet, yet public to go-libp2p. Nothing here leaves
// the namespaces this package makes.
const publicPrefix = "192.0.0."

// NAT is how a home router translates.
type NAT string

const (
	// Cone keeps a LAN host's port on the way out (nft masquerade), so
	// every peer sees one address: hole punching works.
	Cone NAT = "cone"
	// Symmetric picks a random port per destination (masquerade random):
	// peers see different addresses and hole punching fails.
	Symmetric NAT = "symmetric"
)

// Host is one machine of the testbed.
type Host struct {
	Name string
	NS   string // its network namespace
	IP   string // its own address: public, or on its home LAN
	// Behind, for a host at home, is its router's NAT; "" on the public network.
	Behind NAT
	// WAN is the public address peers see: its own, or its router's.
	WAN string
}

// Topology is the namespaces and links of a testbed.
type Topology struct {
	prefix string
	sw     string // the namespace holding the public network's bridge
	hosts  map[string]*Host
	nss    []string
	etc    []string // /etc/netns/<ns> directories made for name resolution
	links  int
}

// NewTopology makes the public network's switch. Namespace names start
// with prefix, so that Cleanup can find those of a run that was killed.
func NewTopology(ctx context.Context, prefix string) (*Topology, error) {
	t := &Topology{prefix: prefix, hosts: map[string]*Host{}}
	t.sw = prefix + "sw"
	if err := t.addNS(ctx, t.sw); err != nil {
		return t, err
	}
	return t, t.ip(ctx, "-n", t.sw, "link", "add", "br0", "type", "bridge").then(
		t.ip(ctx, "-n", t.sw, "link", "set", "br0", "up")).err
}

// Public adds a host on the public network at 192.0.0.<octet>.
func (t *Topology) Public(ctx context.Context, name string, octet int) (*Host, error) {
	h := &Host{Name: name, NS: t.prefix + name, IP: fmt.Sprintf("%s%d", publicPrefix, octet)}
	h.WAN = h.IP
	if err := t.addNS(ctx, h.NS); err != nil {
		return nil, err
	}
	if err := t.wire(ctx, h.NS, h.IP+"/26"); err != nil {
		return nil, err
	}
	t.hosts[name] = h
	return h, nil
}

// Home adds a host behind its own router: the router on the public
// network at 192.0.0.<octet>, the host at 192.168.<lan>.2, NAT of the
// given kind out, and nothing in that the host did not ask for. The router
// drops what is sent to itself unasked, as home routers do: a packet it
// took in would leave a connection-tracking entry on the port its NAT
// wants for the host, which would then go out from another port and miss
// the hole a peer punched for it.
func (t *Topology) Home(ctx context.Context, name string, octet, lan int, nat NAT) (*Host, error) {
	router, err := t.Public(ctx, name+"-gw", octet)
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, NS: t.prefix + name, IP: fmt.Sprintf("192.168.%d.2", lan), Behind: nat, WAN: router.IP}
	if err := t.addNS(ctx, h.NS); err != nil {
		return nil, err
	}
	t.links++
	in, out := fmt.Sprintf("h%d", t.links), fmt.Sprintf("g%d", t.links)
	gw := fmt.Sprintf("192.168.%d.1", lan)
	steps := t.ip(ctx, "link", "add", in, "type", "veth", "peer", "name", out).
		then(t.ip(ctx, "link", "set", in, "netns", h.NS)).
		then(t.ip(ctx, "link", "set", out, "netns", router.NS)).
		then(t.ip(ctx, "-n", h.NS, "addr", "add", h.IP+"/24", "dev", in)).
		then(t.ip(ctx, "-n", h.NS, "link", "set", in, "up")).
		then(t.ip(ctx, "-n", router.NS, "addr", "add", gw+"/24", "dev", out)).
		then(t.ip(ctx, "-n", router.NS, "link", "set", out, "up")).
		then(t.ip(ctx, "-n", h.NS, "route", "add", "default", "via", gw)).
		then(t.exec(ctx, router.NS, nil, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
	if steps.err != nil {
		return nil, steps.err
	}
	random := ""
	if nat == Symmetric {
		random = " random"
	}
	rules := fmt.Sprintf(`table ip nat {
	chain outbound {
		type nat hook postrouting priority 100;
		oifname "%s" masquerade%s
	}
}
table ip filter {
	chain guard {
		type filter hook forward priority 0; policy drop;
		iifname "%s" accept
		ct state established,related accept
	}
	chain own {
		type filter hook input priority 0; policy drop;
		iifname "lo" accept
		iifname "%s" accept
		ct state established,related accept
	}
}
`, "wan", random, out, out)
	if r := t.exec(ctx, router.NS, []byte(rules), "nft", "-f", "-"); r.err != nil {
		return nil, r.err
	}
	t.hosts[name] = h
	return h, nil
}

// Resolve makes name resolve to ip on host (ip netns exec bind-mounts
// /etc/netns/<ns>/hosts over /etc/hosts).
func (t *Topology) Resolve(h *Host, name, ip string) error {
	dir := filepath.Join("/etc/netns", h.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	t.etc = append(t.etc, dir)
	return os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+ip+" "+name+"\n"), 0o644)
}

// wire links namespace ns to the public bridge, as interface "wan" with
// address cidr (a home router's NAT rule names it).
func (t *Topology) wire(ctx context.Context, ns, cidr string) error {
	t.links++
	in, out := fmt.Sprintf("v%d", t.links), fmt.Sprintf("p%d", t.links)
	return t.ip(ctx, "link", "add", in, "type", "veth", "peer", "name", out).
		then(t.ip(ctx, "link", "set", in, "netns", ns)).
		then(t.ip(ctx, "link", "set", out, "netns", t.sw)).
		then(t.ip(ctx, "-n", t.sw, "link", "set", out, "master", "br0", "up")).
		then(t.ip(ctx, "-n", ns, "link", "set", in, "name", "wan")).
		then(t.ip(ctx, "-n", ns, "addr", "add", cidr, "dev", "wan")).
		then(t.ip(ctx, "-n", ns, "link", "set", "wan", "up")).err
}

func (t *Topology) addNS(ctx context.Context, ns string) error {
	if r := t.ip(ctx, "netns", "add", ns); r.err != nil {
		return r.err
	}
	t.nss = append(t.nss, ns)
	return t.ip(ctx, "-n", ns, "link", "set", "lo", "up").err
}

// Close ends every process left in the testbed's namespaces and removes
// them, newest first.
func (t *Topology) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(t.nss) - 1; i >= 0; i-- {
		removeNS(ctx, t.nss[i])
	}
	for _, d := range t.etc {
		_ = os.RemoveAll(d)
	}
}

// Cleanup removes the namespaces of earlier runs, named family<pid>-…,
// whose process is gone: a run killed with SIGKILL leaves its namespaces
// behind. Those of a run still going are left alone.
func Cleanup(family string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], family) {
			continue
		}
		pid, _, _ := strings.Cut(strings.TrimPrefix(f[0], family), "-")
		if n, err := strconv.Atoi(pid); err == nil && syscall.Kill(n, 0) == nil {
			continue // its run is still going
		}
		removeNS(ctx, f[0])
		_ = os.RemoveAll(filepath.Join("/etc/netns", f[0]))
	}
}

func removeNS(ctx context.Context, ns string) {
	if pids, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output(); err == nil {
		for _, p := range strings.Fields(string(pids)) {
			_ = exec.CommandContext(ctx, "kill", "-9", p).Run()
		}
	}
	_ = exec.CommandContext(ctx, "ip", "netns", "del", ns).Run()
}

// result chains commands: the first error stops the rest.
type result struct{ err error }

func (r result) then(next result) result {
	if r.err != nil {
		return r
	}
	return next
}

func (t *Topology) ip(ctx context.Context, args ...string) result {
	return run(ctx, nil, "ip", args...)
}

// exec runs a command inside ns.
func (t *Topology) exec(ctx context.Context, ns string, stdin []byte, name string, args ...string) result {
	return run(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

func run(ctx context.Context, stdin []byte, name string, args ...string) result {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return result{fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))}
	}
	return result{}
}
