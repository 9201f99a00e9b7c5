package node

// Keys the node itself keeps in the store; the keyspace is documented in
// store/doc.go.
var (
	keyPeerID = []byte("self/peer_id") // the identity the data belongs to
	keyStarts = []byte("self/starts")  // how many times the node has started
)
