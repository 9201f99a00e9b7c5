package oracle

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestKeys pins the keys on disk: a change here is a keyspace change
// (store.SchemaVersion), or verdicts already signed would be signed again.
func TestKeys(t *testing.T) {
	m := peer.ID("miner")
	if got, want := string(signedKey(m, 3, 7)), "signed/DLxFFqT/00000000000000000003/00000000000000000007"; got != want {
		t.Errorf("signedKey = %q, want %q", got, want)
	}
	if got, want := string(signedPrefix(m, 3)), "signed/DLxFFqT/00000000000000000003/"; got != want {
		t.Errorf("signedPrefix = %q, want %q", got, want)
	}
}
