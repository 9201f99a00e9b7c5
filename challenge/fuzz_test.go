package challenge

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// FuzzParseBank: no input makes Parse panic, and any bank it accepts works:
// its configuration validates and round-trips, and the reference answer to
// each task it picks passes.
func FuzzParseBank(f *testing.F) {
	f.Add(defaultBankJSON)
	f.Add([]byte(`{"families":[{"name":"lookup","weight":1,"grader":"exact","table":{"X?":"y"}}]}`))
	f.Add([]byte(`{"families":[{"name":"describe","weight":2,"grader":"embedding","threshold":1,"table":{"a in one sentence.":"b"}}]}`))
	f.Add([]byte(`{"pass_threshold":1,"families":[{"name":"sort","weight":1,"grader":"regex"},{"name":"arithmetic","weight":5,"grader":"exact"}]}`))
	f.Add([]byte(`{"families":[{"name":"json","weight":1000000,"grader":"exact"}]}`))
	f.Add([]byte(`{"families":null}`))
	f.Add([]byte(`{"pass_threshold":1e400}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			if b != nil {
				t.Fatal("a bank and an error")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		cfg := b.Config()
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		again, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(again); err != nil {
			t.Fatalf("accepted config does not round-trip: %v\n%s", err, again)
		}
		for _, task := range b.Pick(rand.New(rand.NewPCG(1, 2)), 4) {
			ans, ok := b.Answer(task.Prompt)
			if !ok {
				t.Fatalf("no reference answer for %+v", task)
			}
			r, err := b.Grade(context.Background(), task, ans, 0, testEmbed)
			if err != nil || !r.Pass {
				t.Fatalf("reference answer %q for %+v: %+v %v", ans, task, r, err)
			}
		}
	})
}

// FuzzGrade: no task or answer makes Grade panic; a task a bank generated
// grades without error, whatever the answer.
func FuzzGrade(f *testing.F) {
	def, rx := Default(), regexBank(f)
	for i, task := range def.Pick(rand.New(rand.NewPCG(9, 9)), 14) {
		ans, _ := def.Answer(task.Prompt)
		f.Add(task.Family, task.Seed, task.Prompt, ans, int64(i*500))
	}
	f.Add("arithmetic", uint64(0), "What is 1 + 1?", "2", int64(0))
	f.Add("sort", uint64(1), "", "7, 19, 42", int64(-1))
	f.Add("describe", uint64(2), "Describe DNA in one sentence.", "", int64(1e12))
	f.Add("", uint64(0), "", "", int64(0))
	f.Add("json", uint64(3), `In the JSON {"a":1} what is the value of "a"?`, "1", int64(10))
	f.Fuzz(func(t *testing.T, family string, seed uint64, prompt, answer string, latencyMS int64) {
		latency := time.Duration(latencyMS) * time.Millisecond
		for _, b := range []*Bank{def, rx} {
			_, _ = b.Grade(context.Background(), Task{Family: family, Seed: seed, Prompt: prompt}, answer, latency, testEmbed)
			_, _ = b.Answer(prompt)
			task, err := b.Generate(family, seed)
			if err != nil {
				continue
			}
			r, err := b.Grade(context.Background(), task, answer, latency, testEmbed)
			if err != nil {
				t.Fatalf("generated task %+v: %v", task, err)
			}
			if r.Score < 0 || r.Score > 1 || (r.Pass && latency > time.Duration(b.cfg.LatencyBudgetMS)*time.Millisecond) {
				t.Fatalf("result %+v for %+v, latency %v", r, task, latency)
			}
		}
	})
}
