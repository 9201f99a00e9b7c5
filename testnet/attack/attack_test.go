package attack_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/testnet/attack"
	"github.com/ephemera-network/ephemera/testnet/testkit"
)

var binary string

func TestMain(m *testing.M) { os.Exit(testkit.WithBinary(m, &binary)) }

// The quick attacks run here, each against its own testnet of real
// processes, and must hold their bounds; `make attack` runs them all.
func TestQuickAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a testnet of real processes per attack")
	}
	for _, a := range attack.All() {
		if !a.Quick {
			continue
		}
		t.Run(a.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var log bytes.Buffer
			res, err := attack.Run(ctx, a, binary, t.TempDir(), &log)
			attack.Print(&log, res)
			t.Log("\n" + log.String())
			if err != nil {
				t.Fatal(err)
			}
			if !res.Passed() {
				t.Errorf("%s broke a bound", a.Name)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	got, err := attack.Select("hoarding, cross-site")
	if err != nil || len(got) != 2 || got[0].Name != "hoarding" || got[1].Name != "cross-site" {
		t.Fatalf("Select = %v, %v", got, err)
	}
	if _, err := attack.Select("hoarding,nosuch"); err == nil {
		t.Fatal("an unknown attack was accepted")
	}
}
