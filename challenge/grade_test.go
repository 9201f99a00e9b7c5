package challenge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMatchExact(t *testing.T) {
	cases := []struct {
		family, expected, answer string
		pass                     bool
	}{
		{"lookup", "Paris", "Paris", true},
		{"lookup", "Paris", "  paris \n", true},
		{"lookup", "Paris", "The capital of France is Paris.", true},
		{"lookup", "Paris", "It is **Paris**!", true},
		{"lookup", "New Delhi", "The capital is  New   Delhi.", true},
		{"lookup", "New Delhi", "Delhi", false},
		{"lookup", "Paris", "Paris or Rome", false},
		{"lookup", "Paris", "Parisian", false},
		{"lookup", "Paris", "", false},
		{"reverse", "tvzqk", `The reversed string is "tvzqk".`, true},
		{"reverse", "tvzqk", `"tvzqk."`, true},
		{"reverse", "tvzqk", "TVZQK", false},
		{"reverse", "tvzqk", "kqzvt", false},
		{"uppercase", "HELLO WORLD", "HELLO WORLD", true},
		{"uppercase", "HELLO WORLD", `Here it is: "HELLO WORLD"`, true},
		{"uppercase", "HELLO WORLD", "hello world", false},
		{"uppercase", "HELLO WORLD", "Hello World", false},
		{"sort", "7, 19, 42", "7,19,42", true},
		{"sort", "7, 19, 42", "7 ,19 , 42", true},
		{"sort", "7, 19, 42", "Sorted: 7, 19, 42.", true},
		{"sort", "7, 19, 42", "7, 42, 19", false},
		{"sort", "7, 19, 42", "7 19 42", false},
		{"arithmetic", "-12", "-12", true},
		{"arithmetic", "455", "The answer is 455.", true},
		{"arithmetic", "455", "4550", false},
		{"json", "kiwi", "The value is \"kiwi\".", true},
		{"json", "true", "True", true},
	}
	for _, c := range cases {
		if got := matchExact(c.answer, c.expected, specByName(c.family)); got != c.pass {
			t.Errorf("%s: exact(%q, want %q) = %v, want %v", c.family, c.answer, c.expected, got, c.pass)
		}
	}
}

func TestMatchNumeric(t *testing.T) {
	cases := []struct {
		expected, answer string
		pass             bool
	}{
		{"455", "455", true},
		{"455", "The answer is 455.", true},
		{"455", "417 + 38 = 455", true},
		{"455", "455.0000001", true},
		{"455", "455.001", false},
		{"455", "456", false},
		{"-12", "It is -12", true},
		{"-12", "It is −12", true},
		{"-12", "12", false},
		{"998001", "998,001", true},
		{"998001", "998", false},
		{"455", "no number here", false},
		{"455", "= nothing, 455", true},
		{"455", "", false},
	}
	for _, c := range cases {
		if got := matchNumeric(c.answer, c.expected); got != c.pass {
			t.Errorf("numeric(%q, want %q) = %v, want %v", c.answer, c.expected, got, c.pass)
		}
	}
}

func TestRegexPatterns(t *testing.T) {
	cases := []struct {
		pattern          func(string) string
		expected, answer string
		pass             bool
	}{
		{numberPattern, "455", "455", true},
		{numberPattern, "455", "The answer is 455.", true},
		{numberPattern, "455", "455, since 417 + 38 = 455", true},
		{numberPattern, "455", "(455)", true},
		{numberPattern, "455", "1455", false},
		{numberPattern, "455", "4550", false},
		{numberPattern, "455", "455.5", false},
		{numberPattern, "455", "455,000", false},
		{numberPattern, "455", "-455", false},
		{numberPattern, "455", "banana", false},
		{numberPattern, "-12", "it is -12", true},
		{numberPattern, "-12", "12", false},
		{numberPattern, "3.5", "3x5", false}, // the dot is quoted
		{listPattern, "7, 19, 42", "7, 19, 42", true},
		{listPattern, "7, 19, 42", "Sorted: 7,19 ,42.", true},
		{listPattern, "7, 19, 42", "7, 19, 42 is the order", true},
		{listPattern, "7, 19, 42", "5, 7, 19, 42", false},
		{listPattern, "7, 19, 42", "7, 19, 42, 50", false},
		{listPattern, "7, 19, 42", "17, 19, 42", false},
		{listPattern, "7, 19, 42", "7, 19, 420", false},
		{listPattern, "7, 19, 42", "7, 42, 19", false},
	}
	for _, c := range cases {
		p := c.pattern(c.expected)
		re, err := regexp.Compile(p)
		if err != nil {
			t.Fatalf("pattern %q: %v", p, err)
		}
		if got := re.MatchString(c.answer); got != c.pass {
			t.Errorf("pattern %q on %q = %v, want %v", p, c.answer, got, c.pass)
		}
	}
}

