// Package challenge generates the tasks an oracle sends a miner and grades the
// answers. A task is fully determined by its family and seed, so the oracle
// stores no expected answers: it regenerates them when it grades. The oracle
// draws a fresh random seed for every task, so no answer can be cached.
package challenge

import (
	"bytes"
	crand "crypto/rand"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
)

//go:embed default_bank.json
var defaultBankJSON []byte

// Task is what goes to the miner: wire-safe, it holds no expected answer.
type Task struct {
	Family string `json:"family"`
	Seed   uint64 `json:"seed"`
	Prompt string `json:"prompt"`
}

// Grader names how an answer is compared with the expected one.
type Grader string

// The graders; which ones a family accepts is fixed by the family.
const (
	GraderExact     Grader = "exact"
	GraderNumeric   Grader = "numeric"
	GraderRegex     Grader = "regex"
	GraderEmbedding Grader = "embedding"
)

// Defaults for the fields a bank file may leave out (or set to 0).
const (
	DefaultChallengesPerValidation = 5
	DefaultPassThreshold           = 0.8
	DefaultLatencyBudgetMS         = 5000
	DefaultEmbeddingThreshold      = 0.8
)

// Bounds that keep a bank file from asking for something absurd.
const (
	maxChallengesPerValidation = 100
	maxLatencyBudgetMS         = 10 * 60 * 1000
	// maxWeight keeps the sum of weights far from overflowing an int.
	maxWeight = 1_000_000
)

// Config is a bank file (JSON). A field left out, or 0, takes its default.
type Config struct {
	ChallengesPerValidation int            `json:"challenges_per_validation"` // default 5
	PassThreshold           float64        `json:"pass_threshold"`            // fraction of tasks that must pass, default 0.8
	LatencyBudgetMS         int            `json:"latency_budget_ms"`         // per task, default 5000; a slower answer fails
	Families                []FamilyConfig `json:"families"`
}

// FamilyConfig enables one built-in family in a bank.
type FamilyConfig struct {
	Name      string            `json:"name"`                // one of the built-in families
	Weight    int               `json:"weight"`              // relative frequency, >= 1
	Grader    Grader            `json:"grader"`              // allowed graders depend on the family
	Threshold float64           `json:"threshold,omitempty"` // embedding similarity threshold (0..1], default 0.8
	Table     map[string]string `json:"table,omitempty"`     // "lookup": country → capital; "describe": topic → reference sentence
}

// Bank is a validated set of families. It is immutable after Parse, so one
// Bank is safe for concurrent use.
type Bank struct {
	cfg      Config
	families []*family // in the order of cfg.Families, which Pick relies on
	byName   map[string]*family
	total    int // sum of the weights
}

// family is one enabled family: its built-in generator with its configuration.
type family struct {
	spec *spec
	cfg  FamilyConfig
	// keys are the table's keys, sorted: generators index them with the seed,
	// and a map's order would make the same seed give another task.
	keys []string
}

// Default returns the bank embedded in the binary. Each call returns a new
// Bank, so nodes in one process share nothing.
func Default() *Bank {
	b, err := Parse(defaultBankJSON)
	if err != nil {
		// The embedded file is part of the source and a test parses it; this
		// is a broken build, not bad input.
		panic("challenge: embedded default_bank.json: " + err.Error())
	}
	return b
}

// Load reads a bank file that replaces the default one.
func Load(path string) (*Bank, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("challenge bank: %w", err)
	}
	b, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("challenge bank %s: %w", path, err)
	}
	return b, nil
}

// Parse reads a bank from JSON. It is strict: an unknown field, trailing data
// or a wrong type is an error, and so is anything Validate rejects.
func Parse(data []byte) (*Bank, error) {
	b, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("challenge bank: %w", err)
	}
	return b, nil
}

func parse(data []byte) (*Bank, error) {
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON object")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBank(cfg), nil
}

// jsonError rewords encoding/json's errors so that they name the field.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Errorf("%s: got a JSON %s, want %s", field, typeErr.Value, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at byte %d: %w", syntaxErr.Offset, err)
	case errors.Is(err, io.EOF):
		return errors.New("empty file")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("invalid JSON: the document ends early")
	}
	// Unknown fields come as `json: unknown field "x"`, which names the field.
	if msg, ok := strings.CutPrefix(err.Error(), "json: "); ok {
		return errors.New(msg)
	}
	return err
}

