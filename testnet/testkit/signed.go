package testkit

import (
	"errors"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// Seal signs m with k into a protocol envelope, failing the test if it can't.
func Seal[T any, M protocol.Message[T]](tb testing.TB, m M, k crypto.PrivKey) []byte {
	tb.Helper()
	raw, err := protocol.Seal(m, k)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// Signed seals m with k and opens it again: the form checks and stores take.
func Signed[T any, M protocol.Message[T]](tb testing.TB, m M, k crypto.PrivKey) protocol.Signed[M] {
	tb.Helper()
	return Open[T, M](tb, Seal(tb, m, k))
}

// Open opens a sealed envelope, failing the test if it can't.
func Open[T any, M protocol.Message[T]](tb testing.TB, raw []byte) protocol.Signed[M] {
	tb.Helper()
	s, err := protocol.Open[T, M](raw)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Class names the class the checks sort an error into: "ok", "reject",
// "ignore", "both" (a bug) or "unclassified".
func Class(err error) string {
	rej, ign := errors.Is(err, protocol.ErrReject), errors.Is(err, protocol.ErrIgnore)
	switch {
	case err == nil:
		return "ok"
	case rej && ign:
		return "both"
	case rej:
		return "reject"
	case ign:
		return "ignore"
	default:
		return "unclassified"
	}
}
