package pool

import (
	"testing"

	"github.com/ephemera-network/ephemera/protocol/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestKeys pins the keys on disk: a change here is a keyspace change
// (store.SchemaVersion), or data already stored would no longer be found.
func TestKeys(t *testing.T) {
	m, o := peer.ID("miner"), peer.ID("oracle")
	for _, c := range []struct{ got, want string }{
		{string(recordKey(m)), "pool/miner"},
		{recordPrefix, "pool/"},
		{string(attKey(m, 3, o, 7)), "att/DLxFFqT/00000000000000000003/xVqkaR8Q/00000000000000000007"},
		{attPrefix, "att/"},
		{string(grantKey(m, 3)), "grant/DLxFFqT/00000000000000000003"},
		{string(releaseKey(m, 3)), "release/DLxFFqT/00000000000000000003"},
		{string(penaltyKey(o)), "penalty/oracle"},
		{string(repKey(m)), "rep/miner"},
		{string(chargeKey(m, o)), "charge/miner/oracle"},
		{allRoutersKey, "repall"},
		// Either order of the pair names the same conflict.
		{string(evidenceKey(&pb.Evidence{First: []byte("b"), Second: []byte("a")})), "evidence/" +
			"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d" +
			"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"},
		{string(evidenceKey(&pb.Evidence{First: []byte("a"), Second: []byte("b")})), "evidence/" +
			"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d" +
			"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}
