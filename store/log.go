package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// badgerLogger forwards Badger's printf-style log to slog.
type badgerLogger struct {
	log *slog.Logger
}

var _ badger.Logger = badgerLogger{}

func newBadgerLogger(log *slog.Logger) badgerLogger {
	return badgerLogger{log: log.With("module", "badger")}
}

func (l badgerLogger) Errorf(format string, args ...any) {
	l.emit(slog.LevelError, format, args)
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.emit(slog.LevelWarn, format, args)
}

// Infof maps to Debug: Badger reports every compaction and table open at
// info, which would drown the node's own info lines.
func (l badgerLogger) Infof(format string, args ...any) {
	l.emit(slog.LevelDebug, format, args)
}

func (l badgerLogger) Debugf(format string, args ...any) {
	l.emit(slog.LevelDebug, format, args)
}

func (l badgerLogger) emit(level slog.Level, format string, args []any) {
	ctx := context.Background()
	// Check first so disabled levels cost no formatting.
	if !l.log.Enabled(ctx, level) {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	if msg == "" { // Badger sometimes logs a bare "\n" as a separator.
		return
	}
	l.log.Log(ctx, level, msg)
}
