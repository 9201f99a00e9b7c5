package store

import (
	"encoding/binary"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// benchKV returns a distinct 32-byte key for i and a shared 256-byte value.
func benchKV(key []byte, i uint64) []byte {
	binary.BigEndian.PutUint64(key[len(key)-8:], i)
	return key
}

func BenchmarkStorePut(b *testing.B) {
	s, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	key, val := make([]byte, 32), make([]byte, 256)
	var i uint64
	for b.Loop() {
		i++
		if err := s.Put(benchKV(key, i), val); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStorePutBaseline is the baseline for BenchmarkStorePut: the same write
// through a bare badger.DB with the same options.
func BenchmarkStorePutBaseline(b *testing.B) {
	db, err := badger.Open(badgerOptions(b.TempDir(), slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	key, val := make([]byte, 32), make([]byte, 256)
	var i uint64
	for b.Loop() {
		i++
		err := db.Update(func(txn *badger.Txn) error {
			return txn.Set(benchKV(key, i), val)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
