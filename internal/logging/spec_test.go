package logging

import (
	"log/slog"
	"strings"
	"testing"
)

func TestLogParseSpec(t *testing.T) {
	tests := []struct {
		in, canonical string
		levels        map[string]slog.Level // module → level; "" is a logger without one
	}{
		{"info", "info", map[string]slog.Level{"": slog.LevelInfo, "p2p": slog.LevelInfo, "libp2p": slog.LevelWarn}},
		{"DEBUG", "debug", map[string]slog.Level{"": slog.LevelDebug, "gossip": slog.LevelDebug, "libp2p.swarm2": slog.LevelWarn}},
		{"error", "error", map[string]slog.Level{"miner": slog.LevelError, "libp2p": slog.LevelError}},
		{"info,p2p=debug,gossip=warn", "info,gossip=warn,p2p=debug", map[string]slog.Level{
			"": slog.LevelInfo, "p2p": slog.LevelDebug, "gossip": slog.LevelWarn, "miner": slog.LevelInfo,
		}},
		{" p2p = debug , warn ", "warn,p2p=debug", map[string]slog.Level{"": slog.LevelWarn, "p2p": slog.LevelDebug, "P2P": slog.LevelDebug}},
		{"p2p=debug", "info,p2p=debug", map[string]slog.Level{"": slog.LevelInfo, "p2p": slog.LevelDebug}},
		{"info,p2p=debug,p2p.bootstrap=error", "info,p2p=debug,p2p.bootstrap=error", map[string]slog.Level{
			"p2p.dial": slog.LevelDebug, "p2p.bootstrap": slog.LevelError, "p2p.bootstrap.x": slog.LevelError, "p2px": slog.LevelInfo,
		}},
		{"warn,libp2p=debug,libp2p.swarm2=info", "warn,libp2p=debug,libp2p.swarm2=info", map[string]slog.Level{
			"": slog.LevelWarn, "libp2p": slog.LevelDebug, "libp2p.dht": slog.LevelDebug, "libp2p.swarm2": slog.LevelInfo,
			"libp2p.dht/RtRefreshManager": slog.LevelDebug,
		}},
		{"debug,libp2p.dht=info", "debug,libp2p.dht=info", map[string]slog.Level{
			"libp2p.dht/RtRefreshManager": slog.LevelInfo, "libp2p.swarm2": slog.LevelWarn, "store": slog.LevelDebug,
		}},
		{"info,weird-name_2/x=error", "info,weird-name_2/x=error", map[string]slog.Level{"weird-name_2/x": slog.LevelError}},
		{"info+2", "info+2", map[string]slog.Level{"": slog.LevelInfo + 2}},
	}
	for _, tt := range tests {
		s, err := ParseSpec(tt.in)
		if err != nil {
			t.Errorf("ParseSpec(%q) = %v", tt.in, err)
			continue
		}
		if got := s.String(); got != tt.canonical {
			t.Errorf("ParseSpec(%q).String() = %q, want %q", tt.in, got, tt.canonical)
		}
		if again, err := ParseSpec(s.String()); err != nil || again.String() != s.String() {
			t.Errorf("ParseSpec(%q) does not round-trip: %v, %v", s.String(), again, err)
		}
		for m, want := range tt.levels {
			if got := s.Level(m); got != want {
				t.Errorf("ParseSpec(%q).Level(%q) = %v, want %v", tt.in, m, got, want)
			}
		}
	}
}

func TestLogParseSpecErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"loud", `"loud" is not a level`},
		{"trace", `"trace"`},
		{"p2p", `"p2p" is not a level`},
		{"info,p2p=loud", `"p2p=loud": "loud" is not a level`},
		{"info,p2p=", `"p2p=": "" is not a level`},
		{"info,=debug", "no module name"},
		{"info,p 2p=debug", `"p 2p"`},
		{"info,p2p..x=debug", "empty part"},
		{"info,,p2p=debug", "empty entry"},
		{"info,", "empty entry"},
		{"info,debug", "two default levels"},
		{"p2p=debug,P2P=info", "p2p is given twice"},
		{"info,p2p=debug=x", `"debug=x" is not a level`},
	}
	for _, tt := range tests {
		_, err := ParseSpec(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseSpec(%q) = %v, want an error with %q", tt.in, err, tt.want)
		}
	}
}

func TestLogSpecMin(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"info":                  slog.LevelInfo,
		"error":                 slog.LevelError,
		"warn,p2p=debug":        slog.LevelDebug,
		"error,libp2p=info":     slog.LevelInfo,
		"error,libp2p.dht=warn": slog.LevelWarn,
	} {
		s, err := ParseSpec(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Min(); got != want {
			t.Errorf("ParseSpec(%q).Min() = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[string]slog.Level{
		"info":                             slog.LevelWarn,
		"debug":                            slog.LevelWarn,
		"error":                            slog.LevelError,
		"error,libp2p.dht=debug":           slog.LevelDebug,
		"info,libp2p=error,libp2p.x=info":  slog.LevelInfo,
		"debug,libp2px=debug":              slog.LevelWarn,
		"info,libp2p=error,p2p=debug":      slog.LevelError,
		"info,libp2p=debug,libp2p.y=error": slog.LevelDebug,
	} {
		s, err := ParseSpec(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.libp2pMin(); got != want {
			t.Errorf("ParseSpec(%q).libp2pMin() = %v, want %v", in, got, want)
		}
	}
}

func TestLogZeroSpecIsInfo(t *testing.T) {
	var s Spec
	if s.Level("anything") != slog.LevelInfo || s.Level("libp2p") != slog.LevelWarn || s.String() != "info" {
		t.Errorf("zero Spec: %s, anything at %v, libp2p at %v", s, s.Level("anything"), s.Level("libp2p"))
	}
}
