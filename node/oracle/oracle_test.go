package oracle

import (
	"context"
	"testing"

	"github.com/ephemera-network/ephemera/challenge"
	"github.com/ephemera-network/ephemera/internal/testkit"
	"github.com/ephemera-network/ephemera/node/pool"
	"github.com/ephemera-network/ephemera/protocol"
)

func TestNewChecksDeps(t *testing.T) {
	key := testkit.NewKey(t)
	h := testkit.Host(t, key)
	p := testParams(h.ID())
	check := protocol.Checker{Network: testNet, Params: p}
	s := testkit.Store(t, "")
	pl, err := pool.New(s, check, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := Deps{Network: testNet, Check: check, Host: h, Key: key, Store: s, Pool: pl, Bank: challenge.Default(),
		Publish: func(context.Context, []byte) error { return nil }}
	if _, err := New(good); err != nil {
		t.Fatalf("New: %v", err)
	}
	otherKey := good
	otherKey.Key = testkit.NewKey(t)
	noPublish := good
	noPublish.Publish = nil
	otherNet := good
	otherNet.Network = "other"
	for name, d := range map[string]Deps{"key of another peer": otherKey, "no publish": noPublish, "checker of another network": otherNet} {
		if _, err := New(d); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
