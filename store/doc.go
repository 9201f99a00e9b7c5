// Package store keeps an Ephemera node's state in one Badger database at
// HOME/data, with sync writes: a transaction that returned is on disk.
// It owns opening, locking, the schema check and Badger's tuning, and is the
// only package that speaks to Badger. The roles run their own transactions
// through Update and View, reading and writing with Txn and the typed
// helpers (GetJSON, PutJSON, ScanJSON). The roles keep the keys they write in
// a keys.go of their own, under the prefixes below.
//
// The keyspace, by prefix (peer IDs in binary form unless said otherwise):
//
//	meta/schema                          keyspace layout version (see SchemaVersion)
//	self/peer_id, self/starts            the identity the data belongs to; start count
//	self/miner                           a miner's lifecycle state (JSON), the one authority over it
//	signed/<miner b58>/<gen>/<round>     an oracle's signed verdicts: never two for one slot
//	res/<session>                        a router's reservations (JSON), by the claim's session id
//	pend/<session>                       a router's claims sent whose grant is not stored yet (JSON)
//	sess/<id>                            a router's user sessions (JSON)
//	task/<session id>/<task id>          the tasks of those sessions, with every miner's answer (JSON)
//	pool/<miner>                         latest availability record of each known miner (TTL)
//	att/<miner b58>/<gen>/<oracle b58>/<round>   attestations seen (TTL: their expiry)
//	grant/<miner b58>/<gen>              grants seen, to catch a second one (TTL 7 days)
//	release/<miner b58>/<gen>            releases seen (TTL 7 days)
//	evidence/<digest pair>               conflicts already held (TTL: the penalty period)
//	penalty/<peer>                       peers caught equivocating (TTL: the penalty period)
//	rep/<peer>                           reputation (JSON)
//	repall                               session ends of every router together (JSON, as a reputation)
//	charge/<miner>/<router>              what a router's failed sessions cost a miner, toward its cap (TTL 7 days)
package store
