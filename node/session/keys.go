package session

// Keys the session manager keeps in the store; the keyspace is documented in
// store/doc.go.
const (
	sessPrefix = "sess/" // sessions (Session, JSON), by session ID
	taskPrefix = "task/" // tasks (Task, JSON), by session ID then task ID
)

func sessKey(id string) []byte          { return []byte(sessPrefix + id) }
func taskKey(session, id string) []byte { return []byte(taskPrefix + session + "/" + id) }

// sessionTasks is the prefix of every taskKey of session.
func sessionTasks(session string) []byte { return []byte(taskPrefix + session + "/") }
