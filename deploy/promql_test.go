package deploy_test

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// A reasonable PromQL tokenizer, enough to tell which metrics and labels a
// dashboard's expressions name: selectors (a metric name, with or without
// {matchers}), the labels of by/without/on/ignoring/group_left/group_right,
// and whether the expression aggregates. Function names, aggregation
// operators, keywords, numbers, durations, ranges and Grafana variables
// ($job, ${job}, $__rate_interval) are not metrics.

type matcher struct{ label, op, value string }

type selector struct {
	metric   string
	matchers []matcher
}

type promQuery struct {
	selectors  []selector
	grouping   []string // labels named in by, without, on, ignoring, group_left, group_right
	aggregates bool     // an aggregation operator appears
	byOnly     bool     // every aggregation that groups does so with by (not without)
}

var aggregations = []string{
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
	"bottomk", "topk", "quantile", "limitk", "limit_ratio",
}

var keywords = []string{
	"by", "without", "on", "ignoring", "group_left", "group_right",
	"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end",
}

var groupingKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

type tokKind int

const (
	tIdent tokKind = iota
	tString
	tNumber
	tVar
	tPunct
	tRange // a whole [...] range or subquery
)

type token struct {
	kind tokKind
	text string
}

func isIdentStart(r rune) bool { return r == '_' || r == ':' || r < 128 && unicode.IsLetter(r) }
func isIdentPart(r rune) bool  { return isIdentStart(r) || r >= '0' && r <= '9' }

func lex(expr string) ([]token, error) {
	rs := []rune(expr)
	var out []token
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '#': // comment to the end of the line
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
		case r == '"' || r == '\'' || r == '`':
			j := i + 1
			var b strings.Builder
			for ; j < len(rs) && rs[j] != r; j++ {
				if rs[j] == '\\' && r != '`' && j+1 < len(rs) {
					j++
				}
				b.WriteRune(rs[j])
			}
			if j == len(rs) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, token{tString, b.String()})
			i = j + 1
		case r == '[':
			j := i + 1
			for j < len(rs) && rs[j] != ']' {
				if rs[j] == '[' || rs[j] == '(' || rs[j] == '{' {
					return nil, fmt.Errorf("unexpected %q inside a range at %d", rs[j], j)
				}
				j++
			}
			if j == len(rs) {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			out = append(out, token{tRange, string(rs[i+1 : j])})
			i = j + 1
		case r == '$':
			j := i + 1
			if j < len(rs) && rs[j] == '{' {
				for j < len(rs) && rs[j] != '}' {
					j++
				}
				if j == len(rs) {
					return nil, fmt.Errorf("unterminated ${ at %d", i)
				}
				j++
			} else {
				for j < len(rs) && isIdentPart(rs[j]) {
					j++
				}
			}
			out = append(out, token{tVar, string(rs[i:j])})
			i = j
		case isIdentStart(r):
			j := i
			for j < len(rs) && isIdentPart(rs[j]) {
				j++
			}
			out = append(out, token{tIdent, string(rs[i:j])})
			i = j
		case r >= '0' && r <= '9' || r == '.' && i+1 < len(rs) && rs[i+1] >= '0' && rs[i+1] <= '9':
			j := i
			for j < len(rs) && (isIdentPart(rs[j]) || rs[j] == '.' ||
				(rs[j] == '+' || rs[j] == '-') && (rs[j-1] == 'e' || rs[j-1] == 'E')) {
				j++
			}
			out = append(out, token{tNumber, string(rs[i:j])})
			i = j
		default:
			for _, op := range []string{"==", "!=", "=~", "!~", ">=", "<="} {
				if strings.HasPrefix(string(rs[i:min(i+2, len(rs))]), op) {
					out = append(out, token{tPunct, op})
					i += 2
					goto next
				}
			}
			if !strings.ContainsRune("(){},=<>+-*/%^@", r) {
				return nil, fmt.Errorf("unexpected %q at %d", r, i)
			}
			out = append(out, token{tPunct, string(r)})
			i++
		next:
		}
	}
	return out, nil
}

