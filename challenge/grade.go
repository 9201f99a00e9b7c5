package challenge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ephemera-network/ephemera/internal/openaiwire"
	"github.com/ephemera-network/ephemera/internal/vector"
)

// EmbedFunc embeds texts as vectors, one per text; an inference backend's
// Embed method is one. The "embedding" grader uses it.
type EmbedFunc = func(ctx context.Context, texts []string) ([][]float32, error)

// MaxAnswerBytes bounds an answer: a longer one fails. It keeps an answer that
// lists every possible result from passing the lenient graders, and bounds
// the grading work a miner can cause.
const MaxAnswerBytes = 8 << 10

// Result is the grade of one answer.
type Result struct {
	Pass   bool
	Score  float64 // 0..1; 1 or 0 except for the embedding grader, where it is the similarity
	Reason string  // why, for logs
}

// Grade regenerates task from its family and seed and grades answer, which
// took latency to arrive. An answer slower than the bank's latency budget
// fails. The error is for what is not the miner's answer's fault: a family
// unknown to this bank, a tampered prompt, or embed failing.
//
// The graders:
//   - exact: equal after trimming, ignoring case (except for "reverse" and
//     "uppercase", where case is the task) and runs of spaces; or else the
//     answer's last words are the expected answer once trailing punctuation
//     and surrounding quotes or asterisks are trimmed, so "The capital is
//     Paris." passes for "Paris".
//   - numeric: the first number of the answer, or of what follows its last
//     "=" ("417 + 38 = 455"), is within 1e-6 of the expected number.
//   - regex: the expected answer appears in the answer as a whole number (or
//     list), surrounding text allowed.
//   - embedding: the cosine similarity of the answer and the reference text,
//     both embedded with embed, is at least the family's threshold.
func (b *Bank) Grade(ctx context.Context, task Task, answer string, latency time.Duration, embed EmbedFunc) (Result, error) {
	f, expected, err := b.expect(task)
	if err != nil {
		return Result{}, err
	}
	if budget := time.Duration(b.cfg.LatencyBudgetMS) * time.Millisecond; latency > budget {
		return Result{Reason: fmt.Sprintf("too slow: %v, over the budget of %v", latency, budget)}, nil
	}
	if len(answer) > MaxAnswerBytes {
		return Result{Reason: fmt.Sprintf("answer too long: %d bytes, the limit is %d", len(answer), MaxAnswerBytes)}, nil
	}
	switch f.cfg.Grader {
	case GraderExact:
		return verdict(matchExact(answer, expected, f.spec), expected, answer), nil
	case GraderNumeric:
		return verdict(matchNumeric(answer, expected), expected, answer), nil
	case GraderRegex:
		if f.spec.pattern == nil { // Validate keeps this from happening
			return Result{}, fmt.Errorf("family %q has no regex pattern", f.cfg.Name)
		}
		re, err := regexp.Compile(f.spec.pattern(expected))
		if err != nil {
			return Result{}, fmt.Errorf("family %q: regex for %q: %w", f.cfg.Name, expected, err)
		}
		return verdict(re.MatchString(answer), expected, answer), nil
	case GraderEmbedding:
		return gradeEmbedding(ctx, answer, expected, f.cfg.Threshold, embed)
	}
	return Result{}, fmt.Errorf("family %q: unknown grader %q", f.cfg.Name, f.cfg.Grader)
}

func verdict(pass bool, expected, answer string) Result {
	if pass {
		return Result{Pass: true, Score: 1, Reason: "correct"}
	}
	return Result{Reason: fmt.Sprintf("want %q, got %q", openaiwire.Clip(expected, 80), openaiwire.Clip(answer, 80))}
}

// GradeAll grades answers[i] for tasks[i], which took latencies[i], and
// applies the bank's pass threshold: it returns the results, the score (the
// fraction of tasks passed) and whether the set passes.
func (b *Bank) GradeAll(ctx context.Context, tasks []Task, answers []string, latencies []time.Duration, embed EmbedFunc) ([]Result, float64, bool, error) {
	if len(tasks) == 0 {
		return nil, 0, false, errors.New("grade: no tasks")
	}
	if len(answers) != len(tasks) || len(latencies) != len(tasks) {
		return nil, 0, false, fmt.Errorf("grade: %d tasks, %d answers and %d latencies, want as many of each", len(tasks), len(answers), len(latencies))
	}
	results := make([]Result, len(tasks))
	passed := 0
	for i, t := range tasks {
		r, err := b.Grade(ctx, t, answers[i], latencies[i], embed)
		if err != nil {
			return nil, 0, false, fmt.Errorf("grade task %d: %w", i, err)
		}
		results[i] = r
		if r.Pass {
			passed++
		}
	}
	score := float64(passed) / float64(len(tasks))
	// The epsilon absorbs rounding, so that 4 of 5 meets a threshold of 0.8.
	return results, score, score >= b.cfg.PassThreshold-1e-9, nil
}

