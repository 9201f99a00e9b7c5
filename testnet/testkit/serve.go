package testkit

import (
	"bufio"
	"testing"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
)

// Serve answers proto on h as the network's request/reply protocols do, the
// other end of protocol.Call: one request a stream, read whole, and the reply
// answer makes of it written back. A request that cannot be read, or an
// error from answer, resets the stream. The handler is removed when the test
// ends.
func Serve(tb testing.TB, h host.Host, proto libp2pprotocol.ID, answer func(req []byte) ([]byte, error)) {
	h.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		req, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
		if err != nil {
			_ = s.Reset()
			return
		}
		reply, err := answer(req)
		if err != nil {
			_ = s.Reset()
			return
		}
		if err := protocol.WriteMsg(s, reply); err != nil {
			_ = s.Reset()
		}
	})
	tb.Cleanup(func() { h.RemoveStreamHandler(proto) })
}