// parsePromQL finds the selectors and grouping labels of expr.
func parsePromQL(expr string) (promQuery, error) {
	toks, err := lex(expr)
	if err != nil {
		return promQuery{}, err
	}
	var q promQuery
	q.byOnly = true
	depth := 0
	is := func(i int, kind tokKind, text string) bool {
		return i < len(toks) && toks[i].kind == kind && toks[i].text == text
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tPunct && t.text == "(":
			depth++
		case t.kind == tPunct && t.text == ")":
			if depth--; depth < 0 {
				return q, fmt.Errorf("unbalanced )")
			}
		case t.kind == tPunct && t.text == "}":
			return q, fmt.Errorf("unbalanced }")
		case t.kind == tPunct && t.text == "{": // a selector without a metric name
			ms, next, err := parseMatchers(toks, i)
			if err != nil {
				return q, err
			}
			s := selector{matchers: ms}
			for _, m := range ms {
				if m.label == "__name__" && m.op == "=" {
					s.metric = m.value
				}
			}
			if s.metric == "" {
				return q, fmt.Errorf("a selector with no metric name")
			}
			q.selectors = append(q.selectors, s)
			i = next
		case t.kind == tIdent && slices.Contains(groupingKeywords, t.text):
			if t.text == "without" {
				q.byOnly = false
			}
			if !is(i+1, tPunct, "(") {
				if t.text == "group_left" || t.text == "group_right" {
					continue
				}
				return q, fmt.Errorf("%s without a label list", t.text)
			}
			j := i + 2
			for ; j < len(toks) && !is(j, tPunct, ")"); j++ {
				switch {
				case toks[j].kind == tIdent || toks[j].kind == tString:
					q.grouping = append(q.grouping, toks[j].text)
				case is(j, tPunct, ","):
				default:
					return q, fmt.Errorf("%q in the labels of %s", toks[j].text, t.text)
				}
			}
			if j == len(toks) {
				return q, fmt.Errorf("unterminated labels of %s", t.text)
			}
			i = j
		case t.kind == tIdent && slices.Contains(aggregations, t.text):
			q.aggregates = true
		case t.kind == tIdent && slices.Contains(keywords, strings.ToLower(t.text)):
		case t.kind == tIdent && is(i+1, tPunct, "("): // a function call
		case t.kind == tIdent:
			s := selector{metric: t.text}
			if is(i+1, tPunct, "{") {
				ms, next, err := parseMatchers(toks, i+1)
				if err != nil {
					return q, err
				}
				s.matchers = ms
				i = next
			}
			q.selectors = append(q.selectors, s)
		}
	}
	if depth != 0 {
		return q, fmt.Errorf("unbalanced (")
	}
	return q, nil
}

// parseMatchers reads the matchers of the { at toks[open]; next is the index of its }.
func parseMatchers(toks []token, open int) (ms []matcher, next int, err error) {
	i := open + 1
	for {
		if i < len(toks) && toks[i].kind == tPunct && toks[i].text == "}" {
			return ms, i, nil
		}
		if i+2 >= len(toks) {
			return nil, 0, fmt.Errorf("unterminated {")
		}
		name, op, val := toks[i], toks[i+1], toks[i+2]
		if name.kind != tIdent && name.kind != tString || op.kind != tPunct ||
			!slices.Contains([]string{"=", "!=", "=~", "!~"}, op.text) || val.kind != tString {
			return nil, 0, fmt.Errorf("bad matcher %s %s %s", name.text, op.text, val.text)
		}
		ms = append(ms, matcher{name.text, op.text, val.text})
		i += 3
		if i < len(toks) && toks[i].kind == tPunct && toks[i].text == "," {
			i++
		}
	}
}

// legendLabels are the labels a Grafana legend format names: {{label}}.
func legendLabels(format string) []string {
	var out []string
	for {
		a := strings.Index(format, "{{")
		if a < 0 {
			return out
		}
		b := strings.Index(format[a:], "}}")
		if b < 0 {
			return out
		}
		out = append(out, strings.TrimSpace(format[a+2:a+b]))
		format = format[a+b+2:]
	}
}
