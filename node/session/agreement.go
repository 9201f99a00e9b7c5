package session

import (
	"context"
	"fmt"

	"github.com/ephemera-network/ephemera/internal/vector"
)

// AgreeThreshold is the similarity to the chosen answer at which another
// answer agrees with it.
const AgreeThreshold = 0.8

// verdict is how a task's answers compare.
type verdict struct {
	chosen     int       // the answer closest to all the others
	agreement  float64   // mean pairwise similarity, in [0, 1]
	similarity []float64 // of each answer to the chosen one
	accepted   []bool    // agrees with the chosen answer
	outvoted   []bool    // disagrees with a strict majority that agrees
}

// agree compares answers by the cosine similarity of their embeddings. The
// chosen answer is the medoid: the one with the highest mean similarity to
// the others. An answer is out-voted only when more than half the answers
// agree with the chosen one and it does not: with two answers that differ,
// nobody can tell which is wrong.
func (m *Manager) agree(ctx context.Context, outputs []string) (verdict, error) {
	n := len(outputs)
	v := verdict{similarity: make([]float64, n), accepted: make([]bool, n), outvoted: make([]bool, n)}
	if n == 1 {
		v.agreement, v.similarity[0], v.accepted[0] = 1, 1, true
		return v, nil
	}
	vecs, err := m.d.Embed(ctx, outputs)
	if err != nil {
		return v, err
	}
	if len(vecs) != n {
		return v, fmt.Errorf("%d embeddings for %d answers", len(vecs), n)
	}
	sim := make([][]float64, n)
	for i := range sim {
		sim[i] = make([]float64, n)
	}
	var total float64
	for i := range n {
		sim[i][i] = 1
		for j := i + 1; j < n; j++ {
			s := 1.0
			if outputs[i] != outputs[j] {
				s = max(0, vector.Cosine(vecs[i], vecs[j]))
			}
			sim[i][j], sim[j][i] = s, s
			total += s
		}
	}
	v.agreement = total / float64(n*(n-1)/2)
	best := -1.0
	for i := range n {
		var sum float64
		for j := range n {
			if j != i {
				sum += sim[i][j]
			}
		}
		if sum > best {
			best, v.chosen = sum, i
		}
	}
	agreeing := 0
	for i := range n {
		v.similarity[i] = sim[v.chosen][i]
		v.accepted[i] = v.similarity[i] >= AgreeThreshold
		if v.accepted[i] {
			agreeing++
		}
	}
	majority := 2*agreeing > n
	for i := range n {
		v.outvoted[i] = majority && !v.accepted[i]
		if !majority {
			// No majority: the answers stand side by side, none accepted
			// over another but the chosen one.
			v.accepted[i] = i == v.chosen || v.accepted[i]
		}
	}
	return v, nil
}
