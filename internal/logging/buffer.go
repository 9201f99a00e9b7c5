package logging

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a log sink that many goroutines write while another reads it:
// a test reading what a node logged.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Count is how many times s was written.
func (l *Buffer) Count(s string) int { return strings.Count(l.String(), s) }
