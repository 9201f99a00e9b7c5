package openaiwire

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 5, ""},
		{"short", 5, "short"},
		{"longer", 5, "longe…"},
		{"  one\r\n\ttwo  \x00three \u00a0 ", 40, "one two three"},
		{"ab cd", 3, "ab …"},
		{"ab cd", 2, "ab…"},
		{"wörld é", 5, "wörld…"},
		{"\x1b[31mred\xff", 40, "[31mred\uFFFD"},
		{"x", 0, "…"},
	} {
		if got := Clip(c.in, c.n); got != c.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// clipReference is Clip written the obvious way, over the whole of s.
func clipReference(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if rs := []rune(s); len(rs) > n {
		return string(rs[:n]) + "…"
	}
	return s
}

func FuzzClip(f *testing.F) {
	for _, s := range []string{"", "a b", " \t\n", "\u2028x\u3000y", "\xff\xfe", strings.Repeat("é ", 50)} {
		f.Add(s, uint8(10))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		got := Clip(s, int(n))
		if want := clipReference(s, int(n)); got != want {
			t.Fatalf("Clip(%q, %d) = %q, the reference %q", s, n, got, want)
		}
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > int(n)+1 {
			t.Fatalf("Clip(%q, %d) = %q", s, n, got)
		}
	})
}
