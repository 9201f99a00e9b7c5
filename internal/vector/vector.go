// Package vector holds the arithmetic of embedding vectors.
package vector

import "math"

// Cosine is the cosine similarity of a and b in [-1, 1]; 0 for vectors of
// different lengths, zero vectors, or values that are not finite.
func Cosine(a, b []float32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	var dot, na, nb float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		dot += x * y
		na += x * x
		nb += y * y
	}
	if na == 0 || nb == 0 {
		return 0
	}
	// One square root of the product, so that identical vectors give exactly
	// 1: a threshold of 1 must accept the same text.
	c := dot / math.Sqrt(na*nb)
	if math.IsNaN(c) || math.IsInf(c, 0) {
		return 0
	}
	// Rounding can push identical vectors a hair past 1.
	return max(-1, min(1, c))
}
