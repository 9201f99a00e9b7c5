package protocol_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

const callProto = "/ephemera/testnet/calltest/1.0.0"

// callPair is a client host and a server host whose handler answers each
// request with reply(request); the server's requests arrive on got.
func callPair(t *testing.T, reply func([]byte) []byte) (client, server host.Host, got chan []byte) {
	t.Helper()
	client, server = testkit.Host(t, nil), testkit.Host(t, nil)
	testkit.Know(client, server)
	got = make(chan []byte, 4)
	server.SetStreamHandler(callProto, func(s network.Stream) {
		defer s.Close()
		r := bufio.NewReader(s)
		req, err := protocol.ReadMsg(r, protocol.MaxMessageSize)
		if err != nil {
			s.Reset()
			return
		}
		got <- req
		if out := reply(req); out != nil {
			_ = protocol.WriteMsg(s, out)
			return
		}
		<-t.Context().Done() // no reply: hold the stream open
	})
	return client, server, got
}

func TestCallRoundTrip(t *testing.T) {
	client, server, got := callPair(t, func(req []byte) []byte { return append([]byte("re: "), req...) })
	reply, rtt, err := protocol.Call(t.Context(), client, server.ID(), callProto, []byte("ping"), 64)
	if err != nil || string(reply) != "re: ping" || rtt <= 0 {
		t.Fatalf("reply %q, rtt %s, err %v", reply, rtt, err)
	}
	if req := <-got; string(req) != "ping" {
		t.Fatalf("server got %q", req)
	}
}

func TestCallRefusesALargeReply(t *testing.T) {
	client, server, _ := callPair(t, func([]byte) []byte { return bytes.Repeat([]byte{1}, 65) })
	_, _, err := protocol.Call(t.Context(), client, server.ID(), callProto, []byte("ping"), 64)
	if err == nil || !strings.Contains(err.Error(), "exceeds 64") || errors.Is(err, protocol.ErrNoStream) {
		t.Fatalf("err %v, want a reply over the limit, after sending", err)
	}
}

// A call that found no stream is told apart, with the dial's own error.
func TestCallNoStream(t *testing.T) {
	client, server, got := callPair(t, func(req []byte) []byte { return req })
	_, _, err := protocol.Call(t.Context(), client, testkit.ID(t, testkit.NewKey(t)), callProto, []byte("ping"), 64)
	if !errors.Is(err, protocol.ErrNoStream) || strings.Contains(err.Error(), "no stream") {
		t.Fatalf("unknown peer: %v, want ErrNoStream with the dial's error", err)
	}
	_, _, err = protocol.Call(t.Context(), client, server.ID(), callProto, make([]byte, protocol.MaxMessageSize+1), 64)
	if err == nil || !strings.Contains(err.Error(), "exceeds") || errors.Is(err, protocol.ErrNoStream) {
		t.Fatalf("oversized request: %v", err)
	}
	if len(got) != 0 {
		t.Fatal("the server got a request")
	}
}

// A call ends when its context does, deadline or not.
func TestCallEndsWithItsContext(t *testing.T) {
	client, server, got := callPair(t, func([]byte) []byte { return nil })
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-got; cancel() }()
	start := time.Now()
	_, _, err := protocol.Call(ctx, client, server.ID(), callProto, []byte("ping"), 64)
	if !errors.Is(err, context.Canceled) || errors.Is(err, protocol.ErrNoStream) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %s, want context.Canceled at once", err, time.Since(start))
	}
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := protocol.Call(ctx, client, server.ID(), callProto, []byte("ping"), 64); err == nil {
		t.Fatal("a call with no reply ended without an error")
	}
}

// Send leaves the stream open for the rest of a conversation.
func TestSend(t *testing.T) {
	client, server := testkit.Host(t, nil), testkit.Host(t, nil)
	testkit.Know(client, server)
	server.SetStreamHandler(callProto, func(s network.Stream) {
		defer s.Close()
		r := bufio.NewReader(s)
		for {
			req, err := protocol.ReadMsg(r, protocol.MaxMessageSize)
			if err != nil {
				return
			}
			_ = protocol.WriteMsg(s, append([]byte("re: "), req...))
		}
	})
	s, r, err := protocol.Send(t.Context(), client, server.ID(), callProto, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := protocol.WriteMsg(s, []byte("two")); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	for _, want := range []string{"re: one", "re: two"} {
		if got, err := protocol.ReadMsg(r, 64); err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
}

// A reader refuses a frame over its kind's limit as soon as the length
// prefix arrives, without waiting for (or making room for) the body: a
// reserve request is a few hundred bytes, and a peer announcing a megabyte
// gets its stream reset at once.
func TestReadStreamRefusesOversizedFrameBeforeBody(t *testing.T) {
	client, server := testkit.Host(t, nil), testkit.Host(t, nil)
	testkit.Know(client, server)
	errs := make(chan error, 1)
	server.SetStreamHandler(callProto, func(s network.Stream) {
		_, err := protocol.ReadStream(s, bufio.NewReader(s), protocol.MaxReserveRequestSize)
		errs <- err
		s.Reset()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := client.NewStream(ctx, server.ID(), callProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	// The header of a 1 MiB frame and its first kilobyte; the rest never
	// comes, so a reader that waited for it would wait for the test's end.
	frame := binary.AppendUvarint(nil, protocol.MaxMessageSize)
	if _, err := s.Write(append(frame, make([]byte, 1024)...)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, protocol.ErrTooLarge) {
			t.Fatalf("read error %v, want ErrTooLarge", err)
		}
	case <-ctx.Done():
		t.Fatal("the reader waited for the body of an oversized frame")
	}
	// The stream is reset: the rest of the frame can't be written.
	_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write(make([]byte, protocol.MaxMessageSize)); err == nil {
		t.Fatal("the sender wrote a megabyte on a stream the reader refused")
	}
}
