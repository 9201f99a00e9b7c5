package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/node"
)

// A newcomer joins with a bootstrap address alone: `init --join` fetches the
// network's definition, checks a pinned hash, and leaves a home whose node
// runs as a member. A wrong pin writes nothing.
func TestInitJoin(t *testing.T) {
	t.Parallel()
	bootHome := initHome(t, "--roles", "bootstrap", "--dht-mode", "server")
	_, boot := startNode(t, bootHome)
	if boot.NetworkHash == "" {
		t.Fatal("node.json has no network_hash")
	}
	joinAddr := boot.Addrs[0]

	// A wrong pin: one line, exit 1, nothing written.
	bad := filepath.Join(t.TempDir(), "bad")
	_, errOut, code := run(t, "init", "--home", bad, "--join", joinAddr, "--network-hash", strings.Repeat("ab", 8))
	if code != 1 {
		t.Fatalf("init with a wrong pin: exit %d, want 1: %s", code, errOut)
	}
	assertOneLine(t, errOut, "not the pinned abababababababab", boot.NetworkHash, "nothing written")
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("init with a wrong pin created %s", bad)
	}

	// The right pin (a prefix will do), combined with --roles.
	home := filepath.Join(t.TempDir(), "joiner")
	args := append([]string{"init", "--home", home, "--join", "/ip4/127.0.0.1/tcp/1/p2p/" + boot.PeerID + "," + joinAddr,
		"--network-hash", boot.NetworkHash[:20], "--roles", "miner"}, loopback...)
	out, errOut, code := run(t, args...)
	if code != 0 {
		t.Fatalf("init --join: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, boot.NetworkHash) {
		t.Errorf("init --join does not name the network's hash:\n%s", out)
	}
	cfg, err := node.LoadConfig(node.Home{Dir: home}.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Definition().Hash(); got != boot.NetworkHash {
		t.Fatalf("the joiner's definition hash %s, the bootstrap's %s", got, boot.NetworkHash)
	}
	if !strings.Contains(strings.Join(cfg.EffectiveP2P().Bootstrap, " "), joinAddr) {
		t.Errorf("the joiner's bootstrap list %v lacks %s", cfg.EffectiveP2P().Bootstrap, joinAddr)
	}
	joiner, rt := startNode(t, home)
	if rt.NetworkHash != boot.NetworkHash {
		t.Errorf("the joiner runs on %s, the bootstrap on %s", rt.NetworkHash, boot.NetworkHash)
	}
	sendSignal(t, joiner, os.Interrupt)
	if code := waitExit(t, joiner, 15*time.Second); code != 0 {
		t.Fatalf("the joiner exited %d:\n%s", code, joiner.log())
	}

	// Rewriting the joiner's config keeps its network.
	if _, errOut, code := run(t, append([]string{"init", "--home", home, "--force", "--roles", "router"}, loopback...)...); code != 0 {
		t.Fatalf("init --force: exit %d: %s", code, errOut)
	}
	if cfg, err := node.LoadConfig(node.Home{Dir: home}.ConfigPath()); err != nil || cfg.Definition().Hash() != boot.NetworkHash {
		t.Fatalf("init --force without --join: %v; hash %s, want the joined network's %s", err, cfg.Definition().Hash(), boot.NetworkHash)
	}

	// The file handed over out of band does the same.
	byFile := filepath.Join(t.TempDir(), "byfile")
	if _, errOut, code := run(t, append([]string{"init", "--home", byFile, "--network", node.Home{Dir: home}.DefinitionPath(),
		"--network-hash", boot.NetworkHash}, loopback...)...); code != 0 {
		t.Fatalf("init --network: exit %d: %s", code, errOut)
	}
	if cfg, err := node.LoadConfig(node.Home{Dir: byFile}.ConfigPath()); err != nil || cfg.Definition().Hash() != boot.NetworkHash {
		t.Fatalf("init --network: %v, hash %s", err, cfg.Definition().Hash())
	}
}

func TestInitJoinBadInput(t *testing.T) {
	t.Parallel()
	const id = "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		wants []string
	}{
		{"both sources", []string{"--join", "/ip4/127.0.0.1/tcp/1/p2p/" + id, "--network", "x.toml"}, 2, []string{"--join and --network"}},
		{"pin alone", []string{"--network-hash", strings.Repeat("a", 64)}, 2, []string{"--network-hash"}},
		{"short pin", []string{"--network", "x.toml", "--network-hash", "abc"}, 2, []string{"--network-hash", "hex digits"}},
		{"no peer id", []string{"--join", "/ip4/127.0.0.1/tcp/1"}, 1, []string{"/p2p/"}},
		{"missing file", []string{"--network", "/nonexistent/network.toml"}, 1, []string{"/nonexistent/network.toml", "no such file"}},
		{"nobody answers", []string{"--join", "/ip4/127.0.0.1/tcp/1/p2p/" + id, "--join-timeout", "1s"}, 1, []string{"no bootstrap node answered", "/ip4/127.0.0.1/tcp/1/p2p/" + id}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			_, errOut, code := run(t, append([]string{"init", "--home", home}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, errOut)
			}
			assertOneLine(t, errOut, tc.wants...)
			if _, err := os.Stat(home); !os.IsNotExist(err) {
				t.Errorf("a failed init created %s", home)
			}
		})
	}
}

// doctor checks a running joiner: the bootstrap reached and on the same
// network, the node up and healthy, and the one problem (a network with no
// oracles) with its fix; --json carries the same.
func TestDoctor(t *testing.T) {
	t.Parallel()
	bootHome := initHome(t, "--roles", "bootstrap", "--dht-mode", "server")
	_, boot := startNode(t, bootHome)
	home := filepath.Join(t.TempDir(), "joiner")
	bad := "/ip4/127.0.0.1/tcp/1/p2p/" + boot.PeerID
	if _, errOut, code := run(t, append([]string{"init", "--home", home, "--join", boot.Addrs[0], "--dht-mode", "server"}, loopback...)...); code != 0 {
		t.Fatalf("init --join: exit %d: %s", code, errOut)
	}
	startNode(t, home)
	var rep doctorReport
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, code := run(t, "doctor", "--home", home, "--json", "--timeout", "3s")
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("doctor --json: %v\n%s", err, out)
		}
		if code == 1 && rep.Problems == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	want := map[string]bool{"bootstrap": true, "node": true, "health": true, "network definition": true, "oracles": false}
	for _, f := range rep.Findings {
		if ok, listed := want[f.Check]; listed && ok != f.OK {
			t.Errorf("finding %s: ok %v, want %v (%s)", f.Check, f.OK, ok, f.Detail)
		}
		if !f.OK && f.Fix == "" {
			t.Errorf("finding %s has no fix: %s", f.Check, f.Detail)
		}
	}
	if rep.Problems != 1 || rep.NetworkHash != boot.NetworkHash || rep.Net == nil {
		t.Fatalf("doctor found %d problems (want 1, no oracles), hash %s (want %s), network info %v", rep.Problems, rep.NetworkHash, boot.NetworkHash, rep.Net != nil)
	}

	// A mistyped bootstrap address is named with its error.
	typo := filepath.Join(t.TempDir(), "typo")
	if _, errOut, code := run(t, append([]string{"init", "--home", typo, "--bootstrap", bad}, loopback...)...); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	out, errOut, code := run(t, "doctor", "--home", typo, "--timeout", "2s")
	if code != 1 || !strings.Contains(out, bad+": not reached") || !strings.Contains(out, "fix: ") {
		t.Fatalf("doctor on a mistyped bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	assertOneLine(t, errOut, "problem(s) found")
}
