package store

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type rec struct {
	Name string    `json:"name"`
	N    int       `json:"n,omitempty"`
	At   time.Time `json:"at,omitzero"`
	Raw  []byte    `json:"raw,omitempty"`
}

func TestJSONRoundTrip(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	want := rec{Name: "a", N: 3, At: time.Unix(1700000000, 5).UTC(), Raw: []byte{0, 1, 2}}
	err := s.Update(func(txn *Txn) error {
		if err := PutJSON(txn, []byte("rep/a"), want); err != nil {
			return err
		}
		// A write is visible to the rest of its transaction.
		got, ok, err := GetJSON[rec](txn, []byte("rep/a"))
		if err != nil || !ok || got.Name != "a" {
			t.Errorf("GetJSON in the writing txn = %+v, %v, %v", got, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(txn *Txn) error {
		got, ok, err := GetJSON[rec](txn, []byte("rep/a"))
		if err != nil || !ok || got.Name != want.Name || got.N != want.N || !got.At.Equal(want.At) || string(got.Raw) != string(want.Raw) {
			t.Errorf("GetJSON = %+v, %v, %v; want %+v", got, ok, err, want)
		}
		got, ok, err = GetJSON[rec](txn, []byte("rep/absent"))
		if err != nil || ok || got.Name != "" {
			t.Errorf("GetJSON absent = %+v, %v, %v", got, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The bytes on disk are encoding/json's, as every value written before
	// the typed helpers existed: old data loads, new data reads the same.
	raw, err := s.Get([]byte("rep/a"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(want); string(raw) != string(b) {
		t.Fatalf("stored %s, want %s", raw, b)
	}
}

func TestJSONCorrupt(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	for k, v := range map[string]string{"rep/a": `{"name":"a"}`, "rep/b": `{not json`, "rep/c": `{"name":"c"}`} {
		if err := s.Put([]byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	err := s.View(func(txn *Txn) error {
		_, ok, err := GetJSON[rec](txn, []byte("rep/b"))
		if !errors.Is(err, ErrCorrupt) || ok || strings.Count(err.Error(), `"rep/b"`) != 1 {
			t.Errorf("GetJSON corrupt: ok %v, err %v; want ErrCorrupt naming the key", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// ScanJSON hands the damaged value to fn, which may skip it.
	var seen, bad []string
	err = s.View(func(txn *Txn) error {
		return ScanJSON(txn, []byte("rep/"), func(k []byte, v rec, err error) error {
			if err != nil {
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"rep/b"`) || v.Name != "" {
					t.Errorf("scan of %q: v %+v, err %v", k, v, err)
				}
				bad = append(bad, string(k))
				return nil
			}
			seen = append(seen, v.Name)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "a,c" || strings.Join(bad, ",") != "rep/b" {
		t.Fatalf("ScanJSON saw %v, damaged %v", seen, bad)
	}

	// Or stop at it: the scan returns fn's error.
	err = s.View(func(txn *Txn) error {
		return ScanJSON(txn, []byte("rep/"), func(_ []byte, _ rec, err error) error { return err })
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ScanJSON stop: %v", err)
	}
}

func TestTxnWrites(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	err := s.Update(func(txn *Txn) error {
		if err := txn.Put([]byte("pend/a"), []byte("1")); err != nil {
			return err
		}
		if err := PutJSONWithTTL(txn, []byte("pend/b"), rec{Name: "b"}, time.Hour); err != nil {
			return err
		}
		if err := txn.PutWithTTL([]byte("pend/c"), nil, time.Hour); err != nil {
			return err
		}
		if err := txn.PutWithTTL([]byte("pend/d"), nil, 0); err == nil {
			t.Error("PutWithTTL(0) succeeded")
		}
		return txn.Delete([]byte("pend/never"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	err = s.View(func(txn *Txn) error {
		return txn.Scan([]byte("pend/"), func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil || strings.Join(keys, ",") != "pend/a,pend/b,pend/c" {
		t.Fatalf("keys %v, %v", keys, err)
	}
	err = s.Update(func(txn *Txn) error { return txn.Delete([]byte("pend/a")) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("pend/a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	// An empty value is present, not absent.
	err = s.View(func(txn *Txn) error {
		if _, ok, err := txn.Get([]byte("pend/c")); !ok || err != nil {
			t.Errorf("empty value: ok %v, err %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestConflict(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	key := []byte("signed/x")
	err := s.Update(func(txn *Txn) error {
		if _, _, err := txn.Get(key); err != nil {
			return err
		}
		// Another transaction writes what this one read, and commits first.
		if err := s.Update(func(other *Txn) error { return other.Put(key, []byte("first")) }); err != nil {
			return err
		}
		return txn.Put(key, []byte("second"))
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Update err = %v, want ErrConflict", err)
	}
	if v, _ := s.Get(key); string(v) != "first" {
		t.Fatalf("value %q, want the first commit's", v)
	}
}
