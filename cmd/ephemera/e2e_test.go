package main

// End-to-end tests: they build the real binary once and run it as separate
// processes, each test in its own temporary homes, on 127.0.0.1 only.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
)

// bin is the ephemera binary TestMain builds.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ephemera-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "ephemera")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ephemera:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// loopback keeps every node on 127.0.0.1 with ports the kernel picks.
var loopback = []string{
	"--listen", "/ip4/127.0.0.1/tcp/0",
	"--listen", "/ip4/127.0.0.1/udp/0/quic-v1",
	"--api", "127.0.0.1:0",
}

// childEnv is this process's environment without any EPHEMERA_* variable,
// plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EPHEMERA_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// run runs the binary to completion and returns its stdout, stderr and exit code.
func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runEnv(t, nil, args...)
}

func runEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("ephemera %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("ephemera %s: timed out", strings.Join(args, " "))
	}
	return out.String(), errb.String(), code
}

// initHome runs `init` on a new home with loopback addresses and extra flags.
func initHome(t *testing.T, extra ...string) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	args := append(append([]string{"init", "--home", home}, loopback...), extra...)
	if out, errOut, code := run(t, args...); code != 0 {
		t.Fatalf("init: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	return home
}

// proc is a running `ephemera run`.
type proc struct {
	cmd    *exec.Cmd
	stderr string // path of the file holding its stderr
	done   chan struct{}
	err    error // from Wait, once done is closed
}

// log is what the process wrote to stderr so far.
func (p *proc) log() string {
	b, _ := os.ReadFile(p.stderr)
	return string(b)
}

// start starts `ephemera args...` and kills it at the end of the test.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	logFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	p := &proc{cmd: exec.Command(bin, args...), stderr: logFile.Name(), done: make(chan struct{})}
	p.cmd.Env = childEnv()
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// startNode runs a node on home and waits until it publishes its node.json.
func startNode(t *testing.T, home string, extra ...string) (*proc, node.Runtime) {
	t.Helper()
	p := start(t, append([]string{"run", "--home", home}, extra...)...)
	h := node.Home{Dir: home}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if rt, err := node.ReadRuntime(h); err == nil && rt.PID == p.cmd.Process.Pid {
			return p, rt
		}
		select {
		case <-p.done:
			t.Fatalf("node on %s exited early (%v):\n%s", home, p.err, p.log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node on %s wrote no node.json within 20s:\n%s", home, p.log())
		}
	}
}

// waitExit waits up to d for the process to end and returns its exit code
// (-1 if a signal killed it).
func waitExit(t *testing.T, p *proc, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("process %d still running after %s:\n%s", p.cmd.Process.Pid, d, p.log())
		return 0
	}
}

