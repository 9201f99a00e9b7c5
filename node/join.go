package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// definitionServeTimeout bounds one answer of the definition protocol.
const definitionServeTimeout = 10 * time.Second

// serveDefinition writes def to whoever asked, as one length-prefixed
// message holding its network.toml.
func serveDefinition(s network.Stream, def protocol.Definition) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(definitionServeTimeout))
	if err := protocol.WriteMsg(s, def.Render()); err != nil {
		_ = s.Reset()
	}
}

// FetchDefinition asks the bootstrap nodes at addrs, in order, for their
// network's definition, and returns the first answer that parses, with the
// address that gave it. It tries again until ctx ends, so a newcomer may
// start before the network does. The definition's bootstrap list gains
// addrs, which the newcomer has just shown to work.
func FetchDefinition(ctx context.Context, addrs []string) (protocol.Definition, string, error) {
	infos := make([]peer.AddrInfo, 0, len(addrs))
	for _, a := range addrs {
		ai, err := p2p.ParseBootstrapAddrs([]string{a})
		if err != nil {
			return protocol.Definition{}, "", err
		}
		infos = append(infos, ai...)
	}
	if len(infos) == 0 {
		return protocol.Definition{}, "", errors.New("no bootstrap address to join")
	}
	// A throwaway identity: the newcomer's own key is not needed to read a
	// public file, and is not written before the definition is checked.
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.DisableRelay(), libp2p.DisableMetrics(),
		libp2p.ChainOptions(libp2p.Transport(tcp.NewTCPTransport), libp2p.Transport(quic.NewTransport)))
	if err != nil {
		return protocol.Definition{}, "", fmt.Errorf("libp2p host: %w", err)
	}
	defer h.Close()

	lastErr := make([]error, len(infos))
	for wait := time.Second; ; wait = min(2*wait, 5*time.Second) {
		for i, ai := range infos {
			def, err := fetchFrom(ctx, h, ai)
			if err == nil {
				for _, a := range addrs {
					if !slices.Contains(def.Bootstrap, a) {
						def.Bootstrap = append(def.Bootstrap, a)
					}
				}
				return def, addrs[i], nil
			}
			lastErr[i] = err
		}
		select {
		case <-ctx.Done():
			msgs := make([]string, len(infos))
			for i := range infos {
				msgs[i] = fmt.Sprintf("%s: %v", addrs[i], lastErr[i])
			}
			return protocol.Definition{}, "", fmt.Errorf("no bootstrap node answered: %s", strings.Join(msgs, "; "))
		case <-time.After(wait):
		}
	}
}

func fetchFrom(ctx context.Context, h host.Host, ai peer.AddrInfo) (protocol.Definition, error) {
	ctx, cancel := context.WithTimeout(ctx, definitionServeTimeout)
	defer cancel()
	if err := h.Connect(ctx, ai); err != nil {
		return protocol.Definition{}, fmt.Errorf("dial: %s", p2p.ErrorLine(err))
	}
	s, err := h.NewStream(ctx, ai.ID, protocol.DefinitionProtocol)
	if err != nil {
		return protocol.Definition{}, fmt.Errorf("ask for the definition: %s", p2p.ErrorLine(err))
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	raw, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxDefinitionSize)
	if err != nil {
		return protocol.Definition{}, fmt.Errorf("read the definition: %w", err)
	}
	def, err := protocol.ParseDefinition(raw)
	if err != nil {
		return protocol.Definition{}, fmt.Errorf("its definition: %w", err)
	}
	return def, nil
}
