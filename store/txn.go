package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Txn is one transaction, valid only inside the function given to Update or
// View. Values it returns are copies, safe to keep after it ends. Writes are
// visible to later reads of the same Txn and reach the disk (fsynced) when
// Update commits.
type Txn struct {
	txn *badger.Txn
}

// Get returns a copy of the value at key; ok is false if the key is absent
// (or its TTL has passed).
func (t *Txn) Get(key []byte) (val []byte, ok bool, err error) {
	err = t.value(key, func(v []byte) error {
		val = append([]byte{}, v...)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return val, true, nil
}

// value calls fn with the value at key, valid only during fn, or returns an
// error wrapping ErrNotFound. It is the one place Badger's not-found error
// becomes the store's. fn's own error is returned unchanged.
func (t *Txn) value(key []byte, fn func([]byte) error) error {
	item, err := t.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("store: get %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("store: get %q: %w", key, err)
	}
	var fnErr error
	err = item.Value(func(v []byte) error {
		fnErr = fn(v)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("store: get %q: %w", key, err)
	}
	return nil
}

// Put stores val at key.
func (t *Txn) Put(key, val []byte) error {
	if err := t.txn.Set(key, val); err != nil {
		return fmt.Errorf("store: put %q: %w", key, err)
	}
	return nil
}

// PutWithTTL stores val at key until ttl has passed, with the same
// whole-second precision as Store.PutWithTTL.
func (t *Txn) PutWithTTL(key, val []byte, ttl time.Duration) error {
	e, err := ttlEntry(key, val, ttl)
	if err != nil {
		return err
	}
	if err := t.txn.SetEntry(e); err != nil {
		return fmt.Errorf("store: put %q: %w", key, err)
	}
	return nil
}

// Delete removes key; deleting an absent key is not an error.
func (t *Txn) Delete(key []byte) error {
	if err := t.txn.Delete(key); err != nil {
		return fmt.Errorf("store: delete %q: %w", key, err)
	}
	return nil
}

// Scan calls fn for every key with the prefix, in key order, with copies of
// key and value; it stops when fn returns an error, and returns that error.
func (t *Txn) Scan(prefix []byte, fn func(key, val []byte) error) error {
	return t.scan(prefix, func(key []byte, item *badger.Item) error {
		val, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("store: scan %q: %w", prefix, err)
		}
		return fn(key, val)
	})
}

func (t *Txn) scan(prefix []byte, fn func(key []byte, item *badger.Item) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	it := t.txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := fn(item.KeyCopy(nil), item); err != nil {
			return err
		}
	}
	return nil
}

// GetJSON decodes the JSON value at key; ok is false if the key is absent.
// A value that does not decode is an error wrapping ErrCorrupt that names
// the key.
func GetJSON[T any](t *Txn, key []byte) (v T, ok bool, err error) {
	// encoding/json copies what it keeps, so the value need not be.
	err = t.value(key, func(raw []byte) error { return decode(key, raw, &v) })
	if errors.Is(err, ErrNotFound) {
		return v, false, nil
	}
	if err != nil {
		var zero T
		return zero, false, err
	}
	return v, true, nil
}

// PutJSON stores v at key as JSON (encoding/json's encoding, the format of
// every JSON value already on disk).
func PutJSON(t *Txn, key []byte, v any) error {
	b, err := encode(key, v)
	if err != nil {
		return err
	}
	return t.Put(key, b)
}

// PutJSONWithTTL is PutJSON with a TTL, as PutWithTTL.
func PutJSONWithTTL(t *Txn, key []byte, v any, ttl time.Duration) error {
	b, err := encode(key, v)
	if err != nil {
		return err
	}
	return t.PutWithTTL(key, b, ttl)
}

// ScanJSON calls fn for every key with the prefix, in key order, with a copy
// of the key and its value decoded. A value that does not decode is passed as
// err (wrapping ErrCorrupt, naming the key) with v zero, so that fn decides
// whether to skip it (return nil) or stop. The scan stops when fn returns an
// error, and returns that error.
func ScanJSON[T any](t *Txn, prefix []byte, fn func(key []byte, v T, err error) error) error {
	return t.scan(prefix, func(key []byte, item *badger.Item) error {
		var v T
		err := item.Value(func(raw []byte) error { return decode(key, raw, &v) })
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("store: scan %q: %w", prefix, err)
		}
		if err != nil {
			var zero T
			v = zero
		}
		return fn(key, v, err)
	})
}

func decode(key, raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("store: %w at %q: %w", ErrCorrupt, key, err)
	}
	return nil
}

func encode(key []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("store: encode %q: %w", key, err)
	}
	return b, nil
}

// ttlEntry is the entry of a write with a TTL; a TTL that is not positive
// is refused.
func ttlEntry(key, val []byte, ttl time.Duration) (*badger.Entry, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("store: put %q: ttl %v is not positive", key, ttl)
	}
	return badger.NewEntry(key, val).WithTTL(ttl), nil
}
