package node

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/node/router"
	"github.com/ephemera-network/ephemera/node/session"
)

// fill sets every field of the value v points to, recursively, to a value
// that is not its zero, each one different; a slice gets one element.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + time.Duration(*n).String())
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n) * int64(time.Second))
	case reflect.Uint8, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) / 100)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), n)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, *n, time.UTC)))
			return
		}
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	default:
		panic("fill: no value for " + v.Type().String())
	}
}

func filled[T any]() T {
	var v T
	n := 0
	fill(reflect.ValueOf(&v).Elem(), &n)
	return v
}

func sameJSON(t *testing.T, what string, internal, wire any) {
	t.Helper()
	a, err := json.Marshal(internal)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s: the API shows\n%s\nthe node's own type is\n%s", what, b, a)
	}
}

// The API's wire types show every field of the router's and the session
// manager's types, in the same order, under the same names: the answers
// are those the API gave when it encoded the node's types themselves.
func TestAPIWireTypes(t *testing.T) {
	res := filled[router.Reservation]()
	sameJSON(t, "reservation", res, apiReservation(res))
	sameJSON(t, "empty reservation", router.Reservation{}, apiReservation(router.Reservation{}))

	s := filled[session.Session]()
	sameJSON(t, "session", s, apiSession(s))
	sameJSON(t, "empty session", session.Session{}, apiSession(session.Session{}))

	task := filled[session.Task]()
	sameJSON(t, "task", task, apiTask(task))
	sameJSON(t, "empty task", session.Task{}, apiTask(session.Task{}))

	// The detail of one session is the session with its tasks' states.
	d := api.SessionDetail{Session: apiSession(s), Tasks: []api.TaskBrief{{ID: "1", State: api.TaskDone}}}
	got, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(struct {
		session.Session
		Tasks []api.TaskBrief `json:"tasks"`
	}{s, d.Tasks})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("session detail:\n%s\nwant\n%s", got, want)
	}
}

// The API's names for states and limits are the manager's.
func TestAPIWireConstants(t *testing.T) {
	for _, c := range []struct{ api, node any }{
		{api.SessionOpen, session.StateOpen}, {api.SessionEnded, session.StateEnded},
		{api.EndClosed, session.EndClosed}, {api.EndMaxTasks, session.EndMaxTasks},
		{api.EndReservePeriod, session.EndReservePeriod}, {api.EndShutdown, session.EndShutdown},
		{api.HoldActive, session.HoldActive}, {api.HoldReleased, session.HoldReleased},
		{api.HoldFailed, session.HoldFailed}, {api.HoldLost, session.HoldLost},
		{api.TaskQueued, session.TaskQueued}, {api.TaskRunning, session.TaskRunning},
		{api.TaskDone, session.TaskDone}, {api.TaskFailed, session.TaskFailed},
		{api.MaxReservePeriod, session.MaxReservePeriod}, {api.MaxRedundancy, session.MaxRedundancy},
	} {
		if c.api != c.node {
			t.Errorf("api has %v, the session manager %v", c.api, c.node)
		}
	}
}
