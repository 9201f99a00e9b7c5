package testkit

import (
	"bytes"
	"strings"
	"sync"
)

// LogBuffer is a log sink that a node's goroutines write while the test
// reads it.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Count is how many times s was written.
func (l *LogBuffer) Count(s string) int { return strings.Count(l.String(), s) }
