package testkit

import (
	"testing"

	"github.com/ephemera-network/ephemera/store"
)

// Store opens a real store in dir (a fresh temporary directory if dir is
// empty), closed when the test ends. Closing it earlier is fine.
func Store(tb testing.TB, dir string) *store.Store {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	st, err := store.Open(dir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}
