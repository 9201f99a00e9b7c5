package node

import (
	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
)

// streamLimits bound the network's stream protocols in the resource manager
// (PROTOCOL §2): how many streams one peer may have open to us at once, and
// what their reads may hold while a message arrives (protocol.ReadStream),
// per peer and in all. They sit well above what honest peers use (a router
// has one claim or renewal in flight per miner, a miner takes four tasks at
// once, an oracle one challenge per round and a notice or two per verdict)
// and far below what a flood of
// garbage frames would take.
func streamLimits(network string) []p2p.ProtocolLimit {
	return []p2p.ProtocolLimit{
		{ID: protocol.ReserveProtocol(network), InboundStreamsOfPeer: 8, MemoryOfPeer: 256 << 10, Memory: 8 << 20},
		{ID: protocol.ValidateProtocol(network), InboundStreamsOfPeer: 4, MemoryOfPeer: 4 << 20, Memory: 32 << 20},
		{ID: protocol.SessionProtocol(network), InboundStreamsOfPeer: 16, MemoryOfPeer: 8 << 20, Memory: 64 << 20},
		{ID: protocol.NoticeProtocol(network), InboundStreamsOfPeer: 4, MemoryOfPeer: 64 << 10, Memory: 1 << 20},
	}
}
