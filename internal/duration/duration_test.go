package duration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/internal/duration"
)

func TestUnmarshalText(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"2m", 2 * time.Minute, true},
		{"1m30s", 90 * time.Second, true},
		{"500ms", 500 * time.Millisecond, true},
		{"0", 0, true},
		{"-1s", -time.Second, true},
		{"", 0, false},
		{"30", 0, false},
		{"soon", 0, false},
		{"1 s", 0, false},
		{"1d", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d := duration.Duration(7 * time.Hour) // must be kept on error
			err := d.UnmarshalText([]byte(tt.in))
			if !tt.ok {
				if err == nil {
					t.Fatalf("UnmarshalText(%q) = nil, want an error", tt.in)
				}
				if !strings.Contains(err.Error(), "30s") || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Errorf("error %q should quote the input and give an example", err)
				}
				if d.Std() != 7*time.Hour {
					t.Errorf("failed UnmarshalText changed the value to %s", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalText(%q) = %v", tt.in, err)
			}
			if d.Std() != tt.want {
				t.Errorf("UnmarshalText(%q) = %s, want %s", tt.in, d.Std(), tt.want)
			}
		})
	}
}

func TestMarshalTextRoundTrip(t *testing.T) {
	for _, v := range []time.Duration{0, time.Nanosecond, 250 * time.Millisecond, 30 * time.Second, 90 * time.Second, 26*time.Hour + 3*time.Minute, -5 * time.Second} {
		d := duration.Duration(v)
		b, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != v.String() || d.String() != v.String() {
			t.Errorf("MarshalText(%v) = %q, String = %q, want %q", v, b, d.String(), v.String())
		}
		var back duration.Duration
		if err := back.UnmarshalText(b); err != nil {
			t.Fatalf("UnmarshalText(%q) = %v", b, err)
		}
		if back != d {
			t.Errorf("round trip %v -> %q -> %v", d, b, back)
		}
	}
}