// findTask returns a task of family whose expected answer satisfies ok.
func findTask(t *testing.T, b *Bank, family string, ok func(expected string) bool) (Task, string) {
	t.Helper()
	for seed := range uint64(100000) {
		task, err := b.Generate(family, seed)
		if err != nil {
			t.Fatal(err)
		}
		want, err := b.Expected(task)
		if err != nil {
			t.Fatal(err)
		}
		if ok(want) {
			return task, want
		}
	}
	t.Fatalf("no %s task found", family)
	return Task{}, ""
}

func TestGradeNumericThroughBank(t *testing.T) {
	b := Default() // arithmetic is graded numerically
	task, want := findTask(t, b, "arithmetic", func(e string) bool { return len(e) > 2 })
	ctx := context.Background()
	for _, ans := range []string{want, "The answer is " + want + ".", strings.TrimSuffix(task.Prompt[len("What is "):], "?") + " = " + want} {
		if r, err := b.Grade(ctx, task, ans, 0, nil); err != nil || !r.Pass || r.Score != 1 {
			t.Errorf("%q for %q: %+v %v", ans, task.Prompt, r, err)
		}
	}
	if r, _ := b.Grade(ctx, task, want+"1", 0, nil); r.Pass || r.Score != 0 || !strings.Contains(r.Reason, want) {
		t.Errorf("wrong answer: %+v", r)
	}
}

func TestGradeEmbedding(t *testing.T) {
	b := Default()
	task, ref := findTask(t, b, "describe", func(string) bool { return true })
	ctx := context.Background()
	r, err := b.Grade(ctx, task, ref, time.Second, testEmbed)
	if err != nil || !r.Pass || r.Score < 0.999 {
		t.Errorf("reference text: %+v %v", r, err)
	}
	if r, err := b.Grade(ctx, task, "   ", time.Second, testEmbed); err != nil || r.Pass {
		t.Errorf("blank answer: %+v %v", r, err)
	}
	if _, err := b.Grade(ctx, task, ref, time.Second, nil); err == nil {
		t.Error("no embed function, no error")
	}
	boom := errors.New("boom")
	failing := func(context.Context, []string) ([][]float32, error) { return nil, boom }
	if _, err := b.Grade(ctx, task, ref, time.Second, failing); !errors.Is(err, boom) {
		t.Errorf("embed error not passed on: %v", err)
	}
	short := func(context.Context, []string) ([][]float32, error) { return [][]float32{{1}}, nil }
	if _, err := b.Grade(ctx, task, ref, time.Second, short); err == nil {
		t.Error("one vector for two texts accepted")
	}
	mismatch := func(context.Context, []string) ([][]float32, error) { return [][]float32{{1, 0}, {1}}, nil }
	if r, err := b.Grade(ctx, task, ref, time.Second, mismatch); err != nil || r.Pass {
		t.Errorf("vectors of different lengths: %+v %v", r, err)
	}
}

