package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ephemera-network/ephemera/node"
)

// Subprocess runs every node as its own `ephemera run` process.
type Subprocess struct {
	// Binary is the path of the ephemera binary.
	Binary string
	// StartTimeout bounds how long a node may take to publish its addresses.
	StartTimeout time.Duration
}

// Process is a node running as a child process.
type Process struct {
	cmd     *exec.Cmd
	rt      node.Runtime
	logPath string
	exited  chan struct{}
	waitErr error
}

// Launch starts `ephemera run --home HOME`, logging to HOME/node.log, and
// waits until the node has written its runtime file.
func (s Subprocess) Launch(ctx context.Context, name string, home node.Home) (Node, error) {
	logPath := filepath.Join(home.Dir, "node.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd := exec.Command(s.Binary, "run", "--home", home.Dir)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The home's config is the whole truth: an EPHEMERA_* variable of the
	// caller's shell would override it in every node alike.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "EPHEMERA_") })
	// Its own process group: a Ctrl-C in the terminal reaches the testnet,
	// which then stops every node in order, not all at once. If the testnet
	// itself dies, the kernel stops the node too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Binary, err)
	}
	p := &Process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	timeout := s.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if rt, err := node.ReadRuntime(home); err == nil && rt.PID == cmd.Process.Pid {
			p.rt = rt
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("exited before it was up (%v): %s", p.waitErr, lastLine(logPath))
		case <-deadline.C:
			p.kill()
			return nil, fmt.Errorf("not up after %s; see %s", timeout, logPath)
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// Runtime is what the node wrote to node.json.
func (p *Process) Runtime() node.Runtime { return p.rt }

// LogPath is the file the process logs to.
func (p *Process) LogPath() string { return p.logPath }

// Stop sends SIGTERM and waits for the process to exit, killing it if ctx ends first.
func (p *Process) Stop(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
		var ee *exec.ExitError
		if errors.As(p.waitErr, &ee) {
			return fmt.Errorf("pid %d exited with %v: %s", p.rt.PID, ee, lastLine(p.logPath))
		}
		return p.waitErr
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("pid %d did not stop in time; killed", p.cmd.Process.Pid)
	}
}

// Exit is how a process ended.
type Exit struct {
	// Err is what waiting for the process returned.
	Err error
	// LastLog is the last non-empty line of its log, which says why.
	LastLog string
}

// Exited reports whether the process has exited, for whatever reason, and how.
func (p *Process) Exited() (Exit, bool) {
	select {
	case <-p.exited:
		return Exit{Err: p.waitErr, LastLog: lastLine(p.logPath)}, true
	default:
		return Exit{}, false
	}
}

// Kill ends the process at once with SIGKILL, as a crash would.
func (p *Process) Kill() error {
	p.kill()
	return nil
}

func (p *Process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// lastLine is the last non-empty line of a log, which says why a node failed.
func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "no log"
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}
