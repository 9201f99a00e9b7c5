package testnet

import (
	"context"
	"log/slog"

	"github.com/ephemera-network/ephemera/node"
)

// InProcess runs every node in this process: full nodes with their own
// host, store and API on loopback, for tests.
type InProcess struct {
	// Logger receives every node's log, each line tagged with the node's name.
	Logger *slog.Logger
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
	n, err := node.New(home, cfg, node.Options{Version: "testnet", Logger: log.With("node", name)})
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return InProcessNode{n}, nil
}
