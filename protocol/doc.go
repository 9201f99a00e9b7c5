// Package protocol is the Ephemera wire protocol in code: the signed message
// kinds with their signing domains and payload types, the stateless checks
// every receiver applies to them, the network parameters, the protocol and
// topic names, rendezvous assignment of oracles and the DHT pool keys.
// docs/PROTOCOL.md describes the same for implementers in other languages.
package protocol
