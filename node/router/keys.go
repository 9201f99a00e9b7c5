package router

// Keys the router keeps in the store; the keyspace is documented in
// store/doc.go. Both kinds are keyed by the claim's session id, which is
// the reservation's ID.
const (
	resPrefix  = "res/"  // reservations (saved, JSON)
	pendPrefix = "pend/" // claims sent whose grant is not stored yet (pending, JSON)
)

func resKey(id string) []byte  { return []byte(resPrefix + id) }
func pendKey(id string) []byte { return []byte(pendPrefix + id) }
