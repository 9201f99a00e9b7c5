package miner

// Keys the miner keeps in the store; the keyspace is documented in
// store/doc.go.

// stateKey holds the miner's lifecycle state (JSON): the one authority over it.
var stateKey = []byte("self/miner")
