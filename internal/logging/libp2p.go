package logging

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap/zapcore"
)

// go-libp2p logs through two libraries, both process-wide: go-libp2p itself
// and gossipsub through gologshim (slog loggers that take their handler on
// their first message), and the DHT and its helpers through go-log v2 (zap
// loggers, one level per subsystem). RouteLibp2p points both at a Handler,
// each subsystem as module "libp2p.<subsystem>".

// route is where the libp2p family's logs go.
type route struct {
	h    *Handler
	min  slog.Level // the lowest level of any module of the family
	mods sync.Map   // subsystem → *Handler with its module attribute
}

// module is r's handler of one subsystem ("" for the family itself).
func (r *route) module(sub string) *Handler {
	if v, ok := r.mods.Load(sub); ok {
		return v.(*Handler)
	}
	name := Libp2p
	if sub != "" {
		name += "." + sub
	}
	v, _ := r.mods.LoadOrStore(sub, r.h.WithAttrs([]slog.Attr{slog.String(ModuleKey, name)}))
	return v.(*Handler)
}

var (
	current     atomic.Pointer[route]
	installOnce sync.Once
)

// RouteLibp2p sends go-libp2p's logs (and those of the go-log v2 users among
// its dependencies: the DHT, its routing table) to h, each as module
// "libp2p.<subsystem>" at the level h's spec gives it: warn or above unless
// the spec names libp2p or one of its subsystems (libp2p=debug,
// libp2p.dht=info, ...). Both libraries are process-wide: the last call
// wins, and nil discards them. It must come before the first libp2p log of
// the process, that is before the first host is built: a gologshim logger
// keeps the handler it found on its first message. It sets go-log's levels,
// so GOLOG_LOG_LEVEL no longer applies.
func RouteLibp2p(h *Handler) {
	if h == nil {
		current.Store(nil)
		return
	}
	r := &route{h: h, min: h.Spec().libp2pMin()}
	current.Store(r)
	installOnce.Do(func() {
		gologshim.SetDefaultHandler(&shim{})
		golog.SetPrimaryCore(zapCore{})
	})
	// go-log filters each subsystem at its own level before our core sees
	// a message: let through what any module of the family may want.
	_ = golog.SetLogLevel("*", zapLevelName(r.min))
}

// shim is the slog handler gologshim's loggers get. gologshim adds the
// subsystem as attribute "logger" first; shim turns it into the module and
// looks the route up on each call, so that RouteLibp2p may change it.
type shim struct {
	sub     string
	grouped bool
	ops     []func(slog.Handler) slog.Handler // WithAttrs and WithGroup after the subsystem, in order
	cache   atomic.Pointer[shimCache]
}

type shimCache struct {
	r *route
	h slog.Handler
}

// resolve is the handler for the current route, nil if there is none.
func (s *shim) resolve() slog.Handler {
	r := current.Load()
	if r == nil {
		return nil
	}
	if c := s.cache.Load(); c != nil && c.r == r {
		return c.h
	}
	var h slog.Handler = r.module(s.sub)
	for _, op := range s.ops {
		h = op(h)
	}
	s.cache.Store(&shimCache{r: r, h: h})
	return h
}

func (s *shim) Enabled(ctx context.Context, level slog.Level) bool {
	h := s.resolve()
	return h != nil && h.Enabled(ctx, level)
}

