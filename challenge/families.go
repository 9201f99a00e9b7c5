package challenge

import (
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// spec is a built-in family: how it generates a task from a seed, and how the
// reference answerer solves its prompts. Prompts are plain English with the
// data inline, so the answer is easy to extract.
type spec struct {
	name string
	// prefix starts every prompt of the family: Answer skips the family's
	// parser when it is absent.
	prefix  string
	graders []Grader // the graders the family allows
	table   bool     // whether the family reads FamilyConfig.Table
	// caseSensitive: for "uppercase" the case is the task, and for "reverse"
	// the exact letters are.
	caseSensitive bool
	// normalize is applied to both answer and expected before an exact
	// comparison; nil means none.
	normalize func(string) string
	// pattern is the regex grader's pattern for an expected answer; set only
	// for families that allow the regex grader.
	pattern  func(expected string) string
	generate func(r *rand.Rand, f *family) (prompt, expected string)
	solve    func(prompt string, f *family) (string, bool)
}

// specs are the built-in families, read-only.
var specs = []*spec{
	{
		name:     "arithmetic",
		prefix:   "What is ",
		graders:  []Grader{GraderExact, GraderNumeric, GraderRegex},
		pattern:  numberPattern,
		generate: genArithmetic,
		solve:    solveArithmetic,
	},
	{
		name:          "reverse",
		prefix:        "Reverse the string ",
		graders:       []Grader{GraderExact},
		caseSensitive: true,
		generate:      genReverse,
		solve:         solveReverse,
	},
	{
		name:          "uppercase",
		prefix:        "Convert to upper case: ",
		graders:       []Grader{GraderExact},
		caseSensitive: true,
		generate:      genUppercase,
		solve:         solveUppercase,
	},
	{
		name:      "sort",
		prefix:    sortPrefix,
		graders:   []Grader{GraderExact, GraderRegex},
		normalize: normalizeList,
		pattern:   listPattern,
		generate:  genSort,
		solve:     solveSort,
	},
	{
		name:     "lookup",
		prefix:   "What is the capital of ",
		graders:  []Grader{GraderExact},
		table:    true,
		generate: genLookup,
		solve:    solveLookup,
	},
	{
		name:     "json",
		prefix:   "In the JSON ",
		graders:  []Grader{GraderExact},
		generate: genJSON,
		solve:    solveJSON,
	},
	{
		name:     "describe",
		prefix:   "Describe ",
		graders:  []Grader{GraderEmbedding},
		table:    true,
		generate: genDescribe,
		solve:    solveDescribe,
	},
}

func specByName(name string) *spec {
	for _, s := range specs {
		if s.name == name {
			return s
		}
	}
	return nil
}

func familyNames() []string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.name
	}
	slices.Sort(names)
	return names
}

// --- arithmetic: "What is 417 + 38?" → "455"

var arithmeticRE = regexp.MustCompile(`^What is (\d{1,9}) ([-+*]) (\d{1,9})\?$`)

func genArithmetic(r *rand.Rand, _ *family) (string, string) {
	a, b := r.IntN(1000), r.IntN(1000)
	op := "+-*"[r.IntN(3)]
	return "What is " + strconv.Itoa(a) + " " + string(op) + " " + strconv.Itoa(b) + "?", strconv.Itoa(calc(a, op, b))
}

func calc(a int, op byte, b int) int {
	switch op {
	case '+':
		return a + b
	case '-':
		return a - b
	}
	return a * b
}

func solveArithmetic(prompt string, _ *family) (string, bool) {
	m := arithmeticRE.FindStringSubmatch(prompt)
	if m == nil {
		return "", false
	}
	// At most 9 digits each: the product fits an int64.
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[3])
	return strconv.Itoa(calc(a, m[2][0], b)), true
}

// --- reverse: `Reverse the string "kqzvt".` → "tvzqk"

var reverseRE = regexp.MustCompile(`^Reverse the string "(.*)"\.$`)

func genReverse(r *rand.Rand, _ *family) (string, string) {
	for {
		s := make([]byte, 5+r.IntN(6))
		for i := range s {
			s[i] = 'a' + byte(r.IntN(26))
		}
		rev := reverseString(string(s))
		// A palindrome would let an echo of the input pass.
		if rev != string(s) {
			return `Reverse the string "` + string(s) + `".`, rev
		}
	}
}

func reverseString(s string) string {
	rs := []rune(s)
	slices.Reverse(rs)
	return string(rs)
}

func solveReverse(prompt string, _ *family) (string, bool) {
	m := reverseRE.FindStringSubmatch(prompt)
	if m == nil {
		return "", false
	}
	return reverseString(m[1]), true
}

// --- uppercase: `Convert to upper case: "hello world"` → "HELLO WORLD"

var uppercaseRE = regexp.MustCompile(`^Convert to upper case: "(.*)"$`)

var plainWords = []string{
	"hello", "world", "river", "stone", "cloud", "garden", "window", "silver",
	"morning", "candle", "forest", "bridge", "pencil", "orange", "summer", "winter",
	"ocean", "mountain", "yellow", "purple", "quiet", "rapid", "gentle", "bright",
	"ladder", "castle", "rocket", "violin", "planet", "harbor", "meadow", "thunder",
}

func genUppercase(r *rand.Rand, _ *family) (string, string) {
	words := make([]string, 2+r.IntN(3))
	for i := range words {
		words[i] = plainWords[r.IntN(len(plainWords))]
	}
	s := strings.Join(words, " ")
	return `Convert to upper case: "` + s + `"`, strings.ToUpper(s)
}

func solveUppercase(prompt string, _ *family) (string, bool) {
	m := uppercaseRE.FindStringSubmatch(prompt)
	if m == nil {
		return "", false
	}
	return strings.ToUpper(m[1]), true
}