func sendSignal(t *testing.T, p *proc, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// peerID runs `id --home` and returns the peer ID and the addresses: the
// lines between the first and the last, which names the network.
func peerID(t *testing.T, home string) (string, []string) {
	t.Helper()
	out, errOut, code := run(t, "id", "--home", home)
	if code != 0 {
		t.Fatalf("id: exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "12D3KooW") {
		t.Fatalf("id printed %q, want an Ed25519 peer ID first", out)
	}
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^network [a-z0-9-]+ \(hash [0-9a-f]{64}\)$`).MatchString(last) {
		t.Fatalf("id printed %q, want the network and its hash last", out)
	}
	return lines[0], lines[1 : len(lines)-1]
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

func getJSONInto(t *testing.T, url string, v any) {
	t.Helper()
	code, body := get(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d: %s", url, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	home := initHome(t)
	h := node.Home{Dir: home}

	st, err := os.Stat(h.KeyPath())
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("identity.key mode %04o, want 0600", perm)
	}
	cfg, err := os.ReadFile(h.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"[p2p]", "[gossip]", "[api]", "[log]"} {
		if !bytes.Contains(cfg, []byte("\n"+section+"\n")) {
			t.Errorf("config.toml lacks section %s", section)
		}
	}

	id, _ := peerID(t, home)
	p, rt := startNode(t, home)
	if rt.PeerID != id {
		t.Errorf("node.json peer_id %s, id printed %s", rt.PeerID, id)
	}
	if len(rt.Addrs) == 0 || !strings.HasPrefix(rt.APIURL, "http://127.0.0.1:") {
		t.Errorf("node.json: addrs %v, api_url %q", rt.Addrs, rt.APIURL)
	}
	for _, a := range rt.Addrs {
		if !strings.HasPrefix(a, "/ip4/127.0.0.1/") || !strings.HasSuffix(a, "/p2p/"+id) || strings.Contains(a, "/tcp/0/") {
			t.Errorf("node.json address %q is not a bound loopback address of %s", a, id)
		}
	}
	// While the node runs, id prints its bound addresses.
	if id2, addrs := peerID(t, home); id2 != id || strings.Join(addrs, " ") != strings.Join(rt.Addrs, " ") {
		t.Errorf("id while running: %s %v, want %s %v", id2, addrs, id, rt.Addrs)
	}

	out, errOut, code := run(t, "status", "--home", home)
	if code != 0 || errOut != "" {
		t.Fatalf("status: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{id, "devnet", "miner", "no peers connected", rt.Addrs[0]} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = run(t, "status", "--api", rt.APIURL, "--json")
	var js struct {
		PeerID string     `json:"peer_id"`
		Health api.Health `json:"health"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || js.PeerID != id || js.Health.Status != "unhealthy" {
		t.Errorf("status --json: exit %d, %+v from\n%s", code, js, out)
	}

	sendSignal(t, p, syscall.SIGTERM)
	if code := waitExit(t, p, 5*time.Second); code != 0 {
		t.Fatalf("after SIGTERM: exit %d:\n%s", code, p.log())
	}
	if _, err := os.Stat(h.RuntimePath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node.json left behind after a clean stop: %v", err)
	}
	if log := p.log(); !strings.Contains(log, "msg=stopped") {
		t.Errorf("no 'stopped' log line:\n%s", log)
	}

	// A restart keeps the identity.
	_, rt2 := startNode(t, home)
	if rt2.PeerID != id {
		t.Errorf("peer ID after restart %s, want %s", rt2.PeerID, id)
	}
	if id3, _ := peerID(t, home); id3 != id {
		t.Errorf("id after restart %s, want %s", id3, id)
	}
}

func TestInitTwice(t *testing.T) {
	t.Parallel()
	home := initHome(t)
	id, _ := peerID(t, home)

	out, errOut, code := run(t, append([]string{"init", "--home", home}, loopback...)...)
	if code == 0 {
		t.Fatalf("second init succeeded: %s", out)
	}
	assertOneLine(t, errOut, home, "--force")

	out, errOut, code = run(t, "init", "--home", home, "--force", "--roles", "oracle", "--api", "127.0.0.1:0",
		"--listen", "/ip4/127.0.0.1/tcp/0")
	if code != 0 {
		t.Fatalf("init --force: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, id) {
		t.Errorf("init --force printed a different identity:\n%s", out)
	}
	if id2, _ := peerID(t, home); id2 != id {
		t.Errorf("peer ID after init --force %s, want %s", id2, id)
	}
	if cfg, _ := os.ReadFile(node.Home{Dir: home}.ConfigPath()); !bytes.Contains(cfg, []byte(`roles = ["oracle"]`)) {
		t.Errorf("init --force did not rewrite the config:\n%s", cfg)
	}
}

// assertOneLine checks that stderr is exactly one line, with no trace of a
// panic, that names every one of wants.
func assertOneLine(t *testing.T, stderr string, wants ...string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr is not exactly one line:\n%s", stderr)
	}
	if !strings.HasPrefix(stderr, "ephemera") {
		t.Errorf("stderr does not start with the program name: %q", stderr)
	}
	for _, bad := range []string{"goroutine", "panic", ".go:"} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr contains %q:\n%s", bad, stderr)
		}
	}
	for _, want := range wants {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not mention %q: %s", want, stderr)
		}
	}
}

