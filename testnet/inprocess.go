package testnet

import (
	"context"
	"log/slog"

	"github.com/ephemera-network/ephemera/inference"
	"github.com/ephemera-network/ephemera/node"
)

// InProcess runs every node in this process: full nodes with their own
// host, store and API on loopback, for tests.
type InProcess struct {
	// Logger receives every node's log, each line tagged with the node's name.
	Logger *slog.Logger
	// Backend, when set, may give a node an inference engine of its own
	// (such as a faulty one, in tests); nil keeps the configured engine.
	Backend func(name string) inference.Backend
}

// InProcessNode is a node running in this process.
type InProcessNode struct{ *node.Node }

// Launch starts the node of home in this process.
func (l InProcess) Launch(ctx context.Context, name string, home node.Home) (Node, error) {
	cfg, err := node.LoadConfig(home.ConfigPath())
	if err != nil {
		return nil, err
	}
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := node.Options{Version: "testnet", Logger: log.With("node", name)}
	if l.Backend != nil {
		opts.Backend = l.Backend(name)
	}
	n, err := node.New(home, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return InProcessNode{n}, nil
}
