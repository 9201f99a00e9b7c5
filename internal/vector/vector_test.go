package vector

import (
	"math"
	"testing"
)

func TestCosine(t *testing.T) {
	cases := []struct {
		a, b []float32
		want float64
	}{
		{[]float32{1, 2, 3}, []float32{1, 2, 3}, 1},
		{[]float32{1, 0}, []float32{0, 1}, 0},
		{[]float32{1, 0}, []float32{-1, 0}, -1},
		{[]float32{1, 0}, []float32{1}, 0},
		{nil, nil, 0},
		{[]float32{0, 0}, []float32{1, 0}, 0},
		{[]float32{float32(math.NaN()), 1}, []float32{1, 1}, 0},
		{[]float32{float32(math.Inf(1)), 1}, []float32{1, 1}, 0},
	}
	for _, c := range cases {
		if got := Cosine(c.a, c.b); got != c.want {
			t.Errorf("Cosine(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
