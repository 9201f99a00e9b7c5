package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// WithBinary builds the ephemera binary into a temporary directory, sets
// *binary to its path, runs the package's tests and removes it again: the
// body of a TestMain whose end-to-end tests start the real binary. It
// returns the exit code for os.Exit.
func WithBinary(m *testing.M, binary *string) int {
	dir, err := os.MkdirTemp("", "ephemera-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binary = filepath.Join(dir, "ephemera")
	build := exec.Command("go", "build", "-o", *binary, "github.com/ephemera-network/ephemera/cmd/ephemera")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the ephemera binary: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
