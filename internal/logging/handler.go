package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Handler wraps a slog.Handler with the levels of a Spec: a logger's level
// is that of the module its "module" attribute names. The module is noted
// when the attribute is added (logger.With("module", ...)), so Enabled is a
// comparison: a disabled call costs nothing more than with a plain handler.
// A "module" attribute inside a group, or on one record only, names no
// module.
type Handler struct {
	inner   slog.Handler
	shared  *shared
	level   slog.Level
	grouped bool // WithGroup was called: later attributes are not top level
}

// shared is what every handler derived from one New has in common.
type shared struct {
	spec Spec
	seen sync.Map // module name → struct{}: the modules loggers were made for
}

// NewHandler wraps inner, which must let through every level spec allows
// (spec.Min() and up), with spec's levels.
func NewHandler(inner slog.Handler, spec Spec) *Handler {
	return &Handler{inner: inner, shared: &shared{spec: spec}, level: spec.Default()}
}

// New makes a handler writing to w, as JSON or else as slog's text format,
// with spec's levels.
func New(w io.Writer, json bool, spec Spec) *Handler {
	opts := &slog.HandlerOptions{Level: spec.Min()}
	if json {
		return NewHandler(slog.NewJSONHandler(w, opts), spec)
	}
	return NewHandler(slog.NewTextHandler(w, opts), spec)
}

// Spec is the spec the handler was made with.
func (h *Handler) Spec() Spec { return h.shared.spec }

// Enabled reports whether the logger's module logs at level.
func (h *Handler) Enabled(_ context.Context, level slog.Level) bool { return level >= h.level }

// Handle writes r if its level is enabled.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.level {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs adds attrs; a top-level "module" among them sets the level.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	c := *h
	if !h.grouped {
		for _, a := range attrs {
			if a.Key == ModuleKey {
				m := strings.ToLower(a.Value.Resolve().String())
				c.level = h.shared.spec.Level(m)
				h.shared.seen.LoadOrStore(m, struct{}{})
			}
		}
	}
	c.inner = h.inner.WithAttrs(attrs)
	return &c
}

// WithGroup opens a group; attributes added after it name no module.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.grouped = true
	c.inner = h.inner.WithGroup(name)
	return &c
}

// Unused are the modules the spec sets a level for that no logger derived
// from this handler has been made for so far, sorted: most likely typos,
// once the node has started. The libp2p family is left out: its loggers
// are made on their first message.
func (h *Handler) Unused() []string {
	var out []string
	for _, m := range h.shared.spec.Modules() {
		if inLibp2p(m) {
			continue
		}
		used := false
		h.shared.seen.Range(func(k, _ any) bool {
			name := k.(string)
			rest, ok := strings.CutPrefix(name, m)
			used = ok && (rest == "" || rest[0] == '.' || rest[0] == '/')
			return !used
		})
		if !used {
			out = append(out, m)
		}
	}
	return out
}

// Opt is the attribute key=value, or, when value is empty, an empty
// attribute, which handlers leave out: for a field that applies to some
// lines of a kind only, such as the user session of a reservation.
func Opt(key, value string) slog.Attr {
	if value == "" {
		return slog.Attr{}
	}
	return slog.String(key, value)
}
