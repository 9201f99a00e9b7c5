// Command benchreport turns `go test -bench` output into the project's
// benchmark report: every benchmark Foo beside its raw baseline FooBaseline,
// with the ratio between them, as bench/results.json and bench/RESULTS.md.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Figure is one measure of a benchmark beside the same measure of its baseline.
type Figure struct {
	Package  string  `json:"package"`
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline float64 `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"` // value / baseline: 1.0 is as fast as the raw library
	Goal     string  `json:"goal,omitempty"`
}

// goals are the targets the project set for some figures, by name and unit.
var goals = map[string]string{
	"AttestationPropagation p99-ms": "ratio ≤ 1.5",
	"AttestationVerify att/s":       "ratio ≥ 0.7",
	"FloodedPropagation p99-ms":     "ratio ≤ 2",
	"ClaimGrant ns/op":              "ratio ≤ 2",
	"ReserveRelease ns/op":          "ratio ≤ 2",
	"ChatCompletion added-p50-ms":   "< 2 ms",
	"SessionTask added-p50-ms":      "< 2 ms",
	// The chat endpoint against the same miners driven straight over the
	// session protocol, and demand that comes and goes.
	"CompletionsPerSecond/miners=5/clients=16 completions/s":  "ratio ≥ 0.7",
	"CompletionsPerSecond/miners=5/clients=64 completions/s":  "ratio ≥ 0.7",
	"CompletionsPerSecond/miners=20/clients=16 completions/s": "ratio ≥ 0.7",
	"CompletionsPerSecond/miners=20/clients=64 completions/s": "ratio ≥ 0.7",
	"MixedLoad idle-held-while-waiting-s":                     "= 0",
	"IdleNode rss-MB":                                         "< 60 MB",
	"IdleNode cpu-%core":                                      "< 1%",
	// make testnet-netns: joining from anywhere.
	"Join/plain run-to-available-s": "≤ 10 s",
	"Join/cone run-to-available-s":  "≤ 30 s",
	"Join/sym served-through-relay": "= 1",
	"Join/misfit harmed":            "= 0",
	// make attack: the bounds held under attack.
	"Attack/cross-site cross-site-allowed":      "= 0",
	"Attack/silent-events router-rss-delta-MB":  "< 50 MB",
	"Attack/hoarding honest-reserve-s":          "≤ 10 s",
	"Attack/garbage-frames miner-rss-delta-MB":  "< 30 MB",
	"Attack/full-bootstrap newcomer-admitted":   "= 1",
	"Attack/12-stallers ratio":                  "≤ 2",
	"Attack/50-stallers ratio":                  "≤ 2",
	"Attack/record-spam bootstrap-rss-delta-MB": "< 20 MB",
}

// skipped units say nothing about speed that ns/op does not.
var skipped = map[string]bool{"B/op": true, "allocs/op": true, "MB/s": true}

// Report is bench/results.json.
type Report struct {
	Date    string   `json:"date"`
	Commit  string   `json:"commit"`
	Machine string   `json:"machine"`
	Go      string   `json:"go"`
	Figures []Figure `json:"figures"`
	// Merged says which packages' figures a later run put in with
	// -merge, and when: the rest are from Date and Commit.
	Merged []string `json:"merged,omitempty"`
}

var (
	benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)
	measure   = regexp.MustCompile(`([0-9.e+-]+) (\S+)`)
	pkgLine   = regexp.MustCompile(`^pkg: (\S+)`)
	cpuLine   = regexp.MustCompile(`^cpu: (.+)`)
)

