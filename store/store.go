package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ephemera-network/ephemera/internal/wait"
)

// SchemaVersion is the keyspace layout this code reads and writes; stored at key "meta/schema".
//
// The value is the version in canonical decimal ASCII ("1"), so it can be read
// with any Badger dump tool; anything else (leading zeros, spaces, binary) is
// rejected as malformed.
const SchemaVersion = 1

// Errors callers branch on; returned errors wrap them with context.
var (
	// ErrNotFound: the key is absent (or its TTL has passed).
	ErrNotFound = errors.New("not found")
	// ErrLocked: another Store, in this process or another, has the directory open.
	ErrLocked = errors.New("store is in use by another process")
	// ErrSchema: the database was written with a keyspace layout this binary does not read.
	ErrSchema = errors.New("unsupported schema version")
	// ErrCorrupt: a stored value does not decode.
	ErrCorrupt = errors.New("corrupt value")
	// ErrConflict: Update did not commit because another transaction
	// changed what it read first; running it again sees that change.
	ErrConflict = errors.New("transaction conflict")
)

var schemaKey = []byte("meta/schema")

// gcDiscardRatio is the share of stale data a value-log file must hold before
// GC rewrites it; 0.5 is Badger's recommended trade-off of I/O against space.
const gcDiscardRatio = 0.5

// lockMsg is the part of Badger's lock-failure text shared by its unix, aix,
// windows and plan9 variants. Badger formats the OS error with %+v rather
// than %w, so matching the text is the only way to recognise it.
const lockMsg = "Another process is using this Badger database"

// Store is one node's Badger database. Each Store owns its own DB, caches and
// goroutines; several can be open in one process on different directories.
type Store struct {
	db    *badger.DB
	dir   string
	log   *slog.Logger
	close func() error
}

// badgerOptions is the tuning shared by Open and the raw-Badger benchmark.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(newBadgerLogger(log)).
		// Every commit is fsynced: a crash must not lose an acknowledged write.
		WithSyncWrites(true).
		// Badger's metrics are process-wide expvars; two stores would share them.
		WithMetricsEnabled(false).
		// Badger's defaults target servers (64 MiB memtables x5, 256 MiB block
		// cache, 1 GiB value-log files). A node's state is small and an idle
		// node should stay well under 60 MiB resident, with up to 20 stores in
		// one test process, so everything is scaled down.
		WithMemTableSize(8 << 20).
		WithNumMemtables(2). // one active, one flushing
		// Few L0 tables keep reads cheap and compaction early; the stall limit
		// leaves headroom so a write burst does not block.
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).           // the minimum Badger accepts (besides 0)
		WithBlockCacheSize(8 << 20).    // required while compression is on
		WithIndexCacheSize(4 << 20).    // caps table indexes instead of keeping all in RAM
		WithValueLogFileSize(64 << 20). // mmapped; smaller files also let GC reclaim sooner
		WithNumGoroutines(2)            // only used by Stream; no need for 8
}

// Option changes the tuning Open gives Badger; never its durability.
type Option func(*badger.Options)

// Compact tunes a store for hundreds in one process, as the simulation
// runs them: 2 MiB memtables (values over 64 KiB go to the value log, as
// Badger requires of so small a table) and 1 MiB block and index caches.
// A node's state is a few megabytes; a smaller memtable only flushes it to
// disk sooner. Every commit is still synced.
func Compact() Option {
	return func(o *badger.Options) {
		*o = o.WithMemTableSize(2 << 20).WithValueThreshold(64 << 10).
			WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20)
	}
}

