package openaiwire

import (
	"strings"
	"unicode"
)

// Clip makes s one printable line of at most n runes, and an ellipsis when
// it was longer, so that what a peer sends can neither break a log line or
// a terminal nor fill it. Every run of spaces, line breaks and other
// unprintable characters becomes one space, and the line is trimmed;
// invalid UTF-8 reads as U+FFFD. Only as much of s is read as the line
// needs, however large s is.
func Clip(s string, n int) string {
	var b strings.Builder
	runes := 0
	gap := false // a space is due before the next printable rune
	for _, r := range s {
		// The only printable space is ' ': every other is unprintable.
		if r == ' ' || !unicode.IsPrint(r) {
			gap = runes > 0
			continue
		}
		if gap {
			if runes == n {
				return b.String() + "…"
			}
			b.WriteByte(' ')
			runes++
			gap = false
		}
		if runes == n {
			return b.String() + "…"
		}
		b.WriteRune(r)
		runes++
	}
	return b.String()
}
