package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLogFlagErrors(t *testing.T) {
	t.Parallel()
	newHome := func(t *testing.T) string { return filepath.Join(t.TempDir(), "home") }
	cases := []struct {
		name      string
		args, env []string
		wants     []string
		initFirst bool
	}{
		{name: "bad module level", args: []string{"init", "--log-level", "info,p2p=loud"}, wants: []string{"log.level", "p2p=loud", "loud"}},
		{name: "bad default level", args: []string{"init", "--log-level", "bogus,p2p=debug"}, wants: []string{"log.level", "bogus"}},
		{name: "bad syntax from env", args: []string{"run"}, env: []string{"EPHEMERA_LOG_LEVEL=info,p2p"}, wants: []string{"log.level", "p2p"}, initFirst: true},
		{name: "json against text", args: []string{"init", "--log-json", "--log-format", "text"}, wants: []string{"--log-json", "--log-format text"}},
		{name: "bad json env", args: []string{"init"}, env: []string{"EPHEMERA_LOG_JSON=maybe"}, wants: []string{"EPHEMERA_LOG_JSON", "maybe"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			home := newHome(t)
			if tc.initFirst {
				home = initHome(t)
			}
			args := append(append([]string{}, tc.args...), "--home", home)
			out, errOut, code := runEnv(t, tc.env, args...)
			if code == 0 {
				t.Fatalf("ephemera %s: exit 0, stdout:\n%s", strings.Join(args, " "), out)
			}
			assertOneLine(t, errOut, tc.wants...)
		})
	}
}

// A node run with --log-json and per-module levels writes JSON lines with
// the module and the fields, and warns of a module no logger belongs to.
func TestLogJSON(t *testing.T) {
	t.Parallel()
	home := initHome(t, "--roles", "router")
	p, _ := startNode(t, home, "--log-json", "--log-level", "info,sessions=debug,nosuch=debug")
	sendSignal(t, p, syscall.SIGTERM)
	if code := waitExit(t, p, 10*time.Second); code != 0 {
		t.Fatalf("after SIGTERM: exit %d:\n%s", code, p.log())
	}
	var started, unused, stopped bool
	for l := range strings.SplitSeq(strings.TrimSpace(p.log()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", l, err)
		}
		if m["time"] == nil || m["level"] == nil || m["msg"] == nil {
			t.Errorf("line without time, level or msg: %s", l)
		}
		if mod, _ := m["module"].(string); strings.HasPrefix(mod, "libp2p") && m["level"] != "WARN" && m["level"] != "ERROR" {
			t.Errorf("libp2p below warn: %s", l)
		}
		switch m["msg"] {
		case "node started":
			started = m["self"] != nil && m["module"] == nil
		case "log.level sets the level of a module this node has no logger for; it has no effect":
			unused = m["name"] == "nosuch" && m["level"] == "WARN"
		case "stopped":
			stopped = true
		}
	}
	if !started || !unused || !stopped {
		t.Errorf("node started with self: %v, warned of nosuch: %v, stopped: %v:\n%s", started, unused, stopped, p.log())
	}
}