// Open opens the Badger database in dir, creating dir (mode 0700) if needed,
// and checks the schema version. The store logs to log with module=store and
// Badger's own lines with module=badger, so log must not carry a module of
// its own; a nil log discards both. If another Store or process has dir
// open, the error wraps ErrLocked; an unknown layout wraps ErrSchema.
func Open(dir string, log *slog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	bo := badgerOptions(dir, log)
	for _, o := range opts {
		o(&bo)
	}
	db, err := badger.Open(bo)
	if err != nil {
		if strings.Contains(err.Error(), lockMsg) {
			return nil, fmt.Errorf("store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("store %s: open: %w", dir, err)
	}
	s := &Store{db: db, dir: dir, log: log.With("module", "store")}
	s.close = sync.OnceValue(func() error {
		if err := db.Close(); err != nil {
			return fmt.Errorf("store %s: close: %w", dir, err)
		}
		return nil
	})
	if err := s.checkSchema(); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// checkSchema stamps an empty database with SchemaVersion and refuses any
// other layout, so an old binary never misreads a newer keyspace.
func (s *Store) checkSchema() error {
	err := s.Update(func(txn *Txn) error {
		val, ok, err := txn.Get(schemaKey)
		if err != nil {
			return err
		}
		if !ok {
			if !txn.isEmpty() {
				return s.schemaErr("(missing, database not empty)")
			}
			return txn.Put(schemaKey, []byte(strconv.Itoa(SchemaVersion)))
		}
		n, err := strconv.Atoi(string(val))
		if err != nil || strconv.Itoa(n) != string(val) {
			return s.schemaErr(fmt.Sprintf("%q (malformed)", val))
		}
		if n != SchemaVersion {
			return s.schemaErr(strconv.Itoa(n))
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrSchema) {
		return fmt.Errorf("store %s: schema check: %w", s.dir, err)
	}
	return err
}

func (s *Store) schemaErr(found string) error {
	return fmt.Errorf("store %s: %w %s, this binary reads %d", s.dir, ErrSchema, found, SchemaVersion)
}

// isEmpty reports whether t sees no user keys (Badger's internal keys are
// hidden from iterators).
func (t *Txn) isEmpty() bool {
	it := t.txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	it.Rewind()
	return !it.Valid()
}

// Close closes the database. Later calls return the first call's result.
func (s *Store) Close() error {
	return s.close()
}

// Get returns a copy of the value at key, or an error wrapping ErrNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.View(func(txn *Txn) error {
		return txn.value(key, func(v []byte) error {
			val = append([]byte{}, v...)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return val, nil
}

// Put stores value at key durably.
func (s *Store) Put(key, value []byte) error {
	return s.set("put", badger.NewEntry(key, value))
}

// PutWithTTL stores value at key until ttl has passed. Badger keeps expiry in
// whole Unix seconds (now+ttl, truncated), so the entry may vanish up to one
// second early; use ttl of a few seconds or more.
func (s *Store) PutWithTTL(key, value []byte, ttl time.Duration) error {
	e, err := ttlEntry(key, value, ttl)
	if err != nil {
		return err
	}
	return s.set("put", e)
}

func (s *Store) set(op string, e *badger.Entry) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(e)
	})
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, e.Key, err)
	}
	return nil
}

// Delete removes key; deleting an absent key is not an error.
func (s *Store) Delete(key []byte) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("store: delete %q: %w", key, err)
	}
	return nil
}

// Update runs fn in a read-write transaction and commits it (fsynced) if fn
// returns nil. fn's own error is returned unchanged. If another transaction
// changed what fn read before the commit, nothing is written and the error
// wraps ErrConflict.
func (s *Store) Update(fn func(txn *Txn) error) error {
	return s.txn(true, "update", fn)
}

// View runs fn in a read-only transaction. fn's own error is returned unchanged.
func (s *Store) View(fn func(txn *Txn) error) error {
	return s.txn(false, "view", fn)
}

// txn keeps fn's errors as they are, so callers can compare them, and wraps
// only Badger's own (closed database, commit conflict or failure).
func (s *Store) txn(update bool, op string, fn func(txn *Txn) error) error {
	var fnErr error
	run := func(txn *badger.Txn) error {
		fnErr = fn(&Txn{txn: txn})
		return fnErr
	}
	var err error
	if update {
		err = s.db.Update(run)
	} else {
		err = s.db.View(run)
	}
	if fnErr != nil {
		return fnErr
	}
	if errors.Is(err, badger.ErrConflict) {
		return fmt.Errorf("store: %s: %w", op, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// Scan calls fn for every key with the prefix, in key order, with copies of key and value; stops when fn returns an error (returned).
// All of it runs in one read transaction, so fn sees a consistent snapshot.
func (s *Store) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return s.txn(false, "scan", func(txn *Txn) error {
		return txn.Scan(prefix, fn)
	})
}

// RunGC runs value-log GC periodically until ctx ends (Badger needs it called; ratio 0.5, interval given).
// It also returns once the store is closed, or at once if every is not positive.
func (s *Store) RunGC(ctx context.Context, every time.Duration) {
	if every <= 0 {
		s.log.Warn("store: value-log GC disabled", "dir", s.dir, "every", every)
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for wait.Tick(ctx, t.C) {
		if s.db.IsClosed() {
			return
		}
		// Each call rewrites at most one file; repeat while it finds work.
		for ctx.Err() == nil {
			err := s.db.RunValueLogGC(gcDiscardRatio)
			if err == nil {
				continue
			}
			// ErrNoRewrite: nothing worth rewriting. ErrRejected: GC already
			// running, or the DB is closing.
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.log.Warn("store: value-log GC failed", "dir", s.dir, "err", err)
			}
			break
		}
	}
}
