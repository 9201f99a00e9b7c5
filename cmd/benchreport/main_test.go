package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/ephemera-network/ephemera/gossip
cpu: Test CPU @ 3.00GHz
BenchmarkFoo-2           	   10000	    150000 ns/op	     512 B/op	       4 allocs/op
BenchmarkFooBaseline-2   	   20000	    100000 ns/op
BenchmarkBar-2           	 1000000	      1200 ns/op
PASS
ok  	github.com/ephemera-network/ephemera/gossip	3.021s
`

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bench") // run must create it
	if err := run(strings.NewReader(sample), dir); err != nil {
		t.Fatal(err)
	}

	rep, raw := readReport(t, dir)
	if !strings.Contains(rep.Machine, "Test CPU @ 3.00GHz") {
		t.Errorf("machine = %q, want the cpu: line", rep.Machine)
	}
	if rep.Date == "" || rep.Go == "" || rep.Commit == "" {
		t.Errorf("report header incomplete: %+v", rep)
	}
	if len(rep.Figures) != 2 {
		t.Fatalf("figures = %+v, want Foo and Bar only (the baseline folds into Foo)", rep.Figures)
	}
	const pkg = "github.com/ephemera-network/ephemera/gossip"
	byName := map[string]Figure{}
	for _, f := range rep.Figures {
		byName[f.Name] = f
	}
	foo, ok := byName["Foo"]
	if !ok {
		t.Fatalf("no figure Foo (the -2 suffix must be dropped): %+v", rep.Figures)
	}
	if foo.Package != pkg || foo.Value != 150000 || foo.Unit != "ns/op" || foo.Baseline != 100000 || math.Abs(foo.Ratio-1.5) > 1e-9 {
		t.Errorf("Foo = %+v, want value 150000, baseline 100000, ratio 1.5 in %s", foo, pkg)
	}
	bar, ok := byName["Bar"]
	if !ok {
		t.Fatalf("no figure Bar: %+v", rep.Figures)
	}
	if bar.Package != pkg || bar.Value != 1200 || bar.Baseline != 0 || bar.Ratio != 0 {
		t.Errorf("Bar = %+v, want value 1200 and no baseline", bar)
	}
	if strings.Contains(string(raw), `"baseline": 0`) {
		t.Errorf("results.json writes an empty baseline:\n%s", raw)
	}

	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{
		"| gossip | Foo | 150.0 µs | 100.0 µs | 1.50 |",
		"| gossip | Bar | 1.2 µs | — | — |",
	} {
		if !strings.Contains(string(md), row) {
			t.Errorf("RESULTS.md lacks row %q:\n%s", row, md)
		}
	}
	if strings.Contains(string(md), "FooBaseline") {
		t.Errorf("RESULTS.md lists the baseline as its own row:\n%s", md)
	}
}

// A new report replaces the table and keeps the notes written by hand below
// the marker, word for word.
func TestRunKeepsHandWrittenNotes(t *testing.T) {
	dir := t.TempDir()
	notes := notesMarker + "\n\n## Notes\n\nWhy a goal was missed.\n"
	old := "# Old table\n\n| stale | row |\n\n" + notes
	if err := os.WriteFile(filepath.Join(dir, "RESULTS.md"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(strings.NewReader(sample), dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(md), "stale") || !strings.Contains(string(md), "| Foo |") {
		t.Errorf("the table was not replaced:\n%s", md)
	}
	if !strings.HasSuffix(string(md), notes) || strings.Count(string(md), notesMarker) != 1 {
		t.Errorf("the notes were not kept once, as written:\n%s", md)
	}
}

func TestRunKeepsPackagesApart(t *testing.T) {
	in := `pkg: example.com/a
