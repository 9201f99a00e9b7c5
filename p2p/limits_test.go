package p2p

import (
	"bufio"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ProtocolLimits bound a protocol's streams per peer, and what reads of its
// messages may hold: a message within its kind's size limit but over the
// memory left to the peer is refused before it is read, and a peer's
// streams beyond the count are reset.
func TestProtocolLimitsBoundStreams(t *testing.T) {
	const proto = "/ephemera/test/limits/1.0.0"
	server := startHost(t, testConfig(), Options{ProtocolLimits: []ProtocolLimit{
		{ID: proto, InboundStreamsOfPeer: 2, MemoryOfPeer: 64 << 10, Memory: 1 << 20},
	}})
	client := testHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	errs := make(chan error, 8)
	server.SetStreamHandler(proto, func(s network.Stream) {
		_, err := protocol.ReadStream(s, bufio.NewReader(s), protocol.MaxMessageSize)
		errs <- err
		if err != nil {
			s.Reset()
			return
		}
		_ = protocol.WriteMsg(s, []byte("ok"))
		select {
		case <-release:
		case <-ctx.Done():
		}
		s.Close()
	})
	send := func(size int) (network.Stream, error) {
		s, err := client.NewStream(ctx, server.ID(), proto)
		if err != nil {
			return nil, err
		}
		if err := protocol.WriteMsg(s, make([]byte, size)); err != nil {
			s.Reset()
			return nil, err
		}
		if _, err := protocol.ReadMsg(bufio.NewReader(s), 16); err != nil {
			s.Reset()
			return nil, err
		}
		return s, nil
	}

	if _, err := send(100 << 10); err == nil {
		t.Fatal("a 100 KiB message was read with 64 KiB left to the peer")
	}
	if err := <-errs; !errors.Is(err, network.ErrResourceLimitExceeded) {
		t.Fatalf("read error %v, want the resource limit", err)
	}
	// Two streams within the memory left, held open; a third is refused.
	for range 2 {
		s, err := send(16 << 10)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := send(10); err == nil {
		t.Fatal("a third stream of the peer was served, over its limit of 2")
	}
	close(release)
}
