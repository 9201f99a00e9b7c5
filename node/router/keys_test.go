package router

import "testing"

// TestKeys pins the keys on disk: a change here is a keyspace change
// (store.SchemaVersion), or data already stored would no longer be found.
func TestKeys(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{string(resKey("ab12")), "res/ab12"},
		{resPrefix, "res/"},
		{string(pendKey("ab12")), "pend/ab12"},
		{pendPrefix, "pend/"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}
