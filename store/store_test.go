package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/logging"
)

func open(t *testing.T, dir string, log *slog.Logger) *Store {
	t.Helper()
	s, err := Open(dir, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestPutGetDeleteScan(t *testing.T) {
	s := open(t, t.TempDir(), nil)

	for _, k := range []string{"rep/b", "rep/a", "res/x", "rep/c"} {
		if err := s.Put([]byte(k), []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get([]byte("rep/a"))
	if err != nil || string(got) != "v-rep/a" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if _, err := s.Get([]byte("rep/zz")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get absent: err = %v, want ErrNotFound", err)
	}

	if err := s.Delete([]byte("rep/b")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("rep/b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get deleted: err = %v, want ErrNotFound", err)
	}
	if err := s.Delete([]byte("rep/never")); err != nil {
		t.Fatalf("Delete absent: %v", err)
	}

	var keys []string
	var held [][]byte
	err = s.Scan([]byte("rep/"), func(k, v []byte) error {
		if string(v) != "v-"+string(k) {
			t.Errorf("Scan %q = %q", k, v)
		}
		keys = append(keys, string(k))
		held = append(held, k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "rep/a,rep/c"; strings.Join(keys, ",") != want {
		t.Fatalf("Scan keys = %v, want %s", keys, want)
	}
	// Keys must be copies that stay valid after the transaction.
	if string(held[0]) != "rep/a" || string(held[1]) != "rep/c" {
		t.Fatalf("held keys changed: %q", held)
	}

	stop := errors.New("stop")
	calls := 0
	err = s.Scan(nil, func(k, v []byte) error {
		calls++
		return stop
	})
	if err != stop || calls != 1 {
		t.Fatalf("Scan stop: err = %v, calls = %d", err, calls)
	}
}

func TestUpdateView(t *testing.T) {
	s := open(t, t.TempDir(), nil)

	err := s.Update(func(txn *Txn) error {
		return txn.Put([]byte("self/state"), []byte("running"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(txn *Txn) error {
		v, ok, err := txn.Get([]byte("self/state"))
		if err != nil {
			return err
		}
		if !ok || string(v) != "running" {
			return fmt.Errorf("value %q, %v", v, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A failing fn rolls back and its error comes back unchanged.
	boom := errors.New("boom")
	err = s.Update(func(txn *Txn) error {
		if err := txn.Put([]byte("self/state"), []byte("stopped")); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update err = %v, want boom", err)
	}
	if v, _ := s.Get([]byte("self/state")); string(v) != "running" {
		t.Fatalf("rolled-back write visible: %q", v)
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	if err := s.Put([]byte("self/gen"), []byte("7")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get([]byte("self/gen")); err == nil {
		t.Fatal("Get after Close succeeded")
	}

	s = open(t, dir, nil)
	got, err := s.Get([]byte("self/gen"))
	if err != nil || string(got) != "7" {
		t.Fatalf("after reopen Get = %q, %v", got, err)
	}
	got, err = s.Get(schemaKey)
	if err != nil || string(got) != "1" {
		t.Fatalf("schema = %q, %v", got, err)
	}
}

func TestTTL(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	key := []byte("queue/s1")
	if err := s.PutWithTTL(key, []byte("x"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(key); err != nil {
		t.Fatalf("Get right after put: %v", err)
	}
	if err := s.PutWithTTL(key, []byte("x"), 0); err == nil {
		t.Fatal("PutWithTTL(0) succeeded")
	}
	// Expiry has one-second granularity, so allow TTL plus a second.
	deadline := time.Now().Add(3500 * time.Millisecond)
	for {
		_, err := s.Get(key)
		if errors.Is(err, ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("entry still present after TTL")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, nil)

	s, err := Open(dir, nil)
	if err == nil {
		s.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want ErrLocked", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, dir) || strings.Contains(msg, "\n") {
		t.Fatalf("err %q should be one line naming %s", msg, dir)
	}
}

func TestSchema(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*Store) error
	}{
		{"other version", func(s *Store) error { return s.Put(schemaKey, []byte("2")) }},
		{"malformed", func(s *Store) error { return s.Put(schemaKey, []byte("01")) }},
		{"missing in non-empty db", func(s *Store) error {
			if err := s.Put([]byte("rep/p"), []byte("1")); err != nil {
				return err
			}
			return s.Delete(schemaKey)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			s := open(t, dir, nil)
			if err := tt.setup(s); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s, err := Open(dir, nil)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("err = %v, want ErrSchema naming %s", err, dir)
			}
			t.Log(err)
			// The failed Open must have closed Badger and released the lock.
			if s, err := Open(dir, nil); !errors.Is(err, ErrSchema) {
				if err == nil {
					s.Close()
				}
				t.Fatalf("reopen: err = %v, want ErrSchema again", err)
			}
		})
	}
}

func TestBadgerLogReachesSlog(t *testing.T) {
	var buf logging.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := open(t, t.TempDir(), log)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "module=badger") {
		t.Fatalf("no badger debug line in log:\n%s", out)
	}
	if strings.Contains(out, `\n"`) {
		t.Fatalf("trailing newline not trimmed:\n%s", out)
	}
}

func TestRunGCStops(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		s.RunGC(ctx, 10*time.Millisecond)
		close(done)
	}()
	time.Sleep(50 * time.Millisecond) // let a few GC rounds run
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunGC did not return after cancel")
	}
}

// A compact store keeps what a default one does: a small value and one
// past its value threshold, across a reopen, even after more writes than
// its memtable holds.
func TestCompactKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil, Compact())
	if err != nil {
		t.Fatal(err)
	}
	big := []byte(strings.Repeat("x", 100<<10))
	for i := range 64 { // 6 MiB: three memtables' worth
		if err := s.Put(fmt.Appendf(nil, "big/%02d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put([]byte("self/gen"), []byte("7")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, nil, Compact())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get([]byte("self/gen")); err != nil || string(got) != "7" {
		t.Fatalf("small value after reopen: %q, %v", got, err)
	}
	if got, err := s.Get([]byte("big/63")); err != nil || len(got) != len(big) {
		t.Fatalf("big value after reopen: %d bytes, %v", len(got), err)
	}
}
