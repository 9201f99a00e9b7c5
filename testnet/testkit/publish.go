package testkit

import (
	"bytes"
	"context"
	"slices"
	"sync"
)

// Published stands in for a gossip topic a role publishes on: Publish is the
// role's publish function, and the test reads back what it sent.
type Published struct {
	mu   sync.Mutex
	envs [][]byte
	then func([]byte)
}

// Publish keeps a copy of data, then runs the function given to Then, if
// any. It never fails.
func (p *Published) Publish(_ context.Context, data []byte) error {
	p.mu.Lock()
	p.envs = append(p.envs, slices.Clone(data))
	f := p.then
	p.mu.Unlock()
	if f != nil {
		f(data)
	}
	return nil
}

// Then has f run on everything published from now on, outside the lock: a
// test delivers the role's messages where gossip would.
func (p *Published) Then(f func(data []byte)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.then = f
}

// All is everything published so far, in order.
func (p *Published) All() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.envs)
}

// Has says whether b was published.
func (p *Published) Has(b []byte) bool {
	return slices.ContainsFunc(p.All(), func(e []byte) bool { return bytes.Equal(e, b) })
}