BenchmarkFoo-8   100   200 ns/op
pkg: example.com/b
BenchmarkFoo-8   100   300 ns/op
BenchmarkFooBaseline-8   100   100 ns/op
`
	dir := t.TempDir()
	if err := run(strings.NewReader(in), dir); err != nil {
		t.Fatal(err)
	}
	rep, _ := readReport(t, dir)
	if len(rep.Figures) != 2 {
		t.Fatalf("figures = %+v, want one Foo per package", rep.Figures)
	}
	a, b := rep.Figures[0], rep.Figures[1]
	if a.Package != "example.com/a" || a.Baseline != 0 {
		t.Errorf("a/Foo = %+v, want no baseline (b's baseline is not a's)", a)
	}
	if b.Package != "example.com/b" || b.Ratio != 3 {
		t.Errorf("b/Foo = %+v, want ratio 3", b)
	}
}

func TestRunNoResults(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"no benchmarks", "goos: linux\npkg: example.com/a\nPASS\nok  \texample.com/a\t0.1s\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "bench")
			if err := run(strings.NewReader(tt.in), dir); err == nil {
				t.Fatal("run succeeded with no benchmark results")
			}
			if _, err := os.Stat(filepath.Join(dir, "results.json")); err == nil {
				t.Error("results.json written despite the error")
			}
		})
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		ns   float64
		want string
	}{
		{999, "999 ns"},
		{1000, "1.0 µs"},
		{1234567, "1.23 ms"},
	}
	for _, tt := range tests {
		if got := human(tt.ns); got != tt.want {
			t.Errorf("human(%v) = %q, want %q", tt.ns, got, tt.want)
		}
	}
}

// Extra measures a benchmark reports are figures of their own, each beside
// the baseline's same measure.
func TestCustomUnits(t *testing.T) {
	const in = `pkg: example.org/p
BenchmarkProp-2           	     127	  17693276 ns/op	         9.460 p50-ms	        43.54 p99-ms	  512 B/op
BenchmarkPropBaseline-2   	     123	  20721946 ns/op	        10.24 p50-ms	        21.77 p99-ms
`
	dir := t.TempDir()
	if err := run(strings.NewReader(in), dir); err != nil {
		t.Fatal(err)
	}
	rep, _ := readReport(t, dir)
	byUnit := map[string]Figure{}
	for _, f := range rep.Figures {
		byUnit[f.Unit] = f
	}
	if len(byUnit) != 3 || byUnit["B/op"].Name != "" {
		t.Fatalf("figures by unit: %+v, want ns/op, p50-ms and p99-ms", byUnit)
	}
	if p99 := byUnit["p99-ms"]; math.Abs(p99.Ratio-2) > 1e-9 || p99.Baseline != 21.77 {
		t.Errorf("p99 = %+v, want ratio 2 against 21.77", p99)
	}
}

// TestMerge: -merge replaces one package's figures and keeps the others'.
func TestMerge(t *testing.T) {
	dir := t.TempDir()
	if err := run(strings.NewReader(sample), dir); err != nil {
		t.Fatal(err)
	}
	netns := "pkg: github.com/ephemera-network/ephemera/testnet/netns\nBenchmarkJoin/plain\t1\t4.03 run-to-available-s\n"
	for range 2 { // a second merge replaces the first's figures
		if err := runMerge(strings.NewReader(netns), dir); err != nil {
			t.Fatal(err)
		}
	}
	rep, _ := readReport(t, dir)
	names := map[string]int{}
	for _, f := range rep.Figures {
		names[f.Name]++
	}
	if names["Foo"] != 1 || names["Bar"] != 1 || names["Join/plain"] != 1 {
		t.Errorf("figures after two merges: %v, want Foo, Bar and Join/plain once each", names)
	}
	if len(rep.Merged) != 1 || !strings.HasPrefix(rep.Merged[0], "testnet/netns: ") {
		t.Errorf("merged = %q, want one note for testnet/netns", rep.Merged)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if !strings.Contains(string(md), "| Join/plain | 4.03 run-to-available-s |") || !strings.Contains(string(md), "≤ 10 s") {
		t.Errorf("RESULTS.md lacks the merged figure with its goal:\n%s", md)
	}
}

// readReport reads dir/results.json, as it is and decoded.
func readReport(t *testing.T, dir string) (Report, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("results.json: %v\n%s", err, raw)
	}
	return rep, raw
}
