package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/ephemera-network/ephemera/internal/logging"
	"github.com/ephemera-network/ephemera/node"
)

func runNode(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "--home DIR [flags]", stdout)
	home := homeFlag(fs)
	nf := addNodeFlags(fs)
	set, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	h := node.Home{Dir: *home}
	// A home in use is said before anything else, which would only confuse;
	// LockHome's error names the pid holding it.
	if node.Running(h) {
		l, err := node.LockHome(h)
		if err != nil {
			return err
		}
		l.Release() // the other node stopped meanwhile: carry on
	}
	cfg, err := node.LoadConfig(h.ConfigPath())
	if err != nil {
		return err
	}
	if err := nf.apply(&cfg, set); err != nil {
		return err
	}
	// Hold the log until the node has started: a failed start is one error
	// line, not that line after the chatter of undoing a half-started node.
	held := &heldWriter{w: stderr, buf: new(bytes.Buffer)}
	log, err := newLogger(cfg.Log, held)
	if err != nil {
		return err
	}

	n, err := node.New(h, cfg, node.Options{Version: version, Logger: log})
	if err != nil {
		return err
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	if err := n.Start(context.Background()); err != nil {
		if log.Enabled(context.Background(), slog.LevelDebug) {
			held.release()
		}
		return err
	}
	held.release()
	warnUnusedLevels(log)
	sig := <-signals
	log.Info("stopping", "signal", sig.String(), "timeout", cfg.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Std())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- n.Stop(ctx) }()
	select {
	case err := <-stopped:
		if err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		log.Info("stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop did not finish within %s; exiting anyway", cfg.ShutdownTimeout)
	case sig := <-signals:
		return fmt.Errorf("second %s: stop forced", sig)
	}
}

// newLogger builds the node's slog logger from its log configuration: a
// level per module, and go-libp2p's own logs routed into it as module
// libp2p.<subsystem>.
func newLogger(c node.LogConfig, w io.Writer) (*slog.Logger, error) {
	spec, err := node.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	h := logging.New(w, c.Format == "json", spec)
	logging.RouteLibp2p(h)
	return slog.New(h), nil
}

// warnUnusedLevels warns of the modules log.level names that no logger of
// the started node belongs to: misspelt, or of a role the node does not hold.
func warnUnusedLevels(log *slog.Logger) {
	h, ok := log.Handler().(*logging.Handler)
	if !ok {
		return
	}
	for _, m := range h.Unused() {
		log.Warn("log.level sets the level of a module this node has no logger for; it has no effect", "name", m)
	}
}

// heldWriter keeps what is written in a buffer until release, then passes it
// straight through.
type heldWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf *bytes.Buffer // nil once released
}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.buf != nil {
		return h.buf.Write(p)
	}
	return h.w.Write(p)
}

// release writes out what was held and stops holding.
func (h *heldWriter) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.buf != nil {
		_, _ = h.buf.WriteTo(h.w)
		h.buf = nil
	}
}
