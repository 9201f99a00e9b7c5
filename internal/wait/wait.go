// Package wait holds the one wait every periodic loop of the node makes.
package wait

import (
	"context"
	"time"
)

// Every calls f at once and then every period until ctx ends.
func Every(ctx context.Context, period time.Duration, f func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		f(ctx)
		if !Tick(ctx, t.C) {
			return
		}
	}
}

// Tick waits for c (a ticker's or a timer's channel) to fire, and says
// false if ctx ended first: loops read `for wait.Tick(ctx, t.C) { … }`.
func Tick(ctx context.Context, c <-chan time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-c:
		return true
	}
}
