package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every bad flag is refused before anything starts: exit code 2 and one
// line naming the flag.
func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--cycles", "0"}, "--cycles"},
		{[]string{"--cycles", "many"}, "cycles"},
		{[]string{"--oracles", "0"}, "--oracles"},
		{[]string{"--miners", "-1"}, "--miners"},
		{[]string{"--routers", "0"}, "--routers"},
		{[]string{"--miners", "70"}, "at most 60"},
		{[]string{"--converge-within", "0s"}, "--converge-within"},
		{[]string{"--max-kills", "0"}, "--max-kills"},
		{[]string{"--max-down", "-1s"}, "--max-down"},
		{[]string{"--max-pause", "0s"}, "--max-pause"},
		{[]string{"--workers", "0"}, "--workers"},
		{[]string{"--start-timeout", "0s"}, "--start-timeout"},
		{[]string{"--bin", dir}, "--bin"},
		{[]string{"--dir", "/"}, "--dir"},
		{[]string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr %q", code, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q: want one line naming %q", msg, tt.want)
			}
		})
	}
}
