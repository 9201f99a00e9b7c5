package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// apiAddr is every node's API, on loopback inside its own namespace.
const apiAddr = "127.0.0.1:7601"

// port is every node's libp2p port, TCP and QUIC.
const port = 7600

// Node is an ephemera process on a host of the testbed.
type Node struct {
	*Host
	Home    string
	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time // when `run` started
}

// Bed runs nodes on a topology with one binary.
type Bed struct {
	Binary string
	Dir    string // homes and logs
	Topo   *Topology
}

// Init runs `ephemera init --home <home> args…` on h.
func (b *Bed) Init(ctx context.Context, h *Host, args ...string) (*Node, error) {
	n := &Node{Host: h, Home: filepath.Join(b.Dir, h.Name)}
	_, err := b.ephemera(ctx, h, append([]string{"init", "--home", n.Home, "--api", apiAddr}, args...)...)
	return n, err
}

// Start runs `ephemera run` on n, its log in <home>.log.
func (b *Bed) Start(n *Node) error {
	logf, err := os.Create(n.Home + ".log")
	if err != nil {
		return err
	}
	defer logf.Close()
	n.cmd = exec.Command("ip", "netns", "exec", n.NS, b.Binary, "run", "--home", n.Home)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("%s: run: %w", n.Name, err)
	}
	n.started, n.done = time.Now(), make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	return nil
}

// Stop stops n gracefully, or kills it after 15 s.
func (b *Bed) Stop(n *Node) {
	if n.cmd == nil {
		return
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
	n.cmd = nil
}

// Running reports whether n's process is alive.
func (n *Node) Running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Log is what n wrote so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.Home + ".log")
	return string(b)
}

// ephemera runs the binary on h and returns its standard output.
func (b *Bed) ephemera(ctx context.Context, h *Host, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, b.Binary}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: ephemera %s: %v: %s", h.Name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Get fetches path from n's API into v.
func (b *Bed) Get(ctx context.Context, n *Node, path string, v any) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, "curl", "-sS", "--max-time", "5", "http://"+apiAddr+path)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return fmt.Errorf("%s: GET %s: %w", n.Name, path, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: GET %s: %v", n.Name, path, err)
	}
	return nil
}

// Metric reads one counter or gauge, summed over its labels, from n's
// /metrics.
func (b *Bed) Metric(ctx context.Context, n *Node, name string) (float64, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.NS, "curl", "-sS", "--max-time", "5", "http://"+apiAddr+"/metrics").Output()
	if err != nil {
		return 0, fmt.Errorf("%s: /metrics: %w", n.Name, err)
	}
	var sum float64
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			var v float64
			f := strings.Fields(line)
			if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
				sum += v
			}
		}
	}
	return sum, nil
}

// PeerID is the peer ID of n's home.
func (b *Bed) PeerID(ctx context.Context, n *Node) (id, hash string, err error) {
	out, err := b.ephemera(ctx, n.Host, "id", "--home", n.Home, "--json")
	if err != nil {
		return "", "", err
	}
	var v struct {
		PeerID      string `json:"peer_id"`
		NetworkHash string `json:"network_hash"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", "", fmt.Errorf("%s: id: %v", n.Name, err)
	}
	return v.PeerID, v.NetworkHash, nil
}

// waitFor polls cond every 200 ms until it is true or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}
