package p2p_test

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestCreateKeyWrites0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	sk, err := p2p.CreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if sk.Type() != crypto.Ed25519 {
		t.Errorf("key type = %s, want Ed25519", sk.Type())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %04o, want 0600", perm)
	}
}

func TestCreateKeyRefusesExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	first, err := p2p.CreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.CreateKey(path); err == nil {
		t.Fatal("second CreateKey succeeded, want it to refuse an existing key")
	} else if !errors.Is(err, os.ErrExist) {
		t.Errorf("error = %v, want os.ErrExist", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Error("refused CreateKey still changed the key file")
	}
	loaded, err := p2p.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Equals(first) {
		t.Error("key on disk is no longer the first one")
	}
}

func TestLoadKeyRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	created, err := p2p.CreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := p2p.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.IDFromPrivateKey(created)
	if err != nil {
		t.Fatal(err)
	}
	got, err := peer.IDFromPrivateKey(loaded)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("loaded peer ID %s, want %s", got, want)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	ed, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edRaw, err := crypto.MarshalPrivateKey(ed)
	if err != nil {
		t.Fatal(err)
	}
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secpRaw, err := crypto.MarshalPrivateKey(secp)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		is    error  // if set, errors.Is must hold
		want  string // the message must contain this
	}{
		{
			name:  "missing",
			setup: func(t *testing.T, path string) {},
			is:    p2p.ErrNoKey,
			want:  "not found",
		},
		{
			name:  "mode 0644",
			setup: func(t *testing.T, path string) { writeFileMode(t, path, edRaw, 0o644) },
			want:  "chmod 600",
		},
		{
			name:  "mode 0640",
			setup: func(t *testing.T, path string) { writeFileMode(t, path, edRaw, 0o640) },
			want:  "chmod 600",
		},
		{
			name:  "garbage",
			setup: func(t *testing.T, path string) { writeFileMode(t, path, []byte("not a key at all\x00\xff"), 0o600) },
			want:  "not a libp2p private key",
		},
		{
			name:  "empty file",
			setup: func(t *testing.T, path string) { writeFileMode(t, path, nil, 0o600) },
			want:  "not a libp2p private key",
		},
		{
			name: "directory",
			setup: func(t *testing.T, path string) {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			},
			want: "directory",
		},
		{
			name:  "secp256k1",
			setup: func(t *testing.T, path string) { writeFileMode(t, path, secpRaw, 0o600) },
			want:  "Ed25519",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity.key")
			tt.setup(t, path)
			sk, err := p2p.LoadKey(path)
			if err == nil {
				t.Fatalf("LoadKey = %v, nil; want an error", sk)
			}
			if sk != nil {
				t.Errorf("LoadKey returned a key with its error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the path", err)
			}
		})
	}
}

func TestLoadKeyNotErrNoKeyForOtherFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	writeFileMode(t, path, []byte("garbage"), 0o600)
	if _, err := p2p.LoadKey(path); errors.Is(err, p2p.ErrNoKey) {
		t.Fatalf("a corrupt key reports ErrNoKey (%v): a caller would create a new identity over it", err)
	}
}

// writeFileMode writes data with exactly mode perm, whatever the umask.
func writeFileMode(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}
