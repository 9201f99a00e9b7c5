package p2p

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/event"
)

// OnEvents subscribes to the host event bus for the given event types
// (pointers, as event.Bus.Subscribe takes them) and calls handle with each
// event, on a goroutine of its own, until ctx ends or the bus closes.
func OnEvents(ctx context.Context, bus event.Bus, types []any, handle func(ev any)) error {
	sub, err := bus.Subscribe(types)
	if err != nil {
		return fmt.Errorf("subscribe to host events: %w", err)
	}
	go func() {
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-sub.Out():
				if !ok {
					return
				}
				handle(ev)
			}
		}
	}()
	return nil
}
