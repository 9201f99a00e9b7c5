package miner

import "testing"

// TestKeys pins the key on disk: a change here is a keyspace change
// (store.SchemaVersion), or a restarted miner would forget its state.
func TestKeys(t *testing.T) {
	if got, want := string(stateKey), "self/miner"; got != want {
		t.Errorf("stateKey = %q, want %q", got, want)
	}
}
