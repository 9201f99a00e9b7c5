package challenge

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testEmbed is a bag of hashed words: identical texts give identical vectors
// and texts without a word in common give (almost) orthogonal ones. The real
// embedding lives in package inference, which this package must not import.
func testEmbed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		v := make([]float32, 64)
		for _, w := range strings.Fields(strings.ToLower(t)) {
			h := uint32(2166136261)
			for j := 0; j < len(w); j++ {
				h = (h ^ uint32(w[j])) * 16777619
			}
			v[h%64]++
		}
		out[i] = v
	}
	return out, nil
}

func TestDefaultBankValidates(t *testing.T) {
	b := Default()
	cfg := b.Config()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.ChallengesPerValidation != 5 || cfg.PassThreshold != 0.8 || cfg.LatencyBudgetMS != 5000 {
		t.Errorf("default parameters: %+v", cfg)
	}
	got := map[string]FamilyConfig{}
	for _, f := range cfg.Families {
		got[f.Name] = f
	}
	for _, name := range familyNames() {
		if _, ok := got[name]; !ok {
			t.Errorf("family %q missing from the default bank", name)
		}
	}
	if n := len(got["lookup"].Table); n < 25 {
		t.Errorf("lookup table has %d entries, want about 30", n)
	}
	if th := got["describe"].Threshold; th != 0.8 {
		t.Errorf("describe threshold %v, want 0.8", th)
	}
}

func TestConfigIsACopy(t *testing.T) {
	b := Default()
	cfg := b.Config()
	cfg.Families[0].Weight = 99
	for _, f := range cfg.Families {
		if f.Name == "lookup" {
			f.Table["France"] = "Lyon"
		}
	}
	task, err := b.Generate("lookup", 1)
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(0); seed < 500; seed++ {
		task, _ = b.Generate("lookup", seed)
		if task.Prompt == "What is the capital of France?" {
			break
		}
	}
	if want, _ := b.Expected(task); want == "Lyon" {
		t.Error("changing the copy from Config changed the bank")
	}
	if b.Config().Families[0].Weight == 99 {
		t.Error("changing the copy from Config changed a weight")
	}
}

func TestPickDeterministic(t *testing.T) {
	b := Default()
	a := b.Pick(rand.New(rand.NewPCG(1, 2)), 50)
	c := b.Pick(rand.New(rand.NewPCG(1, 2)), 50)
	if len(a) != 50 {
		t.Fatalf("got %d tasks, want 50", len(a))
	}
	for i := range a {
		if a[i] != c[i] {
			t.Fatalf("task %d differs for the same seed: %+v vs %+v", i, a[i], c[i])
		}
	}
	d := b.Pick(rand.New(rand.NewPCG(1, 3)), 50)
	same := 0
	for i := range a {
		if a[i] == d[i] {
			same++
		}
	}
	if same == len(a) {
		t.Error("another rng seed gave the same tasks")
	}
	if b.Pick(rand.New(rand.NewPCG(1, 2)), 0) != nil || b.Pick(nil, -3) != nil {
		t.Error("n <= 0 should give no tasks")
	}
	if (*Bank)(nil).Pick(nil, 3) != nil || (&Bank{}).Pick(nil, 3) != nil {
		t.Error("an empty bank should give no tasks")
	}
}

func TestPickNilRNGIsRandom(t *testing.T) {
	b := Default()
	x, y := b.Pick(nil, 5), b.Pick(nil, 5)
	if len(x) != 5 || len(y) != 5 {
		t.Fatalf("got %d and %d tasks, want 5", len(x), len(y))
	}
	if x[0].Seed == y[0].Seed {
		t.Error("two calls with a nil rng drew the same seed")
	}
	for _, task := range x {
		if _, err := b.Expected(task); err != nil {
			t.Error(err)
		}
	}
}

