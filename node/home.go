package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// The files of a node's home directory.
const (
	ConfigFile  = "config.toml"
	KeyFile     = "identity.key"
	DataDir     = "data"
	LockFile    = "ephemera.lock"
	RuntimeFile = "node.json"
)

// ErrHomeInUse means another running node holds the home directory.
var ErrHomeInUse = errors.New("home is in use by a running node")

// Home is a node's home directory: its configuration, identity and state.
type Home struct{ Dir string }

func (h Home) path(name string) string { return filepath.Join(h.Dir, name) }

// ConfigPath is where config.toml lives.
func (h Home) ConfigPath() string { return h.path(ConfigFile) }

// DefinitionPath is where the network's definition lives.
func (h Home) DefinitionPath() string { return h.path(protocol.DefinitionFile) }

// KeyPath is where the identity key lives, apart from the config.
func (h Home) KeyPath() string { return h.path(KeyFile) }

// DataPath is the Badger directory.
func (h Home) DataPath() string { return h.path(DataDir) }

// RuntimePath is where a running node publishes its addresses.
func (h Home) RuntimePath() string { return h.path(RuntimeFile) }

// Init writes a commented config.toml, the network's definition
// (network.toml) and a new identity key into the home. It refuses a home
// that already holds a config unless force is set; force rewrites both files
// but keeps the existing identity and data, because a lost key is a lost
// peer ID. It refuses, force or not, while a node runs there.
func Init(h Home, cfg Config, force bool) (crypto.PrivKey, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("home %s: %w", h.Dir, err)
	}
	lock, err := LockHome(h)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	if _, err := os.Stat(h.ConfigPath()); err == nil && !force {
		return nil, fmt.Errorf("home %s is already initialised; use --force to rewrite its config (the identity is kept)", h.Dir)
	}
	body, err := cfg.Render()
	if err != nil {
		return nil, err
	}
	// The definition first: a config.toml without it would be a home
	// that runs as a member of the default network.
	if err := writeFileAtomic(h.DefinitionPath(), cfg.Definition().Render(), 0o644); err != nil {
		return nil, fmt.Errorf("network definition %s: %w", h.DefinitionPath(), err)
	}
	if err := writeFileAtomic(h.ConfigPath(), body, 0o600); err != nil {
		return nil, fmt.Errorf("config %s: %w", h.ConfigPath(), err)
	}
	key, err := p2p.LoadKey(h.KeyPath())
	if errors.Is(err, p2p.ErrNoKey) {
		return p2p.CreateKey(h.KeyPath())
	}
	return key, err
}

// HomeLock is an exclusive lock on a home directory, held while a node runs.
type HomeLock struct{ f *os.File }

// LockHome takes the home's lock without waiting. The lock is an flock, so
// the kernel drops it when the process dies, even by kill -9.
func LockHome(h Home) (*HomeLock, error) {
	if st, err := os.Stat(h.Dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("home %s does not exist; run `ephemera init --home %s` first", h.Dir, h.Dir)
		}
		return nil, fmt.Errorf("home %s: %w", h.Dir, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("home %s is not a directory", h.Dir)
	}
	f, err := os.OpenFile(h.path(LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("home %s: %w", h.Dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(h.path(LockFile)); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
				holder = "pid " + strings.TrimSpace(string(b))
			}
			return nil, fmt.Errorf("home %s: %w (%s)", h.Dir, ErrHomeInUse, holder)
		}
		return nil, fmt.Errorf("home %s: lock: %w", h.Dir, err)
	}
	// The pid is only a hint for the message above; the flock is the truth.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &HomeLock{f: f}, nil
}

// Release gives the lock up.
func (l *HomeLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := l.f.Close() // closing drops the flock
	l.f = nil
	return err
}

// Runtime is what a running node writes to node.json so that tools (the CLI,
// the testnet) can find it: its real addresses once ports are bound.
type Runtime struct {
	PID         int       `json:"pid"`
	PeerID      string    `json:"peer_id"`
	Network     string    `json:"network"`
	NetworkHash string    `json:"network_hash"`
	Roles       []Role    `json:"roles"`
	Addrs       []string  `json:"addrs"` // full multiaddrs, each ending in /p2p/<peer_id>
	APIURL      string    `json:"api_url"`
	MetricsURL  string    `json:"metrics_url,omitempty"`
	StartedAt   time.Time `json:"started_at"`
}

// ReadRuntime reads node.json. It is only meaningful while the home is
// locked by a running node; a file left by a killed node is stale.
func ReadRuntime(h Home) (Runtime, error) {
	var rt Runtime
	b, err := os.ReadFile(h.RuntimePath())
	if err != nil {
		return rt, err
	}
	if err := json.Unmarshal(b, &rt); err != nil {
		return rt, fmt.Errorf("%s: %w", h.RuntimePath(), err)
	}
	return rt, nil
}

// Running reports whether a node holds the home right now.
// It only reads: it creates and writes nothing, so read-only tools may ask.
func Running(h Home) bool {
	f, err := os.Open(h.path(LockFile))
	if err != nil {
		return false // no lock file: no node has ever run here
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

func writeRuntime(h Home, rt Runtime) error {
	b, err := json.MarshalIndent(rt, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(h.RuntimePath(), append(b, '\n'), 0o644)
}

// writeFileAtomic writes through a synced temporary file and a rename, so a
// crash leaves either the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