// --- exact

// trailingPunct and quotes are what an otherwise correct sentence adds
// around the answer.
const (
	trailingPunct = ".,;:!?"
	quotes        = "\"'`*"
)

func matchExact(answer, expected string, s *spec) bool {
	norm := func(x string) string {
		x = strings.Join(strings.Fields(x), " ")
		if s.normalize != nil {
			x = s.normalize(x)
		}
		return x
	}
	a, e := norm(answer), norm(expected)
	if e == "" {
		return false
	}
	eq := func(x string) bool {
		if s.caseSensitive {
			return x == e
		}
		return strings.EqualFold(x, e)
	}
	if eq(a) {
		return true
	}
	words, n := strings.Fields(a), len(strings.Fields(e))
	if len(words) < n {
		return false
	}
	tail := strings.Join(words[len(words)-n:], " ")
	tail = strings.TrimRight(tail, trailingPunct)
	tail = strings.Trim(tail, quotes)
	tail = strings.TrimRight(tail, trailingPunct) // `"tvzqk."` as well as `"tvzqk".`
	return eq(tail)
}

// --- numeric

var numberRE = regexp.MustCompile(`[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?`)

// firstNumber is the first number in s, or in what follows its last "=" if
// that holds one: "417 + 38 = 455" is 455. "1,234" is 1234.
func firstNumber(s string) (float64, bool) {
	if i := strings.LastIndexByte(s, '='); i >= 0 && numberRE.MatchString(s[i+1:]) {
		s = s[i+1:]
	}
	m := numberRE.FindString(s)
	if m == "" {
		return 0, false
	}
	m = strings.ReplaceAll(m, ",", "")
	m = strings.Replace(m, "−", "-", 1)
	v, err := strconv.ParseFloat(m, 64)
	return v, err == nil
}

func matchNumeric(answer, expected string) bool {
	want, err := strconv.ParseFloat(expected, 64)
	if err != nil {
		return false
	}
	got, ok := firstNumber(answer)
	return ok && math.Abs(got-want) <= 1e-6
}

// --- regex patterns: the expected answer quoted, as a whole number or list

// notAfterNumber: the match starts the text or follows something that is not
// part of a number or a list, with optional spaces in between (Go's regexp
// has no look-behind).
const notAfterNumber = `(?:^|[^0-9.,\-−\s])\s*`

// numberPattern accepts 455 in "the answer is 455, since", but not in 1455,
// 4550, 455.5 or -455.
func numberPattern(expected string) string {
	return notAfterNumber + regexp.QuoteMeta(expected) + `(?:$|[^0-9.,]|[.,](?:$|\D))`
}

// listPattern accepts "7, 19, 42" with any spacing around the commas, but not
// as part of a longer list.
func listPattern(expected string) string {
	items := strings.Split(expected, ",")
	for i, it := range items {
		items[i] = regexp.QuoteMeta(strings.TrimSpace(it))
	}
	return notAfterNumber + strings.Join(items, `\s*,\s*`) + `\s*(?:$|[^0-9.,\s\-−]|\.(?:$|\D))`
}

// --- embedding

func gradeEmbedding(ctx context.Context, answer, reference string, threshold float64, embed EmbedFunc) (Result, error) {
	if embed == nil {
		return Result{}, errors.New("embedding grader: no embed function")
	}
	if strings.TrimSpace(answer) == "" {
		return Result{Reason: "empty answer"}, nil
	}
	vecs, err := embed(ctx, []string{answer, reference})
	if err != nil {
		return Result{}, fmt.Errorf("embedding grader: %w", err)
	}
	if len(vecs) != 2 {
		return Result{}, fmt.Errorf("embedding grader: embed returned %d vectors for 2 texts", len(vecs))
	}
	sim := vector.Cosine(vecs[0], vecs[1])
	score := max(0, min(1, sim))
	if sim >= threshold {
		return Result{Pass: true, Score: score, Reason: fmt.Sprintf("similarity %.3f, threshold %.3f", sim, threshold)}, nil
	}
	return Result{Score: score, Reason: fmt.Sprintf("similarity %.3f below the threshold %.3f", sim, threshold)}, nil
}
