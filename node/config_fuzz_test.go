package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/node"
)

// FuzzLoadConfig: whatever config.toml holds, loading it gives a valid
// config or one line saying what is wrong, and never panics.
func FuzzLoadConfig(f *testing.F) {
	def, err := node.DefaultConfig().Render()
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{string(def), "", "network = ", "[p2p]\nlisten = [1]", "[params]\nquorum = -1",
		"roles = [\"miner\", \"miner\"]", "[api]\nlisten = \"::::\"", "\x00\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		path := filepath.Join(t.TempDir(), node.ConfigFile)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := node.LoadConfig(path)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a multi-line error: %q", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("loaded an invalid config: %v", err)
		}
	})
}