func (c Config) withDefaults() Config {
	if c.ChallengesPerValidation == 0 {
		c.ChallengesPerValidation = DefaultChallengesPerValidation
	}
	if c.PassThreshold == 0 {
		c.PassThreshold = DefaultPassThreshold
	}
	if c.LatencyBudgetMS == 0 {
		c.LatencyBudgetMS = DefaultLatencyBudgetMS
	}
	c.Families = slices.Clone(c.Families)
	for i, f := range c.Families {
		if f.Grader == GraderEmbedding && f.Threshold == 0 {
			c.Families[i].Threshold = DefaultEmbeddingThreshold
		}
	}
	return c
}

// Validate checks every field and names the first one that is wrong. Defaults
// are already applied: here 0 is an error.
func (c Config) Validate() error {
	if c.ChallengesPerValidation < 1 || c.ChallengesPerValidation > maxChallengesPerValidation {
		return fmt.Errorf("challenges_per_validation: %d, must be between 1 and %d", c.ChallengesPerValidation, maxChallengesPerValidation)
	}
	// Written so that NaN fails too.
	if !(c.PassThreshold > 0 && c.PassThreshold <= 1) {
		return fmt.Errorf("pass_threshold: %v, must be in (0, 1]", c.PassThreshold)
	}
	if c.LatencyBudgetMS < 1 || c.LatencyBudgetMS > maxLatencyBudgetMS {
		return fmt.Errorf("latency_budget_ms: %d, must be between 1 and %d", c.LatencyBudgetMS, maxLatencyBudgetMS)
	}
	if len(c.Families) == 0 {
		return errors.New("families: empty, the bank needs at least one family")
	}
	seen := map[string]int{}
	for i, f := range c.Families {
		if j, dup := seen[f.Name]; dup {
			return fmt.Errorf("families[%d].name: %q already configured in families[%d]", i, f.Name, j)
		}
		seen[f.Name] = i
		if err := f.validate(); err != nil {
			return fmt.Errorf("families[%d].%w", i, err)
		}
	}
	return nil
}

// validate returns errors that start with the field name, for Validate to prefix.
func (f FamilyConfig) validate() error {
	s := specByName(f.Name)
	if s == nil {
		return fmt.Errorf("name: %q is not a known family (%s)", f.Name, strings.Join(familyNames(), ", "))
	}
	if f.Weight < 1 || f.Weight > maxWeight {
		return fmt.Errorf("weight: %d, must be between 1 and %d (family %q)", f.Weight, maxWeight, f.Name)
	}
	if !slices.Contains(s.graders, f.Grader) {
		return fmt.Errorf("grader: %q is not allowed for family %q (allowed: %s)", f.Grader, f.Name, joinGraders(s.graders))
	}
	if f.Grader == GraderEmbedding {
		if !(f.Threshold > 0 && f.Threshold <= 1) {
			return fmt.Errorf("threshold: %v, must be in (0, 1] (family %q)", f.Threshold, f.Name)
		}
	} else if f.Threshold != 0 {
		return fmt.Errorf("threshold: only the embedding grader uses it (family %q, grader %q)", f.Name, f.Grader)
	}
	if !s.table {
		if len(f.Table) > 0 {
			return fmt.Errorf("table: family %q takes no table", f.Name)
		}
		return nil
	}
	if len(f.Table) == 0 {
		return fmt.Errorf("table: family %q needs a non-empty table", f.Name)
	}
	// Sorted, so that the error for a bad file is always the same one.
	for _, k := range slices.Sorted(maps.Keys(f.Table)) {
		if !cleanLine(k) {
			return fmt.Errorf("table: key %q must be non-empty, one line, without surrounding spaces (family %q)", k, f.Name)
		}
		if !cleanLine(f.Table[k]) {
			return fmt.Errorf("table[%q]: value must be non-empty, one line, without surrounding spaces (family %q)", k, f.Name)
		}
	}
	return nil
}

// cleanLine reports whether s can sit inside a one-line prompt and come back
// out of it unchanged.
func cleanLine(s string) bool {
	return s != "" && strings.TrimSpace(s) == s && !strings.ContainsAny(s, "\r\n")
}

func joinGraders(gs []Grader) string {
	names := make([]string, len(gs))
	for i, g := range gs {
		names[i] = string(g)
	}
	return strings.Join(names, ", ")
}