func (s *shim) Handle(ctx context.Context, r slog.Record) error {
	h := s.resolve()
	if h == nil {
		return nil
	}
	if r.Level > slog.LevelDebug && routine(s.sub, r.Message, recordText(r)) {
		if !h.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handle(ctx, r)
}

// routine reports whether a go-libp2p warning is routine for an Ephemera
// node, and so only worth a debug line:
//   - the DHT's routing-table refresh finding no peer, which every node
//     meets before its bootstrapper has connected (the bootstrapper says
//     itself when a bootstrap peer can't be reached), or cut short by the
//     node stopping;
//   - identify failing with a peer that speaks no identify or hangs up at
//     once: the dial-back hosts of AutoNAT, which connect only to test an
//     address, and any peer that shuts down.
func routine(sub, msg, rest string) bool {
	switch {
	case sub == "dht/RtRefreshManager" && strings.HasPrefix(msg, "failed when refreshing routing table"):
		return strings.Contains(msg+rest, "failed to find any peer in table") || strings.Contains(msg+rest, "context canceled")
	case sub == "net/identify" && msg == "failed to identify peer":
		return strings.Contains(rest, "protocols not supported") || strings.Contains(rest, "connection closed") ||
			strings.Contains(rest, "connection reset")
	case sub == "net/identify" && strings.HasPrefix(msg, "error reading identify message"):
		// A peer that shuts down closes the stream under it.
		return strings.Contains(msg+rest, "Application error 0x0") || strings.Contains(msg+rest, "connection reset")
	}
	return false
}

// recordText is a record's attributes as text, for routine's matching.
func recordText(r slog.Record) string {
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(a.Value.String())
		b.WriteByte(' ')
		return true
	})
	return b.String()
}

func (s *shim) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &shim{sub: s.sub, grouped: s.grouped, ops: slices.Clip(s.ops)}
	rest := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		if a.Key == "logger" && !s.grouped && len(s.ops) == 0 {
			n.sub = a.Value.String()
			continue
		}
		rest = append(rest, a)
	}
	if len(rest) > 0 {
		n.ops = append(n.ops, func(h slog.Handler) slog.Handler { return h.WithAttrs(rest) })
	}
	return n
}

func (s *shim) WithGroup(name string) slog.Handler {
	if name == "" {
		return s
	}
	return &shim{sub: s.sub, grouped: true,
		ops: append(slices.Clip(s.ops), func(h slog.Handler) slog.Handler { return h.WithGroup(name) })}
}

// zapCore is go-log's primary core: it hands each entry to the route, as
// module "libp2p.<logger name>".
type zapCore struct{ fields []zapcore.Field }

// Enabled is true at every level: zap checks a new logger's level against
// its core's once, when the logger is made, and complains if the core is
// stricter. go-log's per-subsystem levels filter first; Check decides.
func (c zapCore) Enabled(zapcore.Level) bool { return true }

func (c zapCore) With(fields []zapcore.Field) zapcore.Core {
	return zapCore{fields: append(slices.Clip(c.fields), fields...)}
}

func (c zapCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	r := current.Load()
	if r != nil && r.module(e.LoggerName).Enabled(context.Background(), zapToSlog(e.Level)) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c zapCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := current.Load()
	if r == nil {
		return nil
	}
	rec := slog.NewRecord(e.Time, zapToSlog(e.Level), e.Message, e.Caller.PC)
	rec.AddAttrs(zapAttrs(c.fields)...)
	rec.AddAttrs(zapAttrs(fields)...)
	h := r.module(e.LoggerName)
	if rec.Level > slog.LevelDebug && routine(e.LoggerName, e.Message, recordText(rec)) {
		if !h.Enabled(context.Background(), slog.LevelDebug) {
			return nil
		}
		rec.Level = slog.LevelDebug
	}
	return h.Handle(context.Background(), rec)
}

func (c zapCore) Sync() error { return nil }

func zapToSlog(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// zapLevelName is the lowest go-log level whose messages may be at l or above.
func zapLevelName(l slog.Level) string {
	switch {
	case l <= slog.LevelDebug:
		return "debug"
	case l <= slog.LevelInfo:
		return "info"
	case l <= slog.LevelWarn:
		return "warn"
	default:
		return "error"
	}
}

// zapAttrs converts zap fields, in order.
func zapAttrs(fields []zapcore.Field) []slog.Attr {
	var out []slog.Attr
	for _, f := range fields {
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
			out = append(out, slog.Any(k, enc.Fields[k]))
		}
	}
	return out
}
