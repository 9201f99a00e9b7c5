package protocol_test

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// redialPair is a client and a server whose handler treats the nth request
// (from 1) with answer(n, stream): it replies when answer returns true.
func redialPair(t *testing.T, answer func(n int, s network.Stream) bool) (client, server host.Host, count func() int) {
	t.Helper()
	client, server = testkit.Host(t, nil), testkit.Host(t, nil)
	testkit.Know(client, server)
	var mu sync.Mutex
	n := 0
	server.SetStreamHandler(callProto, func(s network.Stream) {
		req, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
		if err != nil {
			s.Reset()
			return
		}
		mu.Lock()
		n++
		this := n
		mu.Unlock()
		if answer(this, s) {
			_ = protocol.WriteMsg(s, req)
			_ = s.Close()
		}
	})
	return client, server, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// A peer that restarted leaves a connection that fails the first request:
// CallRedial sends it again on a fresh connection.
func TestCallRedialRetriesOnAFreshConnection(t *testing.T) {
	client, server, count := redialPair(t, func(n int, s network.Stream) bool {
		if n == 1 {
			_ = s.Conn().Close() // as the dead process's connection would fail
			return false
		}
		return true
	})
	testkit.Connect(t, client, server)
	reply, _, err := protocol.CallRedial(t.Context(), client, server.ID(), callProto, []byte("ping"), 64, 0)
	if err != nil || string(reply) != "ping" || count() != 2 {
		t.Fatalf("reply %q, err %v, %d requests; want the answer to the second of 2", reply, err, count())
	}
}

// An old connection that does not answer within staleWait is presumed dead.
func TestCallRedialGivesAnOldConnectionStaleWait(t *testing.T) {
	client, server, count := redialPair(t, func(n int, s network.Stream) bool {
		if n == 1 {
			<-t.Context().Done() // silent, as a killed process's connection
			return false
		}
		return true
	})
	testkit.Connect(t, client, server)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reply, _, err := protocol.CallRedial(ctx, client, server.ID(), callProto, []byte("ping"), 64, 100*time.Millisecond)
	if err != nil || string(reply) != "ping" || count() != 2 {
		t.Fatalf("reply %q, err %v, %d requests; want the answer to the second of 2", reply, err, count())
	}
}

// A failure on a connection dialled for the call is the peer's answer: no
// second try.
func TestCallRedialTriesAFreshConnectionOnce(t *testing.T) {
	client, server, count := redialPair(t, func(n int, s network.Stream) bool {
		_ = s.Conn().Close()
		return false
	})
	_, _, err := protocol.CallRedial(t.Context(), client, server.ID(), callProto, []byte("ping"), 64, 0)
	if err == nil || errors.Is(err, protocol.ErrNoStream) || count() != 1 {
		t.Fatalf("err %v, %d requests; want one request, failed after sending", err, count())
	}
	testkit.Connect(t, client, server)
	_, _, err = protocol.CallRedial(t.Context(), client, server.ID(), callProto, []byte("ping"), 64, 0)
	if err == nil || errors.Is(err, protocol.ErrNoStream) || count() != 3 {
		t.Fatalf("err %v, %d requests; want two more, both failed after sending", err, count())
	}
}

// A peer killed and restarted on the same port, as a crashed miner comes
// back: the caller's QUIC connection to the dead process still looks open,
// and the new process (same key, so the same stateless reset key) resets
// it at its first packet. Call fails there; CallRedial answers.
func TestCallRedialAfterThePeerRestarted(t *testing.T) {
	key := testkit.NewKey(t)
	client := testkit.QUICHost(t, nil)
	port := testkit.NewUDPPort(t, client)
	restart := func() {
		server := testkit.QUICHost(t, key)
		server.SetStreamHandler(callProto, func(s network.Stream) {
			req, err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxMessageSize)
			if err != nil {
				s.Reset()
				return
			}
			_ = protocol.WriteMsg(s, req)
			_ = s.Close()
		})
		port.Crash()
		port.Serve(t, server)
	}
	id := testkit.ID(t, key)
	restart()
	if _, _, err := protocol.Call(t.Context(), client, id, callProto, []byte("ping"), 64); err != nil {
		t.Fatalf("first call: %v", err)
	}

	restart()
	_, _, err := protocol.Call(t.Context(), client, id, callProto, []byte("ping"), 64)
	if err == nil || !strings.Contains(err.Error(), "stateless reset") {
		t.Fatalf("Call after a restart: %v, want a stateless reset on the old connection", err)
	}

	if _, _, err := protocol.Call(t.Context(), client, id, callProto, []byte("ping"), 64); err != nil {
		t.Fatalf("Call on a fresh connection: %v", err)
	}
	restart()
	reply, _, err := protocol.CallRedial(t.Context(), client, id, callProto, []byte("ping"), 64, 0)
	if err != nil || string(reply) != "ping" {
		t.Fatalf("CallRedial after a restart: %q, %v", reply, err)
	}
}
