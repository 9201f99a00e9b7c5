package gossip

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-network/ephemera/p2p"
	"github.com/ephemera-network/ephemera/protocol"
	"github.com/ephemera-network/ephemera/testnet/testkit"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// The restarted node of TestRestartedPeerGetsGossip runs first in a child
// process (this test binary again), so that it can be killed as the chaos
// run killed router-1: SIGKILL, with no goodbye on any connection.
const (
	victimEnv       = "EPHEMERA_GOSSIP_RESTART_VICTIM" // the key, hex; set only in the child
	victimPeersEnv  = "EPHEMERA_GOSSIP_RESTART_PEERS"  // the peers to dial, space-separated
	victimListenEnv = "EPHEMERA_GOSSIP_RESTART_LISTEN" // its listen addresses, space-separated
)

// loopbackListen is a node's listen addresses on loopback, both transports.
var loopbackListen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// restartNode is a node's host on listen, with gossip on the attestations
// topic, reporting every message it accepts to got.
func restartNode(t testing.TB, key crypto.PrivKey, listen []string, got func(string)) (*p2p.Host, *Topic, func()) {
	t.Helper()
	cfg := p2p.DefaultConfig()
	cfg.Listen = listen
	cfg.DHTMode = p2p.DHTModeServer
	h, err := p2p.New(cfg, p2p.Options{Network: "testnet", Key: key, NoNATService: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := New(ctx, h, "testnet", DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := g.Join(ctx, protocol.TopicAttestations, EnvelopeValidator(noteKind()), func(m *pubsub.Message) {
		got(m.ReceivedFrom.String())
	})
	if err != nil {
		t.Fatal(err)
	}
	closeAll := func() { g.Close(); cancel(); h.Close() }
	return h, topic, closeAll
}

func fullAddrs(h *p2p.Host) []string {
	var out []string
	for _, a := range h.Addrs() {
		out = append(out, a.String()+"/p2p/"+h.ID().String())
	}
	return out
}

func dialAll(t testing.TB, h *p2p.Host, addrs []string) {
	t.Helper()
	merged, err := peer.AddrInfosFromP2pAddrs(toMultiaddrs(t, addrs)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range merged {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := h.Connect(ctx, info)
		cancel()
		if err != nil {
			t.Fatalf("connect %s: %v", info.ID, err)
		}
	}
}

func toMultiaddrs(t testing.TB, ss []string) []ma.Multiaddr {
	t.Helper()
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// TestRestartVictimProcess is the child of TestRestartedPeerGetsGossip: a
// node that prints its addresses and every message it gets, until killed.
func TestRestartVictimProcess(t *testing.T) {
	keyHex := os.Getenv(victimEnv)
	if keyHex == "" {
		t.Skip("run by TestRestartedPeerGetsGossip")
	}
	raw, err := hex.DecodeString(keyHex)
	if err != nil {
		t.Fatal(err)
	}
	key, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	h, _, _ := restartNode(t, key, strings.Fields(os.Getenv(victimListenEnv)), func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("GOT %s\n", s)
	})
	dialAll(t, h, strings.Fields(os.Getenv(victimPeersEnv)))
	mu.Lock()
	for _, a := range h.Addrs() {
		fmt.Printf("ADDR %s\n", a)
	}
	fmt.Println("READY")
	mu.Unlock()
	// Until killed; or, should the parent die first, until its end of
	// stdin closes.
	io.Copy(io.Discard, os.Stdin)
}

// life is one run of the restarted node, in a child process.
type life struct {
	cmd    *exec.Cmd
	lines  chan string
	listen []string
	start  time.Time
}

func startLife(t *testing.T, raw []byte, listen, peers []string) *life {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRestartVictimProcess$", "-test.v")
	cmd.Env = append(os.Environ(), victimEnv+"="+hex.EncodeToString(raw),
		victimListenEnv+"="+strings.Join(listen, " "), victimPeersEnv+"="+strings.Join(peers, " "))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe() // held open for as long as the child is to live
	if err != nil {
		t.Fatal(err)
	}
	l := &life{cmd: cmd, lines: make(chan string, 4096), start: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
		io.Copy(io.Discard, out)
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				t.Fatal("the child exited before it was ready")
			}
			if a, ok := strings.CutPrefix(line, "ADDR "); ok {
				l.listen = append(l.listen, a)
			}
			if line == "READY" {
				return l
			}
		case <-deadline:
			t.Fatal("the child was not ready in 30 s")
		}
	}
}

// hearFromAll is how long after its start the life got its first message,
// and a message straight from each of peers (every peer has a stream to
// it), while publish is called every 250 ms; false if not within limit.
func (l *life) hearFromAll(t *testing.T, peers []peer.ID, publish func(), limit time.Duration) (first, all time.Duration, ok bool) {
	t.Helper()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	end := time.After(limit)
	heard := map[string]bool{}
	publish()
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				t.Fatal("the child exited")
			}
			from, ok := strings.CutPrefix(line, "GOT ")
			if !ok {
				continue
			}
			if first == 0 {
				first = time.Since(l.start)
			}
			heard[from] = true
			if len(heard) == len(peers) {
				return first, time.Since(l.start), true
			}
		case <-tick.C:
			publish()
		case <-end:
			return first, 0, false
		}
	}
}

func (l *life) kill(t *testing.T) {
	if err := l.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	l.cmd.Wait()
}

// A node killed (SIGKILL) and restarted with the same key on the same
// addresses, again and again as in the chaos run, hears from every peer
// again within seconds each time: the chaos run's router-1 got no gossip for
// a minute. Each restart costs the peers one of the four stream re-opens
// gossipsub allows a peer in 10 minutes (see reviver), so it is the fifth
// restart, the sixth life, that found every peer deaf to it before the fix.
func TestRestartedPeerGetsGossip(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a node process")
	}
	const others, lives = 4, 7
	var (
		topics []*Topic
		hosts  []*p2p.Host
		ids    []peer.ID
		addrs  []string
	)
	for range others {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, topic, closeAll := restartNode(t, key, loopbackListen, func(string) {})
		t.Cleanup(closeAll)
		for _, prev := range hosts {
			dialAll(t, h, fullAddrs(prev))
		}
		hosts, topics, ids = append(hosts, h), append(topics, topic), append(ids, h.ID())
		addrs = append(addrs, fullAddrs(h)...)
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	publish := func() {
		n++
		_ = topics[n%others].Publish(context.Background(), testkit.SealRecord(t, &note{text: fmt.Sprintf("m%d-%d", n, time.Now().UnixNano())}, nil))
	}

	const limit = 10 * time.Second
	listen := loopbackListen
	var slow []string
	for i := range lives {
		l := startLife(t, raw, listen, addrs)
		listen = l.listen
		first, all, ok := l.hearFromAll(t, ids, publish, 30*time.Second)
		switch {
		case !ok:
			slow = append(slow, fmt.Sprintf("life %d: not from every peer in 30s", i+1))
		case all > limit:
			slow = append(slow, fmt.Sprintf("life %d: %v", i+1, all.Round(time.Millisecond)))
		}
		t.Logf("life %d: first message after %v, from every peer after %v (%v)", i+1,
			first.Round(time.Millisecond), all.Round(time.Millisecond), ok)
		time.Sleep(time.Second) // in everyone's mesh by now
		l.kill(t)
		time.Sleep(time.Duration(200+200*i) * time.Millisecond) // down a while, as in the chaos run
	}
	if len(slow) > 0 {
		t.Fatalf("restarted node did not hear from every peer within %v: %s", limit, strings.Join(slow, "; "))
	}
}
