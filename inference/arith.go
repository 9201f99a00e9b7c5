package inference

import (
	"errors"
	"math/big"
	"strings"
	"unicode"
)

// The arithmetic the built-in engine answers: integers and decimals with
// + - * / and parentheses, in a few spellings ("6 times 7", "10 divided by
// 4"), after an optional "What is", "Compute" or the like. It is a small
// recursive-descent parser over exact rationals, so 1 / 3 * 3 is 1 and no
// input can overflow; nothing is ever evaluated as code.

// maxExprLen bounds the expressions parsed, which bounds the recursion depth
// and the size of the numbers.
const maxExprLen = 256

var (
	errNotArithmetic = errors.New("not arithmetic")
	errDivByZero     = errors.New("division by zero")
)

var exprPrefixes = []string{
	"what is", "what's", "whats", "how much is", "compute", "calculate", "evaluate", "solve",
}

// evalPrompt evaluates a prompt such as "What is 6 times 7?" and returns the
// result as text: an integer, or a decimal with up to 6 digits.
// errNotArithmetic means the prompt is something else.
func evalPrompt(prompt string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(prompt))
	if len(s) > maxExprLen {
		return "", errNotArithmetic
	}
	for _, p := range exprPrefixes {
		if rest, ok := strings.CutPrefix(s, p); ok {
			s = strings.TrimPrefix(strings.TrimSpace(rest), ":")
			break
		}
	}
	s = strings.TrimRight(strings.TrimSpace(s), "?.!= ")
	toks, err := tokenize(s)
	if err != nil {
		return "", err
	}
	p := &parser{toks: toks}
	v, err := p.expr()
	if err != nil {
		return "", err
	}
	// A lone number is not a question worth answering as arithmetic.
	if p.pos != len(p.toks) || p.binops == 0 {
		return "", errNotArithmetic
	}
	return formatRat(v), nil
}

func formatRat(v *big.Rat) string {
	if v.IsInt() {
		return v.Num().String()
	}
	s := strings.TrimRight(v.FloatString(6), "0")
	s = strings.TrimSuffix(s, ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

type token struct {
	op  byte     // one of + - * / ( ), or 0 for a number
	num *big.Rat // when op == 0
}

// tokenize turns an expression into tokens; any word or symbol it does not
// know makes the text not arithmetic.
func tokenize(s string) ([]token, error) {
	var toks []token
	rs := []rune(s)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r >= '0' && r <= '9':
			j := i
			for j < len(rs) && (rs[j] >= '0' && rs[j] <= '9' || rs[j] == '.') {
				j++
			}
			lit := string(rs[i:j])
			if strings.Count(lit, ".") > 1 || strings.HasSuffix(lit, ".") {
				return nil, errNotArithmetic
			}
			n, ok := new(big.Rat).SetString(lit)
			if !ok {
				return nil, errNotArithmetic
			}
			toks = append(toks, token{num: n})
			i = j
		case strings.ContainsRune("+-*/()", r):
			toks = append(toks, token{op: byte(r)})
			i++
		case r == '−': // the minus sign
			toks = append(toks, token{op: '-'})
			i++
		case r == '×':
			toks = append(toks, token{op: '*'})
			i++
		case r == '÷':
			toks = append(toks, token{op: '/'})
			i++
		case unicode.IsLetter(r):
			j := i
			for j < len(rs) && unicode.IsLetter(rs[j]) {
				j++
			}
			word := string(rs[i:j])
			i = j
			var op byte
			switch word {
			case "plus":
				op = '+'
			case "minus":
				op = '-'
			case "times", "x":
				op = '*'
			case "over":
				op = '/'
			case "multiplied", "divided":
				// Only with "by": "multiplied by", "divided by".
				k := i
				for k < len(rs) && unicode.IsSpace(rs[k]) {
					k++
				}
				if k+2 > len(rs) || string(rs[k:k+2]) != "by" || (k+2 < len(rs) && unicode.IsLetter(rs[k+2])) {
					return nil, errNotArithmetic
				}
				i = k + 2
				op = '*'
				if word == "divided" {
					op = '/'
				}
			default:
				return nil, errNotArithmetic
			}
			toks = append(toks, token{op: op})
		default:
			return nil, errNotArithmetic
		}
	}
	return toks, nil
}

// parser: expr = term {("+"|"-") term}; term = factor {("*"|"/") factor};
// factor = ("+"|"-") factor | number | "(" expr ")".
type parser struct {
	toks   []token
	pos    int
	binops int // binary operators seen
}

// peek is the next token's operator; 0 (a number's) at the end, which ends
// every loop below.
func (p *parser) peek() byte {
	if p.pos < len(p.toks) {
		return p.toks[p.pos].op
	}
	return 0
}

// expr is a sum of terms, and a term a product of factors.
func (p *parser) expr() (*big.Rat, error) { return p.chain("+-", p.term) }
func (p *parser) term() (*big.Rat, error) { return p.chain("*/", p.factor) }

// chain parses operands joined, left to right, by the operators in ops.
func (p *parser) chain(ops string, operand func() (*big.Rat, error)) (*big.Rat, error) {
	v, err := operand()
	if err != nil {
		return nil, err
	}
	for op := p.peek(); op != 0 && strings.IndexByte(ops, op) >= 0; op = p.peek() {
		p.pos++
		p.binops++
		w, err := operand()
		if err != nil {
			return nil, err
		}
		switch op {
		case '+':
			v.Add(v, w)
		case '-':
			v.Sub(v, w)
		case '*':
			v.Mul(v, w)
		case '/':
			if w.Sign() == 0 {
				return nil, errDivByZero
			}
			v.Quo(v, w)
		}
	}
	return v, nil
}

func (p *parser) factor() (*big.Rat, error) {
	if p.pos >= len(p.toks) {
		return nil, errNotArithmetic
	}
	t := p.toks[p.pos]
	p.pos++
	switch t.op {
	case 0:
		return new(big.Rat).Set(t.num), nil
	case '+', '-':
		v, err := p.factor()
		if err != nil {
			return nil, err
		}
		if t.op == '-' {
			v.Neg(v)
		}
		return v, nil
	case '(':
		v, err := p.expr()
		if err != nil {
			return nil, err
		}
		if p.pos >= len(p.toks) || p.toks[p.pos].op != ')' {
			return nil, errNotArithmetic
		}
		p.pos++
		return v, nil
	}
	return nil, errNotArithmetic
}
