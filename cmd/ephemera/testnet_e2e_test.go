package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet"
)

// A testnet without --dir lives in a temporary directory that is gone
// after Ctrl-C, unless --keep or the testnet failed; the table names every
// home and the join command says where it works.
func TestTestnetTempDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real testnets of processes")
	}
	t.Parallel()
	for _, tt := range []struct {
		name    string
		args    []string
		stop    bool // Ctrl-C once it runs; otherwise it ends by itself
		kept    bool
		message string
	}{
		{"removed", nil, true, false, "removed "},
		{"keep", []string{"--keep"}, true, true, "kept "},
		{"failed", []string{"--timeout", "1ns"}, false, true, "for its logs, since the testnet failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			out := filepath.Join(t.TempDir(), "stdout")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			args := append([]string{"testnet", "--oracles", "1", "--miners", "0", "--routers", "0"}, tt.args...)
			cmd := exec.Command(bin, args...)
			cmd.Env = childEnv("TMPDIR=" + tmp)
			cmd.Stdout, cmd.Stderr = f, f
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			stdout := func() string { b, _ := os.ReadFile(out); return string(b) }
			var dir string
			deadline := time.After(60 * time.Second)
		wait:
			for {
				select {
				case <-done:
					break wait
				case <-deadline:
					t.Fatalf("testnet still running after 60s:\n%s", stdout())
				case <-time.After(100 * time.Millisecond):
				}
				if tt.stop && strings.Contains(stdout(), "press Ctrl-C") {
					var m testnet.Manifest
					dir = strings.Fields(strings.SplitN(stdout(), " in ", 2)[1])[0]
					b, err := os.ReadFile(filepath.Join(dir, "testnet.json"))
					if err != nil || json.Unmarshal(b, &m) != nil {
						t.Fatalf("testnet.json: %v\n%s", err, stdout())
					}
					for _, n := range m.Nodes {
						if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(n.Name) + ` +` + regexp.QuoteMeta(n.Home) + `$`).MatchString(stdout()) {
							t.Errorf("no line for %s's home %s in\n%s", n.Name, n.Home, stdout())
						}
					}
					if !strings.Contains(stdout(), "to join from this machine only") || !strings.Contains(stdout(), m.Join) {
						t.Errorf("the join command %q is not printed for this machine in\n%s", m.Join, stdout())
					}
					if err := cmd.Process.Signal(os.Interrupt); err != nil {
						t.Fatal(err)
					}
					tt.stop = false
				}
			}
			entries, _ := os.ReadDir(tmp)
			if len(entries) != map[bool]int{true: 1, false: 0}[tt.kept] {
				t.Errorf("TMPDIR holds %d entries after exit, want kept=%v:\n%s", len(entries), tt.kept, stdout())
			}
			if !strings.Contains(stdout(), tt.message) {
				t.Errorf("no %q in\n%s", tt.message, stdout())
			}
		})
	}
}

// --host takes an address of this machine, and says in one line what is
// wrong with any other.
func TestTestnetBadHost(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"example.org", "0.0.0.0", "192.0.2.1", "fe80::1"} {
		_, errOut, code := run(t, "testnet", "--host", host)
		if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, host) {
			t.Errorf("--host %s: exit %d, stderr %q", host, code, errOut)
		}
	}
}
