package session

import "testing"

// TestKeys pins the keys on disk: a change here is a keyspace change
// (store.SchemaVersion), or data already stored would no longer be found.
func TestKeys(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{string(sessKey("s1")), "sess/s1"},
		{sessPrefix, "sess/"},
		{string(taskKey("s1", "t2")), "task/s1/t2"},
		{taskPrefix, "task/"},
		{string(sessionTasks("s1")), "task/s1/"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
}
