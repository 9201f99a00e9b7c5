package inference

import (
	"math"
	"strings"
	"unicode"
)

// EmbedDims is the length of the built-in engine's vectors.
const EmbedDims = 256

// FNV-1a, 64-bit, inlined: hash/fnv would allocate a hasher per feature.
const (
	fnvOffset = 14695981039937130211
	fnvPrime  = 1099511628211
)

// hashedEmbedding is a bag of hashed features: every word, and every
// character trigram of every word (the word padded with '<' and '>', so that
// short words have trigrams and word starts and ends count). Each feature
// adds ±1 to one of EmbedDims dimensions, the sign from one bit of the hash so
// that collisions cancel out on average rather than pile up; the vector is
// then L2-normalised. Identical texts get identical vectors, texts sharing
// words and word pieces get close ones. It is lexical similarity only, good
// enough to tell the reference sentence from a wrong answer.
func hashedEmbedding(text string) []float32 {
	v := make([]float32, EmbedDims)
	words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	for _, w := range words {
		add(v, hashFeature('w', w))
		padded := []rune("<" + w + ">")
		for i := 0; i+3 <= len(padded); i++ {
			add(v, hashFeature('t', string(padded[i:i+3])))
		}
	}
	var norm float64
	for _, x := range v {
		norm += float64(x) * float64(x)
	}
	if norm == 0 {
		return v // no features: the zero vector, similar to nothing
	}
	inv := 1 / math.Sqrt(norm)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
	return v
}

// hashFeature hashes a feature's kind and text, so that the word "the" and
// the trigram "the" are different features.
func hashFeature(kind byte, s string) uint64 {
	h := uint64(fnvOffset)
	h = (h ^ uint64(kind)) * fnvPrime
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

func add(v []float32, h uint64) {
	if h>>63 == 1 {
		v[h%EmbedDims]--
	} else {
		v[h%EmbedDims]++
	}
}
