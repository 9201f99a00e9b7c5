package p2p

import (
	"bufio"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/protocol"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	record "github.com/libp2p/go-libp2p-record"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// anyValue is a record namespace that takes every value, newest first.
type anyValue struct{}

func (anyValue) Validate(string, []byte) error        { return nil }
func (anyValue) Select(string, [][]byte) (int, error) { return 0, nil }

func recordOptions(maxAge time.Duration) Options {
	return Options{Validators: map[string]record.Validator{"any": anyValue{}}, RecordMaxAge: maxAge}
}

// putValue sends one PUT_VALUE from c to s, as a DHT client would, and
// reports whether s stored it (it echoes the request) or refused it (it
// resets the stream).
func putValue(t *testing.T, c, s *Host, key string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.NewStream(ctx, s.ID(), s.kadProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	msg := &dhtpb.Message{Type: dhtpb.Message_PUT_VALUE, Key: []byte(key), Record: &recpb.Record{Key: []byte(key), Value: []byte("v")}}
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteMsg(st, b); err != nil {
		t.Fatal(err)
	}
	_, err = protocol.ReadMsg(bufio.NewReader(st), 1<<16)
	return err == nil
}

// A DHT server stores no more records than its caps, per putting peer and
// in all, and keeps each no longer than the record age it was given: an
// expired record is swept away and frees its place. A record about the node
// itself is never refused.
func TestDHTRecordCapsAndExpiry(t *testing.T) {
	cfg := testConfig()
	cfg.DHTMaxRecords, cfg.DHTRecordsPerPeer = 5, 3
	const maxAge = 2 * time.Second
	server := startHost(t, cfg, recordOptions(maxAge))
	a, b := startHost(t, testConfig(), recordOptions(0)), startHost(t, testConfig(), recordOptions(0))
	for _, c := range []*Host{a, b} {
		if err := c.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}

	for i := range 3 {
		if !putValue(t, a, server, fmt.Sprintf("/any/a%d", i)) {
			t.Fatalf("record %d of a peer was refused under its cap of 3", i+1)
		}
	}
	if putValue(t, a, server, "/any/a3") {
		t.Fatal("a peer's 4th record was stored over its cap of 3")
	}
	if !putValue(t, a, server, "/any/a0") {
		t.Fatal("a newer version of a peer's own record was refused")
	}
	for i := range 2 {
		if !putValue(t, b, server, fmt.Sprintf("/any/b%d", i)) {
			t.Fatalf("another peer's record %d was refused under the total cap", i+1)
		}
	}
	if putValue(t, b, server, "/any/b2") {
		t.Fatal("a 6th record was stored over the total cap of 5")
	}
	if all, ofA := server.records.held(a.ID()); all != 5 || ofA != 3 {
		t.Fatalf("held %d records, %d of them a's; want 5 and 3", all, ofA)
	}
	// The node's own record goes in, full as the store is.
	if err := server.DHT.PutValue(context.Background(), "/any/"+string(server.ID()), []byte("mine")); err != nil {
		t.Logf("own put: %v (no peer took it, which is fine here)", err)
	}
	if all, _ := server.records.held(server.ID()); all != 6 {
		t.Fatalf("held %d records after the node's own, want 6", all)
	}

	// Past their age the records are swept (every third of it) and their
	// places freed.
	waitUntil(t, "expired records to be swept", func() bool { all, _ := server.records.held(""); return all == 0 })
	if !putValue(t, a, server, "/any/a3") {
		t.Fatal("a peer's record was refused after its old ones expired")
	}
}
