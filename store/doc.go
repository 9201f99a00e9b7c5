// Package store keeps an Ephemera node's state in one Badger database at
// HOME/data. It is the only package that imports Badger, so storage tuning,
// locking and schema checks live in one place.
//
// The keyspace is split by prefix:
//
//	meta/schema                  keyspace layout version (see SchemaVersion)
//	self/                        this node's lifecycle state and generation
//	att/<miner>/<gen>/<oracle>   attestations an oracle issued to a miner generation
//	res/<session>                session results
//	rep/<peer>                   peer reputation
//	queue/<session>              pending session work
//
// meta/schema and self/ (peer_id, starts) are used so far; the other prefixes
// are the planned layout, listed so new code claims them consistently.
package store
