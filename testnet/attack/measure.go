package attack

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/ephemera-network/ephemera/api"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// waitAvailable waits until n miners are available in the first node's view.
func waitAvailable(ctx context.Context, tn *testnet.Testnet, n int) error {
	_, err := tn.WaitPool(ctx, fmt.Sprintf("%d available miners", n), func(m []api.PoolMiner) bool {
		return testnet.CountState(m, "available") >= n
	})
	return err
}

// rssMB is the resident memory of process pid, in MB, from /proc.
func rssMB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: VmRSS %q: %w", pid, rest, err)
		}
		return kb / 1024, nil
	}
	return 0, fmt.Errorf("pid %d: no VmRSS line", pid)
}

// pidOf is the process id of a member that runs as a real process.
func (e *Env) pidOf(name string) (int, error) {
	m, err := e.Member(name)
	if err != nil {
		return 0, err
	}
	p, ok := m.Node.(*testnet.Process)
	if !ok {
		return 0, fmt.Errorf("%s is not a process of its own", name)
	}
	return p.Runtime().PID, nil
}

// rss is the resident memory of the process of member name, in MB.
func (e *Env) rss(name string) (float64, error) {
	pid, err := e.pidOf(name)
	if err != nil {
		return 0, err
	}
	return rssMB(pid)
}

// newAttacker is a bare libp2p host on 127.0.0.1 with a fresh identity that
// claims membership of the testnet's network (its marker protocol), and
// nothing else: what a throwaway identity costs.
func (e *Env) newAttacker() (host.Host, error) {
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableMetrics(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
	)
	if err != nil {
		return nil, err
	}
	h.SetStreamHandler(protocol.NetworkMarker(e.Net.Definition.Hash()), func(s network.Stream) { s.Reset() })
	return h, nil
}

// metric reads an unlabelled gauge or counter of member name from its API's
// /metrics.
func (e *Env) metric(name, metric string) (float64, error) {
	m, err := e.Member(name)
	if err != nil {
		return 0, err
	}
	resp, err := http.Get(m.Node.Runtime().APIURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), metric+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s in /metrics", name, metric)
}