func TestPickFollowsWeights(t *testing.T) {
	b, err := Parse([]byte(`{"families":[
		{"name":"arithmetic","weight":1,"grader":"exact"},
		{"name":"reverse","weight":3,"grader":"exact"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	count := map[string]int{}
	for _, task := range b.Pick(rand.New(rand.NewPCG(7, 7)), n) {
		count[task.Family]++
	}
	if got := float64(count["arithmetic"]) / n; math.Abs(got-0.25) > 0.02 {
		t.Errorf("arithmetic drawn %.3f of the time, want 0.25 (counts %v)", got, count)
	}

	// Every family of the default bank turns up, roughly by weight.
	d := Default()
	total := 0
	for _, f := range d.Config().Families {
		total += f.Weight
	}
	count = map[string]int{}
	for _, task := range d.Pick(rand.New(rand.NewPCG(8, 8)), n) {
		count[task.Family]++
	}
	for _, f := range d.Config().Families {
		want := float64(f.Weight) / float64(total)
		if got := float64(count[f.Name]) / n; math.Abs(got-want) > 0.02 {
			t.Errorf("%s drawn %.3f of the time, want %.3f", f.Name, got, want)
		}
	}
}

// TestReferenceAnswersPass: over 1000 seeds of every family, the bank's own
// answer passes, "banana" fails and a tampered prompt is an error.
func TestReferenceAnswersPass(t *testing.T) {
	ctx := context.Background()
	banks := map[string]*Bank{"default": Default(), "regex": regexBank(t)}
	for bankName, b := range banks {
		for _, fc := range b.Config().Families {
			prompts := map[string]bool{}
			for seed := range uint64(1000) {
				seed = seed*0x9e3779b97f4a7c15 + 1 // spread over the whole range
				task, err := b.Generate(fc.Name, seed)
				if err != nil {
					t.Fatal(err)
				}
				prompts[task.Prompt] = true
				ans, ok := b.Answer(task.Prompt)
				if !ok {
					t.Fatalf("%s/%s: no answer for %q", bankName, fc.Name, task.Prompt)
				}
				r, err := b.Grade(ctx, task, ans, time.Second, testEmbed)
				if err != nil || !r.Pass {
					t.Fatalf("%s/%s: reference answer %q to %q: %+v, %v", bankName, fc.Name, ans, task.Prompt, r, err)
				}
				r, err = b.Grade(ctx, task, "banana", time.Second, testEmbed)
				if err != nil || r.Pass {
					t.Fatalf("%s/%s: %q passed with banana: %+v, %v", bankName, fc.Name, task.Prompt, r, err)
				}
				tampered := task
				tampered.Prompt = strings.Replace(task.Prompt, " ", "  ", 1)
				if _, err := b.Grade(ctx, tampered, ans, time.Second, testEmbed); err == nil {
					t.Fatalf("%s/%s: tampered prompt %q graded without error", bankName, fc.Name, tampered.Prompt)
				}
				reseeded := task
				reseeded.Seed++
				if _, err := b.Grade(ctx, reseeded, ans, time.Second, testEmbed); err == nil && reseeded.Prompt != mustPrompt(t, b, fc.Name, reseeded.Seed) {
					t.Fatalf("%s/%s: wrong seed accepted", bankName, fc.Name)
				}
			}
			// Tables are small; the generated families must vary.
			want := 900
			if fc.Table != nil {
				want = min(20, len(fc.Table))
			}
			if len(prompts) < want {
				t.Errorf("%s/%s: only %d distinct prompts in 1000 seeds", bankName, fc.Name, len(prompts))
			}
		}
	}
}

func mustPrompt(t *testing.T, b *Bank, family string, seed uint64) string {
	t.Helper()
	task, err := b.Generate(family, seed)
	if err != nil {
		t.Fatal(err)
	}
	return task.Prompt
}

// regexBank uses the regex grader where it is allowed.
func regexBank(t testing.TB) *Bank {
	b, err := Parse([]byte(`{"families":[
		{"name":"arithmetic","weight":1,"grader":"regex"},
		{"name":"sort","weight":1,"grader":"regex"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnknownFamily(t *testing.T) {
	b := Default()
	if _, err := b.Generate("poetry", 1); err == nil || !strings.Contains(err.Error(), "poetry") {
		t.Errorf("Generate(poetry): %v", err)
	}
	if _, err := b.Grade(context.Background(), Task{Family: "poetry", Prompt: "x"}, "y", 0, nil); err == nil {
		t.Error("Grade accepted an unknown family")
	}
	only, err := Parse([]byte(`{"families":[{"name":"reverse","weight":1,"grader":"exact"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	task, _ := b.Generate("arithmetic", 5)
	if _, err := only.Grade(context.Background(), task, "1", 0, nil); err == nil {
		t.Error("a bank graded a family it does not have")
	}
	if _, ok := only.Answer(task.Prompt); ok {
		t.Error("a bank answered a family it does not have")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{
		"challenges_per_validation": 7,
		"latency_budget_ms": 2000,
		"families": [
			{"name": "arithmetic", "weight": 2, "grader": "regex"},
			{"name": "lookup", "weight": 1, "grader": "exact", "table": {"Chile": "Santiago"}},
			{"name": "describe", "weight": 1, "grader": "embedding", "table": {"rain": "Rain is water falling from clouds."}}
		]}`)
	b, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	cfg := b.Config()
	if cfg.ChallengesPerValidation != 7 || cfg.LatencyBudgetMS != 2000 || cfg.PassThreshold != DefaultPassThreshold {
		t.Errorf("loaded %+v", cfg)
	}
	if cfg.Families[2].Threshold != DefaultEmbeddingThreshold {
		t.Errorf("describe threshold %v, want the default", cfg.Families[2].Threshold)
	}
	if ans, ok := b.Answer("What is the capital of Chile?"); !ok || ans != "Santiago" {
		t.Errorf("the loaded table is not used: %q %v", ans, ok)
	}

	fam := func(s string) string { return `{"families":[` + s + `]}` }
	bad := []struct{ name, content, want string }{
		{"unknown field", `{"challenges": 5, "families": []}`, `unknown field "challenges"`},
		{"unknown family field", fam(`{"name":"reverse","weight":1,"grader":"exact","colour":"red"}`), `unknown field "colour"`},
		{"unknown family", fam(`{"name":"poetry","weight":1,"grader":"exact"}`), "families[0].name"},
		{"bad grader", fam(`{"name":"reverse","weight":1,"grader":"numeric"}`), "families[0].grader"},
		{"unknown grader", fam(`{"name":"reverse","weight":1,"grader":"fuzzy"}`), "families[0].grader"},
		{"weight 0", fam(`{"name":"reverse","weight":1,"grader":"exact"},{"name":"sort","weight":0,"grader":"exact"}`), "families[1].weight"},
		{"pass threshold", `{"pass_threshold": 1.5, "families": [{"name":"reverse","weight":1,"grader":"exact"}]}`, "pass_threshold"},
		{"empty families", `{"families": []}`, "families"},
		{"no families", `{}`, "families"},
		{"duplicate family", fam(`{"name":"reverse","weight":1,"grader":"exact"},{"name":"reverse","weight":2,"grader":"exact"}`), "families[1].name"},
		{"threshold", fam(`{"name":"describe","weight":1,"grader":"embedding","threshold":1.2,"table":{"a":"b"}}`), "families[0].threshold"},
		{"threshold on exact", fam(`{"name":"reverse","weight":1,"grader":"exact","threshold":0.5}`), "families[0].threshold"},
		{"missing table", fam(`{"name":"lookup","weight":1,"grader":"exact"}`), "families[0].table"},
		{"table not taken", fam(`{"name":"sort","weight":1,"grader":"exact","table":{"a":"b"}}`), "families[0].table"},
		{"bad table key", fam(`{"name":"lookup","weight":1,"grader":"exact","table":{" France":"Paris"}}`), "families[0].table"},
		{"empty table value", fam(`{"name":"lookup","weight":1,"grader":"exact","table":{"France":""}}`), `families[0].table["France"]`},
		{"budget", `{"latency_budget_ms": -1, "families": [{"name":"reverse","weight":1,"grader":"exact"}]}`, "latency_budget_ms"},
		{"count", `{"challenges_per_validation": 1000, "families": [{"name":"reverse","weight":1,"grader":"exact"}]}`, "challenges_per_validation"},
		{"wrong type", fam(`{"name":"reverse","weight":"heavy","grader":"exact"}`), "weight"},
		{"syntax", `{"families": [`, "invalid JSON"},
		{"trailing data", fam(`{"name":"reverse","weight":1,"grader":"exact"}`) + ` {}`, "trailing data"},
		{"empty file", ``, "empty"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			path := write(strings.ReplaceAll(tc.name, " ", "_")+".json", tc.content)
			_, err := Load(path)
			if err == nil {
				t.Fatal("loaded without error")
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, path) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %q and the file", msg, tc.want)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfigValidateZero(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("the zero Config validated")
	}
	// The default bank's configuration round-trips through JSON.
	data, err := json.Marshal(Default().Config())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data); err != nil {
		t.Errorf("the default bank does not round-trip: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	b := Default()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for _, task := range b.Pick(rng, 200) {
				ans, _ := b.Answer(task.Prompt)
				if r, err := b.Grade(context.Background(), task, ans, 0, testEmbed); err != nil || !r.Pass {
					t.Errorf("%+v: %+v %v", task, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
