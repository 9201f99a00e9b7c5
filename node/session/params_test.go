package session

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
)

func dur(d time.Duration) duration.Duration { return duration.Duration(d) }

func TestParamsDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Params
		want Params
	}{
		{"empty", Params{}, Params{
			Redundancy: 1, MinNodes: 1, MaxNodes: 1, ReservePeriod: dur(DefaultReservePeriod),
			MaxTasks: DefaultMaxTasks, TaskTimeout: dur(DefaultTaskTimeout),
		}},
		{"redundancy sets the nodes", Params{Redundancy: 3}, Params{
			Redundancy: 3, MinNodes: 3, MaxNodes: 3, ReservePeriod: dur(DefaultReservePeriod),
			MaxTasks: DefaultMaxTasks, TaskTimeout: dur(DefaultTaskTimeout),
		}},
		{"min_nodes sets max_nodes", Params{MinNodes: 4}, Params{
			Redundancy: 1, MinNodes: 4, MaxNodes: 4, ReservePeriod: dur(DefaultReservePeriod),
			MaxTasks: DefaultMaxTasks, TaskTimeout: dur(DefaultTaskTimeout),
		}},
		{"max_nodes covers redundancy", Params{Redundancy: 3, MinNodes: 1}, Params{
			Redundancy: 3, MinNodes: 1, MaxNodes: 3, ReservePeriod: dur(DefaultReservePeriod),
			MaxTasks: DefaultMaxTasks, TaskTimeout: dur(DefaultTaskTimeout),
		}},
		{"a short period bounds the task timeout", Params{ReservePeriod: dur(5 * time.Second)}, Params{
			Redundancy: 1, MinNodes: 1, MaxNodes: 1, ReservePeriod: dur(5 * time.Second),
			MaxTasks: DefaultMaxTasks, TaskTimeout: dur(5 * time.Second),
		}},
		{"explicit values stand", Params{
			Model: "m", Redundancy: 2, MinNodes: 2, MaxNodes: 5, ReservePeriod: dur(time.Hour),
			MaxTasks: 7, TaskTimeout: dur(90 * time.Second),
		}, Params{
			Model: "m", Redundancy: 2, MinNodes: 2, MaxNodes: 5, ReservePeriod: dur(time.Hour),
			MaxTasks: 7, TaskTimeout: dur(90 * time.Second),
		}},
		{"the upper bounds are allowed", Params{
			Model: strings.Repeat("m", 256), Redundancy: MaxRedundancy, MaxNodes: MaxNodes,
			ReservePeriod: dur(MaxReservePeriod), MaxTasks: MaxTasks, TaskTimeout: dur(MaxTaskTimeout),
		}, Params{
			Model: strings.Repeat("m", 256), Redundancy: MaxRedundancy, MinNodes: MaxRedundancy, MaxNodes: MaxNodes,
			ReservePeriod: dur(MaxReservePeriod), MaxTasks: MaxTasks, TaskTimeout: dur(MaxTaskTimeout),
		}},
		{"the lower bounds are allowed", Params{
			Redundancy: 1, MinNodes: 1, MaxNodes: 1, ReservePeriod: dur(MinReservePeriod), MaxTasks: 1,
			TaskTimeout: dur(MinTaskTimeout),
		}, Params{
			Redundancy: 1, MinNodes: 1, MaxNodes: 1, ReservePeriod: dur(MinReservePeriod), MaxTasks: 1,
			TaskTimeout: dur(MinTaskTimeout),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.WithDefaults()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			// Filling defaults twice changes nothing.
			again, err := got.WithDefaults()
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("twice: %+v, %v", again, err)
			}
		})
	}
}

// jsonFields are the JSON names of Params' fields.
func jsonFields(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	rt := reflect.TypeFor[Params]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		out[name] = true
	}
	return out
}

func TestParamsBounds(t *testing.T) {
	fields := jsonFields(t)
	for _, tc := range []struct {
		name  string
		in    Params
		field string
	}{
		{"model too long", Params{Model: strings.Repeat("m", 257)}, "model"},
		{"redundancy negative", Params{Redundancy: -1}, "redundancy"},
		{"redundancy too high", Params{Redundancy: MaxRedundancy + 1}, "redundancy"},
		{"max_nodes negative", Params{MaxNodes: -1}, "max_nodes"},
		{"max_nodes too high", Params{MaxNodes: MaxNodes + 1}, "max_nodes"},
		{"min_nodes negative", Params{MinNodes: -1, MaxNodes: 2}, "min_nodes"},
		{"min_nodes above max_nodes", Params{MinNodes: 3, MaxNodes: 2}, "min_nodes"},
		{"redundancy above max_nodes", Params{Redundancy: 3, MinNodes: 1, MaxNodes: 2}, "redundancy"},
		{"reserve_period negative", Params{ReservePeriod: dur(-time.Second)}, "reserve_period"},
		{"reserve_period too short", Params{ReservePeriod: dur(MinReservePeriod - time.Millisecond)}, "reserve_period"},
		{"reserve_period too long", Params{ReservePeriod: dur(MaxReservePeriod + time.Second)}, "reserve_period"},
		{"max_tasks negative", Params{MaxTasks: -1}, "max_tasks"},
		{"max_tasks too high", Params{MaxTasks: MaxTasks + 1}, "max_tasks"},
		{"task_timeout negative", Params{TaskTimeout: dur(-time.Second)}, "task_timeout"},
		{"task_timeout too short", Params{TaskTimeout: dur(MinTaskTimeout - time.Millisecond)}, "task_timeout"},
		{"task_timeout too long", Params{ReservePeriod: dur(time.Hour), TaskTimeout: dur(MaxTaskTimeout + time.Second)}, "task_timeout"},
		{"task_timeout above reserve_period", Params{ReservePeriod: dur(2 * time.Second), TaskTimeout: dur(3 * time.Second)}, "task_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !fields[tc.field] {
				t.Fatalf("%q is not a JSON field of Params", tc.field)
			}
			_, err := tc.in.WithDefaults()
			if !errors.Is(err, ErrBadParams) {
				t.Fatalf("err %v, want ErrBadParams", err)
			}
			// The field is named right after the sentinel's text.
			if !strings.HasPrefix(err.Error(), ErrBadParams.Error()+": "+tc.field+": ") {
				t.Fatalf("err %q does not name %s", err, tc.field)
			}
		})
	}
}