func TestGradeLimits(t *testing.T) {
	b := Default()
	task, want := findTask(t, b, "reverse", func(string) bool { return true })
	ctx := context.Background()
	budget := time.Duration(b.Config().LatencyBudgetMS) * time.Millisecond
	if r, _ := b.Grade(ctx, task, want, budget, nil); !r.Pass {
		t.Errorf("an answer right on the budget failed: %+v", r)
	}
	if r, _ := b.Grade(ctx, task, want, budget+time.Millisecond, nil); r.Pass || !strings.Contains(r.Reason, "slow") {
		t.Errorf("an answer over the budget passed: %+v", r)
	}
	long := strings.Repeat("x ", MaxAnswerBytes) + want
	if r, _ := b.Grade(ctx, task, long, 0, nil); r.Pass {
		t.Errorf("an answer over %d bytes passed", MaxAnswerBytes)
	}
}

func TestGradeAll(t *testing.T) {
	b := Default()
	ctx := context.Background()
	tasks := b.Pick(rand.New(rand.NewPCG(3, 4)), 5)
	answers := make([]string, len(tasks))
	latencies := make([]time.Duration, len(tasks))
	for i, task := range tasks {
		answers[i], _ = b.Answer(task.Prompt)
		latencies[i] = 100 * time.Millisecond
	}
	results, score, pass, err := b.GradeAll(ctx, tasks, answers, latencies, testEmbed)
	if err != nil || !pass || score != 1 || len(results) != 5 {
		t.Fatalf("all correct: %v %v %v %v", results, score, pass, err)
	}

	// One over the budget: 4 of 5 still meets the 0.8 threshold.
	latencies[2] = 6 * time.Second
	results, score, pass, err = b.GradeAll(ctx, tasks, answers, latencies, testEmbed)
	if err != nil || !pass || math.Abs(score-0.8) > 1e-12 || results[2].Pass {
		t.Fatalf("one slow: %v %v %v %v", results, score, pass, err)
	}
	for i, r := range results {
		if i != 2 && !r.Pass {
			t.Errorf("task %d failed: %+v", i, r)
		}
	}

	// And a wrong answer as well: 3 of 5 fails.
	answers[4] = "banana"
	results, score, pass, err = b.GradeAll(ctx, tasks, answers, latencies, testEmbed)
	if err != nil || pass || math.Abs(score-0.6) > 1e-12 || results[4].Pass {
		t.Fatalf("one slow, one wrong: %v %v %v %v", results, score, pass, err)
	}

	// A threshold of 1 takes every task.
	strict, err := Parse([]byte(`{"pass_threshold": 1, "families": [{"name":"reverse","weight":1,"grader":"exact"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rt := strict.Pick(rand.New(rand.NewPCG(5, 6)), 3)
	ra := make([]string, 3)
	for i, task := range rt {
		ra[i], _ = strict.Answer(task.Prompt)
	}
	if _, _, pass, _ := strict.GradeAll(ctx, rt, ra, make([]time.Duration, 3), nil); !pass {
		t.Error("all correct failed a threshold of 1")
	}
	ra[0] = "nope"
	if _, _, pass, _ := strict.GradeAll(ctx, rt, ra, make([]time.Duration, 3), nil); pass {
		t.Error("2 of 3 passed a threshold of 1")
	}

	// Errors: mismatched lengths, no tasks, a tampered task.
	if _, _, _, err := b.GradeAll(ctx, tasks, answers[:4], latencies, testEmbed); err == nil {
		t.Error("4 answers for 5 tasks accepted")
	}
	if _, _, _, err := b.GradeAll(ctx, nil, nil, nil, testEmbed); err == nil {
		t.Error("no tasks accepted")
	}
	tasks[1].Prompt += "!"
	if _, _, _, err := b.GradeAll(ctx, tasks, answers, latencies, testEmbed); err == nil || !strings.Contains(err.Error(), "task 1") {
		t.Errorf("tampered task: %v", err)
	}
}

func ExampleBank_Grade() {
	b := Default()
	task, _ := b.Generate("arithmetic", 42)
	r, _ := b.Grade(context.Background(), task, "I don't know", time.Second, nil)
	fmt.Println(task.Prompt, r.Pass)
	// Output: What is 344 * 668? false
}
