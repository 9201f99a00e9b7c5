package testnet_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

var binary string // the ephemera binary the tests run, built once

func TestMain(m *testing.M) { os.Exit(testkit.WithBinary(m, &binary)) }

// The default testnet, as real processes of the real binary, all healthy,
// described in testnet.json, and every process gone after Stop.
func TestSubprocessTestnet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 10 processes")
	}
	bin := binary
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn, err := testnet.Start(ctx, dir, testnet.DefaultSpec(), testnet.Subprocess{Binary: bin})
	stopped := false
	stop := func() error {
		stopped = true
		sctx, done := context.WithTimeout(context.Background(), 30*time.Second)
		defer done()
		return tn.Stop(sctx)
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	statuses, err := tn.WaitHealthy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	path, err := tn.WriteManifest(statuses)
	if err != nil {
		t.Fatal(err)
	}
	var m testnet.Manifest
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, n := range m.Nodes {
		if n.PID <= 0 || n.PeerID == "" || n.APIURL == "" || len(n.Addrs) == 0 || !n.Healthy {
			t.Fatalf("incomplete manifest entry: %+v", n)
		}
		roles[n.Roles[0]]++
	}
	if roles["bootstrap"] != 1 || roles["oracle"] != 3 || roles["miner"] != 5 || roles["router"] != 1 {
		t.Fatalf("roles in manifest: %v", roles)
	}
	// The network's definition is in the directory, its hash in the
	// manifest, and the join command names both a bootstrap and the hash.
	def, err := os.ReadFile(m.Definition)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(def), m.NetworkHash) || len(m.NetworkHash) != 64 {
		t.Errorf("network.toml does not carry the manifest's hash %q", m.NetworkHash)
	}
	if !strings.Contains(m.Join, "--join "+m.Nodes[0].Addrs[0]) || !strings.Contains(m.Join, "--network-hash "+m.NetworkHash) {
		t.Errorf("join command %q", m.Join)
	}
	for _, n := range m.Nodes {
		if !strings.HasPrefix(n.Home, dir) {
			t.Errorf("%s: home %q", n.Name, n.Home)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, n := range m.Nodes {
		if err := syscall.Kill(n.PID, 0); err == nil {
			t.Errorf("%s (pid %d) still running after stop", n.Name, n.PID)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	bad := []testnet.Spec{
		{Network: "x", Bootstraps: 0, Miners: 1},
		{Network: "x", Bootstraps: 1, Miners: -1},
		{Network: "x", Bootstraps: 1, Miners: 500},
		{Network: "x", Bootstraps: 1, Host: "not-an-ip"},
		{Network: "x", Bootstraps: 1, Host: "0.0.0.0"},
		{Network: "x", Bootstraps: 1, Host: "192.0.2.1"}, // documentation range: no machine has it
		{Network: "x", Bootstraps: 1, Host: "::"},
		{Network: "x", Bootstraps: 1, Host: "fe80::1"},
		{Network: "x", Bootstraps: 1, Host: "2001:db8::1"},
		{Network: "x", Bootstraps: 1, Host: "127.0.0.1:7600"},
	}
	for _, s := range bad {
		err := s.Validate()
		if err == nil {
			t.Errorf("%+v accepted", s)
			continue
		}
		if s.Host != "" && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), s.Host)) {
			t.Errorf("--host %s: want one line naming it, got %q", s.Host, err)
		}
	}
	if err := testnet.DefaultSpec().Validate(); err != nil {
		t.Fatal(err)
	}
	local := testnet.DefaultSpec()
	local.Host = "127.0.0.1"
	if err := local.Validate(); err != nil {
		t.Fatal(err)
	}
}

// The join command names every bootstrap address and the network's hash,
// and makes a home that run starts.
func TestJoinCommand(t *testing.T) {
	tn := &testnet.Testnet{Definition: protocol.Definition{Name: "devnet", Params: protocol.DefaultParams(), Bootstrap: []string{
		"/ip4/192.168.1.20/tcp/40001/p2p/12D3KooWKnDnUDVQGcGKMc4NXt6xyz",
		"/ip4/192.168.1.20/udp/40002/quic-v1/p2p/12D3KooWKnDnUDVQGcGKMc4NXt6xyz",
	}}}
	want := "ephemera init --home ~/.ephemera --join /ip4/192.168.1.20/tcp/40001/p2p/12D3KooWKnDnUDVQGcGKMc4NXt6xyz," +
		"/ip4/192.168.1.20/udp/40002/quic-v1/p2p/12D3KooWKnDnUDVQGcGKMc4NXt6xyz --network-hash " + tn.Definition.Hash() +
		" --roles miner && ephemera run --home ~/.ephemera"
	if got := tn.JoinCommand(); got != want {
		t.Errorf("join command\n got %s\nwant %s", got, want)
	}
}
