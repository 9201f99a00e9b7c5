package testkit

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Key derives an Ed25519 key from name, so that keys, peer IDs and sealed
// messages are the same on every run.
func Key(tb testing.TB, name string) crypto.PrivKey {
	tb.Helper()
	seed := sha256.Sum256([]byte("ephemera test key " + name))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// NewKey is a fresh random Ed25519 key.
func NewKey(tb testing.TB) crypto.PrivKey {
	tb.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// ID is the peer ID of k.
func ID(tb testing.TB, k crypto.PrivKey) peer.ID {
	tb.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}
