package testkit

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/record"
)

// SealRecord signs any libp2p record into a marshalled envelope, with key
// or, if key is nil, a fresh one: for messages the protocol's own
// marshalling would refuse to make.
func SealRecord(tb testing.TB, rec record.Record, key crypto.PrivKey) []byte {
	tb.Helper()
	if key == nil {
		key = NewKey(tb)
	}
	env, err := record.Seal(rec, key)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := env.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}
