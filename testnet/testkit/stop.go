package testkit

import (
	"context"
	"testing"
	"time"
)

// Stop calls stop with within to finish, and fails the test if it fails:
// how a test ends a node, a role or a testnet it started.
func Stop(tb testing.TB, within time.Duration, stop func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := stop(ctx); err != nil {
		tb.Error(err)
	}
}
