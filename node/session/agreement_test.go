package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// tableEmbedder embeds each text as the vector its table gives; a text not
// in the table is an error.
func tableEmbedder(table map[string][]float32) func(context.Context, []string) ([][]float32, error) {
	return func(_ context.Context, texts []string) ([][]float32, error) {
		out := make([][]float32, len(texts))
		for i, s := range texts {
			v, ok := table[s]
			if !ok {
				return nil, fmt.Errorf("no vector for %q", s)
			}
			out[i] = v
		}
		return out, nil
	}
}

func agreeWith(t *testing.T, embed func(context.Context, []string) ([][]float32, error), outputs ...string) verdict {
	t.Helper()
	m := &Manager{d: Deps{Embed: embed}}
	v, err := m.agree(t.Context(), outputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.similarity) != len(outputs) || len(v.accepted) != len(outputs) || len(v.outvoted) != len(outputs) {
		t.Fatalf("verdict of %d answers: %+v", len(outputs), v)
	}
	return v
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestAgreeIdentical(t *testing.T) {
	embed := tableEmbedder(map[string][]float32{"42": {0.6, 0.8}})
	for n := 2; n <= 4; n++ {
		v := agreeWith(t, embed, slices.Repeat([]string{"42"}, n)...)
		if !near(v.agreement, 1) {
			t.Fatalf("%d identical answers: agreement %v", n, v.agreement)
		}
		for i := range n {
			if !v.accepted[i] || v.outvoted[i] || !near(v.similarity[i], 1) {
				t.Fatalf("%d identical answers: %+v", n, v)
			}
		}
	}
}

func TestAgreeOneAnswer(t *testing.T) {
	v := agreeWith(t, func(context.Context, []string) ([][]float32, error) {
		return nil, errors.New("one answer needs no embedding")
	}, "anything")
	if v.chosen != 0 || !near(v.agreement, 1) || !v.accepted[0] || v.outvoted[0] || !near(v.similarity[0], 1) {
		t.Fatalf("one answer: %+v", v)
	}
}

func TestAgreeOutlierOutvoted(t *testing.T) {
	embed := tableEmbedder(map[string][]float32{
		"The answer is 42.": {1, 0},
		"It is 42.":         {0.95, 0.3122499}, // cosine 0.95 with the first
		"Bananas.":          {0, 1},
	})
	outputs := []string{"The answer is 42.", "Bananas.", "It is 42."}
	for range 3 { // the outlier in every position
		v := agreeWith(t, embed, outputs...)
		odd := slices.Index(outputs, "Bananas.")
		if v.chosen == odd {
			t.Fatalf("%q chose the outlier: %+v", outputs, v)
		}
		for i := range outputs {
			if i == odd {
				if v.accepted[i] || !v.outvoted[i] {
					t.Fatalf("%q: the outlier is not out-voted: %+v", outputs, v)
				}
			} else if !v.accepted[i] || v.outvoted[i] {
				t.Fatalf("%q: answer %d of the majority rejected: %+v", outputs, i, v)
			}
		}
		// Pairs: 0.95, 0 and about 0.312.
		if want := (0.95 + 0 + 0.3122499) / 3; math.Abs(v.agreement-want) > 1e-3 {
			t.Fatalf("%q: agreement %v, want %v", outputs, v.agreement, want)
		}
		outputs = append(outputs[1:], outputs[0])
	}
}

func TestAgreeTwoDifferNobodyOutvoted(t *testing.T) {
	embed := tableEmbedder(map[string][]float32{"42": {1, 0}, "43": {0, 1}})
	v := agreeWith(t, embed, "42", "43")
	if !near(v.agreement, 0) {
		t.Fatalf("agreement %v", v.agreement)
	}
	if v.outvoted[0] || v.outvoted[1] {
		t.Fatalf("someone out-voted: %+v", v)
	}
	if !v.accepted[v.chosen] || v.accepted[1-v.chosen] {
		t.Fatalf("with no majority only the chosen answer stands: %+v", v)
	}
}

func TestAgreeOppositeIsZeroNotNegative(t *testing.T) {
	embed := tableEmbedder(map[string][]float32{"yes": {1, 0}, "no": {-1, 0}})
	v := agreeWith(t, embed, "yes", "no")
	if v.agreement != 0 || v.similarity[0] < 0 || v.similarity[1] < 0 {
		t.Fatalf("opposite answers: %+v", v)
	}
}

func TestAgreeErrors(t *testing.T) {
	boom := errors.New("embedder down")
	for name, embed := range map[string]func(context.Context, []string) ([][]float32, error){
		"embed error": func(context.Context, []string) ([][]float32, error) { return nil, boom },
		"too few":     func(context.Context, []string) ([][]float32, error) { return [][]float32{{1}}, nil },
		"too many":    func(context.Context, []string) ([][]float32, error) { return [][]float32{{1}, {1}, {1}}, nil },
	} {
		m := &Manager{d: Deps{Embed: embed}}
		if _, err := m.agree(t.Context(), []string{"a", "b"}); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "embed error" && !errors.Is(err, boom) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
