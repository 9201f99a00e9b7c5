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
	benchPuts(b, s.Put)
}

// BenchmarkStorePutBaseline is the baseline for BenchmarkStorePut: the same write
// through a bare badger.DB with the same options.
func BenchmarkStorePutBaseline(b *testing.B) {
	db, err := badger.Open(badgerOptions(b.TempDir(), slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	benchPuts(b, func(key, val []byte) error {
		return db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) })
	})
}

// benchPuts writes distinct keys with put, one per iteration: the same loop
// for the store and its baseline.
func benchPuts(b *testing.B, put func(key, val []byte) error) {
	key, val := make([]byte, 32), make([]byte, 256)
	var i uint64
	for b.Loop() {
		i++
		if err := put(benchKV(key, i), val); err != nil {
			b.Fatal(err)
		}
	}
}
