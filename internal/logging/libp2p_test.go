package logging

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
)

// The loggers of the two libraries go-libp2p logs through, as its packages
// make them. They must not log before RouteLibp2p: a gologshim logger keeps
// the handler it finds on its first message.
var (
	shimLog = gologshim.Logger("ephemera-test-shim")
	zapLog  = golog.Logger("ephemera-test-zap")
)

// Not parallel: the routing is process-wide.
func TestLogRouteLibp2p(t *testing.T) {
	t.Cleanup(func() { RouteLibp2p(nil) })
	msgs := func(buf *bytes.Buffer) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, l := range lines(t, buf) {
			out[l["msg"].(string)] = l
		}
		buf.Reset()
		return out
	}
	logAll := func() {
		shimLog.Debug("shim debug")
		shimLog.Info("shim info")
		shimLog.With("peer", "P1").Warn("shim warn", "err", errors.New("boom"))
		zapLog.Debugw("zap debug")
		zapLog.Infow("zap info")
		zapLog.Warnw("zap warn", "peer", "P2", "n", 3)
		zapLog.Errorf("zap error %d", 7)
	}

	// By default the family is at warn, even with the node at debug.
	var buf bytes.Buffer
	RouteLibp2p(New(&buf, true, mustSpec(t, "debug")))
	logAll()
	got := msgs(&buf)
	if len(got) != 3 || got["shim warn"] == nil || got["zap warn"] == nil || got["zap error 7"] == nil {
		t.Fatalf("at the default level, libp2p logged %v", got)
	}
	if l := got["shim warn"]; l["module"] != "libp2p.ephemera-test-shim" || l["peer"] != "P1" || l["err"] != "boom" || l["level"] != "WARN" || l["logger"] != nil {
		t.Errorf("gologshim line: %v", l)
	}
	if l := got["zap warn"]; l["module"] != "libp2p.ephemera-test-zap" || l["peer"] != "P2" || l["n"] != 3.0 || l["level"] != "WARN" {
		t.Errorf("go-log line: %v", l)
	}
	if l := got["zap error 7"]; l["level"] != "ERROR" {
		t.Errorf("go-log error line: %v", l)
	}

	// libp2p=debug lets everything through; another route replaces the first.
	RouteLibp2p(New(&buf, true, mustSpec(t, "warn,libp2p=debug")))
	logAll()
	if got := msgs(&buf); len(got) != 7 {
		t.Errorf("with libp2p=debug, libp2p logged %d lines: %v", len(got), got)
	}

	// One subsystem at info, the rest at error.
	RouteLibp2p(New(&buf, false, mustSpec(t, "info,libp2p=error,libp2p.ephemera-test-zap=info")))
	logAll()
	out := buf.String()
	buf.Reset()
	for _, want := range []string{"zap info", "zap warn", "zap error 7"} {
		if !bytes.Contains([]byte(out), []byte(want)) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"shim", "zap debug"} {
		if bytes.Contains([]byte(out), []byte(unwanted)) {
			t.Errorf("%q in\n%s", unwanted, out)
		}
	}

	// nil discards.
	RouteLibp2p(nil)
	logAll()
	if buf.Len() != 0 {
		t.Errorf("logged without a route: %s", buf.String())
	}
	if shimLog.Enabled(t.Context(), slog.LevelError) {
		t.Error("gologshim logger enabled without a route")
	}
}

func TestRoutineLibp2pWarnings(t *testing.T) {
	for _, tt := range []struct {
		sub, msg, rest string
		want           bool
	}{
		{"dht/RtRefreshManager", "failed when refreshing routing table", "failed to query for self, err=failed to find any peer in table", true},
		{"dht/RtRefreshManager", "failed when refreshing routing tablefailed to query for self, err=failed to find any peer in table", "", true},
		{"dht/RtRefreshManager", "failed when refreshing routing table", "context deadline exceeded", false},
		{"dht/RtRefreshManager", "failed when refreshing routing table", "failed to query for self, err=context canceled", true},
		{"net/identify", "failed to identify peer", "P multistream mux select protocol failed: protocols not supported: [/ipfs/id/1.0.0]", true},
		{"net/identify", "failed to identify peer", "P failed to open new stream: connection closed (remote)", true},
		{"net/identify", "failed to identify peer", "P stream reset", false},
		{"net/identify", "failed to identify peer", "P connection reset", true},
		{"net/identify", "error reading identify message", "Application error 0x0 (remote)", true},
		{"net/identify", "error reading identify message", "unexpected EOF", false},
		{"net/swarm", "failed to identify peer", "protocols not supported", false},
	} {
		if got := routine(tt.sub, tt.msg, tt.rest); got != tt.want {
			t.Errorf("routine(%q, %q, %q) = %v, want %v", tt.sub, tt.msg, tt.rest, got, tt.want)
		}
	}
}