// newBank builds a Bank from a validated configuration; it copies the tables,
// so the caller's maps can change afterwards without touching the bank.
func newBank(cfg Config) *Bank {
	b := &Bank{cfg: cfg.clone(), byName: make(map[string]*family, len(cfg.Families))}
	for _, fc := range b.cfg.Families {
		f := &family{spec: specByName(fc.Name), cfg: fc, keys: slices.Sorted(maps.Keys(fc.Table))}
		b.families = append(b.families, f)
		b.byName[fc.Name] = f
		b.total += fc.Weight
	}
	return b
}

func (c Config) clone() Config {
	c.Families = slices.Clone(c.Families)
	for i := range c.Families {
		c.Families[i].Table = maps.Clone(c.Families[i].Table)
	}
	return c
}

// Config returns a copy of the bank's configuration, defaults applied.
func (b *Bank) Config() Config {
	if b == nil {
		return Config{}
	}
	return b.cfg.clone()
}

// Pick returns n tasks: each family chosen by weight from rng, each with a
// fresh seed from rng. The seeds must be unpredictable to the miner, so an
// oracle should pass a generator seeded from crypto/rand (rand.NewChaCha8);
// a nil rng means exactly that. A seeded rng gives the same tasks every time.
func (b *Bank) Pick(rng *rand.Rand, n int) []Task {
	if b == nil || b.total == 0 || n <= 0 {
		return nil
	}
	if rng == nil {
		var seed [32]byte
		crand.Read(seed[:]) // never fails since Go 1.24
		rng = rand.New(rand.NewChaCha8(seed))
	}
	tasks := make([]Task, 0, min(n, maxChallengesPerValidation))
	for range n {
		w := rng.IntN(b.total)
		f := b.families[len(b.families)-1]
		for _, c := range b.families {
			if w < c.cfg.Weight {
				f = c
				break
			}
			w -= c.cfg.Weight
		}
		seed := rng.Uint64()
		prompt, _ := f.generate(seed)
		tasks = append(tasks, Task{Family: f.cfg.Name, Seed: seed, Prompt: prompt})
	}
	return tasks
}

// Generate returns the task that family and seed determine.
func (b *Bank) Generate(familyName string, seed uint64) (Task, error) {
	f, err := b.family(familyName)
	if err != nil {
		return Task{}, err
	}
	prompt, _ := f.generate(seed)
	return Task{Family: familyName, Seed: seed, Prompt: prompt}, nil
}

// Expected regenerates task from its family and seed and returns the
// expected answer (for "describe", the reference sentence). It is an error if
// the family is not in this bank or the prompt is not the one that family and
// seed generate: a tampered task.
func (b *Bank) Expected(task Task) (string, error) {
	_, expected, err := b.expect(task)
	return expected, err
}

func (b *Bank) expect(task Task) (*family, string, error) {
	f, err := b.family(task.Family)
	if err != nil {
		return nil, "", err
	}
	prompt, expected := f.generate(task.Seed)
	if prompt != task.Prompt {
		return nil, "", fmt.Errorf("task %s/%d: the prompt is not the one this family and seed generate (tampered task)", task.Family, task.Seed)
	}
	return f, expected, nil
}

func (b *Bank) family(name string) (*family, error) {
	if b != nil {
		if f, ok := b.byName[name]; ok {
			return f, nil
		}
	}
	return nil, fmt.Errorf("family %q is not in this challenge bank", name)
}

// generate is the family's generator run from seed. The PCG stream constant
// is fixed: the same seed must give the same task on every oracle.
func (f *family) generate(seed uint64) (prompt, expected string) {
	const stream = 0x657068656d657261 // "ephemera"
	return f.spec.generate(rand.New(rand.NewPCG(seed, stream)), f)
}

// Answer solves any prompt of this bank's families, with this bank's tables.
// It is the reference answerer behind the built-in inference engine, whose
// job is to pass the bank deterministically; false means no family of the
// bank recognises the prompt.
func (b *Bank) Answer(prompt string) (string, bool) {
	if b == nil {
		return "", false
	}
	prompt = strings.TrimSpace(prompt)
	for _, f := range b.families {
		if !strings.HasPrefix(prompt, f.spec.prefix) {
			continue
		}
		if ans, ok := f.spec.solve(prompt, f); ok {
			return ans, true
		}
	}
	return "", false
}
