// Package localnet starts a test's local testnet with the same wiring as
// `ephemera testnet`, and stops it when the test ends.
package localnet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

// Start starts spec's nodes with l (in-process when l is nil) in a fresh
// temporary directory and waits until every node is healthy, within two
// minutes. The testnet stops at the test's end.
func Start(tb testing.TB, spec testnet.Spec, l testnet.Launcher) *testnet.Testnet {
	tb.Helper()
	if l == nil {
		l = testnet.InProcess{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tn, err := testnet.Start(ctx, tb.TempDir(), spec, l)
	// Runs after the stop below, so the logs are whole.
	tb.Cleanup(func() { saveLogs(tb, tn) })
	tb.Cleanup(func() { testkit.Stop(tb, 30*time.Second, tn.Stop) })
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tn.WaitHealthy(ctx); err != nil {
		tb.Fatal(err)
	}
	return tn
}

// WithRole lists the in-process nodes of tn that run role, in start order.
func WithRole(tn *testnet.Testnet, role node.Role) []*node.Node {
	var out []*node.Node
	for _, m := range tn.Members() {
		in, ok := m.Node.(testnet.InProcessNode)
		if ok && node.HasRole(m.Roles, role) {
			out = append(out, in.Node)
		}
	}
	return out
}

// WaitAvailable waits until n miners are available in the testnet's
// pool view (Testnet.WaitPool), failing the test after within.
func WaitAvailable(tb testing.TB, tn *testnet.Testnet, n int, within time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := tn.WaitPool(ctx, fmt.Sprintf("%d miners available", n), func(m []api.PoolMiner) bool {
		return testnet.CountState(m, "available") == n
	}); err != nil {
		tb.Fatal(err)
	}
}

// saveLogs, when the test has failed, copies each process's log to
// $EPHEMERA_ARTIFACTS/TEST/NAME.log and prints its last lines: a failure
// on a machine far away must say what the nodes saw.
func saveLogs(tb testing.TB, tn *testnet.Testnet) {
	if !tb.Failed() {
		return
	}
	dir := os.Getenv("EPHEMERA_ARTIFACTS")
	if dir != "" {
		dir = filepath.Join(dir, strings.ReplaceAll(tb.Name(), "/", "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Log(err)
			dir = ""
		}
	}
	for _, m := range tn.Members() {
		p, ok := m.Node.(*testnet.Process)
		if !ok {
			continue
		}
		b, err := os.ReadFile(p.LogPath())
		if err != nil {
			tb.Logf("%s: %v", m.Name, err)
			continue
		}
		if dir != "" {
			if err := os.WriteFile(filepath.Join(dir, m.Name+".log"), b, 0o644); err != nil {
				tb.Log(err)
			}
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		tb.Logf("%s's log, last lines of %d:\n%s", m.Name, len(lines), strings.Join(lines[max(0, len(lines)-logTail):], "\n"))
	}
}

// logTail is how many lines of each node's log a failed test prints.
const logTail = 12
