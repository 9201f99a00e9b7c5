package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// ErrNoKey means the identity key file does not exist yet.
var ErrNoKey = errors.New("identity key not found")

// CreateKey writes a new Ed25519 identity to path with mode 0600 and refuses to
// replace an existing file: losing a key means losing the node's peer ID.
func CreateKey(path string) (crypto.PrivKey, error) {
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("encode identity key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	return sk, nil
}

// LoadKey reads the identity at path. It refuses a key that others can read,
// as ssh does, rather than run with a leaked identity.
func LoadKey(path string) (crypto.PrivKey, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("identity key %s: %w", path, ErrNoKey)
	}
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("identity key %s: is a directory", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("identity key %s: mode %04o lets others read it; run chmod 600 %s", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	sk, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: not a libp2p private key: %v", path, err)
	}
	if sk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity key %s: %s key, Ephemera uses Ed25519", path, sk.Type())
	}
	return sk, nil
}
