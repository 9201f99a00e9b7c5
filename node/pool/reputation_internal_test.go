package pool

import (
	"math"
	"testing"
)

func TestStanding(t *testing.T) {
	for _, c := range []struct {
		name        string
		router, all Reputation
		want        float64
	}{
		{"the first end anyone saw, bad", Reputation{Ended: 1, EndedBad: 1}, Reputation{Ended: 1, EndedBad: 1}, (1.0 / 2) / (2.0 / 3)},
		{"as good as the rest", Reputation{Ended: 10, EndedBad: 1}, Reputation{Ended: 20, EndedBad: 2}, 1},
		{"better than the rest", Reputation{Ended: 10, EndedBad: 1}, Reputation{Ended: 30, EndedBad: 11}, 1},
		{"fails everything, the rest rarely", Reputation{Ended: 9, EndedBad: 9}, Reputation{Ended: 29, EndedBad: 10}, (2.0 / 22) / (10.0 / 11)},
		{"fails everything, alone", Reputation{Ended: 9, EndedBad: 9}, Reputation{Ended: 9, EndedBad: 9}, (1.0 / 2) / (10.0 / 11)},
	} {
		if got := standing(c.router, c.all); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%s: standing %v, want %v", c.name, got, c.want)
		}
	}
}