func main() {
	out := flag.String("out", "bench", "output `directory`")
	merge := flag.Bool("merge", false, "replace only the figures of the packages on stdin in the directory's results.json, keeping the rest")
	flag.Parse()
	var err error
	if *merge {
		err = runMerge(os.Stdin, *out)
	} else {
		err = run(os.Stdin, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, dir string) error {
	rep, err := parse(in)
	if err != nil {
		return err
	}
	return write(rep, dir)
}

// runMerge puts the figures on in into dir's report in place of those of
// the same packages, keeping the others with their date and commit: one
// suite's run (make testnet-netns) updates the report without rerunning
// every benchmark.
func runMerge(in io.Reader, dir string) error {
	rep, err := parse(in)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if errors.Is(err, os.ErrNotExist) {
		return write(rep, dir)
	}
	if err != nil {
		return err
	}
	var old Report
	if err := json.Unmarshal(raw, &old); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	pkgs := map[string]bool{}
	for _, f := range rep.Figures {
		pkgs[f.Package] = true
	}
	figs := slices.DeleteFunc(old.Figures, func(f Figure) bool { return pkgs[f.Package] })
	old.Figures = append(figs, rep.Figures...)
	sort.SliceStable(old.Figures, func(i, j int) bool { return old.Figures[i].Package < old.Figures[j].Package })
	for p := range pkgs {
		note := fmt.Sprintf("%s: %s, commit %s", shortPkg(p), rep.Date, rep.Commit)
		old.Merged = slices.DeleteFunc(old.Merged, func(m string) bool { return strings.HasPrefix(m, shortPkg(p)+": ") })
		old.Merged = append(old.Merged, note)
	}
	slices.Sort(old.Merged)
	return write(old, dir)
}

// parse reads `go test -bench` output into a report.
func parse(in io.Reader) (Report, error) {
	type key struct{ pkg, name, unit string }
	values := map[key]float64{}
	var order []key
	pkg, cpu := "", "unknown cpu"
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if m := pkgLine.FindStringSubmatch(line); m != nil {
			pkg = m[1]
		}
		if m := cpuLine.FindStringSubmatch(line); m != nil {
			cpu = m[1]
		}
		if m := benchLine.FindStringSubmatch(line); m != nil {
			for _, mm := range measure.FindAllStringSubmatch(m[2], -1) {
				if skipped[mm[2]] {
					continue
				}
				v, err := strconv.ParseFloat(mm[1], 64)
				if err != nil {
					return Report{}, fmt.Errorf("bad figure in %q", line)
				}
				k := key{pkg, strings.TrimPrefix(m[1], "Benchmark"), mm[2]}
				if _, seen := values[k]; !seen {
					order = append(order, k)
				}
				values[k] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Report{}, err
	}
	if len(order) == 0 {
		return Report{}, fmt.Errorf("no benchmark results on stdin")
	}
	rep := Report{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Commit:  gitCommit(),
		Machine: fmt.Sprintf("%s, %d cores, %s/%s", cpu, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH),
		Go:      runtime.Version(),
	}
	for _, k := range order {
		if strings.HasSuffix(k.name, "Baseline") {
			continue
		}
		f := Figure{Package: k.pkg, Name: k.name, Value: values[k], Unit: k.unit, Goal: goals[k.name+" "+k.unit]}
		if base, ok := values[key{k.pkg, k.name + "Baseline", k.unit}]; ok && base > 0 {
			f.Baseline, f.Ratio = base, values[k]/base
		}
		rep.Figures = append(rep.Figures, f)
	}
	sort.SliceStable(rep.Figures, func(i, j int) bool { return rep.Figures[i].Package < rep.Figures[j].Package })
	return rep, nil
}

// write writes the report as dir/results.json and dir/RESULTS.md.
func write(rep Report, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	md := filepath.Join(dir, "RESULTS.md")
	notes, err := handWritten(md)
	if err != nil {
		return err
	}
	return os.WriteFile(md, []byte(markdown(rep)+notes), 0o644)
}

// notesMarker opens the part of RESULTS.md written by hand (what each
// figure means, goals missed and why), which a new report keeps as it is.
const notesMarker = "<!-- Written by hand from here on: not by make bench. -->"

// handWritten is the hand-written part of the report at path, from its
// marker on, or "" if it has none.
func handWritten(path string) (string, error) {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	i := strings.Index(string(old), notesMarker)
	if i < 0 {
		return "", nil
	}
	return "\n" + string(old[i:]), nil
}

func markdown(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark results\n\n%s, commit %s, %s, %s. Written by `make bench`.\n\n", r.Date, r.Commit, r.Machine, r.Go)
	for _, m := range r.Merged {
		fmt.Fprintf(&b, "The figures of %s.\n\n", m)
	}
	b.WriteString("Ratio is the figure over its raw baseline, measured in the same run: 1.00 means no overhead.\n\n")
	b.WriteString("| package | benchmark | figure | baseline | ratio | goal |\n|---|---|---:|---:|---:|---|\n")
	for _, f := range r.Figures {
		base, ratio := "—", "—"
		if f.Baseline > 0 {
			base = format(f.Baseline, f.Unit)
			ratio = fmt.Sprintf("%.2f", f.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", shortPkg(f.Package), f.Name, format(f.Value, f.Unit), base, ratio, f.Goal)
	}
	return b.String()
}

// format writes a figure in its unit; times per operation as people read them.
func format(v float64, unit string) string {
	if unit == "ns/op" {
		return human(v)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}

func human(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.0f ns", ns)
	}
}

func shortPkg(p string) string {
	if i := strings.Index(p, "/ephemera/"); i >= 0 {
		return p[i+len("/ephemera/"):]
	}
	return p
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
