package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func mustSpec(t testing.TB, s string) Spec {
	t.Helper()
	spec, err := ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// lines decodes JSON log output, one object a line.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogModuleLevels(t *testing.T) {
	var buf bytes.Buffer
	root := slog.New(New(&buf, true, mustSpec(t, "info,p2p=debug,gossip=warn")))
	p2p, gossip, miner := root.With("module", "p2p"), root.With("module", "gossip"), root.With("module", "miner")

	root.Debug("root debug")
	root.Info("root info")
	p2p.Debug("p2p debug")
	gossip.Info("gossip info")
	gossip.Warn("gossip warn")
	miner.Debug("miner debug")
	miner.Info("miner info")
	// A logger derived from a module's logger keeps its level.
	p2p.With("peer", "P").Debug("p2p peer debug")
	// A module attribute inside a group, or on one record, names no module.
	root.WithGroup("g").With("module", "p2p").Debug("grouped debug")
	root.Debug("record attr debug", "module", "p2p")

	var got []string
	for _, l := range lines(t, &buf) {
		got = append(got, l["msg"].(string))
	}
	want := []string{"root info", "p2p debug", "gossip warn", "miner info", "p2p peer debug"}
	if !slices.Equal(got, want) {
		t.Errorf("logged %q, want %q", got, want)
	}

	ctx := context.Background()
	for _, c := range []struct {
		l     *slog.Logger
		level slog.Level
		want  bool
	}{
		{root, slog.LevelDebug, false}, {root, slog.LevelInfo, true},
		{p2p, slog.LevelDebug, true}, {gossip, slog.LevelInfo, false}, {gossip, slog.LevelError, true},
		{root.With("module", "libp2p.swarm2"), slog.LevelInfo, false},
	} {
		if got := c.l.Enabled(ctx, c.level); got != c.want {
			t.Errorf("Enabled(%v) of %v = %v", c.level, c.l.Handler(), got)
		}
	}
}

func TestLogJSONShape(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(New(&buf, true, DefaultSpec())).With("module", "router")
	log.Info("reserved", "reservation", "R1", "session", "S1", "miner", "12D3Koo", Opt("absent", ""), "generation", 3)
	got := lines(t, &buf)
	if len(got) != 1 {
		t.Fatalf("%d lines: %s", len(got), buf.String())
	}
	l := got[0]
	for k, want := range map[string]any{
		"level": "INFO", "msg": "reserved", "module": "router",
		"reservation": "R1", "session": "S1", "miner": "12D3Koo", "generation": 3.0,
	} {
		if l[k] != want {
			t.Errorf("%s = %v, want %v in %s", k, l[k], want, buf.String())
		}
	}
	if _, ok := l["time"]; !ok {
		t.Errorf("no time in %s", buf.String())
	}
	if _, ok := l["absent"]; ok || len(l) != 8 {
		t.Errorf("unexpected fields in %s", buf.String())
	}
}

func TestLogText(t *testing.T) {
	var buf bytes.Buffer
	slog.New(New(&buf, false, mustSpec(t, "warn,miner=debug"))).With("module", "miner").Debug("task", "task", "T1", Opt("session", ""))
	out := buf.String()
	for _, want := range []string{"level=DEBUG", "msg=task", "module=miner", "task=T1"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in %q", want, out)
		}
	}
	if strings.Contains(out, "session") {
		t.Errorf("an empty Opt was written: %q", out)
	}
}

// A disabled call costs no allocation: the level is settled when the
// module's logger is made, not on each call.
func TestLogDisabledIsCheap(t *testing.T) {
	log := slog.New(New(&bytes.Buffer{}, true, mustSpec(t, "info,p2p=debug"))).With("module", "miner")
	if n := testing.AllocsPerRun(100, func() { log.Debug("nothing", "k", 1) }); n != 0 {
		t.Errorf("a disabled Debug allocates %v times", n)
	}
}

func TestLogUnused(t *testing.T) {
	h := New(&bytes.Buffer{}, false, mustSpec(t, "info,p2p=debug,sesions=debug,store=warn,libp2p.dht=info,api.x=error"))
	root := slog.New(h)
	root.With("module", "p2p")
	root.With("module", "STORE.badger")
	root.With("module", "api")
	if got, want := h.Unused(), []string{"api.x", "sesions"}; !slices.Equal(got, want) {
		t.Errorf("Unused = %q, want %q", got, want)
	}
}

func BenchmarkDisabled(b *testing.B) {
	log := slog.New(New(&bytes.Buffer{}, true, mustSpec(b, "info,p2p=debug"))).With("module", "miner")
	for b.Loop() {
		log.Debug("nothing", "k", 1)
	}
}