// --- sort: "Sort these numbers in ascending order, separated by commas: 42, 7, 19" → "7, 19, 42"

const sortPrefix = "Sort these numbers in ascending order, separated by commas: "

func genSort(r *rand.Rand, _ *family) (string, string) {
	nums := r.Perm(99)[:3+r.IntN(5)]
	for i := range nums {
		nums[i]++
	}
	// Already sorted, an echo of the input would pass.
	if slices.IsSorted(nums) {
		nums[0], nums[1] = nums[1], nums[0]
	}
	prompt := sortPrefix + joinInts(nums)
	slices.Sort(nums)
	return prompt, joinInts(nums)
}

func joinInts(nums []int) string {
	parts := make([]string, len(nums))
	for i, n := range nums {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ", ")
}

func solveSort(prompt string, _ *family) (string, bool) {
	list, ok := strings.CutPrefix(prompt, sortPrefix)
	if !ok {
		return "", false
	}
	var nums []int
	for _, p := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return "", false
		}
		nums = append(nums, n)
	}
	sort.Ints(nums)
	return joinInts(nums), true
}

var commaRE = regexp.MustCompile(`\s*,\s*`)

// normalizeList makes "7,19 , 42" and "7, 19, 42" the same answer.
func normalizeList(s string) string { return commaRE.ReplaceAllString(s, ", ") }

// --- lookup: "What is the capital of France?" → "Paris", from the table

var lookupRE = regexp.MustCompile(`^What is the capital of (.+)\?$`)

func genLookup(r *rand.Rand, f *family) (string, string) {
	if len(f.keys) == 0 { // unreachable after Validate; no panic regardless
		return "", ""
	}
	k := f.keys[r.IntN(len(f.keys))]
	return "What is the capital of " + k + "?", f.cfg.Table[k]
}

func solveLookup(prompt string, f *family) (string, bool) {
	m := lookupRE.FindStringSubmatch(prompt)
	if m == nil {
		return "", false
	}
	v, ok := f.cfg.Table[m[1]]
	return v, ok
}

// --- json: `In the JSON {"id":17,"name":"kiwi","price":3} what is the value of "name"?` → "kiwi"

var jsonRE = regexp.MustCompile(`^In the JSON (\{.*\}) what is the value of "([^"]*)"\?$`)

var (
	fruits = []string{"apple", "kiwi", "mango", "pear", "plum", "cherry", "lemon", "lime",
		"peach", "grape", "melon", "apricot", "fig", "papaya", "guava", "quince"}
	colors = []string{"red", "green", "blue", "yellow", "purple", "black", "white", "brown"}
)

// jsonFields are the fields an object can have; each draws its value.
var jsonFields = []struct {
	key   string
	value func(r *rand.Rand) (literal, answer string)
}{
	{"id", func(r *rand.Rand) (string, string) { return intValue(r.IntN(1000)) }},
	{"name", func(r *rand.Rand) (string, string) { return stringValue(fruits[r.IntN(len(fruits))]) }},
	{"price", func(r *rand.Rand) (string, string) { return intValue(1 + r.IntN(99)) }},
	{"color", func(r *rand.Rand) (string, string) { return stringValue(colors[r.IntN(len(colors))]) }},
	{"qty", func(r *rand.Rand) (string, string) { return intValue(1 + r.IntN(50)) }},
	{"in_stock", func(r *rand.Rand) (string, string) {
		v := strconv.FormatBool(r.IntN(2) == 1)
		return v, v
	}},
}

func intValue(n int) (string, string)       { s := strconv.Itoa(n); return s, s }
func stringValue(s string) (string, string) { return strconv.Quote(s), s }

func genJSON(r *rand.Rand, _ *family) (string, string) {
	chosen := r.Perm(len(jsonFields))[:3+r.IntN(2)]
	var obj strings.Builder
	obj.WriteByte('{')
	ask := r.IntN(len(chosen))
	var key, expected string
	for i, fi := range chosen {
		if i > 0 {
			obj.WriteByte(',')
		}
		field := jsonFields[fi]
		literal, answer := field.value(r)
		obj.WriteString(strconv.Quote(field.key) + ":" + literal)
		if i == ask {
			key, expected = field.key, answer
		}
	}
	obj.WriteByte('}')
	return "In the JSON " + obj.String() + ` what is the value of "` + key + `"?`, expected
}

func solveJSON(prompt string, _ *family) (string, bool) {
	m := jsonRE.FindStringSubmatch(prompt)
	if m == nil {
		return "", false
	}
	dec := json.NewDecoder(strings.NewReader(m[1]))
	dec.UseNumber() // so that 17 comes back as "17", not "17e+00"
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return "", false
	}
	v, ok := obj[m[2]]
	if !ok {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	case nil:
		return "null", true
	}
	out, err := json.Marshal(v)
	if err != nil {
		return "", false
	}
	return string(out), true
}

// --- describe: "Describe gravity in one sentence." → the table's reference sentence

var describeRE = regexp.MustCompile(`^Describe (.+) in one sentence\.$`)

func genDescribe(r *rand.Rand, f *family) (string, string) {
	if len(f.keys) == 0 { // unreachable after Validate; no panic regardless
		return "", ""
	}
	k := f.keys[r.IntN(len(f.keys))]
	return "Describe " + k + " in one sentence.", f.cfg.Table[k]
}

func solveDescribe(prompt string, f *family) (string, bool) {
	m := describeRE.FindStringSubmatch(prompt)
	if m == nil {
		return "", false
	}
	v, ok := f.cfg.Table[m[1]]
	return v, ok
}