// busyPort holds a TCP port on 127.0.0.1 for the rest of the test.
func busyPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	// Each case returns the arguments (and environment) to run and the
	// strings the single stderr line must contain.
	type setup func(t *testing.T) (args, env, wants []string)
	newHome := func(t *testing.T) string { return filepath.Join(t.TempDir(), "home") }
	withKey := func(prepare func(t *testing.T, key string)) setup {
		return func(t *testing.T) ([]string, []string, []string) {
			home := initHome(t)
			key := node.Home{Dir: home}.KeyPath()
			prepare(t, key)
			return []string{"run", "--home", home}, nil, []string{key}
		}
	}
	withConfig := func(body string, wants ...string) setup {
		return func(t *testing.T) ([]string, []string, []string) {
			home := initHome(t)
			path := node.Home{Dir: home}.ConfigPath()
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"run", "--home", home}, nil, append([]string{path}, wants...)
		}
	}
	cases := []struct {
		name  string
		setup setup
		more  []string // further strings stderr must contain
	}{
		{"unknown role", func(t *testing.T) ([]string, []string, []string) {
			return []string{"init", "--home", newHome(t), "--roles", "miner,wizard"}, nil, []string{"wizard"}
		}, nil},
		{"unknown role from env", func(t *testing.T) ([]string, []string, []string) {
			return []string{"init", "--home", newHome(t)}, []string{"EPHEMERA_ROLES=wizard"}, []string{"wizard"}
		}, nil},
		{"bad listen multiaddr", func(t *testing.T) ([]string, []string, []string) {
			return []string{"init", "--home", newHome(t), "--listen", "/ip4/999.1.1.1/tcp/1"}, nil, []string{"/ip4/999.1.1.1/tcp/1"}
		}, nil},
		{"bad listen multiaddr on run", func(t *testing.T) ([]string, []string, []string) {
			return []string{"run", "--home", initHome(t), "--listen", "/ip4/999.1.1.1/tcp/1"}, nil, []string{"/ip4/999.1.1.1/tcp/1"}
		}, nil},
		{"bootstrap without /p2p", func(t *testing.T) ([]string, []string, []string) {
			return []string{"init", "--home", newHome(t), "--bootstrap", "/ip4/127.0.0.1/tcp/1"}, nil, []string{"/ip4/127.0.0.1/tcp/1", "/p2p/"}
		}, nil},
		{"missing home", func(t *testing.T) ([]string, []string, []string) {
			home := newHome(t)
			return []string{"run", "--home", home}, nil, []string{home, "init"}
		}, nil},
		{"id of missing home", func(t *testing.T) ([]string, []string, []string) {
			home := newHome(t)
			return []string{"id", "--home", home}, nil, []string{home, "identity key"}
		}, nil},
		{"key readable by others", withKey(func(t *testing.T, key string) {
			if err := os.Chmod(key, 0o644); err != nil {
				t.Fatal(err)
			}
		}), []string{"chmod 600"}},
		{"garbage key", withKey(func(t *testing.T, key string) {
			if err := os.WriteFile(key, []byte("not a key at all\x00\xff"), 0o600); err != nil {
				t.Fatal(err)
			}
		}), []string{"identity key"}},
		{"missing key", withKey(func(t *testing.T, key string) {
			if err := os.Remove(key); err != nil {
				t.Fatal(err)
			}
		}), []string{"init"}},
		{"bad TOML", withConfig("network = \n[p2p\n"), []string{"line 1"}},
		{"unknown config field", withConfig("[p2p]\nlisten_addr = []\n"), []string{"listen_addr"}},
		{"p2p port in use", func(t *testing.T) ([]string, []string, []string) {
			addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", busyPort(t))
			return []string{"run", "--home", initHome(t), "--listen", addr}, nil, []string{addr, "address already in use"}
		}, nil},
		{"api port in use", func(t *testing.T) ([]string, []string, []string) {
			addr := fmt.Sprintf("127.0.0.1:%d", busyPort(t))
			return []string{"run", "--home", initHome(t), "--api", addr}, nil, []string{addr, "address already in use"}
		}, nil},
		{"home in use", func(t *testing.T) ([]string, []string, []string) {
			home := initHome(t)
			p, _ := startNode(t, home)
			return []string{"run", "--home", home}, nil, []string{home, "in use", fmt.Sprint(p.cmd.Process.Pid)}
		}, nil},
		{"init --force on a home in use", func(t *testing.T) ([]string, []string, []string) {
			home := initHome(t)
			startNode(t, home)
			return []string{"init", "--force", "--home", home}, nil, []string{home, "in use"}
		}, nil},
		{"unknown flag", func(t *testing.T) ([]string, []string, []string) {
			return []string{"run", "--home", newHome(t), "--frobnicate"}, nil, []string{"frobnicate"}
		}, nil},
		{"stray argument", func(t *testing.T) ([]string, []string, []string) {
			return []string{"id", "--home", newHome(t), "extra"}, nil, []string{"extra"}
		}, nil},
		{"unknown command", func(t *testing.T) ([]string, []string, []string) {
			return []string{"frobnicate"}, nil, []string{"frobnicate", "help"}
		}, nil},
		{"status of nothing", func(t *testing.T) ([]string, []string, []string) {
			return []string{"status", "--api", "http://127.0.0.1:1"}, nil, []string{"cannot reach", "127.0.0.1:1"}
		}, nil},
		{"status of a stopped home", func(t *testing.T) ([]string, []string, []string) {
			home := initHome(t)
			return []string{"status", "--home", home}, nil, []string{home}
		}, nil},
		{"status with a bad URL", func(t *testing.T) ([]string, []string, []string) {
			return []string{"status", "--api", "127.0.0.1:7601"}, nil, []string{"127.0.0.1:7601", "http"}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args, env, wants := tc.setup(t)
			out, errOut, code := runEnv(t, env, args...)
			if code == 0 {
				t.Fatalf("ephemera %s: exit 0, stdout:\n%s", strings.Join(args, " "), out)
			}
			if out != "" {
				t.Errorf("stdout not empty on failure:\n%s", out)
			}
			assertOneLine(t, errOut, append(wants, tc.more...)...)
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	out, errOut, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "ephemera ") || errOut != "" {
		t.Errorf("version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = run(t, "help")
	if code != 0 || !strings.Contains(out, "Usage: ephemera") {
		t.Errorf("help: exit %d:\n%s", code, out)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") {
			t.Errorf("help does not list %s:\n%s", c.name, out)
		}
	}
	if _, _, code := run(t); code != 2 {
		t.Errorf("no arguments: exit %d, want 2", code)
	}
	// --help prints the command's help once, to stdout, and succeeds.
	out, errOut, code = run(t, "run", "--help")
	if code != 0 || errOut != "" || strings.Count(out, "Usage: ephemera run") != 1 || !strings.Contains(out, "-dht-mode") {
		t.Errorf("run --help: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
}

func TestTwoNodes(t *testing.T) {
	t.Parallel()
	bhome := initHome(t, "--roles", "bootstrap", "--dht-mode", "server")
	_, brt := startNode(t, bhome)

	// Alone, the bootstrap node is up but not healthy, and says why.
	code, body := get(t, brt.APIURL+"/healthz")
	var h api.Health
	if err := json.Unmarshal(body, &h); code != http.StatusServiceUnavailable || err != nil || h.Status != "unhealthy" || h.Reason == "" {
		t.Errorf("lone bootstrap /healthz: HTTP %d %s", code, body)
	}

	bootstrap := make([]string, 0, 2*len(brt.Addrs))
	for _, a := range brt.Addrs {
		bootstrap = append(bootstrap, "--bootstrap", a)
	}
	mhome := initHome(t, bootstrap...)
	_, mrt := startNode(t, mhome)

	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body = get(t, mrt.APIURL+"/healthz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("miner not healthy within 20s: HTTP %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var info api.NodeInfo
	getJSONInto(t, mrt.APIURL+"/v1/node", &info)
	if info.PeerID != mrt.PeerID || strings.Join(info.Roles, ",") != "miner" || info.Network != "devnet" ||
		info.Peers < 1 || info.RoutingTableSize < 1 {
		t.Errorf("miner /v1/node: %+v", info)
	}
	var peers []api.PeerInfo
	getJSONInto(t, mrt.APIURL+"/v1/peers", &peers)
	found := false
	for _, p := range peers {
		if p.PeerID == brt.PeerID {
			found = true
			if !p.InRoutingTable || p.AgentVersion == "" {
				t.Errorf("bootstrap in miner's /v1/peers: %+v", p)
			}
		}
	}
	if !found {
		t.Errorf("miner's /v1/peers lacks the bootstrap %s: %+v", brt.PeerID, peers)
	}
	code, body = get(t, mrt.APIURL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", code)
	}
	for _, want := range []string{"\nephemera_peers ", "\nephemera_routing_table_size ", "\nlibp2p_", "\ngo_goroutines "} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}

	out, errOut, code2 := run(t, "status", "--home", mhome)
	if code2 != 0 || !regexp.MustCompile(`(?m)^health +ok$`).MatchString(out) {
		t.Errorf("status of the healthy miner: exit %d, stderr %q:\n%s", code2, errOut, out)
	}
}

func TestDoubleInterrupt(t *testing.T) {
	t.Parallel()
	home := initHome(t)
	p, _ := startNode(t, home)
	sendSignal(t, p, os.Interrupt)
	sendSignal(t, p, os.Interrupt)
	waitExit(t, p, 15*time.Second)
	if log := p.log(); strings.Contains(log, "goroutine ") || strings.Contains(log, "panic") {
		t.Errorf("stack trace on a forced stop:\n%s", log)
	}
}
