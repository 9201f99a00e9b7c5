package attack

import (
	"fmt"
	"io"
	"strings"
)

// Print writes a result's figures and checks.
func Print(w io.Writer, r *Result) {
	for _, f := range r.Figures {
		fmt.Fprintf(w, "  %-28s %10.2f %s\n", f.Name, f.Value, f.Unit)
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s: %s\n", mark, c.Bound, c.Detail)
	}
}

// Bench is the results in Go's benchmark format, one line per figure, for
// the report (cmd/benchreport): BenchmarkAttack/<attack> 1 <value> <name>.
func Bench(results []*Result) string {
	var b strings.Builder
	b.WriteString("pkg: github.com/ephemera-network/ephemera/testnet/attack\n")
	for _, r := range results {
		for _, f := range r.Figures {
			fmt.Fprintf(&b, "BenchmarkAttack/%s\t1\t%g %s\n", r.Attack, f.Value, f.Name)
		}
	}
	return b.String()
}
