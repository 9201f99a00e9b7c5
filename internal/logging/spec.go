// Package logging gives the node's slog loggers a level per module, and
// routes go-libp2p's own logs into the same handler.
//
// Every component's logger carries a "module" attribute (log.With("module",
// "miner")). A level spec sets the default level and, optionally, a level
// for some modules:
//
//	info
//	info,p2p=debug,gossip=warn
//	warn,libp2p=debug,libp2p.swarm2=info
//
// A module name may be dotted: "a.b" is at the level given for "a.b", else
// for "a", else the default. go-libp2p's logs come in as module
// "libp2p.<subsystem>" (see RouteLibp2p), and stay at warn or above unless
// the spec names libp2p or one of its subsystems.
package logging

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
)

// ModuleKey is the attribute naming the module a logger belongs to.
const ModuleKey = "module"

// Libp2p is the module family of go-libp2p's own logs: "libp2p" and every
// "libp2p.<subsystem>".
const Libp2p = "libp2p"

// libp2pFloor is the least level of the libp2p family when the spec does not
// name it: its debug and info chatter is not the node's.
const libp2pFloor = slog.LevelWarn

// Spec is a parsed level spec: a default level and per-module overrides.
// The zero Spec is everything at info.
type Spec struct {
	def     slog.Level
	modules map[string]slog.Level // lower-case module name → level
}

// DefaultSpec is "info".
func DefaultSpec() Spec { return Spec{def: slog.LevelInfo} }

// ParseSpec reads a level spec: comma-separated entries, each a level (the
// default, at most once; info if none) or module=level. Levels are debug,
// info, warn and error, in any case (slog's offsets such as "info+2" too);
// module names are letters, digits and . _ - /, compared in lower case. Any
// module name is accepted: the ones no logger uses have no effect. The error
// names the entry that is wrong.
func ParseSpec(s string) (Spec, error) {
	spec := DefaultSpec()
	if strings.TrimSpace(s) == "" {
		return spec, fmt.Errorf("empty: give a level (debug, info, warn, error), optionally followed by module=level entries")
	}
	haveDefault := ""
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return spec, fmt.Errorf("%q has an empty entry", s)
		}
		module, level, isOverride := strings.Cut(entry, "=")
		if !isOverride {
			l, err := parseLevel(entry)
			if err != nil {
				return spec, fmt.Errorf("%q is not a level (debug, info, warn, error) nor module=level", entry)
			}
			if haveDefault != "" {
				return spec, fmt.Errorf("%q: two default levels, %q and %q; at most one entry may lack module=", s, haveDefault, entry)
			}
			haveDefault, spec.def = entry, l
			continue
		}
		module, level = strings.ToLower(strings.TrimSpace(module)), strings.TrimSpace(level)
		if err := checkModule(module); err != nil {
			return spec, fmt.Errorf("%q: %w", entry, err)
		}
		l, err := parseLevel(level)
		if err != nil {
			return spec, fmt.Errorf("%q: %q is not a level (debug, info, warn, error)", entry, level)
		}
		if _, dup := spec.modules[module]; dup {
			return spec, fmt.Errorf("%q: module %s is given twice", s, module)
		}
		if spec.modules == nil {
			spec.modules = map[string]slog.Level{}
		}
		spec.modules[module] = l
	}
	return spec, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func checkModule(m string) error {
	if m == "" {
		return fmt.Errorf("no module name before =")
	}
	for _, r := range m {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return fmt.Errorf("module name %q has %q; use letters, digits and . _ - /", m, r)
		}
	}
	if strings.HasPrefix(m, ".") || strings.HasSuffix(m, ".") || strings.Contains(m, "..") {
		return fmt.Errorf("module name %q has an empty part", m)
	}
	return nil
}

// Default is the level of a logger without a module.
func (s Spec) Default() slog.Level { return s.def }

// Level is the level of module: the override of the module or of its
// nearest parent ("a" for "a.b"; '/' separates parts too), else the
// default. The libp2p family without an override is at warn or above.
func (s Spec) Level(module string) slog.Level {
	name := strings.ToLower(module)
	for {
		if l, ok := s.modules[name]; ok {
			return l
		}
		i := strings.LastIndexAny(name, "./")
		if i < 0 {
			break
		}
		name = name[:i]
	}
	if name == Libp2p {
		return max(s.def, libp2pFloor)
	}
	return s.def
}

// Min is the lowest level any module is at.
func (s Spec) Min() slog.Level {
	m := min(s.def, s.Level(Libp2p))
	for _, l := range s.modules {
		m = min(m, l)
	}
	return m
}

// libp2pMin is the lowest level of any module of the libp2p family.
func (s Spec) libp2pMin() slog.Level {
	m := s.Level(Libp2p)
	for name, l := range s.modules {
		if inLibp2p(name) {
			m = min(m, l)
		}
	}
	return m
}

func inLibp2p(module string) bool {
	rest, ok := strings.CutPrefix(module, Libp2p)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '/')
}

// Modules are the module names the spec sets a level for, sorted.
func (s Spec) Modules() []string { return slices.Sorted(maps.Keys(s.modules)) }

// String is the spec in the form ParseSpec reads, overrides sorted.
func (s Spec) String() string {
	var b strings.Builder
	b.WriteString(levelName(s.def))
	for _, m := range s.Modules() {
		b.WriteString("," + m + "=" + levelName(s.modules[m]))
	}
	return b.String()
}

func levelName(l slog.Level) string { return strings.ToLower(l.String()) }
